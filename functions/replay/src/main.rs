//! replay as its own function: configured from the environment; on Lambda behind API
//! Gateway, elsewhere served on `PORT`.
//!
//! Dead-letter redrive: with `FLUXGATE_QUEUE=sqs`, the queue `FLUXGATE_SQS_DEAD_LETTER_QUEUE_URL`
//! back to `FLUXGATE_SQS_QUEUE_URL`; the in-process queue's dead letters live in
//! `fluxgate-local`.

use std::sync::Arc;

use clap::Parser;
use fluxgate::auth::{AuthConfig, Authenticator};
use fluxgate::config::{DatabaseConfig, QueueConfig, QueueKind, ServerConfig};
use fluxgate::dead_letters::{DeadLetters, SqsDeadLetters};
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
    let dead_letters: Option<Arc<dyn DeadLetters>> = match (
        config.queue.queue,
        config.queue.sqs_dead_letter_queue_url,
        config.queue.sqs_queue_url,
    ) {
        (QueueKind::Sqs, Some(dead_letters), Some(queue)) => Some(Arc::new(
            SqsDeadLetters::from_env(dead_letters, queue).await,
        )),
        // No dead-letter queue this process can reach: redrive answers 404.
        _ => None,
    };
    let auth = Authenticator::from_config(&config.auth, store.clone()).await?;
    let app = fluxgate_replay::service(store, dead_letters, auth);
    runtime::serve_http(app, config.server.port).await
}
