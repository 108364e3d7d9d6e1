//! The worker reading a Pub/Sub pull subscription (`fluxgate-local` with `FLUXGATE_QUEUE=pubsub`
//! and `FLUXGATE_PUBSUB_SUBSCRIPTION`): what the push subscription does in the cloud, as a
//! loop. Handled messages are acknowledged; a message to retry is handed back with a growing
//! delay, and the subscription's dead-letter policy takes it after its maximum deliveries.

use std::time::Duration;

use fluxgate::error::Result;
use fluxgate::queue::PubsubSubscription;

use crate::Delivery;
use crate::consumers::PulledQueue;

/// Messages per pull, one worker batch.
const MESSAGES_PER_PULL: u64 = 100;
/// How long one pull waits for messages.
const WAIT: Duration = Duration::from_secs(10);

impl PulledQueue for PubsubSubscription {
    /// The ack id.
    type Receipt = String;
    const NAME: &'static str = "Pub/Sub";
    /// Pub/Sub itself waits before it answers an empty pull; a server that answers at once (a
    /// local one) is not asked again at full speed.
    const IDLE_PAUSE: Duration = Duration::from_millis(100);
    /// A malformed body never becomes an event: acknowledged, as the push trigger does.
    const ACKNOWLEDGE_MALFORMED: bool = true;

    async fn receive(&self) -> Result<Vec<(String, Delivery)>> {
        let batch = self.pull(MESSAGES_PER_PULL, WAIT).await?;
        Ok(batch
            .into_iter()
            .filter_map(|received| {
                let message = received.message?;
                let delivery = Delivery {
                    message_id: message.message_id,
                    body: message.data,
                    // 0 when the subscription has no dead-letter policy (Pub/Sub then does not
                    // count); the first delivery either way.
                    receive_count: u32::try_from(received.delivery_attempt).unwrap_or(1).max(1),
                };
                Some((received.ack_id, delivery))
            })
            .collect())
    }

    async fn acknowledge_all(&self, ack_ids: Vec<String>) {
        if let Err(e) = self.acknowledge(ack_ids).await {
            tracing::warn!(error = %e.chain(), "handled Pub/Sub messages not acknowledged; they come back and are found DONE");
        }
    }

    async fn deliver_again(&self, ack_id: String, delay: Duration) {
        self.hand_back(vec![ack_id], delay).await;
    }

    async fn batch_failed(&self, batch: Vec<(String, &Delivery)>) {
        let ack_ids = batch.into_iter().map(|(ack_id, _)| ack_id).collect();
        self.hand_back(ack_ids, Duration::from_secs(1)).await;
    }
}
