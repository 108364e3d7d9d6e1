//! outbox-drain as its own service: `POST /v1/drain` on `PORT`, for a scheduler to call.

use std::sync::Arc;

use clap::Parser;
use fluxgate::config::{DatabaseConfig, DrainConfig, QueueConfig, QueueKind, ServerConfig};
use fluxgate::queue::{self, Queue};
use fluxgate::{Error, runtime, secrets, store, telemetry};
use fluxgate_outbox_drain::Drain;

#[derive(Parser)]
#[command(
    name = "fluxgate-outbox-drain",
    about = "Publishes pending outbox rows, once per trigger",
    version
)]
struct Config {
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    queue: QueueConfig,
    #[command(flatten)]
    drain: DrainConfig,
    #[command(flatten)]
    server: ServerConfig,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::parse();
    let queue = queue_for(&config.queue).await?;
    let database_url = secrets::database_url(&config.database).await?;
    let store = store::connect(database_url.expose(), &config.database).await?;
    let drain = Drain::new(store, queue, config.drain);
    runtime::serve(fluxgate_outbox_drain::service(drain), config.server.port).await
}

async fn queue_for(config: &QueueConfig) -> Result<Arc<dyn Queue>, Error> {
    match config.queue {
        // Publishing into this process's memory would strand every row as PUBLISHED with no
        // worker to take it; refuse rather than pretend.
        QueueKind::Memory => Err(Error::Config(
            "FLUXGATE_QUEUE=memory works only inside fluxgate-local, where the worker shares the process; \
             a stand-alone drain needs a managed queue"
                .into(),
        )),
        _ => queue::connect(config).await,
    }
}
