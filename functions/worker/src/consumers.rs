//! The shape every queue-reading trigger shares: several consumer loops side by side, so that
//! while one batch waits on the database or the warehouse, others are in flight, each
//! receiving a batch, handing it to the worker and settling each message by its verdict. A
//! queue the worker reads itself says only how it receives, acknowledges and hands a message
//! back ([`PulledQueue`]); what each verdict becomes is decided here, once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use fluxgate::error::Result;

use crate::{Delivery, Verdict, Worker};

/// A queue the worker pulls from: the in-process queue, SQS by long polling, a Pub/Sub pull
/// subscription.
pub trait PulledQueue: Send + Sync + 'static {
    /// What settling one message needs: its receipt, its ack id.
    type Receipt: Send;
    /// How the log lines name the queue.
    const NAME: &'static str;
    /// How long to wait after an empty batch before receiving again (a queue whose receive
    /// already waits for messages needs none).
    const IDLE_PAUSE: Duration = Duration::ZERO;
    /// Whether a malformed message (one that never becomes an event) is acknowledged with a
    /// log line, as Pub/Sub's push trigger does; otherwise it is handed back like a retry, and
    /// the queue's own redrive policy dead-letters it.
    const ACKNOWLEDGE_MALFORMED: bool = false;

    /// The next batch, each message as the worker takes it; empty when none came in time.
    fn receive(&self) -> impl Future<Output = Result<Vec<(Self::Receipt, Delivery)>>> + Send;

    /// Acknowledges (deletes) handled messages, at least one. A failure is only logged: the
    /// messages come again, and the worker finds them DONE.
    fn acknowledge_all(&self, receipts: Vec<Self::Receipt>) -> impl Future<Output = ()> + Send;

    /// Hands a message back, to be delivered again after `delay`. A failure is only logged:
    /// the queue delivers it again on its own terms.
    fn deliver_again(
        &self,
        receipt: Self::Receipt,
        delay: Duration,
    ) -> impl Future<Output = ()> + Send;

    /// The worker failed the batch as a whole (the database was unreachable): each message is
    /// to come again; by default each is handed back as for a retry.
    fn batch_failed(
        &self,
        batch: Vec<(Self::Receipt, &Delivery)>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            for (receipt, delivery) in batch {
                self.deliver_again(receipt, retry_delay(delivery.receive_count))
                    .await;
            }
        }
    }
}

/// `consumers` loops side by side, each receiving a batch from `queue`, handing it to the
/// worker and settling it, until `stop`.
pub async fn consume<Q: PulledQueue>(
    worker: Worker,
    queue: Arc<Q>,
    consumers: usize,
    stop: CancellationToken,
) {
    side_by_side(consumers, || {
        consume_one(worker.clone(), queue.clone(), stop.clone())
    })
    .await;
}

async fn consume_one<Q: PulledQueue>(worker: Worker, queue: Arc<Q>, stop: CancellationToken) {
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = queue.receive() => received,
        };
        let pause = match received {
            Ok(batch) if !batch.is_empty() => {
                process(&worker, queue.as_ref(), batch).await;
                continue;
            }
            Ok(_) => Q::IDLE_PAUSE,
            Err(e) => {
                tracing::warn!(queue = Q::NAME, error = %e.chain(), "receive failed; trying again shortly");
                Duration::from_secs(1)
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

async fn process<Q: PulledQueue>(worker: &Worker, queue: &Q, batch: Vec<(Q::Receipt, Delivery)>) {
    let (receipts, deliveries): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    match worker.process(&deliveries).await {
        Ok(verdicts) => {
            let settled = receipts.into_iter().zip(&deliveries).zip(verdicts);
            settle(queue, settled).await;
        }
        Err(e) => {
            tracing::error!(queue = Q::NAME, error = %e.chain(), "worker batch failed; it comes again");
            queue
                .batch_failed(receipts.into_iter().zip(&deliveries).collect())
                .await;
        }
    }
}

/// Acknowledges or hands back each message, as its verdict says: the handled ones (and, where
/// the queue says so, the malformed ones) acknowledged together, the others handed back one by
/// one after [`retry_delay`].
async fn settle<'d, Q: PulledQueue>(
    queue: &Q,
    settled: impl IntoIterator<Item = ((Q::Receipt, &'d Delivery), Verdict)>,
) {
    let mut done = Vec::new();
    for ((receipt, delivery), verdict) in settled {
        match verdict {
            Verdict::Ack => done.push(receipt),
            Verdict::Malformed(reason) if Q::ACKNOWLEDGE_MALFORMED => {
                tracing::error!(message_id = %delivery.message_id, %reason, "malformed {} message acknowledged", Q::NAME);
                done.push(receipt);
            }
            Verdict::Retry | Verdict::Malformed(_) => {
                queue
                    .deliver_again(receipt, retry_delay(delivery.receive_count))
                    .await;
            }
        }
    }
    if !done.is_empty() {
        queue.acknowledge_all(done).await;
    }
}

/// Runs `consumers` (at least one) loops made by `consumer` side by side, until all have
/// returned.
async fn side_by_side<F, L>(consumers: usize, consumer: F)
where
    F: Fn() -> L,
    L: Future<Output = ()> + Send + 'static,
{
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..consumers.max(1) {
        loops.spawn(consumer());
    }
    while loops.join_next().await.is_some() {}
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
