//! Tenants and their API keys: the [`ApiKeys`] trait, implemented once over sqlx for every
//! database like the rest of [`SqlStore`].
//!
//! Only the SHA-256 of a key is stored (see `auth::key` for why that hash is the right one);
//! the key itself is shown once, by whoever made it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Database, Executor, FromRow, QueryBuilder};

use super::rows::{Bind, RowsAffected};
use super::sql_store::{Dialect, SqlStore};
use crate::error::{Error, Result};

/// A tenant as the key tools list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct TenantRecord {
    pub id: String,
    pub created_at: DateTime<Utc>,
}

/// A key to store: its public id and the hash that stands for its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub key_id: String,
    pub tenant_id: String,
    pub name: Option<String>,
    pub secret_sha256: String,
    pub created_at: DateTime<Utc>,
}

/// A key as listings show it: never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    pub key_id: String,
    pub tenant_id: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What authentication needs of a key that is not revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveKey {
    pub key_id: String,
    pub tenant_id: String,
    pub secret_sha256: String,
}

/// Tenants and API keys. A supertrait of [`super::Store`], so the one store a function opens
/// also authenticates; code that only manages keys (the CLI, the authenticator) depends on
/// this narrow trait alone.
#[async_trait]
pub trait ApiKeys: Send + Sync {
    /// Creates the tenant; `false` when it already existed (nothing changes then).
    async fn create_tenant(&self, id: &str, now: DateTime<Utc>) -> Result<bool>;

    async fn list_tenants(&self) -> Result<Vec<TenantRecord>>;

    /// Stores a key of an existing tenant ([`Error::NotFound`] for an unknown tenant).
    async fn create_key(&self, key: &NewApiKey) -> Result<()>;

    /// Every key (revoked ones too), of one tenant or of all, oldest first.
    async fn list_keys(&self, tenant_id: Option<&str>) -> Result<Vec<ApiKeyInfo>>;

    /// Revokes the key: `true` when this call revoked it, `false` when it already was;
    /// [`Error::NotFound`] for an unknown key id.
    async fn revoke_key(&self, key_id: &str, now: DateTime<Utc>) -> Result<bool>;

    /// The key with this id, unless it is unknown or revoked.
    async fn find_active_key(&self, key_id: &str) -> Result<Option<ActiveKey>>;
}

/// A key as stored: what listings show, and the hash.
#[derive(FromRow)]
pub(crate) struct ApiKeyRow {
    #[sqlx(flatten)]
    info: ApiKeyInfo,
    secret_sha256: String,
}

const KEY_COLUMNS: &str =
    "SELECT key_id, tenant_id, name, secret_sha256, created_at, revoked_at FROM api_keys ";

fn select_key<DB: Database>(key_id: &str) -> QueryBuilder<DB>
where
    String: Bind<DB>,
{
    let mut qb = QueryBuilder::new(KEY_COLUMNS);
    qb.push("WHERE key_id = ").push_bind(key_id.to_owned());
    qb
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[async_trait]
impl<D: Dialect> ApiKeys for SqlStore<D>
where
    for<'c> &'c mut <D::DB as Database>::Connection: Executor<'c, Database = D::DB>,
    ApiKeyRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    TenantRecord: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    String: Bind<D::DB>,
    Option<String>: Bind<D::DB>,
    DateTime<Utc>: Bind<D::DB>,
{
    async fn create_tenant(&self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        // Insert and tell a duplicate by its unique violation: the same on every database,
        // and race-free where a read-then-insert is not.
        let mut insert = QueryBuilder::<D::DB>::new("INSERT INTO tenants (id, created_at) ");
        insert.push_values([(id, now)], |mut row, (id, now)| {
            row.push_bind(id.to_owned()).push_bind(now);
        });
        match insert.build().execute(self.pool()).await {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        Ok(
            QueryBuilder::<D::DB>::new("SELECT id, created_at FROM tenants ORDER BY id")
                .build_query_as()
                .fetch_all(self.pool())
                .await?,
        )
    }

    async fn create_key(&self, key: &NewApiKey) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let mut tenant =
            QueryBuilder::<D::DB>::new("SELECT id, created_at FROM tenants WHERE id = ");
        tenant.push_bind(key.tenant_id.clone());
        let found: Option<TenantRecord> = tenant.build_query_as().fetch_optional(&mut *tx).await?;
        if found.is_none() {
            return Err(Error::NotFound(format!("tenant {}", key.tenant_id)));
        }
        let mut insert = QueryBuilder::<D::DB>::new(
            "INSERT INTO api_keys (key_id, tenant_id, name, secret_sha256, created_at) ",
        );
        insert.push_values([key], |mut row, key| {
            row.push_bind(key.key_id.clone())
                .push_bind(key.tenant_id.clone())
                .push_bind(key.name.clone())
                .push_bind(key.secret_sha256.clone())
                .push_bind(key.created_at);
        });
        insert.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_keys(&self, tenant_id: Option<&str>) -> Result<Vec<ApiKeyInfo>> {
        let mut qb = QueryBuilder::<D::DB>::new(KEY_COLUMNS);
        if let Some(tenant_id) = tenant_id {
            qb.push("WHERE tenant_id = ")
                .push_bind(tenant_id.to_owned());
        }
        qb.push(" ORDER BY created_at, key_id");
        let rows: Vec<ApiKeyRow> = qb.build_query_as().fetch_all(self.pool()).await?;
        Ok(rows.into_iter().map(|row| row.info).collect())
    }

    async fn revoke_key(&self, key_id: &str, now: DateTime<Utc>) -> Result<bool> {
        let mut update = QueryBuilder::<D::DB>::new("UPDATE api_keys SET revoked_at = ");
        update
            .push_bind(now)
            .push(" WHERE key_id = ")
            .push_bind(key_id.to_owned())
            .push(" AND revoked_at IS NULL");
        if update.build().execute(self.pool()).await?.rows_affected() > 0 {
            return Ok(true);
        }
        let existing: Option<ApiKeyRow> = select_key::<D::DB>(key_id)
            .build_query_as()
            .fetch_optional(self.pool())
            .await?;
        match existing {
            Some(_) => Ok(false),
            None => Err(Error::NotFound(format!("API key {key_id}"))),
        }
    }

    async fn find_active_key(&self, key_id: &str) -> Result<Option<ActiveKey>> {
        let row: Option<ApiKeyRow> = select_key::<D::DB>(key_id)
            .build_query_as()
            .fetch_optional(self.pool())
            .await?;
        Ok(row
            .filter(|row| row.info.revoked_at.is_none())
            .map(|row| ActiveKey {
                key_id: row.info.key_id,
                tenant_id: row.info.tenant_id,
                secret_sha256: row.secret_sha256,
            }))
    }
}
