//! fluxgate-replay: FAILED and DEAD events back to PENDING, and the queue's dead letters back
//! to the queue; on Lambda behind API Gateway, elsewhere on `PORT`. Settings:
//! [`fluxgate_replay::Config`].

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    fluxgate::runtime::run(fluxgate_replay::function).await
}
