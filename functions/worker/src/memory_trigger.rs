//! The worker on the in-process queue (`fluxgate-local`, and the tests that run the pipeline in
//! one process): what an SQS event source mapping does in the cloud, as a loop.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use fluxgate::queue::{self, InMemoryQueue};

use crate::{Delivery, Verdict, Worker};

/// Messages (packs of events) one consumer hands the worker at once.
const MESSAGES_PER_BATCH: usize = 32;

/// What the queue trigger does in the cloud: `consumers` loops side by side, each handing the
/// worker batches of messages, acknowledged or retried with backoff by its verdicts. Several
/// batches in flight keep the database and the warehouse busy while one of them waits.
pub async fn consume(
    worker: Worker,
    queue: Arc<InMemoryQueue>,
    consumers: usize,
    stop: CancellationToken,
) {
    crate::consumers::side_by_side(consumers, || {
        consume_one(worker.clone(), queue.clone(), stop.clone())
    })
    .await;
}

async fn consume_one(worker: Worker, queue: Arc<InMemoryQueue>, stop: CancellationToken) {
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return,
            batch = queue.receive(MESSAGES_PER_BATCH, Duration::from_secs(1)) => batch,
        };
        if batch.is_empty() {
            continue;
        }
        let deliveries: Vec<Delivery> = batch.iter().map(Delivery::from).collect();
        match worker.process(&deliveries).await {
            Ok(verdicts) => {
                for (delivery, verdict) in batch.iter().zip(verdicts) {
                    match verdict {
                        Verdict::Ack => queue.ack(delivery.receipt),
                        Verdict::Retry | Verdict::Malformed(_) => {
                            queue.nack(delivery.receipt, retry_delay(delivery.receive_count))
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e.chain(), "worker batch failed; retrying it");
                for delivery in &batch {
                    queue.nack(delivery.receipt, retry_delay(delivery.receive_count));
                }
            }
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

/// 1 s, 2 s, 4 s … capped at 30 s: short enough to watch locally.
pub(crate) fn retry_delay(receive_count: u32) -> Duration {
    Duration::from_secs(1u64 << receive_count.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_are_capped() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(4));
        assert_eq!(retry_delay(40), Duration::from_secs(30));
    }
}
