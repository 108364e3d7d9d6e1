//! replay as its own service: configured from the environment, served on `PORT`.
//!
//! The dead letters of a managed queue are reached through the queue's own branch of
//! `FLUXGATE_QUEUE`; the in-process queue's dead letters live in `fluxgate-local`.

use clap::Parser;
use fluxgate::config::{DatabaseConfig, ServerConfig};
use fluxgate::{runtime, store, telemetry};

#[derive(Parser)]
#[command(
    name = "fluxgate-replay",
    about = "Replays FAILED and DEAD events",
    version
)]
struct Config {
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    server: ServerConfig,
}

#[tokio::main]
async fn main() -> Result<(), fluxgate::Error> {
    telemetry::init();
    let config = Config::parse();
    let store = store::connect(config.database.required_url()?, &config.database).await?;
    let app = fluxgate_replay::service(store, None);
    runtime::serve(app, config.server.port).await
}
