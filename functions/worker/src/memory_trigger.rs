//! The worker on the in-process queue (`fluxgate-local`, and the tests that run the pipeline in
//! one process): what an SQS event source mapping does in the cloud, as a loop.

use std::time::Duration;

use fluxgate::error::Result;
use fluxgate::queue::{self, InMemoryQueue};

use crate::consumers::{PulledQueue, retry_delay};
use crate::{Delivery, Verdict};

/// Messages (packs of events) one consumer hands the worker at once.
const MESSAGES_PER_BATCH: usize = 32;
/// How long one receive waits for messages.
const WAIT: Duration = Duration::from_secs(1);

impl PulledQueue for InMemoryQueue {
    type Receipt = u64;
    const NAME: &'static str = "in-process";

    async fn receive(&self) -> Result<Vec<(u64, Delivery)>> {
        let batch = InMemoryQueue::receive(self, MESSAGES_PER_BATCH, WAIT).await;
        Ok(batch
            .iter()
            .map(|delivery| (delivery.receipt, Delivery::from(delivery)))
            .collect())
    }

    async fn settle(&self, settled: Vec<(u64, &Delivery, Verdict)>) {
        for (receipt, delivery, verdict) in settled {
            match verdict {
                Verdict::Ack => self.ack(receipt),
                Verdict::Retry | Verdict::Malformed(_) => {
                    self.nack(receipt, retry_delay(delivery.receive_count))
                }
            }
        }
    }

    async fn batch_failed(&self, batch: Vec<(u64, &Delivery)>) {
        for (receipt, delivery) in batch {
            self.nack(receipt, retry_delay(delivery.receive_count));
        }
    }
}

/// A message of the in-process queue as the worker takes it; its receipt names it.
impl From<&queue::Delivery> for Delivery {
    fn from(delivery: &queue::Delivery) -> Self {
        Self {
            message_id: delivery.receipt.to_string(),
            body: delivery.message.body.clone(),
            receive_count: delivery.receive_count,
        }
    }
}
