//! Insert-if-absent for databases with `ON CONFLICT … DO NOTHING RETURNING`: one multi-row
//! statement tells which rows were new (SQLite; PostgreSQL does the same in one statement of
//! column arrays, `postgres.rs`), and what both then do with the keys that were there.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Database, Executor, FromRow, IntoArguments, Pool, QueryBuilder};

use super::rows::{self, Bind, KeyHashRow};
use crate::error::Result;
use crate::event::{Event, EventKey};
use crate::json_object::JsonObject;

#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    tenant_id: String,
    event_id: String,
}

pub(crate) async fn insert_unique<DB>(
    pool: &Pool<DB>,
    events: &[&Event],
) -> Result<Vec<(bool, String)>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    KeyRow: for<'r> FromRow<'r, DB::Row>,
    KeyHashRow: for<'r> FromRow<'r, DB::Row>,
    String: Bind<DB>,
    Option<String>: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
    Json<JsonObject>: Bind<DB>,
    Option<Json<JsonObject>>: Bind<DB>,
{
    let mut tx = pool.begin().await?;
    let mut inserted: HashSet<EventKey> = HashSet::with_capacity(events.len());
    for chunk in events.chunks(rows::CHUNK) {
        let mut insert = QueryBuilder::<DB>::new(rows::INSERT_EVENT_COLUMNS);
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
            rows::insert_outbox_rows::<DB>(&new_events)
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
    let stored = stored_hashes::<DB>(&mut *tx, &existing).await?;
    tx.commit().await?;
    outcomes(events, &inserted, stored)
}

/// The stored payload hash of each of `keys` (the keys an insert-if-absent did not insert).
pub(crate) async fn stored_hashes<DB>(
    conn: &mut DB::Connection,
    keys: &[EventKey],
) -> Result<HashMap<(String, String), String>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    KeyHashRow: for<'r> FromRow<'r, DB::Row>,
    String: Bind<DB>,
{
    let mut stored = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(rows::CHUNK) {
        let found: Vec<KeyHashRow> = rows::select_hashes::<DB>(chunk)
            .build_query_as()
            .fetch_all(&mut *conn)
            .await?;
        for row in found {
            stored.insert((row.tenant_id, row.event_id), row.payload_sha256);
        }
    }
    Ok(stored)
}

/// (inserted, stored payload hash) of each event: its own hash where it was inserted, the
/// stored one otherwise.
pub(crate) fn outcomes(
    events: &[&Event],
    inserted: &HashSet<EventKey>,
    mut stored: HashMap<(String, String), String>,
) -> Result<Vec<(bool, String)>> {
    events
        .iter()
        .map(|event| {
            if inserted.contains(&event.key()) {
                return Ok((true, event.payload_sha256.clone()));
            }
            stored
                .remove(&(event.tenant_id.clone(), event.event_id.clone()))
                .map(|hash| (false, hash))
                .ok_or_else(|| {
                    // Neither inserted nor present: only possible if a concurrent transaction
                    // rolled back between our insert and our read. The client may retry.
                    sqlx::Error::Protocol(format!(
                        "event {} vanished during insert",
                        event.event_id
                    ))
                    .into()
                })
        })
        .collect()
}
