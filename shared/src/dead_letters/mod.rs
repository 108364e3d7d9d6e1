//! The queue's dead letters, and moving them back (`POST /v1/dlq/redrive`). A narrow trait,
//! one file per queue. A redrive never loses a message half-way: a message leaves the
//! dead-letter side only after it is safely on the main queue (a redelivered duplicate is
//! harmless, the warehouse key de-duplicates it).

mod in_memory;
#[cfg(feature = "pubsub")]
mod pubsub;
#[cfg(feature = "sqs")]
mod sqs;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::error::Result;
use crate::queue::{QueueConfig, QueueKind};

#[cfg(feature = "pubsub")]
pub use pubsub::PubsubDeadLetters;
#[cfg(feature = "sqs")]
pub use sqs::SqsDeadLetters;

/// What one redrive did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedriveReport {
    /// Messages moved back to the main queue (or, for an asynchronous move task, the
    /// messages it was started for).
    pub moved: u64,
    /// Messages still on the dead-letter side afterwards, where the queue can tell.
    pub remaining: Option<u64>,
}

#[async_trait]
pub trait DeadLetters: Send + Sync + 'static {
    /// Moves up to `max` dead-lettered messages back to the main queue.
    async fn redrive(&self, max: u64) -> Result<RedriveReport>;
}

/// The dead letters a replay process redrives, built from the queue's settings; `None` (redrive
/// answers 404) where no dead-letter queue or subscription is configured: the SQS queue
/// `FLUXGATE_SQS_DEAD_LETTER_QUEUE_URL` back to `FLUXGATE_SQS_QUEUE_URL`, or the Pub/Sub
/// subscription `FLUXGATE_PUBSUB_DEAD_LETTER_SUBSCRIPTION` back to `FLUXGATE_PUBSUB_TOPIC`.
/// The in-process queue's dead letters live in `fluxgate-local`.
pub async fn connect(queue: &QueueConfig) -> Result<Option<Arc<dyn DeadLetters>>> {
    Ok(match queue.queue {
        QueueKind::Sqs => match queue.sqs.dead_letter_route() {
            #[cfg(feature = "sqs")]
            Some((dead_letters, main)) => {
                Some(Arc::new(SqsDeadLetters::from_env(dead_letters, main).await))
            }
            #[cfg(not(feature = "sqs"))]
            Some(_) => {
                return Err(crate::Error::not_built(
                    "FLUXGATE_SQS_DEAD_LETTER_QUEUE_URL",
                    "the SQS client",
                    "aws",
                ));
            }
            None => None,
        },
        QueueKind::Pubsub if queue.pubsub.pubsub_dead_letter_subscription.is_some() => {
            #[cfg(feature = "pubsub")]
            {
                // A setting that is there but wrong (a bad name, no topic) stops the start, loudly.
                Some(Arc::new(PubsubDeadLetters::connect(&queue.pubsub).await?))
            }
            #[cfg(not(feature = "pubsub"))]
            return Err(crate::Error::not_built(
                "FLUXGATE_PUBSUB_DEAD_LETTER_SUBSCRIPTION",
                "the Pub/Sub client",
                "gcp",
            ));
        }
        QueueKind::Pubsub | QueueKind::Memory => None,
    })
}
