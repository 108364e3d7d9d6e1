//! Credentials for tests: tenants with real API keys in the test database, an admin key, and
//! authenticators that look every key up (no cache), so a revocation shows at once.

use std::sync::Arc;

use chrono::TimeDelta;
use fluxgate::auth::{AuthConfig, AuthMode, Authenticator, key};
use fluxgate::store::ApiKeys;

/// The admin key the test authenticators accept (long enough for the 32-character rule).
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdefghijklmnop";

/// `keys` mode, the [`ADMIN_KEY`], no lookup cache.
pub fn auth_config() -> AuthConfig {
    AuthConfig {
        mode: AuthMode::Keys,
        admin_key: Some(ADMIN_KEY.to_owned()),
        auth_cache_ttl: TimeDelta::zero(),
        ..AuthConfig::default()
    }
}

/// An authenticator over `keys` with [`auth_config`].
pub async fn authenticator(keys: Arc<dyn ApiKeys>) -> Authenticator {
    authenticator_with(keys, &auth_config()).await
}

pub async fn authenticator_with(keys: Arc<dyn ApiKeys>, config: &AuthConfig) -> Authenticator {
    Authenticator::from_config(config, keys)
        .await
        .expect("the test auth settings are valid")
}

/// Creates `tenant` (if needed) and a new key of it; returns the key as a client sends it.
pub async fn tenant_key(keys: &dyn ApiKeys, tenant: &str) -> String {
    keys.create_tenant(tenant, fluxgate::now())
        .await
        .expect("create tenant");
    let issued = key::generate(tenant, Some("test"), fluxgate::now()).expect("random source");
    keys.create_key(&issued.record).await.expect("create key");
    issued.expose().to_owned()
}
