//! replay as its own service: configured from the environment, served on `PORT`.
//!
//! Dead-letter redrive: with `FLUXGATE_QUEUE=sqs`, the queue `FLUXGATE_SQS_DEAD_LETTER_QUEUE_URL`
//! back to `FLUXGATE_SQS_QUEUE_URL`; with `FLUXGATE_QUEUE=pubsub`, the subscription
//! `FLUXGATE_PUBSUB_DEAD_LETTER_SUBSCRIPTION` back to the topic `FLUXGATE_PUBSUB_TOPIC`; the
//! in-process queue's dead letters live in `fluxgate-local`.

use std::sync::Arc;

use clap::Parser;
use fluxgate::auth::{AuthConfig, Authenticator};
use fluxgate::config::{DatabaseConfig, QueueConfig, QueueKind, ServerConfig};
use fluxgate::dead_letters::{DeadLetters, PubsubDeadLetters, SqsDeadLetters};
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
    let store = store::connect(config.database.required_url()?, &config.database).await?;
    let dead_letters = dead_letters(&config.queue).await?;
    let auth = Authenticator::from_config(&config.auth, store.clone()).await?;
    let app = fluxgate_replay::service(store, dead_letters, auth);
    runtime::serve(app, config.server.port).await
}

/// The dead letters this process redrives, or `None` (redrive answers 404) where no dead-letter
/// queue or subscription is configured.
async fn dead_letters(
    queue: &QueueConfig,
) -> Result<Option<Arc<dyn DeadLetters>>, fluxgate::Error> {
    Ok(match queue.queue {
        QueueKind::Sqs => match (&queue.sqs_dead_letter_queue_url, &queue.sqs_queue_url) {
            (Some(dead_letters), Some(main)) => Some(Arc::new(
                SqsDeadLetters::from_env(dead_letters.as_str(), main.as_str()).await,
            )),
            _ => None,
        },
        QueueKind::Pubsub if queue.pubsub.pubsub_dead_letter_subscription.is_some() => {
            // A set but broken setting (bad names, no topic) stops the start-up, loudly.
            Some(Arc::new(PubsubDeadLetters::connect(&queue.pubsub).await?))
        }
        QueueKind::Pubsub | QueueKind::Memory => None,
    })
}
