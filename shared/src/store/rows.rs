//! Row shapes and the SQL that reads the same on every database. Dialect-specific statements
//! (insert-if-absent, claiming) live in each database's own file.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, QueryBuilder, Type};

use super::{ClaimRequest, DeliveryOutcome, OutboxState, OutboxStatus, PublishRetry, StoredEvent};
use crate::error::Result;
use crate::event::{Event, EventKey};
use crate::json_object::JsonObject;

/// The query results of every supported database say how many rows changed; sqlx has no
/// trait for it. (`pub` in this private module, like [`SqlDb`]: both bound the public
/// [`Dialect`](super::sql_store::Dialect) trait, and nothing outside the crate names them.)
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

#[cfg(feature = "sqlite")]
impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::mysql::MySqlQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// What the store's generic code needs of a database beyond sqlx's [`Database`]: arguments
/// its queries take, and results that say how many rows changed. Written as bounds on the
/// associated types, which naming `SqlDb` implies (a `where` clause on a trait would not be
/// implied, and every generic impl would repeat it).
pub trait SqlDb: Database<Arguments: IntoArguments<Self>, QueryResult: RowsAffected> {}

impl<DB: Database<Arguments: IntoArguments<DB>, QueryResult: RowsAffected>> SqlDb for DB {}

/// Runs `query` on `pool`; how many rows it changed.
pub(crate) async fn execute<DB: SqlDb>(
    pool: &Pool<DB>,
    mut query: QueryBuilder<DB>,
) -> sqlx::Result<u64>
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
{
    Ok(query.build().execute(pool).await?.rows_affected())
}

/// Leases due rows with `sql`, one statement whose parameters are, in order, `claim.now`,
/// `claim.limit`, `claim.owner` and `expires_at` (PostgreSQL's and SQLite's
/// [`Dialect::lease_due`](super::sql_store::Dialect::lease_due)).
pub(crate) async fn lease_due<DB: SqlDb>(
    pool: &Pool<DB>,
    sql: &'static str,
    claim: &ClaimRequest,
    expires_at: DateTime<Utc>,
) -> Result<u64>
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DateTime<Utc>: Bind<DB>,
    i64: Bind<DB>,
    String: Bind<DB>,
{
    let leased = sqlx::query(sql)
        .bind(claim.now)
        .bind(i64::from(claim.limit))
        .bind(claim.owner.clone())
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(leased.rows_affected())
}

/// A value every supported database can bind.
pub(crate) trait Bind<DB: Database>: for<'t> Encode<'t, DB> + Type<DB> {}
impl<DB: Database, T: for<'t> Encode<'t, DB> + Type<DB>> Bind<DB> for T {}

pub(crate) const EVENT_COLUMNS: &str = "e.tenant_id, e.event_id, e.event_type, e.event_ts, \
     e.received_at, e.source, e.payload, e.payload_sha256, e.metadata, e.correlation_id";

pub(crate) const OUTBOX_COLUMNS: &str = "o.status, o.attempts, o.next_attempt_at, o.last_error, \
     o.published_at, o.done_at, o.created_at, o.updated_at";

pub(crate) const INSERT_EVENT_COLUMNS: &str = "INSERT INTO events (tenant_id, event_id, event_type, \
     event_ts, received_at, source, payload, payload_sha256, metadata, correlation_id) ";

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    tenant_id: String,
    event_id: String,
    event_type: String,
    event_ts: DateTime<Utc>,
    received_at: DateTime<Utc>,
    source: Option<String>,
    payload: Json<JsonObject>,
    payload_sha256: String,
    metadata: Option<Json<JsonObject>>,
    correlation_id: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct OutboxRow {
    status: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
    published_at: Option<DateTime<Utc>>,
    done_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct StoredRow {
    #[sqlx(flatten)]
    event: EventRow,
    #[sqlx(flatten)]
    outbox: OutboxRow,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ClaimedRow {
    #[sqlx(flatten)]
    pub event: EventRow,
    pub attempts: i32,
}

#[derive(sqlx::FromRow)]
pub(crate) struct KeyHashRow {
    pub tenant_id: String,
    pub event_id: String,
    pub payload_sha256: String,
}

/// A key's status and attempts: what the worker reads to tell a first delivery from one that
/// may repeat a write whose outcome was never recorded (and what a replay that moved nothing
/// reports the status of).
#[derive(sqlx::FromRow)]
pub(crate) struct KeyStateRow {
    pub tenant_id: String,
    pub event_id: String,
    pub status: String,
    pub attempts: i32,
}

impl TryFrom<ClaimedRow> for super::ClaimedEvent {
    type Error = sqlx::Error;

    fn try_from(row: ClaimedRow) -> Result<Self, Self::Error> {
        Ok(Self {
            event: row.event.try_into()?,
            attempts: row.attempts.max(0) as u32,
        })
    }
}

pub(crate) fn parse_status(text: &str) -> Result<OutboxStatus, sqlx::Error> {
    text.parse()
        .map_err(|e: String| sqlx::Error::Decode(e.into()))
}

impl TryFrom<EventRow> for Event {
    type Error = sqlx::Error;

    fn try_from(row: EventRow) -> Result<Self, Self::Error> {
        Ok(Event {
            tenant_id: row.tenant_id,
            event_id: row.event_id,
            event_type: row.event_type,
            event_ts: row.event_ts,
            received_at: row.received_at,
            source: row.source,
            payload: row.payload.0,
            payload_sha256: row.payload_sha256,
            metadata: row.metadata.map(|m| m.0),
            correlation_id: row.correlation_id,
        })
    }
}

impl TryFrom<StoredRow> for StoredEvent {
    type Error = sqlx::Error;

    fn try_from(row: StoredRow) -> Result<Self, Self::Error> {
        let o = row.outbox;
        Ok(StoredEvent {
            event: row.event.try_into()?,
            outbox: OutboxState {
                status: parse_status(&o.status)?,
                attempts: o.attempts.max(0) as u32,
                next_attempt_at: o.next_attempt_at,
                last_error: o.last_error,
                published_at: o.published_at,
                done_at: o.done_at,
                created_at: o.created_at,
                updated_at: o.updated_at,
            },
        })
    }
}

/// The keys as `((tenant_id = ? AND event_id IN (?, …)) OR …)`, one group per tenant.
///
/// Not the row-value form `(tenant_id, event_id) IN ((?, ?), …)`: MariaDB turns a long IN list
/// (1000 values by default, `in_predicate_conversion_threshold`) into a derived table joined by
/// a full scan, once per batch. Grouped by tenant, every database range-scans the primary key.
pub(crate) fn push_keys_in<DB: Database>(qb: &mut QueryBuilder<DB>, keys: &[EventKey])
where
    String: Bind<DB>,
{
    let mut by_tenant: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for key in keys {
        by_tenant
            .entry(&key.tenant_id)
            .or_default()
            .push(&key.event_id);
    }
    if by_tenant.is_empty() {
        // An empty key list matches nothing (and `IN ()` is not valid SQL).
        qb.push("(1 = 0)");
        return;
    }
    qb.push("(");
    for (i, (tenant, ids)) in by_tenant.into_iter().enumerate() {
        if i > 0 {
            qb.push(" OR ");
        }
        qb.push("(tenant_id = ")
            .push_bind(tenant.to_owned())
            .push(" AND event_id IN (");
        let mut list = qb.separated(", ");
        for id in ids {
            list.push_bind(id.to_owned());
        }
        qb.push("))");
    }
    qb.push(")");
}

/// The VALUES of a multi-row insert into `events`.
pub(crate) fn push_event_values<DB: Database>(qb: &mut QueryBuilder<DB>, events: &[&Event])
where
    String: Bind<DB>,
    Option<String>: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
    Json<JsonObject>: Bind<DB>,
    Option<Json<JsonObject>>: Bind<DB>,
{
    qb.push_values(events, |mut row, event| {
        row.push_bind(event.tenant_id.clone())
            .push_bind(event.event_id.clone())
            .push_bind(event.event_type.clone())
            .push_bind(event.event_ts)
            .push_bind(event.received_at)
            .push_bind(event.source.clone())
            .push_bind(Json(event.payload.clone()))
            .push_bind(event.payload_sha256.clone())
            .push_bind(event.metadata.clone().map(Json))
            .push_bind(event.correlation_id.clone());
    });
}

/// The outbox rows of newly inserted events: PENDING, due at once.
pub(crate) fn insert_outbox_rows<DB: Database>(events: &[&Event]) -> QueryBuilder<DB>
where
    String: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    let mut qb = QueryBuilder::new(
        "INSERT INTO outbox (tenant_id, event_id, status, attempts, next_attempt_at, created_at, updated_at) ",
    );
    qb.push_values(events, |mut row, event| {
        row.push_bind(event.tenant_id.clone())
            .push_bind(event.event_id.clone())
            .push("'PENDING'")
            .push("0")
            .push_bind(event.received_at)
            .push_bind(event.received_at)
            .push_bind(event.received_at);
    });
    qb
}

pub(crate) fn select_hashes<DB: Database>(keys: &[EventKey]) -> QueryBuilder<DB>
where
    String: Bind<DB>,
{
    let mut qb = QueryBuilder::new("SELECT tenant_id, event_id, payload_sha256 FROM events WHERE ");
    push_keys_in(&mut qb, keys);
    qb
}

pub(crate) fn select_delivery_states<DB: Database>(keys: &[EventKey]) -> QueryBuilder<DB>
where
    String: Bind<DB>,
{
    let mut qb =
        QueryBuilder::new("SELECT tenant_id, event_id, status, attempts FROM outbox WHERE ");
    push_keys_in(&mut qb, keys);
    qb
}

pub(crate) fn select_stored<DB: Database>(key: &EventKey) -> QueryBuilder<DB>
where
    String: Bind<DB>,
{
    let mut qb = QueryBuilder::new(format!(
        "SELECT {EVENT_COLUMNS}, {OUTBOX_COLUMNS} FROM events e \
         JOIN outbox o ON o.tenant_id = e.tenant_id AND o.event_id = e.event_id \
         WHERE e.tenant_id = "
    ));
    qb.push_bind(key.tenant_id.clone())
        .push(" AND e.event_id = ")
        .push_bind(key.event_id.clone());
    qb
}

/// The events a claim leased to `owner`, oldest claim first (claim-then-fetch).
pub(crate) fn select_claimed<DB: Database>(
    owner: &str,
    expires_at: DateTime<Utc>,
) -> QueryBuilder<DB>
where
    String: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    let mut qb = QueryBuilder::new(format!(
        "SELECT {EVENT_COLUMNS}, o.attempts FROM outbox o \
         JOIN events e ON e.tenant_id = o.tenant_id AND e.event_id = o.event_id \
         WHERE o.status = 'PENDING' AND o.lease_owner = "
    ));
    // A lease also sets next_attempt_at to its expiry; naming it lets the claim index find the
    // leased rows directly instead of scanning every PENDING row (a large backlog).
    qb.push_bind(owner.to_owned())
        .push(" AND o.lease_expires_at = ")
        .push_bind(expires_at)
        .push(" AND o.next_attempt_at = ")
        .push_bind(expires_at)
        .push(" ORDER BY o.created_at, o.tenant_id, o.event_id");
    qb
}

/// The start of an `UPDATE` to `status` that stamps the time in `stamp` and `updated_at`.
fn set_status_at<DB: Database>(status: &str, stamp: &str, now: DateTime<Utc>) -> QueryBuilder<DB>
where
    DateTime<Utc>: Bind<DB>,
{
    let mut qb = QueryBuilder::new(format!("UPDATE outbox SET status = '{status}', {stamp} = "));
    qb.push_bind(now).push(", updated_at = ").push_bind(now);
    qb
}

/// `UPDATE outbox SET` a lease to `claim.owner` until `expires_at`, up to `WHERE `: the caller
/// says which rows. The lease also moves the next attempt to its expiry, so a leased row is not
/// due to anyone else until the lease runs out.
pub(crate) fn lease_update<DB: Database>(
    claim: &ClaimRequest,
    expires_at: DateTime<Utc>,
) -> QueryBuilder<DB>
where
    String: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    let mut update = QueryBuilder::new("UPDATE outbox SET lease_owner = ");
    update
        .push_bind(claim.owner.clone())
        .push(", lease_expires_at = ")
        .push_bind(expires_at)
        .push(", next_attempt_at = ")
        .push_bind(expires_at)
        .push(", updated_at = ")
        .push_bind(claim.now)
        .push(" WHERE ");
    update
}

/// Leases those of `keys` that are due, exactly as a drain's claim would: a row already
/// leased (not due until its lease expires) or settled is left alone.
pub(crate) fn lease_keys<DB: Database>(
    claim: &ClaimRequest,
    keys: &[EventKey],
    expires_at: DateTime<Utc>,
) -> QueryBuilder<DB>
where
    String: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    let mut update = lease_update(claim, expires_at);
    update
        .push("status = 'PENDING' AND next_attempt_at <= ")
        .push_bind(claim.now)
        .push(" AND ");
    push_keys_in(&mut update, keys);
    update
}

pub(crate) fn mark_published<DB: Database>(
    owner: &str,
    keys: &[EventKey],
    now: DateTime<Utc>,
) -> QueryBuilder<DB>
where
    String: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    let mut qb = set_status_at("PUBLISHED", "published_at", now);
    qb.push(
        ", lease_owner = NULL, lease_expires_at = NULL WHERE status = 'PENDING' AND lease_owner = ",
    )
    .push_bind(owner.to_owned())
    .push(" AND ");
    push_keys_in(&mut qb, keys);
    qb
}

pub(crate) fn reschedule_one<DB: Database>(
    owner: &str,
    retry: &PublishRetry,
    now: DateTime<Utc>,
) -> QueryBuilder<DB>
where
    String: Bind<DB>,
    i32: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    let mut qb = QueryBuilder::new("UPDATE outbox SET status = ");
    qb.push_bind(retry.status.as_str().to_owned())
        .push(", attempts = ")
        .push_bind(retry.attempts.min(i32::MAX as u32) as i32)
        .push(", next_attempt_at = ")
        .push_bind(retry.next_attempt_at)
        .push(", last_error = ")
        .push_bind(truncate_error(&retry.error))
        .push(", updated_at = ")
        .push_bind(now)
        .push(", lease_owner = NULL, lease_expires_at = NULL WHERE status = 'PENDING' AND lease_owner = ")
        .push_bind(owner.to_owned())
        .push(" AND tenant_id = ")
        .push_bind(retry.key.tenant_id.clone())
        .push(" AND event_id = ")
        .push_bind(retry.key.event_id.clone());
    qb
}

/// One statement for every DONE verdict of a batch.
pub(crate) fn mark_done<DB: Database>(keys: &[EventKey], now: DateTime<Utc>) -> QueryBuilder<DB>
where
    String: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    let mut qb = set_status_at("DONE", "done_at", now);
    qb.push(", last_error = NULL, lease_owner = NULL, lease_expires_at = NULL WHERE status <> 'DONE' AND ");
    push_keys_in(&mut qb, keys);
    qb
}

/// A FAILED or DEAD verdict; each carries its own error text.
pub(crate) fn mark_failure<DB: Database>(
    outcome: &DeliveryOutcome,
    now: DateTime<Utc>,
) -> QueryBuilder<DB>
where
    String: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    let mut qb = QueryBuilder::new("UPDATE outbox SET status = ");
    qb.push_bind(outcome.status.as_str().to_owned())
        .push(", attempts = attempts + 1, last_error = ")
        .push_bind(truncate_error(
            outcome.error.as_deref().unwrap_or("unknown error"),
        ))
        .push(", updated_at = ")
        .push_bind(now)
        .push(" WHERE status <> 'DONE' AND tenant_id = ")
        .push_bind(outcome.key.tenant_id.clone())
        .push(" AND event_id = ")
        .push_bind(outcome.key.event_id.clone());
    qb
}

pub(crate) fn requeue_undelivered<DB: Database>(now: DateTime<Utc>) -> QueryBuilder<DB>
where
    DateTime<Utc>: Bind<DB>,
{
    // PUBLISHED rows count one attempt more: their delivery may have reached the warehouse
    // without its outcome being recorded, and the worker checks the warehouse before writing
    // an event with attempts (see `DeliveryState::may_be_written`). FAILED rows counted theirs.
    // `attempts` is set before `status`: MySQL evaluates SET left to right, on the new values.
    let mut qb = QueryBuilder::new(
        "UPDATE outbox SET \
         attempts = CASE WHEN status = 'PUBLISHED' THEN attempts + 1 ELSE attempts END, \
         status = 'PENDING', next_attempt_at = ",
    );
    qb.push_bind(now)
        .push(", updated_at = ")
        .push_bind(now)
        .push(
            ", lease_owner = NULL, lease_expires_at = NULL WHERE status IN ('PUBLISHED', 'FAILED')",
        );
    qb
}

pub(crate) fn release_leases<DB: Database>(now: DateTime<Utc>) -> QueryBuilder<DB>
where
    DateTime<Utc>: Bind<DB>,
{
    // Due now: a claim-then-fetch lease (MySQL without SKIP LOCKED) parks the row by moving
    // its due time to the lease's end, and a leased row was due when it was claimed.
    // One attempt more, as for `requeue_undelivered`: a claimed row may have been handed to
    // the queue, and even written, before its publish was recorded.
    let mut qb = QueryBuilder::new(
        "UPDATE outbox SET lease_owner = NULL, lease_expires_at = NULL, \
         attempts = attempts + 1, next_attempt_at = ",
    );
    qb.push_bind(now)
        .push(", updated_at = ")
        .push_bind(now)
        .push(" WHERE status = 'PENDING' AND lease_owner IS NOT NULL");
    qb
}

/// Error texts come from outside systems and can be long; the column keeps the start.
fn truncate_error(error: &str) -> String {
    const MAX: usize = 2000;
    match error.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &error[..cut]),
        None => error.to_owned(),
    }
}

/// Rows per multi-row statement: well under every database's bind-parameter limit.
pub(crate) const CHUNK: usize = 500;
