//! Publishing one claimed round and deciding what becomes of each row.

use chrono::{DateTime, Utc};

use fluxgate::config::DrainConfig;
use fluxgate::event::EventKey;
use fluxgate::queue::{Queue, QueueMessage};
use fluxgate::store::{ClaimedEvent, OutboxStatus, PublishRetry};

pub(crate) struct Settled {
    pub published: Vec<EventKey>,
    pub retries: Vec<PublishRetry>,
}

/// Publishes in batches of the queue's size; a batch that fails as a whole fails each of its
/// messages.
pub(crate) async fn publish_claimed(
    queue: &dyn Queue,
    config: &DrainConfig,
    claimed: &[ClaimedEvent],
    now: DateTime<Utc>,
) -> Settled {
    let mut settled = Settled {
        published: Vec::with_capacity(claimed.len()),
        retries: Vec::new(),
    };
    for chunk in claimed.chunks(queue.max_batch().max(1)) {
        let mut messages = Vec::with_capacity(chunk.len());
        let mut sendable = Vec::with_capacity(chunk.len());
        for claimed in chunk {
            match QueueMessage::from_event(&claimed.event) {
                Ok(message) => {
                    messages.push(message);
                    sendable.push(claimed);
                }
                Err(e) => settled
                    .retries
                    .push(retry_for(claimed, config, now, e.chain())),
            }
        }
        let results = match queue.publish_batch(&messages).await {
            Ok(results) => results,
            Err(e) => vec![Err(e.chain()); messages.len()],
        };
        for (claimed, result) in sendable.into_iter().zip(results) {
            match result {
                Ok(()) => settled.published.push(claimed.event.key()),
                Err(error) => {
                    tracing::warn!(
                        tenant_id = %claimed.event.tenant_id,
                        event_id = %claimed.event.event_id,
                        %error,
                        "publish failed"
                    );
                    settled.retries.push(retry_for(claimed, config, now, error));
                }
            }
        }
    }
    settled
}

/// Back to PENDING after the schedule's delay for this failure, or DEAD at the last attempt.
pub fn retry_for(
    claimed: &ClaimedEvent,
    config: &DrainConfig,
    now: DateTime<Utc>,
    error: String,
) -> PublishRetry {
    let attempts = claimed.attempts + 1;
    let dead = attempts >= config.max_attempts;
    PublishRetry {
        key: claimed.event.key(),
        attempts,
        status: if dead {
            OutboxStatus::Dead
        } else {
            OutboxStatus::Pending
        },
        next_attempt_at: now + config.retry_backoff.delay_after(attempts),
        error,
    }
}
