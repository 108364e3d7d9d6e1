//! SQLite: one writer at a time, so a single `UPDATE … WHERE rowid IN (SELECT … LIMIT)` is
//! already an atomic claim; no row locks are needed.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::{QueryBuilder, Sqlite as Lite, SqlitePool};

use super::sql_store::{Dialect, SqlStore};
use super::{ClaimRequest, returning, rows};
use crate::error::Result;
use crate::event::{Event, EventKey};

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

#[derive(sqlx::FromRow)]
struct KeyRow {
    tenant_id: String,
    event_id: String,
}

/// Insert-if-absent in one transaction: per chunk, one multi-row `INSERT … ON CONFLICT DO
/// NOTHING RETURNING` says which keys are new, and only those get an outbox row; the stored
/// payload hashes of the others are read at the end.
async fn insert_unique(pool: &SqlitePool, events: &[&Event]) -> Result<Vec<(bool, String)>> {
    let mut tx = pool.begin().await?;
    let mut inserted: HashSet<EventKey> = HashSet::with_capacity(events.len());
    for chunk in events.chunks(rows::CHUNK) {
        let mut insert = QueryBuilder::<Lite>::new(rows::INSERT_EVENT_COLUMNS);
        rows::push_event_values(&mut insert, chunk);
        insert.push(" ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING tenant_id, event_id");
        let new_keys: Vec<KeyRow> = insert.build_query_as().fetch_all(&mut *tx).await?;
        inserted.extend(new_keys.into_iter().map(|k| EventKey {
            tenant_id: k.tenant_id,
            event_id: k.event_id,
        }));
        let new_events: Vec<&Event> = chunk
            .iter()
            .copied()
            .filter(|e| inserted.contains(&e.key()))
            .collect();
        if !new_events.is_empty() {
            rows::insert_outbox_rows::<Lite>(&new_events)
                .build()
                .execute(&mut *tx)
                .await?;
        }
    }
    let existing: Vec<EventKey> = events
        .iter()
        .map(|e| e.key())
        .filter(|key| !inserted.contains(key))
        .collect();
    let stored = returning::stored_hashes::<Lite>(&mut *tx, &existing).await?;
    tx.commit().await?;
    returning::outcomes(events, &inserted, stored)
}

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
        insert_unique(pool, events).await
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
