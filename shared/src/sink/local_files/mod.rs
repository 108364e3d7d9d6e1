//! The warehouse as a folder: JSON Lines in Hive-style partitions
//! `event_date=YYYY-MM-DD/tenant_id=…/part-….jsonl`, which DuckDB, Spark, Polars and friends
//! read as they are (`read_json('…/**/*.jsonl', hive_partitioning = true)`).
//!
//! The partition columns live in the path only, as Hive layout expects (Spark refuses a column
//! that is both in the path and in the file). Rows go into one open part per partition, under
//! a hidden name, and are durable before a write is acknowledged; the part is renamed to its
//! visible name when it rolls (by rows, bytes or age, [`RollPolicy`]), so files have a sensible
//! size and a reader never sees half of one. After a crash, the next open makes the parts left
//! open visible.

mod part;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{RowResult, Sink, WarehouseRow};
use crate::config::parse_duration;
use crate::error::{Error, Result};
use crate::event::EventKey;
use crate::json_object::JsonObject;
use writer::{Command, EncodedRow, Writer};

/// The local-file warehouse's settings (`FLUXGATE_SINK=local-files`).
#[derive(Debug, Clone, clap::Args)]
pub struct LocalFilesConfig {
    /// Folder of the local-file warehouse (JSON Lines, Hive-style partitions).
    #[arg(
        long,
        env = "FLUXGATE_WAREHOUSE_DIR",
        default_value = "./.fluxgate/warehouse"
    )]
    pub warehouse_dir: PathBuf,
    #[command(flatten)]
    pub roll: RollPolicy,
}

/// When an open part file is closed and becomes visible to readers: whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct RollPolicy {
    /// Longest a part file stays open: rows reach readers at most this long after they were
    /// written. Longer makes fewer, larger files.
    #[arg(long = "warehouse-roll-after", env = "FLUXGATE_WAREHOUSE_ROLL_AFTER", default_value = "1s", value_parser = parse_duration)]
    pub max_age: TimeDelta,
    /// Most rows in one part file.
    #[arg(long = "warehouse-roll-rows", env = "FLUXGATE_WAREHOUSE_ROLL_ROWS", default_value_t = RollPolicy::MAX_ROWS)]
    pub max_rows: u64,
    /// Most bytes in one part file.
    #[arg(long = "warehouse-roll-bytes", env = "FLUXGATE_WAREHOUSE_ROLL_BYTES", default_value_t = RollPolicy::MAX_BYTES)]
    pub max_bytes: u64,
}

impl RollPolicy {
    pub const MAX_ROWS: u64 = 1_000_000;
    pub const MAX_BYTES: u64 = 128 * 1024 * 1024;

    pub(crate) fn max_age(&self) -> Duration {
        self.max_age.to_std().unwrap_or(Duration::ZERO)
    }
}

impl Default for RollPolicy {
    fn default() -> Self {
        Self {
            max_age: TimeDelta::seconds(1),
            max_rows: Self::MAX_ROWS,
            max_bytes: Self::MAX_BYTES,
        }
    }
}

pub struct LocalFileSink {
    root: PathBuf,
    /// To the one writer thread ([`writer`]); it closes the open parts when this is dropped.
    writer: mpsc::Sender<Command>,
}

impl LocalFileSink {
    /// Opens (and creates) the warehouse folder with the default [`RollPolicy`].
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(root, RollPolicy::default()).await
    }

    /// Opens (and creates) the warehouse folder, makes the parts a crash left open visible,
    /// indexes the rows it holds, and starts its writer.
    pub async fn open_with(root: impl Into<PathBuf>, policy: RollPolicy) -> Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root).await.map_err(|e| {
            Error::setting(
                "FLUXGATE_WAREHOUSE_DIR",
                format!(
                    "cannot create {}: {e}; set FLUXGATE_WAREHOUSE_DIR to a writable folder",
                    root.display()
                ),
            )
        })?;
        let scan_root = root.clone();
        let written = tokio::task::spawn_blocking(move || index_existing(&scan_root))
            .await
            .map_err(|e| Error::sink_caused(format!("indexing {}", root.display()), e))??;
        let (sender, commands) = mpsc::channel();
        let writer = Writer::new(&root, policy, written);
        std::thread::Builder::new()
            .name("warehouse-files".into())
            .spawn(move || writer.run(commands))?;
        Ok(Self {
            root,
            writer: sender,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<std::io::Result<()>>) -> Command,
    ) -> Result<()> {
        let (done, answer) = oneshot::channel();
        let stopped = || Error::sink("the warehouse writer has stopped");
        self.writer.send(command(done)).map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(|e| Error::sink_caused(format!("writing to {}", self.root.display()), e))
    }
}

#[async_trait]
impl Sink for LocalFileSink {
    async fn write_rows(&self, rows: &[WarehouseRow]) -> Result<Vec<RowResult>> {
        // Encoded here, on the caller's task, so that concurrent batches encode in parallel and
        // the writer thread only appends.
        let encoded = rows.iter().map(encode).collect::<Result<Vec<_>>>()?;
        self.ask(|done| Command::Write {
            rows: encoded,
            done,
        })
        .await?;
        Ok(rows.iter().map(|_| Ok(())).collect())
    }

    async fn flush(&self) -> Result<()> {
        self.ask(|done| Command::Flush { done }).await
    }
}

/// A row as a part file holds it: the partition columns (`event_date`, `tenant_id`) live in
/// the path only, as Hive layout expects.
#[derive(Serialize)]
struct FileRow<'a> {
    correlation_id: Option<&'a str>,
    event_id: &'a str,
    event_ts: DateTime<Utc>,
    event_type: &'a str,
    ingested_at: DateTime<Utc>,
    metadata: Option<&'a JsonObject>,
    payload: &'a JsonObject,
    payload_sha256: &'a str,
    received_at: DateTime<Utc>,
    source: Option<&'a str>,
}

impl<'a> From<&'a WarehouseRow> for FileRow<'a> {
    fn from(row: &'a WarehouseRow) -> Self {
        Self {
            correlation_id: row.correlation_id.as_deref(),
            event_id: &row.event_id,
            event_ts: row.event_ts,
            event_type: &row.event_type,
            ingested_at: row.ingested_at,
            metadata: row.metadata.as_ref(),
            payload: &row.payload,
            payload_sha256: &row.payload_sha256,
            received_at: row.received_at,
            source: row.source.as_deref(),
        }
    }
}

/// Just the key of a line; the rest is skipped unread (its numbers may not fit an f64).
#[derive(Deserialize)]
struct LineKey {
    event_id: String,
}

fn encode(row: &WarehouseRow) -> Result<EncodedRow> {
    let mut line = serde_json::to_vec(&FileRow::from(row))
        .map_err(|e| Error::sink_caused("a row cannot be encoded as JSON", e))?;
    line.push(b'\n');
    Ok(EncodedRow {
        key: row.key(),
        partition: PathBuf::from(format!("event_date={}", row.event_date))
            .join(format!("tenant_id={}", row.tenant_id)),
        line,
    })
}

/// Makes the parts a crash left open visible, then reads every part file once and collects
/// the keys it holds.
fn index_existing(root: &Path) -> Result<HashSet<EventKey>> {
    let mut keys = HashSet::new();
    for date_dir in read_dirs(root, "event_date=")? {
        for (tenant_dir, tenant) in read_dirs(&date_dir, "tenant_id=")?
            .into_iter()
            .filter_map(|dir| partition_value(&dir, "tenant_id=").map(|t| (dir, t)))
        {
            for entry in std::fs::read_dir(&tenant_dir)? {
                let path = entry?.path();
                if part::is_open_part(&path) {
                    part::recover(&path)?;
                }
            }
            for entry in std::fs::read_dir(&tenant_dir)? {
                let path = entry?.path();
                let is_part = path.extension().is_some_and(|ext| ext == "jsonl")
                    && !path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if !is_part {
                    continue;
                }
                for line in std::fs::read_to_string(&path)?
                    .lines()
                    .filter(|l| !l.is_empty())
                {
                    let row: LineKey = serde_json::from_str(line)
                        .map_err(|e| Error::sink_caused(path.display().to_string(), e))?;
                    keys.insert(EventKey {
                        tenant_id: tenant.clone(),
                        event_id: row.event_id,
                    });
                }
            }
        }
    }
    Ok(keys)
}

fn read_dirs(parent: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(parent)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() && entry.file_name().to_string_lossy().starts_with(prefix) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

fn partition_value(dir: &Path, prefix: &str) -> Option<String> {
    dir.file_name()?
        .to_str()?
        .strip_prefix(prefix)
        .map(str::to_owned)
}
