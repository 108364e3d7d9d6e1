//! What the replay and metrics functions ask of the outbox: moving FAILED/DEAD events back to
//! PENDING (recorded, [`OutboxReplay`]), and aggregations over the outbox ([`OutboxMetrics`]).
//! A trait for each, so each function holds only the queries it runs; implemented once over
//! sqlx for every database, with the few spots where SQL differs behind [`Dialect`] hooks.
//!
//! Every aggregation is one SQL statement the database answers from an index (migration
//! 0003), so it stays fast with millions of rows; nothing is counted in Rust.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{Database, Executor, FromRow, QueryBuilder};

use super::rows::{self, Bind, KeyStateRow, RowsAffected};
use super::sql_store::{Dialect, SqlStore};
use super::{OutboxLag, OutboxStatus, Readiness};
use crate::error::Result;
use crate::event::EventKey;

/// The statuses a replay may move back to PENDING.
pub const REPLAYABLE: [OutboxStatus; 2] = [OutboxStatus::Failed, OutboxStatus::Dead];

/// Rows one replay transaction moves at most: a large replay never holds many locks for long,
/// and what it did before stopping stays done and recorded.
pub const REPLAY_BATCH: u32 = 500;

/// Which outbox rows an aggregation looks at. `from`/`to` are on the time the event was
/// received (the outbox row's `created_at`): `from` inclusive, `to` exclusive.
/// Also the head of the metrics answers, which say what they counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxFilter {
    /// The tenant the figures are for; all tenants when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The receive-time range of the counts, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
}

/// The rows a replay by filter moves: those of `filter` whose status is one of `statuses`
/// (a subset of [`REPLAYABLE`]), oldest first, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayFilter {
    #[serde(flatten)]
    pub rows: OutboxFilter,
    pub statuses: Vec<OutboxStatus>,
    pub limit: u32,
}

/// What became of a request to replay one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayOne {
    /// It is PENDING again and the replay is recorded.
    Replayed,
    /// It exists but is not FAILED or DEAD; nothing changed.
    NotReplayable(OutboxStatus),
    NotFound,
}

/// Outbox rows per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCounts {
    pub pending: u64,
    pub published: u64,
    pub done: u64,
    pub failed: u64,
    pub dead: u64,
}

impl StatusCounts {
    pub fn total(&self) -> u64 {
        self.pending + self.published + self.done + self.failed + self.dead
    }

    pub fn get(&self, status: OutboxStatus) -> u64 {
        match status {
            OutboxStatus::Pending => self.pending,
            OutboxStatus::Published => self.published,
            OutboxStatus::Done => self.done,
            OutboxStatus::Failed => self.failed,
            OutboxStatus::Dead => self.dead,
        }
    }

    fn slot(&mut self, status: OutboxStatus) -> &mut u64 {
        match status {
            OutboxStatus::Pending => &mut self.pending,
            OutboxStatus::Published => &mut self.published,
            OutboxStatus::Done => &mut self.done,
            OutboxStatus::Failed => &mut self.failed,
            OutboxStatus::Dead => &mut self.dead,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeCount {
    pub event_type: String,
    pub count: u64,
}

/// Receive-to-DONE latency of the events completed in a window, in milliseconds. Percentiles
/// are nearest-rank (`percentile_disc`): the smallest latency at least p of the events had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Events that reached DONE in the window.
    pub completed: u64,
    pub avg_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Events per latency bucket: entry i counts latencies above bucket i - 1's bound and at
    /// most [`LATENCY_BUCKETS_MS`]`[i]`; the last entry counts those above every bound.
    #[schema(value_type = Vec<u64>)]
    pub histogram: [u64; LATENCY_BUCKETS_MS.len() + 1],
}

/// Upper bounds, in milliseconds, of the latency histogram's buckets.
pub const LATENCY_BUCKETS_MS: [f64; 12] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 60000.0,
];

/// Events that reached DONE in the last 1, 5 and 15 minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Throughput {
    pub last_1m: u64,
    pub last_5m: u64,
    pub last_15m: u64,
}

/// A FAILED or DEAD event, with what went wrong last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedEvent {
    pub tenant_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: OutboxStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub replay_count: u32,
    pub last_replayed_at: Option<DateTime<Utc>>,
}

/// replay's role: FAILED and DEAD events back to PENDING, each move recorded.
#[async_trait]
pub trait OutboxReplay: Readiness {
    /// Moves one FAILED or DEAD event back to PENDING, due now, with its attempts reset, and
    /// records the replay (by `requested_by`) in the same transaction.
    async fn replay_event(
        &self,
        key: &EventKey,
        requested_by: &str,
        now: DateTime<Utc>,
    ) -> Result<ReplayOne>;

    /// How many rows [`OutboxReplay::replay_matching`] would move now (a dry run; writes nothing).
    async fn count_replayable(&self, filter: &ReplayFilter) -> Result<u64>;

    /// Moves the rows of `filter` back to PENDING in transactions of at most [`REPLAY_BATCH`]
    /// rows, recording the replay as it goes. Returns how many rows moved.
    async fn replay_matching(
        &self,
        filter: &ReplayFilter,
        requested_by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// The reference outbox API's retry: at most `limit` FAILED rows of `tenant_id`, oldest
    /// first, back to PENDING and due now — a replay of FAILED rows only, recorded like any
    /// other. DEAD rows stay DEAD (only an admin's replay brings them back).
    async fn retry_failed(
        &self,
        tenant_id: &str,
        limit: u32,
        requested_by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let filter = ReplayFilter {
            rows: OutboxFilter {
                tenant_id: Some(tenant_id.to_owned()),
                ..OutboxFilter::default()
            },
            statuses: vec![OutboxStatus::Failed],
            limit,
        };
        self.replay_matching(&filter, requested_by, now).await
    }
}

/// The metrics function's role: aggregations over the outbox, the lag among them.
#[async_trait]
pub trait OutboxMetrics: OutboxLag {
    async fn status_counts(&self, filter: &OutboxFilter) -> Result<StatusCounts>;

    /// Events per type, most frequent first (at most [`MAX_TYPES`]).
    async fn type_counts(&self, filter: &OutboxFilter) -> Result<Vec<TypeCount>>;

    /// Latency of the events that reached DONE in `since..=until`.
    async fn latency(
        &self,
        tenant_id: Option<&str>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Latency>;

    async fn throughput(&self, tenant_id: Option<&str>, now: DateTime<Utc>) -> Result<Throughput>;

    /// FAILED and DEAD events, newest received first, and how many there are in all.
    async fn failed_events(
        &self,
        tenant_id: Option<&str>,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<FailedEvent>, u64)>;
}

/// Most event types one answer lists.
pub const MAX_TYPES: u32 = 1000;

#[derive(sqlx::FromRow)]
pub(crate) struct StatusCountRow {
    status: String,
    n: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct TypeCountRow {
    event_type: String,
    n: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct CountRow {
    n: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct OldestRow {
    oldest: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct LatencyRow {
    n: i64,
    avg_ms: Option<f64>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct BucketRow {
    /// The smallest latency of the bucket, which names it.
    ms: Option<f64>,
    n: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct MillisRow {
    ms: Option<f64>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ThroughputRow {
    m1: i64,
    m5: i64,
    m15: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct FailedRow {
    tenant_id: String,
    event_id: String,
    event_type: String,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    replay_count: i32,
    last_replayed_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    tenant_id: String,
    event_id: String,
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// Latencies computed from timestamps carry float noise (SQLite works in Julian days); a
/// microsecond is finer than any latency anyone reads.
fn round_ms(ms: Option<f64>) -> Option<f64> {
    ms.map(|ms| (ms * 1000.0).round() / 1000.0)
}

/// `status IN ('FAILED', 'DEAD')`: literals from the enum, never from input.
fn push_status_in<DB: Database>(
    qb: &mut QueryBuilder<DB>,
    column: &str,
    statuses: &[OutboxStatus],
) {
    let list: Vec<String> = statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    qb.push(format!("{column} IN ({})", list.join(", ")));
}

/// ` AND tenant_id = ? AND created_at >= ? AND created_at < ?`, each only when given.
fn push_rows<DB: Database>(
    qb: &mut QueryBuilder<DB>,
    tenant_column: &str,
    time_column: &str,
    filter: &OutboxFilter,
) where
    String: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    if let Some(tenant) = &filter.tenant_id {
        qb.push(format!(" AND {tenant_column} = "))
            .push_bind(tenant.clone());
    }
    if let Some(from) = filter.from {
        qb.push(format!(" AND {time_column} >= ")).push_bind(from);
    }
    if let Some(to) = filter.to {
        qb.push(format!(" AND {time_column} < ")).push_bind(to);
    }
}

fn tenant_only(tenant_id: Option<&str>) -> OutboxFilter {
    OutboxFilter {
        tenant_id: tenant_id.map(str::to_owned),
        ..OutboxFilter::default()
    }
}

fn replayable_statuses(filter: &ReplayFilter) -> Vec<OutboxStatus> {
    let chosen: Vec<OutboxStatus> = filter
        .statuses
        .iter()
        .copied()
        .filter(|s| REPLAYABLE.contains(s))
        .collect();
    if chosen.is_empty() {
        REPLAYABLE.to_vec()
    } else {
        chosen
    }
}

/// The keys of the next rows a replay by filter moves.
fn select_replayable<DB: Database>(filter: &ReplayFilter, limit: u32) -> QueryBuilder<DB>
where
    String: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    let mut qb = QueryBuilder::new("SELECT tenant_id, event_id FROM outbox WHERE ");
    push_status_in(&mut qb, "status", &replayable_statuses(filter));
    push_rows(&mut qb, "tenant_id", "created_at", &filter.rows);
    qb.push(" ORDER BY created_at, tenant_id, event_id LIMIT ")
        .push(limit);
    qb
}

/// FAILED/DEAD → PENDING, due now, attempts reset, lease cleared, replay counted. The status
/// (one of `statuses`) is checked again here, so a row the worker settled meanwhile is left
/// alone.
fn push_replay_update<DB: Database>(
    qb: &mut QueryBuilder<DB>,
    now: DateTime<Utc>,
    statuses: &[OutboxStatus],
) where
    DateTime<Utc>: Bind<DB>,
{
    qb.push("UPDATE outbox SET status = 'PENDING', attempts = 0, next_attempt_at = ")
        .push_bind(now)
        .push(", lease_owner = NULL, lease_expires_at = NULL, replay_count = replay_count + 1, last_replayed_at = ")
        .push_bind(now)
        .push(", updated_at = ")
        .push_bind(now)
        .push(" WHERE ");
    push_status_in(qb, "status", statuses);
    qb.push(" AND ");
}

fn insert_replay<DB: Database>(
    id: &str,
    requested_by: &str,
    now: DateTime<Utc>,
    tenant_id: Option<&str>,
    event_id: Option<&str>,
    filter: &impl Serialize,
    replayed: i64,
) -> QueryBuilder<DB>
where
    String: Bind<DB>,
    Option<String>: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
    i64: Bind<DB>,
    Json<Map<String, Value>>: Bind<DB>,
{
    let filter = match serde_json::to_value(filter) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let mut qb = QueryBuilder::new(
        "INSERT INTO replays (id, requested_at, requested_by, tenant_id, event_id, filter, replayed) VALUES (",
    );
    let mut values = qb.separated(", ");
    values
        .push_bind(id.to_owned())
        .push_bind(now)
        .push_bind(requested_by.to_owned())
        .push_bind(tenant_id.map(str::to_owned))
        .push_bind(event_id.map(str::to_owned))
        .push_bind(Json(filter))
        .push_bind(replayed);
    qb.push(")");
    qb
}

#[async_trait]
impl<D: Dialect> OutboxReplay for SqlStore<D>
where
    for<'c> &'c mut <D::DB as Database>::Connection: Executor<'c, Database = D::DB>,
    CountRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    KeyRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    KeyStateRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    String: Bind<D::DB>,
    Option<String>: Bind<D::DB>,
    i64: Bind<D::DB>,
    DateTime<Utc>: Bind<D::DB>,
    Json<Map<String, Value>>: Bind<D::DB>,
{
    async fn replay_event(
        &self,
        key: &EventKey,
        requested_by: &str,
        now: DateTime<Utc>,
    ) -> Result<ReplayOne> {
        let mut tx = self.pool().begin().await?;
        let mut update = QueryBuilder::<D::DB>::new("");
        push_replay_update(&mut update, now, &REPLAYABLE);
        update
            .push("tenant_id = ")
            .push_bind(key.tenant_id.clone())
            .push(" AND event_id = ")
            .push_bind(key.event_id.clone());
        let moved = update.build().execute(&mut *tx).await?.rows_affected();
        if moved == 1 {
            let id = uuid::Uuid::now_v7().to_string();
            let filter = serde_json::json!({ "eventId": key.event_id, "tenantId": key.tenant_id });
            insert_replay::<D::DB>(
                &id,
                requested_by,
                now,
                Some(&key.tenant_id),
                Some(&key.event_id),
                &filter,
                1,
            )
            .build()
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(ReplayOne::Replayed);
        }
        tx.rollback().await?;
        let found: Option<KeyStateRow> =
            rows::select_delivery_states::<D::DB>(std::slice::from_ref(key))
                .build_query_as()
                .fetch_optional(self.pool())
                .await?;
        Ok(match found {
            Some(row) => ReplayOne::NotReplayable(rows::parse_status(&row.status)?),
            None => ReplayOne::NotFound,
        })
    }

    async fn count_replayable(&self, filter: &ReplayFilter) -> Result<u64> {
        let mut qb = QueryBuilder::<D::DB>::new(
            "SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM outbox WHERE ",
        );
        push_status_in(&mut qb, "status", &replayable_statuses(filter));
        push_rows(&mut qb, "tenant_id", "created_at", &filter.rows);
        qb.push(" LIMIT ").push(filter.limit).push(") AS matching");
        let row: CountRow = qb.build_query_as().fetch_one(self.pool()).await?;
        Ok(count(row.n))
    }

    async fn replay_matching(
        &self,
        filter: &ReplayFilter,
        requested_by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let id = uuid::Uuid::now_v7().to_string();
        insert_replay::<D::DB>(
            &id,
            requested_by,
            now,
            filter.rows.tenant_id.as_deref(),
            None,
            filter,
            0,
        )
        .build()
        .execute(self.pool())
        .await?;
        let mut remaining = filter.limit;
        let mut moved_total = 0;
        while remaining > 0 {
            let mut tx = self.pool().begin().await?;
            let keys: Vec<KeyRow> = select_replayable::<D::DB>(filter, remaining.min(REPLAY_BATCH))
                .build_query_as()
                .fetch_all(&mut *tx)
                .await?;
            if keys.is_empty() {
                tx.rollback().await?;
                break;
            }
            let keys: Vec<EventKey> = keys
                .into_iter()
                .map(|k| EventKey {
                    tenant_id: k.tenant_id,
                    event_id: k.event_id,
                })
                .collect();
            let mut update = QueryBuilder::<D::DB>::new("");
            push_replay_update(&mut update, now, &replayable_statuses(filter));
            rows::push_keys_in(&mut update, &keys);
            let moved = update.build().execute(&mut *tx).await?.rows_affected();
            let mut record =
                QueryBuilder::<D::DB>::new("UPDATE replays SET replayed = replayed + ");
            record
                .push_bind(moved as i64)
                .push(" WHERE id = ")
                .push_bind(id.clone());
            record.build().execute(&mut *tx).await?;
            tx.commit().await?;
            moved_total += moved;
            // Counted by rows selected, not moved, so a row settled meanwhile cannot keep
            // the loop going.
            remaining = remaining.saturating_sub(keys.len() as u32);
        }
        tracing::info!(replay_id = %id, requested_by, moved = moved_total, "replay by filter");
        Ok(moved_total)
    }
}

#[async_trait]
impl<D: Dialect> OutboxMetrics for SqlStore<D>
where
    for<'c> &'c sqlx::Pool<D::DB>: Executor<'c, Database = D::DB>,
    StatusCountRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    TypeCountRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    CountRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    LatencyRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    MillisRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    BucketRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    ThroughputRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    FailedRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    String: Bind<D::DB>,
    i64: Bind<D::DB>,
    DateTime<Utc>: Bind<D::DB>,
    SqlStore<D>: OutboxLag,
{
    async fn status_counts(&self, filter: &OutboxFilter) -> Result<StatusCounts> {
        let mut qb =
            QueryBuilder::<D::DB>::new("SELECT status, COUNT(*) AS n FROM outbox WHERE 1 = 1");
        push_rows(&mut qb, "tenant_id", "created_at", filter);
        qb.push(" GROUP BY status");
        let found: Vec<StatusCountRow> = qb.build_query_as().fetch_all(self.pool()).await?;
        let mut counts = StatusCounts::default();
        for row in found {
            *counts.slot(rows::parse_status(&row.status)?) += count(row.n);
        }
        Ok(counts)
    }

    async fn type_counts(&self, filter: &OutboxFilter) -> Result<Vec<TypeCount>> {
        let mut qb =
            QueryBuilder::<D::DB>::new("SELECT event_type, COUNT(*) AS n FROM events WHERE 1 = 1");
        push_rows(&mut qb, "tenant_id", "received_at", filter);
        qb.push(" GROUP BY event_type ORDER BY n DESC, event_type LIMIT ")
            .push(MAX_TYPES);
        let found: Vec<TypeCountRow> = qb.build_query_as().fetch_all(self.pool()).await?;
        Ok(found
            .into_iter()
            .map(|row| TypeCount {
                event_type: row.event_type,
                count: count(row.n),
            })
            .collect())
    }

    async fn latency(
        &self,
        tenant_id: Option<&str>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Latency> {
        let dialect = self.sql_dialect();
        let millis = dialect.millis_between("created_at", "done_at");
        let window = |qb: &mut QueryBuilder<D::DB>| {
            qb.push(" FROM outbox WHERE done_at >= ")
                .push_bind(since)
                .push(" AND done_at <= ")
                .push_bind(until);
            push_rows(qb, "tenant_id", "created_at", &tenant_only(tenant_id));
        };
        let percentiles = if dialect.has_percentile_disc() {
            format!(
                ", percentile_disc(0.5) WITHIN GROUP (ORDER BY {millis}) AS p50_ms, \
                 percentile_disc(0.95) WITHIN GROUP (ORDER BY {millis}) AS p95_ms, \
                 percentile_disc(0.99) WITHIN GROUP (ORDER BY {millis}) AS p99_ms"
            )
        } else {
            // Filled in below by rank; a NULL decodes as None on every database.
            ", NULL AS p50_ms, NULL AS p95_ms, NULL AS p99_ms".to_owned()
        };
        let mut qb = QueryBuilder::<D::DB>::new(format!(
            "SELECT COUNT(*) AS n, AVG({millis}) AS avg_ms{percentiles}"
        ));
        window(&mut qb);
        let row: LatencyRow = qb.build_query_as().fetch_one(self.pool()).await?;
        let completed = count(row.n);
        let (mut p50, mut p95, mut p99) = (row.p50_ms, row.p95_ms, row.p99_ms);
        if !dialect.has_percentile_disc() && completed > 0 {
            // Nearest rank, as percentile_disc: the value at position ceil(p * n).
            let at_rank = async |p: f64| -> Result<Option<f64>> {
                let rank = ((p * completed as f64).ceil() as u64).max(1) - 1;
                let mut qb = QueryBuilder::<D::DB>::new(format!("SELECT {millis} AS ms"));
                window(&mut qb);
                qb.push(" ORDER BY ms LIMIT 1 OFFSET ").push(rank);
                let row: MillisRow = qb.build_query_as().fetch_one(self.pool()).await?;
                Ok(row.ms)
            };
            p50 = at_rank(0.5).await?;
            p95 = at_rank(0.95).await?;
            p99 = at_rank(0.99).await?;
        }
        // The histogram in one scan of the same window, grouped by bucket; each group is named
        // by its smallest latency (a float on every database, where a CASE of integer literals
        // is a different integer type on each). Latencies count to the millisecond: SQLite's
        // julianday arithmetic is microseconds off, which must not move a latency on a bound.
        let mut histogram = [0; LATENCY_BUCKETS_MS.len() + 1];
        if completed > 0 {
            let rounded = format!("ROUND({millis})");
            let mut bucket = String::from("CASE");
            for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
                bucket.push_str(&format!(" WHEN {rounded} <= {bound} THEN {i}"));
            }
            bucket.push_str(&format!(" ELSE {} END", LATENCY_BUCKETS_MS.len()));
            let mut qb =
                QueryBuilder::<D::DB>::new(format!("SELECT MIN({rounded}) AS ms, COUNT(*) AS n"));
            window(&mut qb);
            qb.push(format!(" GROUP BY {bucket}"));
            let rows: Vec<BucketRow> = qb.build_query_as().fetch_all(self.pool()).await?;
            for row in rows {
                let ms = row.ms.unwrap_or(0.0);
                let index = LATENCY_BUCKETS_MS
                    .iter()
                    .position(|bound| ms <= *bound)
                    .unwrap_or(LATENCY_BUCKETS_MS.len());
                histogram[index] += count(row.n);
            }
        }
        Ok(Latency {
            completed,
            avg_ms: round_ms(row.avg_ms),
            p50_ms: round_ms(p50),
            p95_ms: round_ms(p95),
            p99_ms: round_ms(p99),
            histogram,
        })
    }

    async fn throughput(&self, tenant_id: Option<&str>, now: DateTime<Utc>) -> Result<Throughput> {
        let mut qb = QueryBuilder::<D::DB>::new("SELECT COUNT(CASE WHEN done_at >= ");
        qb.push_bind(now - TimeDelta::minutes(1))
            .push(" THEN 1 END) AS m1, COUNT(CASE WHEN done_at >= ")
            .push_bind(now - TimeDelta::minutes(5))
            .push(" THEN 1 END) AS m5, COUNT(*) AS m15 FROM outbox WHERE done_at >= ")
            .push_bind(now - TimeDelta::minutes(15))
            .push(" AND done_at <= ")
            .push_bind(now);
        push_rows(&mut qb, "tenant_id", "created_at", &tenant_only(tenant_id));
        let row: ThroughputRow = qb.build_query_as().fetch_one(self.pool()).await?;
        Ok(Throughput {
            last_1m: count(row.m1),
            last_5m: count(row.m5),
            last_15m: count(row.m15),
        })
    }

    async fn failed_events(
        &self,
        tenant_id: Option<&str>,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<FailedEvent>, u64)> {
        let filter = tenant_only(tenant_id);
        let mut total = QueryBuilder::<D::DB>::new("SELECT COUNT(*) AS n FROM outbox WHERE ");
        push_status_in(&mut total, "status", &REPLAYABLE);
        push_rows(&mut total, "tenant_id", "created_at", &filter);
        let total: CountRow = total.build_query_as().fetch_one(self.pool()).await?;

        let mut page = QueryBuilder::<D::DB>::new(
            "SELECT o.tenant_id, o.event_id, e.event_type, o.status, o.attempts, o.last_error, \
             o.created_at, o.updated_at, o.replay_count, o.last_replayed_at \
             FROM outbox o JOIN events e ON e.tenant_id = o.tenant_id AND e.event_id = o.event_id \
             WHERE ",
        );
        push_status_in(&mut page, "o.status", &REPLAYABLE);
        push_rows(&mut page, "o.tenant_id", "o.created_at", &filter);
        page.push(" ORDER BY o.created_at DESC, o.tenant_id DESC, o.event_id DESC LIMIT ")
            .push(limit)
            .push(" OFFSET ")
            .push(offset);
        let found: Vec<FailedRow> = page.build_query_as().fetch_all(self.pool()).await?;
        let items = found
            .into_iter()
            .map(|row| {
                Ok(FailedEvent {
                    status: rows::parse_status(&row.status)?,
                    tenant_id: row.tenant_id,
                    event_id: row.event_id,
                    event_type: row.event_type,
                    attempts: row.attempts.max(0) as u32,
                    last_error: row.last_error,
                    received_at: row.created_at,
                    updated_at: row.updated_at,
                    replay_count: row.replay_count.max(0) as u32,
                    last_replayed_at: row.last_replayed_at,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((items, count(total.n)))
    }
}

#[async_trait]
impl<D: Dialect> OutboxLag for SqlStore<D>
where
    for<'c> &'c sqlx::Pool<D::DB>: Executor<'c, Database = D::DB>,
    OldestRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    String: Bind<D::DB>,
    DateTime<Utc>: Bind<D::DB>,
{
    async fn oldest_pending(&self, tenant_id: Option<&str>) -> Result<Option<DateTime<Utc>>> {
        let mut qb = QueryBuilder::<D::DB>::new(
            "SELECT MIN(created_at) AS oldest FROM outbox WHERE status = 'PENDING'",
        );
        push_rows(&mut qb, "tenant_id", "created_at", &tenant_only(tenant_id));
        let row: OldestRow = qb.build_query_as().fetch_one(self.pool()).await?;
        Ok(row.oldest)
    }
}
