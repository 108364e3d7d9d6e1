//! How the BigQuery client proves who it is.
//!
//! - Application Default Credentials, by the client's own ADC support: the metadata server on
//!   Cloud Run (the service's identity), `GOOGLE_APPLICATION_CREDENTIALS` elsewhere.
//! - A service-account key JSON handed in by the caller: on AWS it comes from the Secrets
//!   Manager secret named by `FLUXGATE_BIGQUERY_CREDENTIALS_SECRET_ID`.
//! - A fixed bearer token for an emulator, which checks none.
//!
//! Credentials never reach a log line or an error message: the key is a `SecretString` and a
//! key that does not parse is reported without the parser's words (they may quote the key).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gcp_bigquery_client::Client;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;

use crate::error::{Error, Result};
use crate::secrets::SecretString;

/// Longest wait for a TCP + TLS connection to BigQuery.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one request may take, so that a hung connection fails the write (and the message
/// is retried) well before a Lambda or Cloud Run deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The token sent to an emulator; any non-empty string does.
const EMULATOR_TOKEN: &str = "fluxgate-emulator";

#[derive(Debug, Clone)]
pub enum BigQueryCredentials {
    /// Application Default Credentials (metadata server, `GOOGLE_APPLICATION_CREDENTIALS`).
    ApplicationDefault,
    /// A service-account key, for running outside Google Cloud (AWS).
    ServiceAccountKey(SecretString),
    /// No credentials: a fixed token for an emulator (`FLUXGATE_BIGQUERY_ENDPOINT`).
    Emulator,
}

/// An emulator accepts any bearer token.
#[derive(Clone)]
struct FixedToken;

#[async_trait]
impl Authenticator for FixedToken {
    async fn access_token(&self) -> std::result::Result<String, BQError> {
        Ok(EMULATOR_TOKEN.to_owned())
    }
}

/// The OAuth scope of every BigQuery call (the Storage Write API included).
const BIGQUERY_SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

/// Authorization headers for the calls gcp-bigquery-client does not make: load-job uploads
/// (REST) and the Storage Write API (gRPC). The same credentials as the client's, by Google's
/// own `google-cloud-auth` (as the Pub/Sub client uses); `None` for an emulator. Cheap to
/// clone; tokens are cached and refreshed by the crate.
#[derive(Clone)]
pub(super) struct GoogleAuth(Option<google_cloud_auth::credentials::Credentials>);

impl GoogleAuth {
    pub(super) fn new(credentials: &BigQueryCredentials) -> Result<Self> {
        use google_cloud_auth::credentials::{Builder, service_account};
        let built = match credentials {
            BigQueryCredentials::Emulator => return Ok(Self(None)),
            BigQueryCredentials::ApplicationDefault => {
                Builder::default().with_scopes([BIGQUERY_SCOPE]).build()
            }
            BigQueryCredentials::ServiceAccountKey(key) => {
                let json: serde_json::Value = serde_json::from_str(key.expose())
                    // Not kept as the cause: the parser's message may quote the key.
                    .map_err(|_| {
                        Error::dependency(
                            "the BigQuery credentials are not a service-account key JSON",
                        )
                    })?;
                service_account::Builder::new(json)
                    .with_access_specifier(service_account::AccessSpecifier::from_scopes([
                        BIGQUERY_SCOPE,
                    ]))
                    .build()
            }
        };
        built
            .map(|c| Self(Some(c)))
            .map_err(|e| Error::dependency_caused("Google credentials for BigQuery", e))
    }

    /// The headers to send (empty for an emulator).
    pub(super) async fn headers(&self) -> Result<axum::http::HeaderMap> {
        use google_cloud_auth::credentials::CacheableResource;
        let Some(credentials) = &self.0 else {
            return Ok(axum::http::HeaderMap::new());
        };
        // Without an entity tag in the extensions the answer is always `New`.
        match credentials.headers(axum::http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            Ok(CacheableResource::NotModified) => Ok(axum::http::HeaderMap::new()),
            Err(e) => Err(Error::sink_caused("Google credentials for BigQuery", e)),
        }
    }
}

/// `http://host:port` (or a URL already ending in `/bigquery/v2`) → the REST v2 base URL.
pub(super) fn v2_base_url(endpoint: &str) -> String {
    let root = endpoint.trim_end_matches('/');
    if root.ends_with("/bigquery/v2") {
        root.to_owned()
    } else {
        format!("{root}/bigquery/v2")
    }
}

/// Builds the client. No request is made here: tokens are fetched at the first call.
pub(super) async fn build_client(
    credentials: BigQueryCredentials,
    endpoint: Option<&str>,
) -> Result<Client> {
    // Its OAuth client (yup-oauth2) takes the process's default crypto provider.
    crate::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| Error::dependency_caused("BigQuery HTTP client", e))?;
    let mut builder = ClientBuilder::new();
    builder.with_client(http);
    if let Some(endpoint) = endpoint {
        builder.with_v2_base_url(v2_base_url(endpoint));
    }
    let built = match credentials {
        BigQueryCredentials::ApplicationDefault => {
            builder.build_from_application_default_credentials().await
        }
        BigQueryCredentials::ServiceAccountKey(key) => {
            let key =
                gcp_bigquery_client::yup_oauth2::parse_service_account_key(key.expose().as_bytes())
                    // Not kept as the cause: the parser's message may quote the key.
                    .map_err(|_| {
                        Error::dependency(
                            "the BigQuery credentials are not a service-account key JSON \
                         (expected type, client_email, private_key, token_uri, ...)",
                        )
                    })?;
            builder.build_from_service_account_key(key, false).await
        }
        BigQueryCredentials::Emulator => {
            builder.build_from_authenticator(Arc::new(FixedToken)).await
        }
    };
    built.map_err(|e| Error::dependency_caused("BigQuery credentials", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_v2_base_urls() {
        assert_eq!(
            v2_base_url("http://127.0.0.1:9050"),
            "http://127.0.0.1:9050/bigquery/v2"
        );
        assert_eq!(
            v2_base_url("http://127.0.0.1:9050/"),
            "http://127.0.0.1:9050/bigquery/v2"
        );
        assert_eq!(
            v2_base_url("http://127.0.0.1:9050/bigquery/v2/"),
            "http://127.0.0.1:9050/bigquery/v2"
        );
    }

    #[test]
    fn keys_do_not_show_in_debug_output() {
        let credentials = BigQueryCredentials::ServiceAccountKey(SecretString::new(
            r#"{"private_key": "-----BEGIN PRIVATE KEY-----secret"}"#,
        ));
        assert!(!format!("{credentials:?}").contains("secret"));
    }

    #[tokio::test]
    async fn a_broken_key_is_refused_without_quoting_it() {
        let credentials = BigQueryCredentials::ServiceAccountKey(SecretString::new(
            r#"{"type": "service_account", "private_key": "top-secret-material"}"#,
        ));
        let Err(err) = build_client(credentials, None).await else {
            panic!("a key without client_email must be refused");
        };
        let text = err.to_string();
        assert!(text.contains("service-account key"), "{text}");
        assert!(!text.contains("top-secret-material"), "{text}");
    }
}
