//! fluxgate-ingest: takes events in over HTTP; on Lambda behind API Gateway, elsewhere on
//! `PORT`. Settings: [`fluxgate_ingest::Config`].

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    fluxgate::runtime::run(fluxgate_ingest::function).await
}
