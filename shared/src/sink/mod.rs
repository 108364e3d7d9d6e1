//! Where events end up: the warehouse. One trait, one file per warehouse.

pub mod bigquery;
mod local_files;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{SinkConfig, SinkKind};
use crate::error::{Error, Result};
use crate::event::{Event, EventKey};
use crate::secrets::SecretsManager;

pub use bigquery::BigQuerySink;
pub use local_files::LocalFileSink;

/// Which credentials the BigQuery sink uses: a fixed token for an emulator
/// (`FLUXGATE_BIGQUERY_ENDPOINT`), else the service-account key in the AWS secret
/// `FLUXGATE_BIGQUERY_CREDENTIALS_SECRET_ID` (fetched here, once), else Application Default
/// Credentials.
pub async fn bigquery_credentials_with(
    config: &SinkConfig,
    secrets: &SecretsManager,
) -> Result<bigquery::BigQueryCredentials> {
    match (
        &config.bigquery_endpoint,
        &config.bigquery_credentials_secret_id,
    ) {
        (None, Some(secret_id)) => Ok(bigquery::BigQueryCredentials::ServiceAccountKey(
            secrets.secret_string(secret_id).await?,
        )),
        _ => Ok(bigquery_credentials_with_no_secret(config)),
    }
}

fn bigquery_credentials_with_no_secret(config: &SinkConfig) -> bigquery::BigQueryCredentials {
    if config.bigquery_endpoint.is_some() {
        bigquery::BigQueryCredentials::Emulator
    } else {
        bigquery::BigQueryCredentials::ApplicationDefault
    }
}

/// Builds the configured warehouse. Cheap: the BigQuery sink makes no request until its first
/// write (the AWS secret holding the BigQuery key, when named, is the one call made here).
pub async fn connect(config: &SinkConfig) -> Result<Arc<dyn Sink>> {
    match config.sink {
        SinkKind::LocalFiles => Ok(Arc::new(LocalFileSink::open(&config.warehouse_dir).await?)),
        SinkKind::Bigquery => {
            let project = config.bigquery_project.clone().ok_or_else(|| {
                Error::Config(
                    "FLUXGATE_BIGQUERY_PROJECT is required with FLUXGATE_SINK=bigquery".into(),
                )
            })?;
            let target = bigquery::BigQueryTarget {
                project,
                dataset: config.bigquery_dataset.clone(),
                table: config.bigquery_table.clone(),
                location: config.bigquery_location.clone(),
            };
            let credentials = match &config.bigquery_credentials_secret_id {
                Some(_) if config.bigquery_endpoint.is_none() => {
                    bigquery_credentials_with(config, &SecretsManager::from_env().await).await?
                }
                _ => bigquery_credentials_with_no_secret(config),
            };
            let sink = BigQuerySink::connect(
                target,
                credentials,
                config.bigquery_endpoint.as_deref(),
                bigquery::BigQueryWriteMode::default(),
            )
            .await?;
            Ok(Arc::new(sink))
        }
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
    pub payload: Map<String, Value>,
    pub payload_sha256: String,
    pub metadata: Option<Map<String, Value>>,
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
}
