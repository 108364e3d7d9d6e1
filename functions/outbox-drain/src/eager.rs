//! Eager publish: events move on right after the commit that stored them, instead of waiting
//! for the next drain run (a second locally, up to a minute on EventBridge). Ingest's store is
//! wrapped so that a commit that stored something new:
//! - in one process (fluxgate-local), wakes the process's drain loop, which runs at once;
//! - where ingest is its own function (Lambda, Cloud Run), leases and publishes those events
//!   itself, through [`Drain::publish_now`].
//!
//! Either way the rows are leased the way a drain run leases them, so an event is never
//! published twice by eager publish and a scheduled run racing each other, and nothing is lost
//! when the process dies between the commit and the publish: the row is still PENDING (or its
//! lease runs out) and the next run takes it.
//!
//! A function publishes before ingest answers, because neither platform lets work run after the answer:
//! Lambda freezes the environment, and Cloud Run throttles the CPU outside a request. It is
//! bounded by a timeout, and concurrent requests' publishes are coalesced into one
//! ([`crate::coalesce`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use chrono::TimeDelta;
use fluxgate::config::{DrainConfig, parse_duration};
use fluxgate::error::Result;
use fluxgate::event::{Event, EventKey};
use fluxgate::queue::{self, QueueConfig, QueueKind};
use fluxgate::store::{EventWriter, Readiness, Store, StoredEvent};

use crate::Drain;
use crate::coalesce::{CoalescingPublisher, Waited};

/// Eager publish from ingest, when it runs as its own function: on by default wherever a
/// managed queue (`FLUXGATE_QUEUE=sqs|pubsub`) is configured.
#[derive(Clone, clap::Args)]
pub struct EagerConfig {
    /// Publish newly stored events before answering, besides the scheduled drain.
    #[arg(long, env = "FLUXGATE_EAGER_PUBLISH", default_value_t = true, action = clap::ArgAction::Set)]
    pub eager_publish: bool,
    /// Longest ingest waits for eager publish before it answers; the next drain run publishes
    /// what is left.
    #[arg(long, env = "FLUXGATE_EAGER_PUBLISH_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub eager_publish_timeout: TimeDelta,
    #[command(flatten)]
    pub queue: QueueConfig,
    /// How a publish is packed, leased and retried: the drain's own settings.
    #[command(flatten)]
    pub drain: DrainConfig,
}

impl EagerConfig {
    /// `store` as ingest writes to it: publishing eagerly when these settings call for it.
    pub async fn writer(&self, store: Arc<dyn Store>) -> Result<Arc<dyn EventWriter>> {
        if !self.eager_publish || self.queue.queue == QueueKind::Memory {
            return Ok(store);
        }
        let drain = Drain::new(
            store.clone(),
            queue::connect(&self.queue).await?,
            self.drain.clone(),
        );
        let timeout = self
            .eager_publish_timeout
            .to_std()
            .unwrap_or(Duration::from_secs(1));
        Ok(Arc::new(EagerWriter::publishing(store, drain, timeout)))
    }
}

/// What happens after a commit that stored new events.
enum Eager {
    /// Wake the process's drain loop (one permit is kept if it is busy: it runs again).
    Wake(Arc<Notify>),
    /// Lease and publish the new events now (with other requests' that commit meanwhile),
    /// waiting at most `timeout`.
    Publish {
        publisher: CoalescingPublisher,
        timeout: Duration,
    },
}

/// An [`EventWriter`] that moves newly stored events on at once (see the module's text).
pub struct EagerWriter {
    inner: Arc<dyn EventWriter>,
    eager: Eager,
}

impl EagerWriter {
    /// For fluxgate-local: each commit that stored something wakes `drain_loop`.
    pub fn waking(inner: Arc<dyn EventWriter>, drain_loop: Arc<Notify>) -> Self {
        Self {
            inner,
            eager: Eager::Wake(drain_loop),
        }
    }

    /// For ingest as its own function: each commit's new events are published by `drain`
    /// before the answer, waiting at most `timeout`. Starts the publishing task, so it is
    /// called within the runtime.
    pub fn publishing(inner: Arc<dyn EventWriter>, drain: Drain, timeout: Duration) -> Self {
        Self {
            inner,
            eager: Eager::Publish {
                publisher: CoalescingPublisher::start(drain),
                timeout,
            },
        }
    }
}

#[async_trait]
impl Readiness for EagerWriter {
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

#[async_trait]
impl EventWriter for EagerWriter {
    async fn insert_unique(&self, events: &[&Event]) -> Result<Vec<(bool, String)>> {
        let stored = self.inner.insert_unique(events).await?;
        let new = || {
            events
                .iter()
                .zip(&stored)
                .filter(|(_, (inserted, _))| *inserted)
                .map(|(event, _)| event.key())
        };
        match &self.eager {
            Eager::Wake(drain_loop) if new().next().is_some() => drain_loop.notify_one(),
            Eager::Publish { publisher, timeout } => {
                let keys: Vec<EventKey> = new().collect();
                let events = keys.len();
                if events > 0 && publisher.publish(keys, *timeout).await == Waited::TimedOut {
                    tracing::warn!(
                        events,
                        timeout_ms = timeout.as_millis() as u64,
                        "eager publish took longer than the timeout; it goes on, and the next \
                         drain run publishes what it leaves"
                    );
                }
            }
            Eager::Wake(_) => {}
        }
        Ok(stored)
    }

    async fn get_event(&self, key: &EventKey) -> Result<Option<StoredEvent>> {
        self.inner.get_event(key).await
    }
}
