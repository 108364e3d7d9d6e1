//! Insert-if-absent for databases with `ON CONFLICT … DO NOTHING RETURNING` (SQLite's
//! multi-row statement in `sqlite.rs`, PostgreSQL's one statement of column arrays in
//! `postgres.rs`): what both do with the keys that were there.

use std::collections::{HashMap, HashSet};

use sqlx::{Executor, FromRow};

use super::rows::{self, Bind, KeyHashRow, SqlDb};
use crate::error::Result;
use crate::event::{Event, EventKey};

pub(crate) async fn stored_hashes<DB>(
    conn: &mut DB::Connection,
    keys: &[EventKey],
) -> Result<HashMap<(String, String), String>>
where
    DB: SqlDb,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
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
