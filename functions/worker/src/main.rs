//! fluxgate-worker: loads delivered events into the warehouse. On Lambda the SQS event
//! source's batches; elsewhere `POST /v1/messages` and `POST /v1/pubsub/push` on `PORT`.
//! Settings: [`fluxgate_worker::Config`].

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    fluxgate::runtime::run(fluxgate_worker::function).await
}
