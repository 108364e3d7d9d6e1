//! fluxgate-metrics: outbox figures over HTTP and Prometheus; on Lambda behind API Gateway,
//! elsewhere on `PORT`. Settings: [`fluxgate_metrics::Config`].

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    fluxgate::runtime::run(fluxgate_metrics::function).await
}
