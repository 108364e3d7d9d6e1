//! The worker on the in-process queue (`fluxgate-local`, and the tests that run the pipeline in
//! one process): what an SQS event source mapping does in the cloud, as a loop.

use std::time::Duration;

use fluxgate::error::Result;
use fluxgate::queue::{self, InMemoryQueue};

use crate::Delivery;
use crate::consumers::PulledQueue;

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

    async fn acknowledge_all(&self, receipts: Vec<u64>) {
        for receipt in receipts {
            self.ack(receipt);
        }
    }

    async fn deliver_again(&self, receipt: u64, delay: Duration) {
        self.nack(receipt, delay);
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
