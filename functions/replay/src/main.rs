//! replay as its own function: configured from the environment; on Lambda behind API
//! Gateway, elsewhere served on `PORT`.
//!
//! Dead-letter redrive: with `FLUXGATE_QUEUE=sqs`, the queue `FLUXGATE_SQS_DEAD_LETTER_QUEUE_URL`
//! back to `FLUXGATE_SQS_QUEUE_URL`; with `FLUXGATE_QUEUE=pubsub`, the subscription
//! `FLUXGATE_PUBSUB_DEAD_LETTER_SUBSCRIPTION` back to the topic `FLUXGATE_PUBSUB_TOPIC`; the
//! in-process queue's dead letters live in `fluxgate-local`.

use clap::Parser;
use fluxgate::auth::{AuthConfig, Authenticator};
use fluxgate::config::{DatabaseConfig, QueueConfig, ServerConfig};
use fluxgate::{runtime, secrets, store, telemetry};

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
    queue: QueueConfig,
    #[command(flatten)]
    server: ServerConfig,
    #[command(flatten)]
    auth: AuthConfig,
}

#[tokio::main]
async fn main() -> Result<(), fluxgate::Error> {
    telemetry::init();
    let config = Config::parse();
    let database_url = secrets::database_url(&config.database).await?;
    let store = store::connect(database_url.expose(), &config.database).await?;
    let dead_letters = fluxgate_replay::dead_letters(&config.queue).await?;
    let auth = Authenticator::from_config(&config.auth, store.clone()).await?;
    let app = fluxgate_replay::service(store, dead_letters, auth);
    runtime::serve_http(app, config.server.port).await
}
