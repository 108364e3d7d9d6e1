//! The BigQuery sink's settings (`FLUXGATE_SINK=bigquery`), and the one place that decides its
//! credentials.

use clap::Args;

#[cfg(feature = "bigquery")]
use super::{BigQueryCredentials, BigQueryEndpoints};
use super::{BigQueryTarget, BigQueryWriteMode};
use crate::error::{Error, Result};
#[cfg(feature = "bigquery")]
use crate::secrets::SecretString;
#[cfg(all(feature = "bigquery", feature = "secrets-manager"))]
use crate::secrets::SecretsManager;

#[derive(Debug, Clone, Args)]
pub struct BigQueryConfig {
    /// Google Cloud project of the BigQuery dataset (required with `--sink bigquery`).
    #[arg(long, env = "FLUXGATE_BIGQUERY_PROJECT")]
    pub bigquery_project: Option<String>,
    /// BigQuery dataset; created when missing.
    #[arg(long, env = "FLUXGATE_BIGQUERY_DATASET", default_value = "fluxgate")]
    pub bigquery_dataset: String,
    /// BigQuery table; created when missing, partitioned by event_date and clustered by
    /// tenant_id, event_type.
    #[arg(long, env = "FLUXGATE_BIGQUERY_TABLE", default_value = "events")]
    pub bigquery_table: String,
    /// Location of the dataset when fluxgate creates it (such as `US`, `EU`, `europe-west1`);
    /// BigQuery's default when unset. An existing dataset keeps its own.
    #[arg(long, env = "FLUXGATE_BIGQUERY_LOCATION")]
    pub bigquery_location: Option<String>,
    /// Root URL of a BigQuery emulator (such as `http://127.0.0.1:9050`). When set, requests go
    /// there with a fixed bearer token instead of Google credentials.
    #[arg(long, env = "FLUXGATE_BIGQUERY_ENDPOINT")]
    pub bigquery_endpoint: Option<String>,
    /// gRPC endpoint of the Storage Write API when it is not Google's: an emulator's
    /// `http://127.0.0.1:9060` (no credentials), or a regional `https://…` endpoint.
    #[arg(long, env = "FLUXGATE_BIGQUERY_GRPC_ENDPOINT")]
    pub bigquery_grpc_endpoint: Option<String>,
    /// How rows reach the table: `storage-write` (Storage Write API, pending streams with
    /// offsets: exactly-once, $0.025/GiB), `load` (batch load jobs: free, and what the
    /// BigQuery sandbox allows) or `streaming` (legacy insertAll, $0.05/GiB).
    #[arg(
        long,
        env = "FLUXGATE_BIGQUERY_WRITE_MODE",
        value_enum,
        default_value = "storage-write"
    )]
    pub bigquery_write_mode: BigQueryWriteMode,
    /// AWS Secrets Manager secret holding a service-account key JSON (for running on AWS).
    /// Unset: Application Default Credentials (the metadata server on Cloud Run,
    /// `GOOGLE_APPLICATION_CREDENTIALS` elsewhere).
    #[arg(long, env = "FLUXGATE_BIGQUERY_CREDENTIALS_SECRET_ID")]
    pub bigquery_credentials_secret_id: Option<String>,
}

impl BigQueryConfig {
    /// The table rows go to; a project is required.
    pub fn target(&self) -> Result<BigQueryTarget> {
        let project = self
            .bigquery_project
            .clone()
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| {
                Error::setting(
                    "FLUXGATE_BIGQUERY_PROJECT",
                    "FLUXGATE_SINK=bigquery needs it",
                )
            })?;
        Ok(BigQueryTarget {
            project,
            dataset: self.bigquery_dataset.clone(),
            table: self.bigquery_table.clone(),
            location: self.bigquery_location.clone(),
        })
    }
}

#[cfg(feature = "bigquery")]
impl BigQueryConfig {
    /// Where requests go: Google's endpoints, or an emulator's. Storage-write against an
    /// emulator needs its gRPC endpoint too (the REST root does not tell the gRPC port).
    pub fn endpoints(&self) -> Result<BigQueryEndpoints> {
        let endpoints = BigQueryEndpoints {
            rest: self
                .bigquery_endpoint
                .clone()
                .filter(|e| !e.trim().is_empty()),
            grpc: self
                .bigquery_grpc_endpoint
                .clone()
                .filter(|e| !e.trim().is_empty()),
        };
        if self.bigquery_write_mode == BigQueryWriteMode::StorageWrite
            && endpoints.rest.is_some()
            && endpoints.grpc.is_none()
        {
            return Err(Error::setting(
                "FLUXGATE_BIGQUERY_GRPC_ENDPOINT",
                "FLUXGATE_BIGQUERY_WRITE_MODE=storage-write against an emulator \
                 (FLUXGATE_BIGQUERY_ENDPOINT) needs the emulator's gRPC endpoint, \
                 such as http://127.0.0.1:9060",
            ));
        }
        Ok(endpoints)
    }

    /// Which credentials the sink uses: a fixed token for an emulator
    /// (`FLUXGATE_BIGQUERY_ENDPOINT`), else the service-account key in the AWS secret
    /// `FLUXGATE_BIGQUERY_CREDENTIALS_SECRET_ID` (fetched once, here), else Application
    /// Default Credentials. Reaches Secrets Manager only when a secret is named.
    pub async fn credentials(&self) -> Result<BigQueryCredentials> {
        self.credentials_from(|secret_id| {
            crate::secrets::fetch_secret_string(
                "FLUXGATE_BIGQUERY_CREDENTIALS_SECRET_ID",
                secret_id,
            )
        })
        .await
    }

    /// [`Self::credentials`] with the caller's Secrets Manager client.
    #[cfg(feature = "secrets-manager")]
    pub async fn credentials_with(&self, secrets: &SecretsManager) -> Result<BigQueryCredentials> {
        self.credentials_from(|secret_id| secrets.secret_string(secret_id))
            .await
    }

    /// [`Self::credentials`], the key's secret read by `fetch`: one rule for the functions and
    /// for the tests (a client pointed at moto).
    async fn credentials_from<'a, F, Fetched>(&'a self, fetch: F) -> Result<BigQueryCredentials>
    where
        F: FnOnce(&'a str) -> Fetched,
        Fetched: std::future::Future<Output = Result<SecretString>>,
    {
        Ok(match self.key_secret() {
            Some(secret_id) => BigQueryCredentials::ServiceAccountKey(fetch(secret_id).await?),
            None => self.credentials_without_secret(),
        })
    }

    /// The key's secret, unless an emulator (which takes any token) is configured.
    fn key_secret(&self) -> Option<&str> {
        match &self.bigquery_endpoint {
            Some(_) => None,
            None => self.bigquery_credentials_secret_id.as_deref(),
        }
    }

    fn credentials_without_secret(&self) -> BigQueryCredentials {
        match &self.bigquery_endpoint {
            Some(_) => BigQueryCredentials::Emulator,
            None => BigQueryCredentials::ApplicationDefault,
        }
    }
}
