//! Eager publishes of concurrent requests, coalesced. While one publish is in flight, the keys
//! of the requests that commit meanwhile wait together and go out as the next one: one claim,
//! one packed queue request, one mark for all of them, instead of one of each per request.
//! This is group commit, as a database does it for its log: under load the publishes grow by
//! themselves, and no timer adds latency when the load is light. On Lambda (one request per
//! environment at a time) each publish carries one request's events.
//!
//! A request waits for its publish for at most the eager timeout. The publish itself is never
//! cut short (it runs on its own task), so no row is left half-way, leased but neither
//! published nor put back, until its lease runs out. A request that stopped waiting leaves its
//! events to the scheduled drain: under overload, eager publish sheds work instead of
//! queueing it without bound.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use fluxgate::event::EventKey;

use crate::Drain;

/// One request's new events, and the request waiting for them.
struct Waiting {
    keys: Vec<EventKey>,
    published: oneshot::Sender<()>,
}

/// What a request learns of its eager publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Its publish ran (published, or failed and left to the drain: the publish logs which).
    Ran,
    /// The timeout came first; the publish goes on without the request.
    TimedOut,
}

/// Hands requests' keys to the one task that publishes them.
#[derive(Clone)]
pub struct CoalescingPublisher {
    requests: mpsc::UnboundedSender<Waiting>,
}

impl CoalescingPublisher {
    /// Starts the publishing task on the current runtime; it ends with the last handle.
    pub fn start(drain: Drain) -> Self {
        let (requests, waiting) = mpsc::unbounded_channel();
        tokio::spawn(publish_loop(drain, waiting));
        Self { requests }
    }

    /// Publishes `keys` together with whatever else is waiting; returns once they are
    /// published (or the publish failed) or after `timeout`, whichever comes first.
    pub async fn publish(&self, keys: Vec<EventKey>, timeout: Duration) -> Waited {
        let (published, done) = oneshot::channel();
        if self.requests.send(Waiting { keys, published }).is_err() {
            // The task is gone (the runtime is shutting down): the drain takes the events.
            return Waited::Ran;
        }
        match tokio::time::timeout(timeout, done).await {
            Ok(_) => Waited::Ran,
            Err(_) => Waited::TimedOut,
        }
    }
}

/// Takes everything waiting (up to a drain round's size), publishes it, tells the waiters, and
/// again, until every handle is dropped.
async fn publish_loop(drain: Drain, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let most = drain.config.drain_batch_size.max(1) as usize;
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        let mut keys = batch[0].keys.len();
        while keys < most {
            match waiting.try_recv() {
                Ok(next) => {
                    keys += next.keys.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        // Those who stopped waiting leave their events to the drain.
        batch.retain(|request| !request.published.is_closed());
        let keys: Vec<EventKey> = batch
            .iter()
            .flat_map(|request| request.keys.iter().cloned())
            .collect();
        if !keys.is_empty() {
            match drain.publish_now(&keys).await {
                Ok(summary) => tracing::debug!(
                    requests = batch.len(),
                    published = summary.published,
                    retried = summary.retried,
                    duration_ms = summary.duration_ms,
                    "eager publish"
                ),
                Err(e) => tracing::warn!(
                    requests = batch.len(),
                    events = keys.len(),
                    error = %e.chain(),
                    "eager publish failed; the events stay PENDING for the next drain run"
                ),
            }
        }
        for request in batch {
            let _ = request.published.send(());
        }
    }
}
