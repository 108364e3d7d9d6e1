//! Who is calling: API keys of tenants, the admin key, or the platform's IAM in front.
//!
//! Authentication happens in one place, the [`crate::tenant::TenantScope`] extractor
//! (`extract`), which asks the function's [`Authenticator`]. Handlers only ever see the
//! resulting scope.
//!
//! Which functions authenticate: ingest and the admin functions (replay, metrics). The
//! drain's and the worker's HTTP triggers are called by schedulers and queues (EventBridge,
//! Cloud Scheduler, Pub/Sub push) and are protected by the platform (IAM, OIDC push auth),
//! not by API keys.

mod authenticator;
mod extract;
pub mod key;

use std::fmt;

use chrono::TimeDelta;
use clap::Args;

use crate::config::parse_duration;

pub use authenticator::Authenticator;
pub use extract::Admin;

/// `FLUXGATE_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every request needs a tenant's API key or the admin key.
    Keys,
    /// No authentication: the body names the tenant and every endpoint is open. Development
    /// only.
    Off,
}

/// `FLUXGATE_ADMIN_AUTH`: how admin callers prove themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdminAuth {
    /// The admin key (`FLUXGATE_ADMIN_KEY` or `FLUXGATE_ADMIN_KEY_SECRET_ID`).
    Key,
    /// The platform's IAM in front of the function (API Gateway IAM authorization, Cloud Run
    /// `--no-allow-unauthenticated`) already authenticated the caller, so every request that
    /// reaches the function is an admin. Set it only on functions that are deployed behind
    /// such IAM and serve admin routes only (replay, metrics), never on ingest.
    Platform,
}

/// Authentication settings of a function.
#[derive(Clone, Args)]
pub struct AuthConfig {
    /// `keys` (every request needs an API key) or `off` (open; development only).
    #[arg(
        long = "auth",
        env = "FLUXGATE_AUTH",
        value_enum,
        default_value = "keys"
    )]
    pub mode: AuthMode,
    /// `key` (the admin key) or `platform` (IAM in front already authenticated the caller).
    #[arg(long, env = "FLUXGATE_ADMIN_AUTH", value_enum, default_value = "key")]
    pub admin_auth: AdminAuth,
    /// The admin key: any tenant, and the admin endpoints. At least 32 characters of random.
    #[arg(long, env = "FLUXGATE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// An AWS Secrets Manager secret holding the admin key (instead of FLUXGATE_ADMIN_KEY).
    #[arg(long, env = "FLUXGATE_ADMIN_KEY_SECRET_ID")]
    pub admin_key_secret_id: Option<String>,
    /// How long a key lookup is reused in-process. A revoked key keeps working on a warm
    /// instance for up to this long; `0s` looks every key up on every request.
    #[arg(long, env = "FLUXGATE_AUTH_CACHE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub auth_cache_ttl: TimeDelta,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Keys,
            admin_auth: AdminAuth::Key,
            admin_key: None,
            admin_key_secret_id: None,
            auth_cache_ttl: TimeDelta::seconds(30),
        }
    }
}

/// Never prints the admin key.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("admin_auth", &self.admin_auth)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "***"))
            .field("admin_key_secret_id", &self.admin_key_secret_id)
            .field("auth_cache_ttl", &self.auth_cache_ttl)
            .finish()
    }
}
