//! The warehouse as a BigQuery table, shared by the AWS and the Google Cloud deployments.
//!
//! - Rows go in by streaming insert (`tabledata.insertAll`, see `streaming.rs`), each with the
//!   insert id `tenant_id:event_id`. Real BigQuery de-duplicates insert ids only on a
//!   best-effort basis (about a minute, no guarantee), and bqemulator not at all. The primary
//!   guard against a second row is the worker's DONE check: a redelivered message whose event
//!   is already DONE is acknowledged without writing. The insert id only narrows the remaining
//!   window (a crash between the insert and recording DONE).
//! - The dataset and table are created when missing (`table.rs`), at the first write rather
//!   than at connect, so a cold start makes no BigQuery call; once seen or created, the process
//!   remembers it and never asks again.
//! - Credentials (`auth.rs`): Application Default Credentials, a service-account key JSON (on
//!   AWS, from Secrets Manager), or a fixed token for an emulator.

//!
//! The client is the cargo feature `bigquery` (the worker's builds); the settings and the
//! target are here without it, so a build without the client can say what is missing.

#[cfg(feature = "bigquery")]
mod auth;
pub mod config;
#[cfg(feature = "bigquery")]
mod streaming;
#[cfg(feature = "bigquery")]
mod table;

#[cfg(feature = "bigquery")]
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(feature = "bigquery")]
use async_trait::async_trait;
#[cfg(feature = "bigquery")]
use gcp_bigquery_client::Client;

#[cfg(feature = "bigquery")]
use super::{RowResult, Sink, WarehouseRow};
#[cfg(feature = "bigquery")]
use crate::error::Result;

#[cfg(feature = "bigquery")]
pub use auth::BigQueryCredentials;
pub use config::BigQueryConfig;
#[cfg(feature = "bigquery")]
pub use table::{CLUSTERING_FIELDS, PARTITION_FIELD, events_schema};

/// How rows reach the table. Only streaming inserts exist today. The seam for the modes of a
/// later issue: the Storage Write API (committed streams, exactly-once by stream offsets,
/// cheaper per byte) and batch load jobs (free ingestion, minutes of latency). Each would be
/// one more file beside `streaming.rs` and one more arm in [`BigQuerySink::write_rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BigQueryWriteMode {
    /// `tabledata.insertAll`: rows are queryable within seconds; billed per byte inserted.
    #[default]
    Streaming,
}

/// Which table rows go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQueryTarget {
    pub project: String,
    pub dataset: String,
    pub table: String,
    /// Location of the dataset when this sink creates it; BigQuery's default when `None`.
    pub location: Option<String>,
}

impl std::fmt::Display for BigQueryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.project, self.dataset, self.table)
    }
}

#[cfg(feature = "bigquery")]
pub struct BigQuerySink {
    client: Client,
    target: BigQueryTarget,
    mode: BigQueryWriteMode,
    /// Set once the table is known to exist; cleared when BigQuery says it is gone.
    table_ready: AtomicBool,
    /// Lets one writer at a time check or create the table, so concurrent first writes of a
    /// process make one set of calls.
    ensure_lock: tokio::sync::Mutex<()>,
}

#[cfg(feature = "bigquery")]
impl BigQuerySink {
    /// The sink its settings describe, in the default write mode.
    pub async fn from_config(config: &BigQueryConfig) -> Result<Self> {
        Self::connect(
            config.target()?,
            config.credentials().await?,
            config.bigquery_endpoint.as_deref(),
            BigQueryWriteMode::default(),
        )
        .await
    }

    /// Builds the client; makes no request (credentials are exchanged for a token, and the
    /// table checked, at the first write). `endpoint` is an emulator's root URL (such as
    /// `http://127.0.0.1:9050`), `None` for Google's.
    pub async fn connect(
        target: BigQueryTarget,
        credentials: BigQueryCredentials,
        endpoint: Option<&str>,
        mode: BigQueryWriteMode,
    ) -> Result<Self> {
        let client = auth::build_client(credentials, endpoint).await?;
        Ok(Self {
            client,
            target,
            mode,
            table_ready: AtomicBool::new(false),
            ensure_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The underlying client (tests read rows and table metadata back through it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn target(&self) -> &BigQueryTarget {
        &self.target
    }

    async fn ensure_table(&self) -> Result<()> {
        if self.table_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self.ensure_lock.lock().await;
        if self.table_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        table::ensure(&self.client, &self.target).await?;
        self.table_ready.store(true, Ordering::Release);
        Ok(())
    }
}

#[cfg(feature = "bigquery")]
#[async_trait]
impl Sink for BigQuerySink {
    /// Answers per row: `Ok` written, `Permanent` refused by BigQuery as invalid, `Transient`
    /// worth another delivery. `Err` when nothing could be written (table check failed, or
    /// every insert request failed: network, 5xx, authentication). Rows already in the table
    /// are skipped only as far as BigQuery's best-effort insert-id de-duplication goes; see the
    /// module documentation.
    async fn write_rows(&self, rows: &[WarehouseRow]) -> Result<Vec<RowResult>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_table().await?;
        let outcome = match self.mode {
            BigQueryWriteMode::Streaming => {
                streaming::insert_rows(&self.client, &self.target, rows).await
            }
        };
        if outcome.table_missing {
            // Deleted behind our back: check (and re-create) it at the next write.
            tracing::warn!(table = %self.target, "BigQuery table not found; will re-create it");
            self.table_ready.store(false, Ordering::Release);
        }
        outcome.into_result()
    }
}
