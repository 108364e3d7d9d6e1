//! A Pub/Sub dead-letter subscription, redriven by pull → republish → acknowledge.
//!
//! Pub/Sub dead-letters a message by publishing it to the dead-letter topic; replay reads that
//! topic's own pull subscription (`FLUXGATE_PUBSUB_DEAD_LETTER_SUBSCRIPTION`), publishes each
//! message (data and attributes) to the main topic (`FLUXGATE_PUBSUB_TOPIC`) and acknowledges
//! it on the dead-letter subscription only after Pub/Sub confirmed that publish. A message
//! whose publish failed is not acknowledged (it is handed back at once with a zero ack
//! deadline, and if even that fails it comes back when its ack deadline passes); a redrive that
//! stops half-way leaves every message it had not acknowledged on the dead-letter
//! subscription. At worst a message is published twice, which the worker's dedup key makes
//! harmless.
//!
//! Which client, and why two: publishing goes through the official `google-cloud-pubsub`
//! client, exactly as the drain publishes ([`PubsubQueue`]: batching, retries of transient
//! errors, one answer per message). But that crate (1.7) only subscribes by `StreamingPull`:
//! an endless stream that has no "nothing left" answer (so a bounded run would end on an idle
//! timer), and whose at-least-once acks are fire-and-forget (the acknowledgement's outcome is
//! never reported). Its unary `Pull` / `Acknowledge` stubs are crate-private. The redrive needs
//! exactly the unary calls: a `Pull` that answers "empty" ends the run, and an `Acknowledge`
//! whose failure we see: [`PubsubSubscription`] (the generated client of the published protos).
//!
//! How many remain is not known: Pub/Sub has no call that counts a subscription's messages
//! (Cloud Monitoring's `num_undelivered_messages` does), so `remaining` is `None`.

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_pubsub::model::Message;

use super::{DeadLetters, RedriveReport};
use crate::error::{Error, Result};
use crate::queue::{PubsubConfig, PubsubQueue, PubsubSubscription};

/// Messages pulled per round. Each round's messages are leased for the subscription's ack
/// deadline (60 s as `cloudrun/` creates it, 10 s at the least) while they are republished, so
/// a round stays small enough to finish well within it.
const PULL_BATCH: u64 = 100;
/// How long one `Pull` may wait for messages before it counts as empty. Pub/Sub answers a
/// `Pull` on an empty subscription with nothing (or `DEADLINE_EXCEEDED`) after a while.
const PULL_WAIT: Duration = Duration::from_secs(5);

pub struct PubsubDeadLetters {
    subscription: PubsubSubscription,
    /// Republishes to the main topic with the official client, as the drain does.
    queue: PubsubQueue,
}

impl PubsubDeadLetters {
    /// Builds both clients once (per cold start); nothing is sent until the first redrive.
    pub async fn connect(config: &PubsubConfig) -> Result<Self> {
        let subscription = PubsubSubscription::connect(config, config.dead_letter_subscription()?)?;
        let queue = PubsubQueue::connect(config).await?;
        tracing::info!(
            subscription = subscription.name(),
            topic = queue.topic(),
            "Pub/Sub redrive ready"
        );
        Ok(Self {
            subscription,
            queue,
        })
    }
}

#[async_trait]
impl DeadLetters for PubsubDeadLetters {
    async fn redrive(&self, max: u64) -> Result<RedriveReport> {
        let mut moved = 0u64;
        while moved < max {
            let received = self
                .subscription
                .pull((max - moved).min(PULL_BATCH), PULL_WAIT)
                .await?;
            if received.is_empty() {
                break;
            }
            let mut ack_ids = Vec::with_capacity(received.len());
            let mut messages = Vec::with_capacity(received.len());
            for received in received {
                // Pub/Sub always sends the message; one without is left alone (not acked).
                let Some(message) = received.message else {
                    continue;
                };
                ack_ids.push(received.ack_id);
                // Data and attributes as they are; fluxgate sets no ordering keys.
                messages.push(
                    Message::new()
                        .set_data(bytes::Bytes::from(message.data))
                        .set_attributes(message.attributes),
                );
            }
            let results = self.queue.publish_messages(messages).await;
            let mut published = Vec::new();
            let mut failed = Vec::new();
            let mut first_error = None;
            for (ack_id, result) in ack_ids.into_iter().zip(results) {
                match result {
                    Ok(()) => published.push(ack_id),
                    Err(e) => {
                        first_error.get_or_insert(e);
                        failed.push(ack_id);
                    }
                }
            }
            if !published.is_empty() {
                let count = published.len() as u64;
                self.subscription.acknowledge(published).await?;
                moved += count;
            }
            if let Some(error) = first_error {
                let count = failed.len();
                self.subscription.hand_back(failed, Duration::ZERO).await;
                // Stop rather than pull more that would likely fail the same way; the error
                // tells the caller, and the messages wait on the dead-letter subscription.
                return Err(Error::queue_caused(
                    format!(
                        "{count} dead letters could not be republished to {} and stay on {} ({moved} moved before that)",
                        self.queue.topic(),
                        self.subscription.name()
                    ),
                    error,
                ));
            }
        }
        Ok(RedriveReport {
            moved,
            remaining: None,
        })
    }
}
