//! The local warehouse's fault switch, so a failure and its replay can be tried on a laptop:
//! while the file `<data-dir>/fail-warehouse` exists, the warehouse refuses every row.
//!
//! An empty file (`touch .fluxgate/fail-warehouse`) refuses rows for good: the worker records
//! the event `DEAD` at once, as for a row the warehouse calls invalid. A file that says
//! `transient` refuses them as a warehouse outage would: the event is `FAILED`, the in-process
//! queue delivers it again after its visibility timeout, and after `FLUXGATE_MAX_RECEIVE_COUNT`
//! deliveries it is `DEAD`. Remove the file and replay: the event is loaded and `DONE`.
//! The file is looked at on every write, so the switch takes effect without a restart.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use fluxgate::error::Result;
use fluxgate::event::EventKey;
use fluxgate::sink::{RowError, RowResult, Sink, WarehouseRow};

pub const FILE_NAME: &str = "fail-warehouse";

/// A warehouse that refuses every row while the switch file exists.
pub struct FaultSwitch {
    warehouse: Arc<dyn Sink>,
    switch: PathBuf,
}

impl FaultSwitch {
    pub fn new(warehouse: Arc<dyn Sink>, data_dir: &Path) -> Self {
        Self {
            warehouse,
            switch: data_dir.join(FILE_NAME),
        }
    }
}

#[async_trait]
impl Sink for FaultSwitch {
    async fn write_rows(&self, rows: &[WarehouseRow]) -> Result<Vec<RowResult>> {
        let Ok(mode) = tokio::fs::read_to_string(&self.switch).await else {
            return self.warehouse.write_rows(rows).await;
        };
        let reason = format!(
            "refused by the local fault switch {} (remove it, then replay)",
            self.switch.display()
        );
        let refusal = if mode.trim().eq_ignore_ascii_case("transient") {
            RowError::Transient(reason)
        } else {
            RowError::Permanent(reason)
        };
        tracing::warn!(rows = rows.len(), switch = %self.switch.display(), "warehouse fault switch is on");
        Ok(rows.iter().map(|_| Err(refusal.clone())).collect())
    }

    async fn held(&self, rows: &[WarehouseRow]) -> Result<HashSet<EventKey>> {
        self.warehouse.held(rows).await
    }

    async fn flush(&self) -> Result<()> {
        self.warehouse.flush().await
    }
}
