//! Publishing one claimed round and deciding what becomes of each row.

use chrono::{DateTime, Utc};

use fluxgate::config::DrainConfig;
use fluxgate::event::{Event, EventKey};
use fluxgate::queue::Queue;
use fluxgate::queue::pack::{PackLimits, Packed, pack};
use fluxgate::store::{ClaimedEvent, OutboxStatus, PublishRetry};

pub(crate) struct Settled {
    pub published: Vec<EventKey>,
    pub retries: Vec<PublishRetry>,
}

/// Packs the claimed events into messages within the queue's and the configured limits, and
/// publishes them in batches of the queue's size. Every event of a message shares its
/// message's fate; a batch that fails as a whole fails each of its messages.
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
    let limits = PackLimits {
        max_events: config.pack_max_events,
        max_bytes: config.pack_max_bytes.min(queue.max_message_bytes()),
    };
    let events: Vec<&Event> = claimed.iter().map(|c| &c.event).collect();
    let (mut members, mut messages) = (Vec::new(), Vec::new());
    for packed in pack(&events, limits) {
        match packed {
            Packed::Message { events, message } => {
                members.push(events);
                messages.push(message);
            }
            Packed::Refused { event, reason } => {
                settled
                    .retries
                    .push(retry_for(&claimed[event], config, now, reason));
            }
        }
    }
    let size = queue.max_batch().max(1);
    for (batch, batch_members) in messages.chunks(size).zip(members.chunks(size)) {
        let results = match queue.publish_batch(batch).await {
            Ok(results) => results,
            Err(e) => vec![Err(e.chain()); batch.len()],
        };
        for ((message, members), result) in batch.iter().zip(batch_members).zip(results) {
            match result {
                Ok(()) => settled.published.extend(message.keys.iter().cloned()),
                Err(error) => {
                    tracing::warn!(
                        tenant_id = %message.attributes.tenant_id,
                        events = members.len(),
                        %error,
                        "publish failed"
                    );
                    for member in members {
                        settled.retries.push(retry_for(
                            &claimed[*member],
                            config,
                            now,
                            error.clone(),
                        ));
                    }
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
