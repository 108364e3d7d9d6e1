//! Where events end up: the warehouse. One trait, one file per warehouse.

pub mod bigquery;
mod local_files;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::event::{Event, EventKey};
use crate::json_object::JsonObject;

pub use bigquery::BigQueryConfig;
#[cfg(feature = "bigquery")]
pub use bigquery::BigQuerySink;
pub use local_files::{LocalFileSink, LocalFilesConfig, RollPolicy};

/// Which warehouse the worker writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    /// JSON Lines files in Hive-style partitions: [`LocalFilesConfig`].
    LocalFiles,
    /// A BigQuery table (Storage Write API, load jobs or streaming inserts): [`BigQueryConfig`].
    Bigquery,
}

/// The warehouse: which one, and each one's own settings. Read by the worker.
#[derive(Debug, Clone, clap::Args)]
pub struct SinkConfig {
    /// Where loaded events go.
    #[arg(long, env = "FLUXGATE_SINK", value_enum, default_value = "local-files")]
    pub sink: SinkKind,
    #[command(flatten)]
    pub local_files: LocalFilesConfig,
    #[command(flatten)]
    pub bigquery: BigQueryConfig,
}

/// Builds the configured warehouse. Cheap: the BigQuery sink makes no request until its first
/// write (the AWS secret holding the BigQuery key, when named, is the one call made here).
pub async fn connect(config: &SinkConfig) -> Result<Arc<dyn Sink>> {
    match config.sink {
        SinkKind::LocalFiles => Ok(Arc::new(
            LocalFileSink::open_with(&config.local_files.warehouse_dir, config.local_files.roll)
                .await?,
        )),
        #[cfg(feature = "bigquery")]
        SinkKind::Bigquery => Ok(Arc::new(BigQuerySink::from_config(&config.bigquery).await?)),
        #[cfg(not(feature = "bigquery"))]
        SinkKind::Bigquery => Err(crate::Error::not_built(
            "FLUXGATE_SINK",
            "the BigQuery client",
            "aws` or `gcp",
        )),
    }
}

/// One warehouse row: the event flattened for analytics. `tenant_id` + `event_id` is the
/// de-duplication key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WarehouseRow {
    pub tenant_id: String,
    pub event_id: String,
    pub event_type: String,
    pub event_ts: DateTime<Utc>,
    pub event_date: NaiveDate,
    pub source: Option<String>,
    pub payload: JsonObject,
    pub payload_sha256: String,
    pub metadata: Option<JsonObject>,
    pub correlation_id: Option<String>,
    pub received_at: DateTime<Utc>,
    pub ingested_at: DateTime<Utc>,
}

impl WarehouseRow {
    pub fn new(event: &Event, ingested_at: DateTime<Utc>) -> Self {
        Self {
            tenant_id: event.tenant_id.clone(),
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            event_ts: event.event_ts,
            event_date: event.event_date(),
            source: event.source.clone(),
            payload: event.payload.clone(),
            payload_sha256: event.payload_sha256.clone(),
            metadata: event.metadata.clone(),
            correlation_id: event.correlation_id.clone(),
            received_at: event.received_at,
            ingested_at,
        }
    }

    pub fn key(&self) -> EventKey {
        EventKey {
            tenant_id: self.tenant_id.clone(),
            event_id: self.event_id.clone(),
        }
    }
}

/// Why one row was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    /// Worth another delivery (timeouts, quota, the warehouse being down).
    Transient(String),
    /// Will fail the same way every time (the warehouse refuses the row as invalid).
    Permanent(String),
}

impl RowError {
    pub fn message(&self) -> &str {
        match self {
            Self::Transient(m) | Self::Permanent(m) => m,
        }
    }
}

pub type RowResult = std::result::Result<(), RowError>;

#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Writes the rows, skipping any whose key the warehouse already holds, and answers for
    /// each row in order. `Err` means the whole call failed and nothing can be assumed
    /// written; every row is worth another delivery.
    async fn write_rows(&self, rows: &[WarehouseRow]) -> Result<Vec<RowResult>>;

    /// The keys of `rows` the warehouse already holds. The worker asks only about events an
    /// earlier delivery may have written without its outcome being recorded (a redelivery),
    /// and skips those it holds. (Rows rather than keys: a partitioned table is searched by
    /// the rows' dates.) The default holds nothing: for a warehouse whose `write_rows` skips
    /// rows it holds by itself (the files).
    async fn held(&self, _rows: &[WarehouseRow]) -> Result<HashSet<EventKey>> {
        Ok(HashSet::new())
    }

    /// Makes every row written so far visible to the warehouse's readers, for a warehouse that
    /// gathers rows before it publishes them (the file warehouse's open parts); a process calls
    /// it as it stops. Rows are durable once `write_rows` answers, whether or not this runs.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
