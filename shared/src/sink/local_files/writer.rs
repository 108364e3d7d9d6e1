//! The one thread that writes the warehouse folder. Batches that arrive while it is busy are
//! written together and made durable with one sync per file (group commit), so concurrent
//! worker batches share the cost of `fsync` instead of queueing for it one by one.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::RollPolicy;
use super::part::OpenPart;
use crate::event::EventKey;

/// A row ready to be appended: its key, its partition folder and its JSON line.
pub(super) struct EncodedRow {
    pub key: EventKey,
    pub partition: PathBuf,
    pub line: Vec<u8>,
}

pub(super) enum Command {
    /// Append these rows (skipping keys already written) and answer once they are durable.
    Write {
        rows: Vec<EncodedRow>,
        done: oneshot::Sender<std::io::Result<()>>,
    },
    /// Close every open part, so that all rows written so far are visible.
    Flush {
        done: oneshot::Sender<std::io::Result<()>>,
    },
}

pub(super) struct Writer {
    root: PathBuf,
    policy: RollPolicy,
    /// Keys already written: the de-duplication index.
    written: HashSet<EventKey>,
    open: HashMap<PathBuf, OpenPart>,
}

impl Writer {
    pub fn new(root: &Path, policy: RollPolicy, written: HashSet<EventKey>) -> Self {
        Self {
            root: root.to_owned(),
            policy,
            written,
            open: HashMap::new(),
        }
    }

    /// Serves commands until every sender is gone, then closes the open parts.
    pub fn run(mut self, commands: Receiver<Command>) {
        // Often enough that a part is closed close to its age limit when nothing is written.
        let tick =
            (self.policy.max_age() / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            let first = match commands.recv_timeout(tick) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    self.roll_due(Instant::now());
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut group = vec![first];
            group.extend(commands.try_iter());
            self.serve(group);
            self.roll_due(Instant::now());
        }
        if let Err(e) = self.roll_all() {
            tracing::warn!(root = %self.root.display(), error = %e, "closing the warehouse's open parts; the next start closes them");
        }
    }

    fn serve(&mut self, group: Vec<Command>) {
        let mut writes = Vec::new();
        let mut flushes = Vec::new();
        for command in group {
            match command {
                Command::Write { rows, done } => writes.push((rows, done)),
                Command::Flush { done } => flushes.push(done),
            }
        }
        if !writes.is_empty() {
            let outcome = self.append_all(writes.iter().flat_map(|(rows, _)| rows));
            for (_, done) in writes {
                let _ = done.send(clone_outcome(&outcome));
            }
        }
        if !flushes.is_empty() {
            let outcome = self.roll_all();
            for done in flushes {
                let _ = done.send(clone_outcome(&outcome));
            }
        }
    }

    /// Appends every row not yet written to its partition's open part, then syncs each part
    /// it touched once. The index learns a part's keys once that part is durable; a part whose
    /// append or sync failed goes back to what it last made durable, so a failed row, written
    /// again on redelivery, is never there twice.
    fn append_all<'a>(
        &mut self,
        rows: impl Iterator<Item = &'a EncodedRow>,
    ) -> std::io::Result<()> {
        let mut pending: HashMap<&Path, Pending> = HashMap::new();
        let mut seen = HashSet::new();
        for row in rows {
            if self.written.contains(&row.key) || !seen.insert(&row.key) {
                continue;
            }
            let part = pending.entry(row.partition.as_path()).or_default();
            part.body.extend_from_slice(&row.line);
            part.keys.push(row.key.clone());
        }
        let mut outcome = Ok(());
        for (partition, lines) in pending {
            match self.append_durably(partition, &lines) {
                Ok(()) => self.written.extend(lines.keys),
                Err(e) => outcome = Err(e),
            }
        }
        outcome
    }

    fn append_durably(&mut self, partition: &Path, lines: &Pending) -> std::io::Result<()> {
        let part = match self.open.entry(partition.to_owned()) {
            Entry::Occupied(open) => open.into_mut(),
            Entry::Vacant(slot) => slot.insert(OpenPart::create(&self.root.join(partition))?),
        };
        part.append(&lines.body, lines.keys.len() as u64)
            .and_then(|()| part.sync())
            .inspect_err(|_| part.rewind())
    }

    fn roll_due(&mut self, now: Instant) {
        let due: Vec<PathBuf> = self
            .open
            .iter()
            .filter(|(_, part)| part.is_due(&self.policy, now))
            .map(|(partition, _)| partition.clone())
            .collect();
        for partition in due {
            if let Some(part) = self.open.remove(&partition)
                && let Err(e) = part.roll()
            {
                // Its rows are durable; the next start makes the part visible.
                tracing::warn!(partition = %partition.display(), error = %e, "closing a warehouse part");
            }
        }
    }

    fn roll_all(&mut self) -> std::io::Result<()> {
        let mut outcome = Ok(());
        for (_, part) in self.open.drain() {
            if let Err(e) = part.roll() {
                outcome = Err(e);
            }
        }
        outcome
    }
}

/// One partition's share of a group: its lines, and the keys they hold.
#[derive(Default)]
struct Pending {
    body: Vec<u8>,
    keys: Vec<EventKey>,
}

fn clone_outcome(outcome: &std::io::Result<()>) -> std::io::Result<()> {
    match outcome {
        Ok(()) => Ok(()),
        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
    }
}
