//! The warehouse as a BigQuery table, shared by the AWS and the Google Cloud deployments.
//!
//! - Rows go in one of three ways ([`BigQueryWriteMode`], `FLUXGATE_BIGQUERY_WRITE_MODE`), one
//!   file each: the Storage Write API (`storage_write.rs`, the default: a PENDING stream per
//!   batch with offsets, committed at once), batch load jobs (`load.rs`: NDJSON uploads with a
//!   job id derived from the batch; free, and what the BigQuery sandbox allows), or streaming
//!   inserts (`streaming.rs`, `tabledata.insertAll` with insert ids).
//! - Exactly once: the worker's DONE check keeps a redelivered message from being written
//!   again. What it cannot see is a crash between the warehouse's commit and recording DONE;
//!   for such a redelivery (the queue's receive count, or attempts counted in the outbox) the
//!   worker first asks which rows the table holds ([`Sink::held`], one query, `held.rs`) and
//!   skips them. First deliveries make no such query. Storage-write commits a batch as a
//!   whole (all or nothing), and a load job's id makes a retried batch a 409, so neither leaves
//!   half a batch behind to confuse that check; insertAll's insert ids are only best-effort
//!   (about a minute in BigQuery, and bqemulator ignores them).
//! - The dataset and table are created when missing (`table.rs`), at the first write rather
//!   than at connect, so a cold start makes no BigQuery call; once seen or created, the process
//!   remembers it and never asks again.
//! - Credentials (`auth.rs`): Application Default Credentials, a service-account key JSON (on
//!   AWS, from Secrets Manager), or none for an emulator. The REST calls are `rest.rs`: JSON
//!   on reqwest (the version google-cloud-auth brings), with google-cloud-auth's cached token.
//!
//! The client is the cargo feature `bigquery` (the worker's builds); the settings and the
//! target are here without it, so a build without the client can say what is missing.

#[cfg(feature = "bigquery")]
mod auth;
pub mod config;
#[cfg(feature = "bigquery")]
mod held;
#[cfg(feature = "bigquery")]
mod json_row;
#[cfg(feature = "bigquery")]
mod load;
#[cfg(feature = "bigquery")]
mod rest;
#[cfg(feature = "bigquery-storage-write")]
mod storage_write;
#[cfg(feature = "bigquery")]
mod streaming;
#[cfg(feature = "bigquery")]
mod table;

#[cfg(feature = "bigquery")]
use std::collections::{HashMap, HashSet};
#[cfg(feature = "bigquery")]
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(feature = "bigquery")]
use async_trait::async_trait;

#[cfg(feature = "bigquery")]
use super::{RowResult, Sink, WarehouseRow};
#[cfg(feature = "bigquery")]
use crate::error::Result;
#[cfg(feature = "bigquery")]
use crate::event::EventKey;

#[cfg(feature = "bigquery")]
pub use auth::BigQueryCredentials;
pub use config::BigQueryConfig;
#[cfg(feature = "bigquery")]
pub use table::{CLUSTERING_FIELDS, PARTITION_FIELD, SchemaField, events_schema};

/// How rows reach the table (`FLUXGATE_BIGQUERY_WRITE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BigQueryWriteMode {
    /// The Storage Write API: one PENDING stream per batch, appended with offsets and
    /// committed as a whole. Exactly once per batch; $0.025/GiB (2 TiB a month free);
    /// rows are queryable at once. Needs the `bigquery-storage-write` feature.
    #[default]
    StorageWrite,
    /// Batch load jobs of newline-delimited JSON, one per worker batch, with a job id derived
    /// from the batch. Free, and allowed in the BigQuery sandbox; 1,500 jobs per table a day.
    Load,
    /// `tabledata.insertAll` (legacy streaming): queryable within seconds; $0.05/GiB; not
    /// allowed in the sandbox.
    Streaming,
}

impl BigQueryWriteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StorageWrite => "storage-write",
            Self::Load => "load",
            Self::Streaming => "streaming",
        }
    }
}

/// Where requests go; `None` for Google's own endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BigQueryEndpoints {
    /// REST root (tables, queries, insertAll, load uploads), such as `http://127.0.0.1:9050`.
    pub rest: Option<String>,
    /// Storage Write API (gRPC), such as `http://127.0.0.1:9060`.
    pub grpc: Option<String>,
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
/// The mode's writer, built once.
enum Writer {
    Streaming,
    Load,
    #[cfg(feature = "bigquery-storage-write")]
    StorageWrite(Box<storage_write::StorageWriter>),
}

#[cfg(feature = "bigquery")]
pub struct BigQuerySink {
    rest: rest::Rest,
    target: BigQueryTarget,
    writer: Writer,
    /// Set once the table is known to exist; cleared when BigQuery says it is gone.
    table_ready: AtomicBool,
    /// Lets one writer at a time check or create the table, so concurrent first writes of a
    /// process make one set of calls.
    ensure_lock: tokio::sync::Mutex<()>,
}

#[cfg(feature = "bigquery")]
impl BigQuerySink {
    /// The sink its settings describe.
    pub async fn from_config(config: &BigQueryConfig) -> Result<Self> {
        Self::connect(
            config.target()?,
            config.credentials().await?,
            &config.endpoints()?,
            config.bigquery_write_mode,
        )
        .await
    }

    /// Builds the clients; makes no request (credentials are exchanged for a token, and the
    /// table checked, at the first write).
    pub async fn connect(
        target: BigQueryTarget,
        credentials: BigQueryCredentials,
        endpoints: &BigQueryEndpoints,
        mode: BigQueryWriteMode,
    ) -> Result<Self> {
        let auth = auth::GoogleAuth::new(&credentials)?;
        let rest = rest::Rest::new(endpoints.rest.as_deref(), auth.clone());
        let writer = match mode {
            BigQueryWriteMode::Streaming => Writer::Streaming,
            BigQueryWriteMode::Load => Writer::Load,
            #[cfg(feature = "bigquery-storage-write")]
            BigQueryWriteMode::StorageWrite => Writer::StorageWrite(Box::new(
                storage_write::StorageWriter::connect(endpoints.grpc.as_deref(), auth)?,
            )),
            #[cfg(not(feature = "bigquery-storage-write"))]
            BigQueryWriteMode::StorageWrite => {
                return Err(crate::error::Error::setting(
                    "FLUXGATE_BIGQUERY_WRITE_MODE",
                    "storage-write is not built into this binary (cargo feature \
                     bigquery-storage-write of the fluxgate crate); use load or streaming",
                ));
            }
        };
        tracing::info!(table = %target, mode = mode.as_str(), "BigQuery sink ready");
        Ok(Self {
            rest,
            target,
            writer,
            table_ready: AtomicBool::new(false),
            ensure_lock: tokio::sync::Mutex::new(()),
        })
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
        table::ensure(&self.rest, &self.target).await?;
        self.table_ready.store(true, Ordering::Release);
        Ok(())
    }
}

#[cfg(feature = "bigquery")]
/// The rows of a call once each (a message delivered twice into one batch carries a key
/// twice): the first row of each key, and for every row the position of its key's first.
fn first_of_each_key(rows: &[WarehouseRow]) -> (Vec<WarehouseRow>, Vec<usize>) {
    let mut position: HashMap<EventKey, usize> = HashMap::with_capacity(rows.len());
    let mut unique = Vec::with_capacity(rows.len());
    let mut of_row = Vec::with_capacity(rows.len());
    for row in rows {
        let at = *position.entry(row.key()).or_insert_with(|| {
            unique.push(row.clone());
            unique.len() - 1
        });
        of_row.push(at);
    }
    (unique, of_row)
}

#[cfg(feature = "bigquery")]
#[async_trait]
impl Sink for BigQuerySink {
    /// Answers per row: `Ok` written, `Permanent` refused by BigQuery as invalid, `Transient`
    /// worth another delivery. `Err` when nothing could be written (table check failed, or
    /// every request failed: network, 5xx, authentication). A key twice in one call is
    /// written once. Rows already in the table are skipped by the worker's [`Sink::held`]
    /// check on redeliveries; see the module documentation.
    async fn write_rows(&self, rows: &[WarehouseRow]) -> Result<Vec<RowResult>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_table().await?;
        let outcome = match &self.writer {
            Writer::Streaming => streaming::insert_rows(&self.rest, &self.target, rows)
                .await
                .into_parts(),
            Writer::Load => {
                let (unique, of_row) = first_of_each_key(rows);
                let loader = load::Loader { rest: &self.rest };
                let (results, table_missing) = loader.load(&self.target, &unique).await;
                (
                    results.map(|r| of_row.iter().map(|i| r[*i].clone()).collect()),
                    table_missing,
                )
            }
            #[cfg(feature = "bigquery-storage-write")]
            Writer::StorageWrite(writer) => {
                let (unique, of_row) = first_of_each_key(rows);
                let (results, table_missing) = writer.write(&self.target, &unique).await;
                (
                    results.map(|r| of_row.iter().map(|i| r[*i].clone()).collect()),
                    table_missing,
                )
            }
        };
        let (results, table_missing) = outcome;
        if table_missing {
            // Deleted behind our back: check (and re-create) it at the next write.
            tracing::warn!(table = %self.target, "BigQuery table not found; will re-create it");
            self.table_ready.store(false, Ordering::Release);
        }
        results
    }

    /// One query for the keys of `rows` (see `held.rs`); a table that does not exist yet
    /// holds nothing.
    async fn held(&self, rows: &[WarehouseRow]) -> Result<HashSet<EventKey>> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        self.ensure_table().await?;
        held::held(&self.rest, &self.target, rows).await
    }
}

#[cfg(all(test, feature = "bigquery"))]
mod tests {
    use super::*;

    #[test]
    fn a_key_twice_is_kept_once_and_both_rows_point_at_it() {
        let row = |id: &str| WarehouseRow {
            event_id: id.into(),
            ..json_row::tests::test_row()
        };
        let (unique, of_row) = first_of_each_key(&[row("a"), row("b"), row("a")]);
        assert_eq!(unique.len(), 2);
        assert_eq!(of_row, vec![0, 1, 0]);
    }
}
