//! PostgreSQL: claims with `FOR UPDATE SKIP LOCKED`, so concurrent drains neither wait on
//! nor take each other's rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Postgres as Pg};

use super::sql_store::{Dialect, SqlStore};
use super::{ClaimRequest, returning, rows};
use crate::error::Result;
use crate::event::Event;

pub struct Postgres;

pub type PostgresStore = SqlStore<Postgres>;

static MIGRATIONS: Migrator = sqlx::migrate!("../infra/migrations/postgres");

const LEASE_DUE: &str = "
    WITH due AS (
        SELECT tenant_id, event_id FROM outbox
        WHERE status = 'PENDING' AND next_attempt_at <= $1
        ORDER BY next_attempt_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox o
    SET lease_owner = $3, lease_expires_at = $4, next_attempt_at = $4, updated_at = $1
    FROM due
    WHERE o.tenant_id = due.tenant_id AND o.event_id = due.event_id";

#[async_trait]
impl Dialect for Postgres {
    type DB = Pg;

    fn name(&self) -> &'static str {
        "postgres"
    }

    fn millis_between(&self, start: &str, end: &str) -> String {
        // EXTRACT gives NUMERIC since PostgreSQL 14; the metrics read doubles.
        format!("(EXTRACT(EPOCH FROM ({end} - {start})) * 1000)::float8")
    }

    fn has_percentile_disc(&self) -> bool {
        true
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }

    async fn insert_unique(&self, pool: &PgPool, events: &[&Event]) -> Result<Vec<(bool, String)>> {
        returning::insert_unique(pool, events).await
    }

    async fn lease_due(
        &self,
        pool: &PgPool,
        claim: &ClaimRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<u64> {
        rows::lease_due(pool, LEASE_DUE, claim, expires_at).await
    }
}
