//! SQLite: one writer at a time, so a single `UPDATE … WHERE rowid IN (SELECT … LIMIT)` is
//! already an atomic claim; no row locks are needed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::{Sqlite as Lite, SqlitePool};

use super::sql_store::{Dialect, SqlStore};
use super::{ClaimRequest, returning, rows};
use crate::error::Result;
use crate::event::Event;

pub struct Sqlite;

pub type SqliteStore = SqlStore<Sqlite>;

static MIGRATIONS: Migrator = sqlx::migrate!("../infra/migrations/sqlite");

const LEASE_DUE: &str = "
    UPDATE outbox
    SET lease_owner = ?3, lease_expires_at = ?4, next_attempt_at = ?4, updated_at = ?1
    WHERE rowid IN (
        SELECT rowid FROM outbox
        WHERE status = 'PENDING' AND next_attempt_at <= ?1
        ORDER BY next_attempt_at
        LIMIT ?2
    )";

#[async_trait]
impl Dialect for Sqlite {
    type DB = Lite;

    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn millis_between(&self, start: &str, end: &str) -> String {
        // Timestamps are RFC 3339 text; julianday() reads them (to the millisecond).
        format!("((julianday({end}) - julianday({start})) * 86400000.0)")
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }

    async fn insert_unique(
        &self,
        pool: &SqlitePool,
        events: &[&Event],
    ) -> Result<Vec<(bool, String)>> {
        returning::insert_unique(pool, events).await
    }

    async fn lease_due(
        &self,
        pool: &SqlitePool,
        claim: &ClaimRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<u64> {
        rows::lease_due(pool, LEASE_DUE, claim, expires_at).await
    }
}
