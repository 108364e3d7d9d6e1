//! The [`Authenticator`]: turns a request's credential into a [`TenantScope`].
//!
//! Key lookups are cached in-process for `FLUXGATE_AUTH_CACHE_TTL` (default 30 s), so a busy
//! ingest does not read the database on every request. The price: a revoked key keeps
//! working on a warm instance until its cached lookup expires.
//!
//! No key is ever logged, on success or failure: failures log the key id at most.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, header};

use super::{AdminAuth, AuthConfig, AuthMode, key};
use crate::error::{Error, Result};
use crate::store::{ActiveKey, ApiKeys};
use crate::tenant::TenantScope;

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// Cached lookups (unknown ids too) are bounded, so a flood of made-up key ids cannot grow
/// the cache without end.
const MAX_CACHED: usize = 10_000;

#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    mode: AuthMode,
    admin: Admin,
    keys: Arc<dyn ApiKeys>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Option<ActiveKey>)>>,
}

enum Admin {
    /// SHA-256 of the admin key, if one is configured.
    Key(Option<[u8; 32]>),
    Platform,
}

impl Authenticator {
    /// Builds the authenticator of a function from its settings; `keys` is usually the
    /// function's store.
    pub async fn from_config(config: &AuthConfig, keys: Arc<dyn ApiKeys>) -> Result<Self> {
        let admin = match config.admin_auth {
            AdminAuth::Platform => {
                if config.mode == AuthMode::Keys {
                    tracing::warn!(
                        "FLUXGATE_ADMIN_AUTH=platform: every request is an admin request; \
                         this function must only be reachable through the platform's IAM"
                    );
                }
                Admin::Platform
            }
            AdminAuth::Key => Admin::Key(admin_key(config).await?.map(|k| key::hash(&k))),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                mode: config.mode,
                admin,
                keys,
                ttl: config.auth_cache_ttl.to_std().unwrap_or_default(),
                cache: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The scope of a request with these headers, or 401.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<TenantScope> {
        if self.inner.mode == AuthMode::Off {
            return Ok(TenantScope::Open);
        }
        if let Admin::Platform = self.inner.admin {
            return Ok(TenantScope::Admin);
        }
        let Some(presented) = credential(headers) else {
            tracing::info!("authentication failed: no API key");
            return Err(Error::Unauthorized(
                "an API key is required: send `Authorization: Bearer <key>` or `X-Api-Key: <key>`"
                    .into(),
            ));
        };
        if let Admin::Key(Some(admin)) = &self.inner.admin
            && key::digests_equal(&key::hash(presented), admin)
        {
            return Ok(TenantScope::Admin);
        }
        let Some(key_id) = key::key_id(presented) else {
            tracing::info!("authentication failed: not a fluxgate API key");
            return Err(rejected());
        };
        match self.lookup(key_id).await? {
            Some(active) if key::matches(presented, &active.secret_sha256) => {
                Ok(TenantScope::Tenant(active.tenant_id))
            }
            Some(_) => {
                tracing::info!(key_id, "authentication failed: wrong secret for the key id");
                Err(rejected())
            }
            None => {
                tracing::info!(key_id, "authentication failed: unknown or revoked key");
                Err(rejected())
            }
        }
    }

    async fn lookup(&self, key_id: &str) -> Result<Option<ActiveKey>> {
        if self.inner.ttl.is_zero() {
            return self.inner.keys.find_active_key(key_id).await;
        }
        if let Some((at, found)) = self.cache().get(key_id)
            && at.elapsed() < self.inner.ttl
        {
            return Ok(found.clone());
        }
        let found = self.inner.keys.find_active_key(key_id).await?;
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED {
            let ttl = self.inner.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key_id.to_owned(), (Instant::now(), found.clone()));
        Ok(found)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<ActiveKey>)>> {
        // A panic while holding the lock cannot leave the map half-written in a way that
        // matters: every entry is a complete lookup result.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn rejected() -> Error {
    Error::Unauthorized("the API key is unknown or revoked".into())
}

/// The key a request carries: `X-Api-Key: <key>`, else `Authorization: Bearer <key>`.
/// `X-Api-Key` comes first because behind a platform's IAM (Cloud Run without public access)
/// `Authorization` carries the platform's identity token, and the key travels beside it.
fn credential(headers: &HeaderMap) -> Option<&str> {
    let api_key = headers
        .get(&X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    api_key
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                })
        })
        .filter(|k| !k.is_empty())
}

/// The admin key from `FLUXGATE_ADMIN_KEY`, or from the Secrets Manager secret named by
/// `FLUXGATE_ADMIN_KEY_SECRET_ID`.
async fn admin_key(config: &AuthConfig) -> Result<Option<String>> {
    let key = match (&config.admin_key, &config.admin_key_secret_id) {
        (Some(_), Some(_)) => {
            return Err(Error::setting(
                "FLUXGATE_ADMIN_KEY",
                "and FLUXGATE_ADMIN_KEY_SECRET_ID are both set; set one of them",
            ));
        }
        (Some(key), None) => Some(key.trim().to_owned()),
        // Fetched once per cold start, like the database URL's secret.
        (None, Some(secret_id)) => {
            let secret =
                crate::secrets::fetch_secret_string("FLUXGATE_ADMIN_KEY_SECRET_ID", secret_id)
                    .await?;
            Some(secret.expose().trim().to_owned())
        }
        (None, None) => None,
    };
    if let Some(key) = &key
        && key.chars().count() < key::MIN_ADMIN_KEY_CHARS
    {
        // The secret's id, when the key came from one: that is the setting to fix.
        let name = if config.admin_key.is_some() {
            "FLUXGATE_ADMIN_KEY"
        } else {
            "FLUXGATE_ADMIN_KEY_SECRET_ID"
        };
        return Err(Error::setting(
            name,
            format!(
                "the admin key has fewer than {} characters; make a random one with \
                 `openssl rand -base64 32`",
                key::MIN_ADMIN_KEY_CHARS
            ),
        ));
    }
    Ok(key)
}
