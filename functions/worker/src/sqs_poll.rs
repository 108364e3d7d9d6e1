//! The worker reading SQS itself, by long polling (`fluxgate-local` with `FLUXGATE_QUEUE=sqs`):
//! what Lambda's event source mapping does in the cloud, as a loop. Handled messages are
//! deleted; a message to retry is made visible again after a growing delay, and SQS's own
//! redrive policy dead-letters it after `maxReceiveCount` receives.

use std::time::Duration;

use fluxgate::error::Result;
use fluxgate::queue::SqsQueue;

use crate::Delivery;
use crate::consumers::PulledQueue;

/// SQS hands out at most ten messages per receive.
const MESSAGES_PER_RECEIVE: i32 = 10;
/// Long polling: an empty queue costs one request per this long and consumer.
const WAIT: Duration = Duration::from_secs(10);

impl PulledQueue for SqsQueue {
    /// The receipt handle.
    type Receipt = String;
    const NAME: &'static str = "SQS";

    async fn receive(&self) -> Result<Vec<(String, Delivery)>> {
        let batch = SqsQueue::receive(self, MESSAGES_PER_RECEIVE, WAIT).await?;
        Ok(batch
            .into_iter()
            .map(|m| {
                let delivery = Delivery {
                    message_id: m.message_id,
                    body: m.body,
                    receive_count: m.receive_count,
                };
                (m.receipt_handle, delivery)
            })
            .collect())
    }

    async fn acknowledge_all(&self, receipts: Vec<String>) {
        if let Err(e) = self.delete(&receipts).await {
            tracing::warn!(error = %e.chain(), "handled SQS messages not deleted; they come back and are found DONE");
        }
    }

    async fn deliver_again(&self, receipt: String, delay: Duration) {
        if let Err(e) = self.retry_after(&receipt, delay).await {
            tracing::warn!(error = %e.chain(), "message left to its visibility timeout");
        }
    }

    /// Left alone: SQS delivers the whole batch again after its visibility timeout.
    async fn batch_failed(&self, _: Vec<(String, &Delivery)>) {}
}
