//! The worker reading a Pub/Sub pull subscription (`fluxgate-local` with `FLUXGATE_QUEUE=pubsub`
//! and `FLUXGATE_PUBSUB_SUBSCRIPTION`): what the push subscription does in the cloud, as a
//! loop. Handled messages are acknowledged; a message to retry is handed back with a growing
//! delay, and the subscription's dead-letter policy takes it after its maximum deliveries.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use fluxgate::queue::PubsubSubscription;

use crate::memory_trigger::retry_delay;
use crate::{Delivery, Verdict, Worker};

/// Messages per pull, one worker batch.
const MESSAGES_PER_PULL: u64 = 100;
/// How long one pull waits for messages.
const WAIT: Duration = Duration::from_secs(10);

/// `consumers` loops side by side, each pulling a batch and handing it to the worker.
pub async fn consume(
    worker: Worker,
    subscription: PubsubSubscription,
    consumers: usize,
    stop: CancellationToken,
) {
    crate::consumers::side_by_side(consumers, || {
        consume_one(worker.clone(), subscription.clone(), stop.clone())
    })
    .await;
}

async fn consume_one(worker: Worker, subscription: PubsubSubscription, stop: CancellationToken) {
    loop {
        let pulled = tokio::select! {
            _ = stop.cancelled() => return,
            pulled = subscription.pull(MESSAGES_PER_PULL, WAIT) => pulled,
        };
        let batch = match pulled {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e.chain(), "Pub/Sub pull failed; trying again shortly");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if batch.is_empty() {
            // Pub/Sub itself waits before it answers an empty pull; a server that answers at
            // once (a local one) is not asked again at full speed.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
            }
        }
        let mut ack_ids = Vec::with_capacity(batch.len());
        let mut deliveries = Vec::with_capacity(batch.len());
        for received in batch {
            let Some(message) = received.message else {
                continue;
            };
            ack_ids.push(received.ack_id);
            deliveries.push(Delivery {
                message_id: message.message_id,
                body: message.data,
                // 0 when the subscription has no dead-letter policy (Pub/Sub then does not
                // count); the first delivery either way.
                receive_count: u32::try_from(received.delivery_attempt).unwrap_or(1).max(1),
            });
        }
        let verdicts = match worker.process(&deliveries).await {
            Ok(verdicts) => verdicts,
            Err(e) => {
                tracing::error!(error = %e.chain(), "worker batch failed; handing it back");
                subscription
                    .hand_back(ack_ids, Duration::from_secs(1))
                    .await;
                continue;
            }
        };
        let mut done = Vec::new();
        for ((ack_id, delivery), verdict) in ack_ids.into_iter().zip(&deliveries).zip(verdicts) {
            match verdict {
                Verdict::Ack => done.push(ack_id),
                // A malformed body never becomes an event: acknowledged, as the push trigger does.
                Verdict::Malformed(reason) => {
                    tracing::error!(message_id = %delivery.message_id, %reason, "malformed Pub/Sub message acknowledged");
                    done.push(ack_id);
                }
                Verdict::Retry => {
                    subscription
                        .hand_back(vec![ack_id], retry_delay(delivery.receive_count))
                        .await;
                }
            }
        }
        if !done.is_empty()
            && let Err(e) = subscription.acknowledge(done).await
        {
            tracing::warn!(error = %e.chain(), "handled Pub/Sub messages not acknowledged; they come back and are found DONE");
        }
    }
}
