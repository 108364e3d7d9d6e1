//! BigQuery test support: the bqemulator that `scripts/test.sh` starts (REST on
//! `FLUXGATE_TEST_BIGQUERY_URL`, default `http://127.0.0.1:9050`, project `fluxgate-test`), a
//! dataset of its own per test, and reading rows and table metadata back through a client of
//! the tests' own (gcp-bigquery-client), not through the sink under test.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use fluxgate::json_object::JsonObject;
use fluxgate::sink::WarehouseRow;
use fluxgate::sink::bigquery::{
    BigQueryCredentials, BigQueryEndpoints, BigQuerySink, BigQueryTarget, BigQueryWriteMode,
};
use fluxgate::sink::{BigQueryConfig, LocalFilesConfig, SinkConfig, SinkKind};
use gcp_bigquery_client::Client;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::ResultSet;
use gcp_bigquery_client::model::table::Table;

use crate::db::TEST_DB_PREFIX;

/// The bqemulator's root URL.
pub const BIGQUERY_URL_ENV: &str = "FLUXGATE_TEST_BIGQUERY_URL";
/// The bqemulator's gRPC endpoint (the Storage Write API).
pub const BIGQUERY_GRPC_URL_ENV: &str = "FLUXGATE_TEST_BIGQUERY_GRPC_URL";
const DEFAULT_BIGQUERY_GRPC_URL: &str = "http://127.0.0.1:9060";
/// The project the emulator serves.
pub const BIGQUERY_PROJECT: &str = "fluxgate-test";
const DEFAULT_BIGQUERY_URL: &str = "http://127.0.0.1:9050";
const TABLE: &str = "events";

/// Every way the BigQuery sink writes, for a check to run in each.
pub const WRITE_MODES: [BigQueryWriteMode; 3] = [
    BigQueryWriteMode::StorageWrite,
    BigQueryWriteMode::Load,
    BigQueryWriteMode::Streaming,
];

/// Runs `check` in each of the [`WRITE_MODES`], one after the other, and fails naming the mode
/// in which it failed.
pub async fn in_each_write_mode<Check>(check: impl Fn(BigQueryWriteMode) -> Check)
where
    Check: Future<Output = ()> + Send + 'static,
{
    for mode in WRITE_MODES {
        // A task of its own, so that a failure anywhere in the check is caught here.
        if let Err(failure) = tokio::spawn(check(mode)).await {
            panic!("in BigQuery write mode {mode:?}: {failure}");
        }
    }
}

/// A dataset of its own on the emulator for one test. Nothing is created here: the sink under
/// test creates dataset and table at its first write.
pub struct TestBigQuery {
    /// The emulator's root URL (give it to the worker as `FLUXGATE_BIGQUERY_ENDPOINT`).
    pub url: String,
    /// Its gRPC endpoint (`FLUXGATE_BIGQUERY_GRPC_ENDPOINT`).
    pub grpc_url: String,
    pub target: BigQueryTarget,
    /// A client of its own, for reading back what the sink under test wrote.
    client: Client,
}

/// The emulator checks no token; the client wants one.
#[derive(Clone)]
struct EmulatorToken;

#[async_trait::async_trait]
impl Authenticator for EmulatorToken {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("fluxgate-tests".to_owned())
    }
}

impl TestBigQuery {
    /// Checks that the emulator answers (panicking with how to start it if not) and picks a
    /// new dataset name.
    pub async fn new() -> Self {
        let url = std::env::var(BIGQUERY_URL_ENV).unwrap_or_else(|_| DEFAULT_BIGQUERY_URL.into());
        let target = BigQueryTarget {
            project: BIGQUERY_PROJECT.into(),
            dataset: format!("{TEST_DB_PREFIX}{}", uuid::Uuid::new_v4().simple()),
            table: TABLE.into(),
            location: None,
        };
        fluxgate::tls::install_crypto_provider();
        let mut builder = ClientBuilder::new();
        builder.with_v2_base_url(format!("{}/bigquery/v2", url.trim_end_matches('/')));
        let client = builder
            .build_from_authenticator(Arc::new(EmulatorToken))
            .await
            .expect("a BigQuery client for the emulator");
        // Any BigQuery answer will do (the dataset does not exist yet: 404).
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            client.dataset().get(&target.project, &target.dataset),
        )
        .await;
        if !matches!(answer, Ok(Ok(_) | Err(BQError::ResponseError { .. }))) {
            let why = match answer {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer within 10 s".into(),
            };
            panic!(
                "bqemulator does not answer at {url} ({BIGQUERY_URL_ENV}): {why}\n\
                 Start it with `bash scripts/test.sh` (it installs and starts bqemulator), or by hand:\n\
                 python scripts/bqemulator_launcher.py start --rest-port 9050 --grpc-port 9060 --project {BIGQUERY_PROJECT}"
            );
        }
        let grpc_url = std::env::var(BIGQUERY_GRPC_URL_ENV)
            .unwrap_or_else(|_| DEFAULT_BIGQUERY_GRPC_URL.into());
        let grpc_address = grpc_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        if tokio::net::TcpStream::connect(&grpc_address).await.is_err() {
            panic!(
                "bqemulator's gRPC port (the Storage Write API) does not answer at {grpc_url} \
                 ({BIGQUERY_GRPC_URL_ENV}); start it with `bash scripts/test.sh`, or by hand with \
                 --grpc-port 9060 as above"
            );
        }
        Self {
            url,
            grpc_url,
            target,
            client,
        }
    }

    /// A streaming sink on the emulator writing to `target`, built as the worker builds it.
    pub async fn sink_at(url: &str, target: BigQueryTarget) -> BigQuerySink {
        let endpoints = BigQueryEndpoints {
            rest: Some(url.to_owned()),
            grpc: None,
        };
        BigQuerySink::connect(
            target,
            BigQueryCredentials::Emulator,
            &endpoints,
            BigQueryWriteMode::Streaming,
        )
        .await
        .expect("a BigQuery client for the emulator")
    }

    /// A new streaming sink on this test's dataset.
    pub async fn sink(&self) -> BigQuerySink {
        Self::sink_at(&self.url, self.target.clone()).await
    }

    /// A new sink on this test's dataset in `mode`.
    pub async fn sink_in(&self, mode: BigQueryWriteMode) -> BigQuerySink {
        BigQuerySink::from_config(&self.config_in(mode))
            .await
            .expect("a BigQuery sink for the emulator")
    }

    /// The BigQuery settings of this test's dataset on the emulator, in `mode`.
    pub fn config_in(&self, mode: BigQueryWriteMode) -> BigQueryConfig {
        BigQueryConfig {
            bigquery_project: Some(self.target.project.clone()),
            bigquery_dataset: self.target.dataset.clone(),
            bigquery_table: self.target.table.clone(),
            bigquery_location: None,
            bigquery_endpoint: Some(self.url.clone()),
            bigquery_grpc_endpoint: Some(self.grpc_url.clone()),
            bigquery_write_mode: mode,
            bigquery_credentials_secret_id: None,
        }
    }

    /// The environment `fluxgate-local` (or the worker) reads to write into this test's
    /// dataset in `mode`.
    pub fn env_in(&self, mode: BigQueryWriteMode) -> Vec<(&'static str, String)> {
        vec![
            ("FLUXGATE_SINK", "bigquery".into()),
            ("FLUXGATE_BIGQUERY_PROJECT", self.target.project.clone()),
            ("FLUXGATE_BIGQUERY_DATASET", self.target.dataset.clone()),
            ("FLUXGATE_BIGQUERY_TABLE", self.target.table.clone()),
            ("FLUXGATE_BIGQUERY_ENDPOINT", self.url.clone()),
            ("FLUXGATE_BIGQUERY_GRPC_ENDPOINT", self.grpc_url.clone()),
            ("FLUXGATE_BIGQUERY_WRITE_MODE", mode.as_str().into()),
        ]
    }

    /// What the worker reads to write into this test's dataset (streaming inserts).
    pub fn sink_config(&self) -> SinkConfig {
        self.sink_config_in(BigQueryWriteMode::Streaming)
    }

    /// What the worker reads to write into this test's dataset in `mode`.
    pub fn sink_config_in(&self, mode: BigQueryWriteMode) -> SinkConfig {
        SinkConfig {
            sink: SinkKind::Bigquery,
            local_files: LocalFilesConfig {
                warehouse_dir: std::env::temp_dir(),
                roll: Default::default(),
            },
            bigquery: self.config_in(mode),
        }
    }

    /// The tests' own client on the emulator.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table's metadata as BigQuery reports it.
    pub async fn table(&self) -> Table {
        self.client()
            .table()
            .get(
                &self.target.project,
                &self.target.dataset,
                &self.target.table,
                None,
            )
            .await
            .expect("tables.get")
    }

    /// The answer to `sql` (one page); panics with `what` when the emulator refuses it.
    async fn query(&self, sql: String, what: &str) -> ResultSet {
        let response = self
            .client()
            .job()
            .query(&self.target.project, QueryRequest::new(sql))
            .await
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        ResultSet::new_from_query_response(response)
    }

    /// Every row of the table, read back with a query, ordered by tenant and event id.
    pub async fn rows(&self) -> Vec<WarehouseRow> {
        let sql = format!(
            "SELECT tenant_id, event_id, event_type, UNIX_MICROS(event_ts) AS event_ts, \
             CAST(event_date AS STRING) AS event_date, source, payload, payload_sha256, metadata, \
             correlation_id, UNIX_MICROS(received_at) AS received_at, \
             UNIX_MICROS(ingested_at) AS ingested_at \
             FROM `{}.{}.{}` ORDER BY tenant_id, event_id",
            self.target.project, self.target.dataset, self.target.table
        );
        let mut results = self.query(sql, "query the events table").await;
        let mut rows = Vec::new();
        while results.next_row() {
            rows.push(WarehouseRow {
                tenant_id: string(&results, "tenant_id"),
                event_id: string(&results, "event_id"),
                event_type: string(&results, "event_type"),
                event_ts: micros(&results, "event_ts"),
                event_date: NaiveDate::parse_from_str(&string(&results, "event_date"), "%Y-%m-%d")
                    .expect("event_date is a date"),
                source: optional_string(&results, "source"),
                payload: optional_object(&results, "payload").expect("payload is required"),
                payload_sha256: string(&results, "payload_sha256"),
                metadata: optional_object(&results, "metadata"),
                correlation_id: optional_string(&results, "correlation_id"),
                received_at: micros(&results, "received_at"),
                ingested_at: micros(&results, "ingested_at"),
            });
        }
        rows
    }

    /// How many rows the table holds, and how many distinct (tenant, event id) keys among
    /// them (one query; [`Self::rows`] reads one page, up to 10,000 rows).
    pub async fn count(&self) -> (i64, i64) {
        let sql = format!(
            "SELECT COUNT(*) AS total_rows, \
             COUNT(DISTINCT CONCAT(tenant_id, '\\n', event_id)) AS distinct_keys \
             FROM `{}.{}.{}`",
            self.target.project, self.target.dataset, self.target.table
        );
        let mut results = self.query(sql, "count the events table").await;
        // No row: the table is not there yet (the sink creates it at its first write, and a
        // test that kills fluxgate-local early can count before that). bqemulator answers a
        // query of a missing table with no rows and an error where BigQuery answers 404; an
        // existing table, even empty, answers one row.
        if !results.next_row() {
            return (0, 0);
        }
        let number = |column: &str| {
            results
                .get_i64_by_name(column)
                .unwrap_or_else(|e| panic!("column {column}: {e}"))
                .unwrap_or(0)
        };
        (number("total_rows"), number("distinct_keys"))
    }

    /// Removes the dataset and its table (the emulator keeps everything in memory until it
    /// stops).
    pub async fn cleanup(self) {
        if let Err(e) = self
            .client()
            .dataset()
            .delete(&self.target.project, &self.target.dataset, true)
            .await
        {
            eprintln!(
                "fluxgate-tests: could not delete dataset {}: {e}",
                self.target.dataset
            );
        }
    }
}

fn optional_string(results: &ResultSet, column: &str) -> Option<String> {
    results
        .get_string_by_name(column)
        .unwrap_or_else(|e| panic!("column {column}: {e}"))
}

fn string(results: &ResultSet, column: &str) -> String {
    optional_string(results, column).unwrap_or_else(|| panic!("column {column} is NULL"))
}

fn micros(results: &ResultSet, column: &str) -> DateTime<Utc> {
    let micros = results
        .get_i64_by_name(column)
        .unwrap_or_else(|e| panic!("column {column}: {e}"))
        .unwrap_or_else(|| panic!("column {column} is NULL"));
    DateTime::from_timestamp_micros(micros).expect("a timestamp in range")
}

/// A JSON column comes back as a string holding JSON.
/// A JSON column as the warehouse prints it, in canonical form; its numbers keep the digits
/// the warehouse holds.
fn optional_object(results: &ResultSet, column: &str) -> Option<JsonObject> {
    let text = optional_string(results, column)?;
    if text.trim() == "null" {
        return None;
    }
    match JsonObject::canonical(&text, column) {
        Ok(object) => Some(object),
        Err(e) => panic!("column {column} is not a JSON object: {text} ({e:?})"),
    }
}
