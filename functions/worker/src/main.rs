//! worker: on Lambda, the SQS event source's batches (`lambda.rs`); elsewhere a service on
//! `PORT` with `POST /v1/messages` (batches) and `POST /v1/pubsub/push` (a Pub/Sub push
//! subscription on Cloud Run).

use clap::Parser;
use fluxgate::config::{DatabaseConfig, ServerConfig, SinkConfig, WorkerConfig};
use fluxgate::{runtime, secrets, sink, store, telemetry};
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
    #[command(flatten)]
    sink: SinkConfig,
    #[command(flatten)]
    server: ServerConfig,
}

#[tokio::main]
async fn main() -> Result<(), fluxgate::Error> {
    telemetry::init();
    let config = Config::parse();
    let database_url = secrets::database_url(&config.database).await?;
    let store = store::connect(database_url.expose(), &config.database).await?;
    let sink = sink::connect(&config.sink).await?;
    let worker = Worker::new(store, sink, config.worker);
    if runtime::on_lambda() {
        return fluxgate_worker::lambda::run(worker).await;
    }
    runtime::serve(fluxgate_worker::service(worker), config.server.port).await
}
