//! fluxgate-outbox-drain: publishes pending outbox rows, once per trigger. On Lambda one run
//! per EventBridge scheduled event; as a Cloud Run job one run per task; elsewhere
//! `POST /v1/drain` on `PORT` (Cloud Scheduler). Settings: [`fluxgate_outbox_drain::Config`].

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    fluxgate::runtime::run(fluxgate_outbox_drain::function).await
}
