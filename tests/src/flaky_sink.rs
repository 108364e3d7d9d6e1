//! `FlakySink`: a DECLARED FAKE, beside the one mock ([`crate::pubsub_server`]).
//!
//! It wraps a real warehouse (the local-file sink, or BigQuery on bqemulator) and makes the
//! rows of chosen event types fail, transiently (a timeout) or permanently (refused as
//! invalid), because no real warehouse here can be told to fail one row on demand. Every row
//! it does not fail goes to the real warehouse; the worker, the store and the queue around it
//! are real. Tests that use it say so.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fluxgate::config::WorkerConfig;
use fluxgate::event::{Event, EventKey};
use fluxgate::sink::{LocalFileSink, RowError, RowResult, Sink, WarehouseRow};
use fluxgate::store::{OutboxStatus, Store};

use crate::TestDb;

pub struct FlakySink {
    inner: Arc<dyn Sink>,
    transient: Mutex<Vec<String>>,
    permanent: Vec<String>,
}

impl FlakySink {
    /// The real `inner` warehouse, failing rows of the `transient` event types with
    /// "warehouse timed out" until [`FlakySink::heal`], and of the `permanent` ones always.
    pub fn new(inner: Arc<dyn Sink>, transient: &[&str], permanent: &[&str]) -> Self {
        let owned = |types: &[&str]| types.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
        Self {
            inner,
            transient: Mutex::new(owned(transient)),
            permanent: owned(permanent),
        }
    }

    /// The transient failures end.
    pub fn heal(&self) {
        self.transient.lock().expect("lock").clear();
    }

    /// Rows of `event_type` fail transiently from now on.
    pub fn fail_transiently(&self, event_type: &str) {
        self.transient
            .lock()
            .expect("lock")
            .push(event_type.to_owned());
    }
}

#[async_trait]
impl Sink for FlakySink {
    async fn write_rows(&self, rows: &[WarehouseRow]) -> fluxgate::Result<Vec<RowResult>> {
        let transient = self.transient.lock().expect("lock").clone();
        let fails = |row: &WarehouseRow| {
            transient.contains(&row.event_type) || self.permanent.contains(&row.event_type)
        };
        let pass: Vec<WarehouseRow> = rows.iter().filter(|r| !fails(r)).cloned().collect();
        self.inner.write_rows(&pass).await?;
        Ok(rows
            .iter()
            .map(|row| {
                if self.permanent.contains(&row.event_type) {
                    Err(RowError::Permanent(format!(
                        "{} refused as invalid",
                        row.event_type
                    )))
                } else if transient.contains(&row.event_type) {
                    Err(RowError::Transient("warehouse timed out".into()))
                } else {
                    Ok(())
                }
            })
            .collect())
    }

    async fn held(
        &self,
        rows: &[WarehouseRow],
    ) -> fluxgate::Result<std::collections::HashSet<EventKey>> {
        self.inner.held(rows).await
    }

    async fn flush(&self) -> fluxgate::Result<()> {
        self.inner.flush().await
    }
}

/// Events of tenant acme for each outcome a worker records, stored by [`outcome_events`].
pub struct OutcomeEvents {
    /// order.created: loads.
    pub ok: Event,
    /// order.flaky: fails transiently.
    pub flaky: Event,
    /// order.flaky too, for a test to deliver at its last receive.
    pub last: Event,
    /// order.refused: refused for good.
    pub refused: Event,
}

impl OutcomeEvents {
    /// The worker settings these events are made for: three receives, so `last` delivered a
    /// third time is at its last try.
    pub fn worker_config() -> WorkerConfig {
        WorkerConfig {
            max_receive_count: 3,
        }
    }

    /// What one delivery of each (`last` at its last receive) leaves: ok DONE; flaky FAILED
    /// after one attempt, with the timeout; last DEAD (left to the queue's dead-letter
    /// policy); refused DEAD with the refusal; and ok's row alone in the file warehouse.
    pub async fn assert_first_delivery_recorded(&self, db: &TestDb, warehouse: &Path) {
        let outbox = |event: &Event| {
            let key = event.key();
            async move { db.stored(&key).await.outbox }
        };
        assert_eq!(outbox(&self.ok).await.status, OutboxStatus::Done);
        let failed = outbox(&self.flaky).await;
        assert_eq!(failed.status, OutboxStatus::Failed);
        assert_eq!(failed.attempts, 1);
        assert_eq!(failed.last_error.as_deref(), Some("warehouse timed out"));
        assert_eq!(
            outbox(&self.last).await.status,
            OutboxStatus::Dead,
            "the last receive records DEAD and is left to the queue's dead-letter policy"
        );
        let dead = outbox(&self.refused).await;
        assert_eq!(dead.status, OutboxStatus::Dead);
        assert!(
            dead.last_error
                .as_deref()
                .is_some_and(|e| e.contains("refused")),
            "{dead:?}"
        );
        assert_eq!(crate::warehouse_row_count(warehouse), 1);
    }
}

/// Stores the [`OutcomeEvents`] in `store`, and opens the real file warehouse under
/// `warehouse` behind a `FlakySink` that fails order.flaky transiently and order.refused
/// permanently.
pub async fn outcome_events(
    store: &dyn Store,
    warehouse: &Path,
) -> (OutcomeEvents, Arc<FlakySink>) {
    let typed = |id: &str, event_type: &str| crate::event_of_type("acme", id, event_type);
    let events = OutcomeEvents {
        ok: typed("ok", "order.created"),
        flaky: typed("flaky", "order.flaky"),
        last: typed("last", "order.flaky"),
        refused: typed("refused", "order.refused"),
    };
    store
        .insert_events(&[
            events.ok.clone(),
            events.flaky.clone(),
            events.last.clone(),
            events.refused.clone(),
        ])
        .await
        .expect("insert");
    let files = LocalFileSink::open(warehouse)
        .await
        .expect("the file warehouse");
    let sink = FlakySink::new(Arc::new(files), &["order.flaky"], &["order.refused"]);
    (events, Arc::new(sink))
}

/// One event of acme stored in `store`, and a real file warehouse in a temporary directory
/// (kept as long as the returned `TempDir`).
pub async fn one_event_and_file_warehouse(
    store: &dyn Store,
    id: &str,
) -> (Event, tempfile::TempDir, Arc<LocalFileSink>) {
    let stored = crate::event("acme", id);
    store
        .insert_events(std::slice::from_ref(&stored))
        .await
        .expect("insert");
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = LocalFileSink::open(dir.path())
        .await
        .expect("the file warehouse");
    (stored, dir, Arc::new(sink))
}
