//! `fluxgate-local`: the whole pipeline in one process, for trying it out and for development.

use clap::Parser;
use fluxgate::telemetry;
use fluxgate_local::LocalConfig;

#[tokio::main]
async fn main() -> Result<(), fluxgate::Error> {
    telemetry::init();
    let config = LocalConfig::parse();
    fluxgate_local::run(config, fluxgate::runtime::shutdown_signal()).await
}
