//! The AWS SDK's configuration, shared by every AWS client of a function (SQS, Secrets
//! Manager): region, credentials and `AWS_ENDPOINT_URL` from the environment, as the SDK's own
//! defaults read them, and one HTTPS client on ring.
//!
//! The SDK's `default-https-client` is rustls on aws-lc-rs; sqlx, BigQuery and Pub/Sub use ring.
//! Two crypto libraries in one binary cost about a megabyte and a second TLS stack to keep up
//! to date, so the SDK gets the same rustls on ring here instead.

use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::Builder;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// The SDK's standard configuration with its HTTPS client (hyper with rustls on ring, the
/// platform's root certificates); callers may still adjust it (tests point it at moto).
pub fn config_loader() -> ConfigLoader {
    let https = Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(https)
}

/// [`config_loader`], loaded: what every AWS client of a function is built from, once per cold
/// start.
pub async fn load_config() -> SdkConfig {
    config_loader().load().await
}
