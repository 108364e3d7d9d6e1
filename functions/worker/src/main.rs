//! worker as its own service on `PORT`: `POST /v1/messages` (batches) and
//! `POST /v1/pubsub/push` (a Pub/Sub push subscription on Cloud Run).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use fluxgate::config::{DatabaseConfig, ServerConfig, WorkerConfig};
use fluxgate::sink::LocalFileSink;
use fluxgate::{runtime, secrets, store, telemetry};
use fluxgate_worker::Worker;

#[derive(Parser)]
#[command(
    name = "fluxgate-worker",
    about = "Loads delivered events into the warehouse",
    version
)]
struct Config {
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    worker: WorkerConfig,
    /// Folder of the local-file warehouse (JSON Lines, Hive-style partitions).
    #[arg(
        long,
        env = "FLUXGATE_WAREHOUSE_DIR",
        default_value = "./.fluxgate/warehouse"
    )]
    warehouse_dir: PathBuf,
    #[command(flatten)]
    server: ServerConfig,
}

#[tokio::main]
async fn main() -> Result<(), fluxgate::Error> {
    telemetry::init();
    let config = Config::parse();
    let database_url = secrets::database_url(&config.database).await?;
    let store = store::connect(database_url.expose(), &config.database).await?;
    let sink = Arc::new(LocalFileSink::open(&config.warehouse_dir).await?);
    let worker = Worker::new(store, sink, config.worker);
    runtime::serve(fluxgate_worker::service(worker), config.server.port).await
}
