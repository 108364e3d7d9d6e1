//! PostgreSQL: claims with `FOR UPDATE SKIP LOCKED`, so concurrent drains neither wait on
//! nor take each other's rows; inserts a whole batch, events and outbox rows, in one
//! statement of column arrays.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Postgres as Pg};

use super::sql_store::{Dialect, SqlStore};
use super::{ClaimRequest, returning, rows};
use crate::error::Result;
use crate::event::{Event, EventKey};

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

/// Insert-if-absent of a whole batch in one round trip: the events arrive as one array per
/// column (ten parameters whatever the batch size, so the statement is prepared once and
/// reused), new ones get their outbox row in the same statement, and the statement is its own
/// transaction. Payloads go in as text cast to `json`, which keeps the canonical text byte for
/// byte (migration 0004).
const INSERT_UNIQUE: &str = "
    WITH inserted AS (
        INSERT INTO events (tenant_id, event_id, event_type, event_ts, received_at, source,
                            payload, payload_sha256, metadata, correlation_id)
        SELECT tenant_id, event_id, event_type, event_ts, received_at, source,
               payload::json, payload_sha256, metadata::json, correlation_id
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
            AS input(tenant_id, event_id, event_type, event_ts, received_at, source,
                     payload, payload_sha256, metadata, correlation_id)
        ON CONFLICT (tenant_id, event_id) DO NOTHING
        RETURNING tenant_id, event_id, received_at
    ), outbox_rows AS (
        INSERT INTO outbox (tenant_id, event_id, status, attempts, next_attempt_at,
                            created_at, updated_at)
        SELECT tenant_id, event_id, 'PENDING', 0, received_at, received_at, received_at
        FROM inserted
    )
    SELECT tenant_id, event_id FROM inserted";

async fn insert_unique(pool: &PgPool, events: &[&Event]) -> Result<Vec<(bool, String)>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: fn(&Event) -> &str| events.iter().map(|e| f(e)).collect::<Vec<&str>>();
    let optional =
        |f: fn(&Event) -> Option<&str>| events.iter().map(|e| f(e)).collect::<Vec<Option<&str>>>();
    let new_keys: Vec<(String, String)> = sqlx::query_as(INSERT_UNIQUE)
        .bind(column(|e| &e.tenant_id))
        .bind(column(|e| &e.event_id))
        .bind(column(|e| &e.event_type))
        .bind(events.iter().map(|e| e.event_ts).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.received_at).collect::<Vec<_>>())
        .bind(optional(|e| e.source.as_deref()))
        .bind(column(|e| e.payload.get()))
        .bind(column(|e| &e.payload_sha256))
        .bind(optional(|e| e.metadata.as_ref().map(|m| m.get())))
        .bind(optional(|e| e.correlation_id.as_deref()))
        .fetch_all(pool)
        .await?;
    let inserted: HashSet<EventKey> = new_keys
        .into_iter()
        .map(|(tenant_id, event_id)| EventKey {
            tenant_id,
            event_id,
        })
        .collect();
    let existing: Vec<EventKey> = events
        .iter()
        .map(|e| e.key())
        .filter(|key| !inserted.contains(key))
        .collect();
    let stored = if existing.is_empty() {
        Default::default()
    } else {
        returning::stored_hashes::<Pg>(&mut *pool.acquire().await?, &existing).await?
    };
    returning::outcomes(events, &inserted, stored)
}

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
        insert_unique(pool, events).await
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
