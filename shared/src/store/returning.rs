//! Insert-if-absent for databases with `ON CONFLICT … DO NOTHING RETURNING` (PostgreSQL and
//! SQLite): one multi-row statement tells which rows were new.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{Database, Executor, FromRow, IntoArguments, Pool, QueryBuilder};

use super::rows::{self, Bind, KeyHashRow};
use crate::error::Result;
use crate::event::{Event, EventKey};

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
    Json<Map<String, Value>>: Bind<DB>,
    Option<Json<Map<String, Value>>>: Bind<DB>,
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
    let mut stored_hashes = std::collections::HashMap::with_capacity(existing.len());
    for chunk in existing.chunks(rows::CHUNK) {
        let found: Vec<KeyHashRow> = rows::select_hashes::<DB>(chunk)
            .build_query_as()
            .fetch_all(&mut *tx)
            .await?;
        for row in found {
            stored_hashes.insert((row.tenant_id, row.event_id), row.payload_sha256);
        }
    }
    tx.commit().await?;

    events
        .iter()
        .map(|event| {
            if inserted.contains(&event.key()) {
                return Ok((true, event.payload_sha256.clone()));
            }
            stored_hashes
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
