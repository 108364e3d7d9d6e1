//! How the BigQuery calls prove who they are.
//!
//! - Application Default Credentials, by google-cloud-auth's ADC support: the metadata server on
//!   Cloud Run (the service's identity), `GOOGLE_APPLICATION_CREDENTIALS` elsewhere.
//! - A service-account key JSON handed in by the caller: on AWS it comes from the Secrets
//!   Manager secret named by `FLUXGATE_BIGQUERY_CREDENTIALS_SECRET_ID`.
//! - No token for an emulator, which checks none.
//!
//! Credentials never reach a log line or an error message: the key is a `SecretString` and a
//! key that does not parse is reported without the parser's words (they may quote the key).

use crate::error::{Error, Result};
use crate::secrets::SecretString;

#[derive(Debug, Clone)]
pub enum BigQueryCredentials {
    /// Application Default Credentials (metadata server, `GOOGLE_APPLICATION_CREDENTIALS`).
    ApplicationDefault,
    /// A service-account key, for running outside Google Cloud (AWS).
    ServiceAccountKey(SecretString),
    /// No credentials: an emulator (`FLUXGATE_BIGQUERY_ENDPOINT`), which checks none.
    Emulator,
}

/// The OAuth scope of every BigQuery call (the Storage Write API included).
const BIGQUERY_SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

/// Authorization headers for every BigQuery call, REST (`rest.rs`) and gRPC (the Storage Write
/// API), by Google's own `google-cloud-auth` (as the Pub/Sub client uses); `None` for an
/// emulator, which checks no token. Cheap to clone; tokens are cached and refreshed by the
/// crate.
#[derive(Clone)]
pub(super) struct GoogleAuth(Option<google_cloud_auth::credentials::Credentials>);

impl GoogleAuth {
    pub(super) fn new(credentials: &BigQueryCredentials) -> Result<Self> {
        use google_cloud_auth::credentials::{Builder, service_account};
        // Its token requests go out on reqwest, which takes the process's crypto provider.
        crate::tls::install_crypto_provider();
        let built = match credentials {
            BigQueryCredentials::Emulator => return Ok(Self(None)),
            BigQueryCredentials::ApplicationDefault => {
                Builder::default().with_scopes([BIGQUERY_SCOPE]).build()
            }
            BigQueryCredentials::ServiceAccountKey(key) => {
                // Neither error is kept as the cause: the parser's message may quote the key.
                let not_a_key = || {
                    Error::dependency(
                        "the BigQuery credentials are not a service-account key JSON \
                         (expected type, client_email, private_key, token_uri, ...)",
                    )
                };
                let json: serde_json::Value =
                    serde_json::from_str(key.expose()).map_err(|_| not_a_key())?;
                return service_account::Builder::new(json)
                    .with_access_specifier(service_account::AccessSpecifier::from_scopes([
                        BIGQUERY_SCOPE,
                    ]))
                    .build()
                    .map(|c| Self(Some(c)))
                    .map_err(|_| not_a_key());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_do_not_show_in_debug_output() {
        let credentials = BigQueryCredentials::ServiceAccountKey(SecretString::new(
            r#"{"private_key": "-----BEGIN PRIVATE KEY-----secret"}"#,
        ));
        assert!(!format!("{credentials:?}").contains("secret"));
    }

    #[test]
    fn a_broken_key_is_refused_without_quoting_it() {
        let credentials = BigQueryCredentials::ServiceAccountKey(SecretString::new(
            r#"{"type": "service_account", "private_key": "top-secret-material"}"#,
        ));
        let Err(err) = GoogleAuth::new(&credentials) else {
            panic!("a key without client_email must be refused");
        };
        let text = err.to_string();
        assert!(text.contains("service-account key"), "{text}");
        assert!(!text.contains("top-secret-material"), "{text}");
    }
}
