//! The queue's dead letters, and moving them back (`POST /v1/dlq/redrive`). A narrow trait,
//! one file per queue. A redrive never loses a message half-way: a message leaves the
//! dead-letter side only after it is safely on the main queue (a redelivered duplicate is
//! harmless, the warehouse key de-duplicates it).

mod in_memory;
mod pubsub;
mod sqs;

use async_trait::async_trait;
use serde::Serialize;

use crate::error::Result;

pub use pubsub::PubsubDeadLetters;
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
