//! The worker reading SQS itself, by long polling (`fluxgate-local` with `FLUXGATE_QUEUE=sqs`):
//! what Lambda's event source mapping does in the cloud, as a loop. Handled messages are
//! deleted; a message to retry is made visible again after a growing delay, and SQS's own
//! redrive policy dead-letters it after `maxReceiveCount` receives.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use fluxgate::queue::SqsQueue;

use crate::memory_trigger::retry_delay;
use crate::{Delivery, Verdict, Worker};

/// SQS hands out at most ten messages per receive.
const MESSAGES_PER_RECEIVE: i32 = 10;
/// Long polling: an empty queue costs one request per this long and consumer.
const WAIT: Duration = Duration::from_secs(10);

/// `consumers` loops side by side, each receiving a batch and handing it to the worker.
pub async fn consume(
    worker: Worker,
    queue: Arc<SqsQueue>,
    consumers: usize,
    stop: CancellationToken,
) {
    crate::consumers::side_by_side(consumers, || {
        consume_one(worker.clone(), queue.clone(), stop.clone())
    })
    .await;
}

async fn consume_one(worker: Worker, queue: Arc<SqsQueue>, stop: CancellationToken) {
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = queue.receive(MESSAGES_PER_RECEIVE, WAIT) => received,
        };
        let batch = match received {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e.chain(), "SQS receive failed; trying again shortly");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if batch.is_empty() {
            continue;
        }
        let deliveries: Vec<Delivery> = batch
            .iter()
            .map(|m| Delivery {
                message_id: m.message_id.clone(),
                body: m.body.clone(),
                receive_count: m.receive_count,
            })
            .collect();
        let verdicts = match worker.process(&deliveries).await {
            Ok(verdicts) => verdicts,
            Err(e) => {
                // Left alone: SQS delivers the whole batch again after its visibility timeout.
                tracing::error!(error = %e.chain(), "worker batch failed; SQS delivers it again");
                continue;
            }
        };
        let mut done = Vec::new();
        for (message, verdict) in batch.iter().zip(verdicts) {
            match verdict {
                Verdict::Ack => done.push(message.receipt_handle.clone()),
                Verdict::Retry | Verdict::Malformed(_) => {
                    let delay = retry_delay(message.receive_count);
                    if let Err(e) = queue.retry_after(&message.receipt_handle, delay).await {
                        tracing::warn!(error = %e.chain(), "message left to its visibility timeout");
                    }
                }
            }
        }
        if let Err(e) = queue.delete(&done).await {
            tracing::warn!(error = %e.chain(), "handled SQS messages not deleted; they come back and are found DONE");
        }
    }
}
