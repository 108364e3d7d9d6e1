//! The warehouse as a folder: JSON Lines in Hive-style partitions
//! `event_date=YYYY-MM-DD/tenant_id=…/part-….jsonl`, which DuckDB, Spark, Polars and friends
//! read as they are (`read_json('…/**/*.jsonl', hive_partitioning = true)`).
//!
//! The partition columns live in the path only, as Hive layout expects (Spark refuses a column
//! that is both in the path and in the file). Each write lands in a new file by an atomic
//! rename, so a reader or a crash never sees half a file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{RowResult, Sink, WarehouseRow};
use crate::error::{Error, Result};
use crate::event::EventKey;
use crate::json_object::JsonObject;

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
}

pub struct LocalFileSink {
    root: PathBuf,
    /// Keys already written: the de-duplication index, rebuilt from the files at open.
    written: Mutex<HashSet<EventKey>>,
}

impl LocalFileSink {
    /// Opens (and creates) the warehouse folder and indexes the rows it already holds.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root).await?;
        let scan_root = root.clone();
        let written = tokio::task::spawn_blocking(move || index_existing(&scan_root))
            .await
            .map_err(|e| Error::sink_caused(format!("indexing {}", root.display()), e))??;
        Ok(Self {
            root,
            written: Mutex::new(written),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[async_trait]
impl Sink for LocalFileSink {
    async fn write_rows(&self, rows: &[WarehouseRow]) -> Result<Vec<RowResult>> {
        // Held across the write so that two concurrent batches cannot both write one key.
        let mut written = self.written.lock().await;
        let mut partitions: BTreeMap<(String, String), Vec<&WarehouseRow>> = BTreeMap::new();
        let mut batch_keys = HashSet::new();
        for row in rows {
            let key = row.key();
            if written.contains(&key) || !batch_keys.insert(key) {
                continue;
            }
            partitions
                .entry((row.event_date.to_string(), row.tenant_id.clone()))
                .or_default()
                .push(row);
        }
        for ((date, tenant), part_rows) in &partitions {
            let dir = self
                .root
                .join(format!("event_date={date}"))
                .join(format!("tenant_id={tenant}"));
            write_part(&dir, part_rows).await?;
        }
        written.extend(batch_keys);
        Ok(rows.iter().map(|_| Ok(())).collect())
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

async fn write_part(dir: &Path, rows: &[&WarehouseRow]) -> Result<()> {
    let mut body = Vec::with_capacity(rows.len() * 256);
    for row in rows {
        serde_json::to_writer(&mut body, &FileRow::from(*row))
            .map_err(|e| Error::sink_caused("a row cannot be encoded as JSON", e))?;
        body.push(b'\n');
    }
    tokio::fs::create_dir_all(dir).await?;
    let name = format!("part-{}.jsonl", uuid::Uuid::now_v7());
    // Readers skip dot-files, so the temporary name is invisible until the rename.
    let temp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&temp, &body).await?;
    let file = tokio::fs::File::open(&temp).await?;
    file.sync_all().await?;
    tokio::fs::rename(&temp, dir.join(name)).await?;
    Ok(())
}

/// Reads every part file once and collects the keys it holds.
fn index_existing(root: &Path) -> Result<HashSet<EventKey>> {
    let mut keys = HashSet::new();
    for date_dir in read_dirs(root, "event_date=")? {
        for (tenant_dir, tenant) in read_dirs(&date_dir, "tenant_id=")?
            .into_iter()
            .filter_map(|dir| partition_value(&dir, "tenant_id=").map(|t| (dir, t)))
        {
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
