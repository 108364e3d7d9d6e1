//! One part file of a partition: appended to while it is open, under a hidden name that no
//! reader matches (`.part-….jsonl.open`), and renamed to `part-….jsonl` when it rolls. A rename
//! is atomic, so a reader sees a part whole or not at all.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::RollPolicy;

/// The suffix of a part that is still being written.
pub(super) const OPEN_SUFFIX: &str = ".open";

pub(super) struct OpenPart {
    dir: PathBuf,
    name: String,
    file: File,
    rows: u64,
    bytes: u64,
    opened: Instant,
    /// Rows and bytes at the last sync: what a failed write goes back to.
    durable: (u64, u64),
}

impl OpenPart {
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let name = format!("part-{}.jsonl", uuid::Uuid::now_v7());
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(dir.join(hidden(&name)))?;
        Ok(Self {
            dir: dir.to_owned(),
            name,
            file,
            rows: 0,
            bytes: 0,
            opened: Instant::now(),
            durable: (0, 0),
        })
    }

    /// Appends complete lines. Not durable until [`OpenPart::sync`].
    pub fn append(&mut self, lines: &[u8], rows: u64) -> std::io::Result<()> {
        // Counted first: a short write still leaves bytes for `rewind` to take back.
        self.rows += rows;
        self.bytes += lines.len() as u64;
        self.file.write_all(lines)
    }

    /// Makes what was appended durable.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.durable = (self.rows, self.bytes);
        Ok(())
    }

    /// Goes back to what was last made durable, after an append or a sync failed, so that rows
    /// the caller is told failed are not found at the next start besides their redelivery.
    pub fn rewind(&mut self) {
        (self.rows, self.bytes) = self.durable;
        if let Err(e) = self.file.set_len(self.bytes) {
            tracing::warn!(part = %self.name, error = %e, "cannot cut a failed write off a warehouse part");
        }
    }

    /// Whether the part is due to be closed by `policy`.
    pub fn is_due(&self, policy: &RollPolicy, now: Instant) -> bool {
        self.rows >= policy.max_rows
            || self.bytes >= policy.max_bytes
            || now.duration_since(self.opened) >= policy.max_age()
    }

    /// Closes the part under its visible name.
    pub fn roll(self) -> std::io::Result<()> {
        std::fs::rename(self.dir.join(hidden(&self.name)), self.dir.join(&self.name))
    }
}

fn hidden(name: &str) -> String {
    format!(".{name}{OPEN_SUFFIX}")
}

/// After a crash: the part `open` held at `path` keeps its complete rows (those whose write the
/// sink may have acknowledged) and becomes visible. A torn last line, from a write that was
/// never acknowledged, is cut off.
pub(super) fn recover(path: &Path) -> std::io::Result<()> {
    let body = match std::fs::read(path) {
        // A writer still stopping (a sink of this folder just dropped) closed it meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    let mut keep = 0;
    for line in body.split_inclusive(|b| *b == b'\n') {
        let complete =
            line.ends_with(b"\n") && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok();
        if !complete {
            break;
        }
        keep += line.len();
    }
    let file = OpenOptions::new().write(true).open(path)?;
    if keep < body.len() {
        file.set_len(keep as u64)?;
    }
    file.sync_all()?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.strip_suffix(OPEN_SUFFIX))
        .ok_or_else(|| std::io::Error::other(format!("not an open part: {}", path.display())))?;
    match std::fs::rename(path, path.with_file_name(name)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether `path` names a part still open (or left open by a crash).
pub(super) fn is_open_part(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".part-") && n.ends_with(OPEN_SUFFIX))
}
