//! Eager publish in one process: the drain runs as soon as ingest has stored new events,
//! instead of at its next tick. Ingest's store is wrapped so that a commit that stored
//! something wakes the drain; the drain claims the rows as always (same leases, same
//! statements), so an event is never published twice by the wake and the tick racing, and
//! nothing is lost when the process dies between the commit and the publish: the row is
//! still PENDING and the next run takes it.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use fluxgate::error::Result;
use fluxgate::event::{Event, EventKey};
use fluxgate::store::{EventWriter, Readiness, StoredEvent};

/// An [`EventWriter`] that wakes `stored` after each commit that stored a new event.
pub struct WakingWriter {
    inner: Arc<dyn EventWriter>,
    stored: Arc<Notify>,
}

impl WakingWriter {
    pub fn new(inner: Arc<dyn EventWriter>, stored: Arc<Notify>) -> Self {
        Self { inner, stored }
    }
}

#[async_trait]
impl Readiness for WakingWriter {
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

#[async_trait]
impl EventWriter for WakingWriter {
    async fn insert_unique(&self, events: &[&Event]) -> Result<Vec<(bool, String)>> {
        let stored = self.inner.insert_unique(events).await?;
        if stored.iter().any(|(inserted, _)| *inserted) {
            // One permit is kept if the drain is busy: it runs again right after.
            self.stored.notify_one();
        }
        Ok(stored)
    }

    async fn get_event(&self, key: &EventKey) -> Result<Option<StoredEvent>> {
        self.inner.get_event(key).await
    }
}
