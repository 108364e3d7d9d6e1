//! BigQuery's REST API v2: the handful of calls the sink makes (tables and datasets,
//! `tabledata.insertAll`, `jobs.query`, `jobs.get`, the load-job upload), each a JSON request
//! on one HTTPS client with Google's own credentials (`auth::GoogleAuth`).
//!
//! Why not a client crate: the sink uses five calls with a few fields each, and the REST
//! client crates carry a second HTTP stack (reqwest 0.12 beside google-cloud-auth's 0.13, an
//! OAuth library beside google-cloud-auth, zstd for gRPC) that made the worker binary about
//! 1.5 MiB larger (docs/BENCHMARKS.md, "Footprint"). The request and answer shapes live beside
//! the call that uses them (`table.rs`, `streaming.rs`, `held.rs`, `load.rs`), each with only
//! the fields read or sent. The tests read the table back through the gcp-bigquery-client
//! crate, a client of their own.

use std::io::Write;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth::GoogleAuth;
use crate::error::Error;

/// Google's REST root.
const GOOGLE_ROOT: &str = "https://bigquery.googleapis.com";
/// Longest wait for a TCP + TLS connection to BigQuery.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one request may take, so that a hung connection fails the write (and the message
/// is retried) well before a Lambda or Cloud Run deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A load job's upload (a batch is a few MB at most).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of an unexpected answer's body an error quotes.
const QUOTED_BODY_CHARS: usize = 500;

/// What a path segment keeps as it is (ids are letters, digits, `_` and `-`; anything else,
/// such as a `/` in a misconfigured name, is escaped rather than changing the path).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-').remove(b'.');

/// How a JSON request body travels.
#[derive(Debug, Clone, Copy)]
pub(super) enum Encoding {
    Identity,
    /// Gzip-compressed: row data is most of what a sink sends, and it leaves AWS as billed
    /// egress.
    Gzip,
}

/// `json` compressed in one write: each write into the encoder is a run of the compressor, so
/// serializing straight into it, token by token, was 20 % slower.
fn gzip(json: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut gzip = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::default());
    gzip.write_all(json)?;
    gzip.finish()
}

/// A call that did not answer 2xx with the expected JSON.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApiError {
    /// BigQuery answered with an error status; `message` is its own explanation.
    #[error("{status}: {message}")]
    Status {
        status: reqwest::StatusCode,
        message: String,
    },
    /// No answer: no HTTPS client (it is built at the first call), or connection, TLS or
    /// timeout.
    #[error("no answer")]
    Transport(#[source] reqwest::Error),
    /// An answer that is not the JSON the call expects.
    #[error("unexpected answer")]
    Decode(#[source] serde_json::Error),
    /// No access token (credentials refused or unreachable).
    #[error("no access token")]
    Credentials(#[source] Error),
}

impl ApiError {
    /// The HTTP status BigQuery answered, when it answered with an error.
    pub(super) fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(status.as_u16()),
            _ => None,
        }
    }

    /// This error as the crate's, with `what` (the call and its target) as the context.
    pub(super) fn into_sink_error(self, what: impl std::fmt::Display) -> Error {
        Error::sink_caused(format!("BigQuery {what}"), self)
    }
}

/// BigQuery's `ErrorProto`: why a row or a job was refused (`reason` such as `invalid`).
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ErrorProto {
    pub(super) reason: Option<String>,
    pub(super) location: Option<String>,
    pub(super) message: Option<String>,
}

/// `projects/{p}/datasets/{d}/...` from its segments, each escaped.
pub(super) fn path(segments: &[&str]) -> String {
    segments
        .iter()
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The REST client: one connection pool and one token cache for every call of a sink.
pub(super) struct Rest {
    /// Built at the first call, not at start: building it reads the system's root
    /// certificates (rustls-platform-verifier), which would make every cold start pay for a
    /// client that a Lambda instance may not use before it is frozen.
    http: tokio::sync::OnceCell<reqwest::Client>,
    /// `<root>/bigquery/v2`.
    base: String,
    /// `<root>/upload/bigquery/v2`.
    upload_base: String,
    auth: GoogleAuth,
}

impl Rest {
    /// `endpoint` is an emulator's REST root (`http://127.0.0.1:9050`, with or without
    /// `/bigquery/v2`), `None` for Google. Makes no request and builds no client yet.
    pub(super) fn new(endpoint: Option<&str>, auth: GoogleAuth) -> Self {
        // reqwest is built without a crypto provider of its own; it takes the process's.
        crate::tls::install_crypto_provider();
        let root = root_of(endpoint);
        Self {
            http: tokio::sync::OnceCell::new(),
            base: format!("{root}/bigquery/v2"),
            upload_base: format!("{root}/upload/bigquery/v2"),
            auth,
        }
    }

    /// The HTTPS client, built at the first call.
    async fn http(&self) -> Result<&reqwest::Client, ApiError> {
        self.http
            .get_or_try_init(|| async {
                reqwest::Client::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(REQUEST_TIMEOUT)
                    .build()
            })
            .await
            .map_err(ApiError::Transport)
    }

    /// `GET <v2>/<path>?<query>`.
    pub(super) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        let request = self.http().await?.get(format!("{}/{path}", self.base));
        self.send(request.query(query)).await
    }

    /// `POST <v2>/<path>` with a JSON body, sent as `encoding` says.
    pub(super) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        encoding: Encoding,
    ) -> Result<T, ApiError> {
        let json = serde_json::to_vec(body).map_err(ApiError::Decode)?;
        let request = self
            .http()
            .await?
            .post(format!("{}/{path}", self.base))
            .header(CONTENT_TYPE, "application/json");
        let request = match encoding {
            Encoding::Identity => request.body(json),
            Encoding::Gzip => request
                .header(CONTENT_ENCODING, "gzip")
                .body(gzip(&json).map_err(|e| ApiError::Decode(serde_json::Error::io(e)))?),
        };
        self.send(request).await
    }

    /// `POST <upload v2>/<path>?uploadType=multipart`: a resource and a file in one
    /// `multipart/related` body.
    pub(super) async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        resource: &impl Serialize,
        file: &str,
    ) -> Result<T, ApiError> {
        let resource = serde_json::to_string(resource).map_err(ApiError::Decode)?;
        let boundary = format!("fluxgate-{}", uuid::Uuid::new_v4().simple());
        let body = format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{resource}\r\n\
             --{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n{file}\r\n\
             --{boundary}--\r\n"
        );
        let request = self
            .http()
            .await?
            .post(format!("{}/{path}", self.upload_base))
            .query(&[("uploadType", "multipart")])
            .header(
                CONTENT_TYPE,
                format!("multipart/related; boundary={boundary}"),
            )
            .timeout(UPLOAD_TIMEOUT)
            .body(body);
        self.send(request).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let headers = self.auth.headers().await.map_err(ApiError::Credentials)?;
        let response = request
            .headers(headers)
            .send()
            .await
            .map_err(ApiError::Transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(ApiError::Transport)?;
        if !status.is_success() {
            return Err(ApiError::Status {
                status,
                message: error_message(&body),
            });
        }
        serde_json::from_slice(&body).map_err(ApiError::Decode)
    }
}

/// `http://host:port`, `http://host:port/bigquery/v2/` → `http://host:port`; Google's root
/// without an endpoint.
fn root_of(endpoint: Option<&str>) -> String {
    endpoint
        .map(|e| {
            e.trim_end_matches('/')
                .trim_end_matches("/bigquery/v2")
                .to_owned()
        })
        .unwrap_or_else(|| GOOGLE_ROOT.to_owned())
}

/// Google's `{"error": {"message": …}}`, or the start of whatever else came back.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Answer {
        error: Explanation,
    }
    #[derive(serde::Deserialize)]
    struct Explanation {
        message: String,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(answer) => answer.error.message,
        Err(_) => String::from_utf8_lossy(body)
            .chars()
            .take(QUOTED_BODY_CHARS)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_roots() {
        for endpoint in [
            "http://127.0.0.1:9050",
            "http://127.0.0.1:9050/",
            "http://127.0.0.1:9050/bigquery/v2/",
        ] {
            assert_eq!(root_of(Some(endpoint)), "http://127.0.0.1:9050");
        }
        assert_eq!(root_of(None), GOOGLE_ROOT);
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(
            path(&["projects", "p-1", "datasets", "a/b", "tables", "t_1.x"]),
            "projects/p-1/datasets/a%2Fb/tables/t_1.x"
        );
    }

    #[test]
    fn errors_carry_bigquerys_own_message() {
        let body =
            br#"{"error": {"code": 404, "message": "Not found: Table p:d.t", "errors": []}}"#;
        assert_eq!(error_message(body), "Not found: Table p:d.t");
        assert_eq!(
            error_message(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }
}
