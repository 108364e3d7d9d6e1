//! The store's roles implemented once over sqlx, for every database. What really differs
//! between databases (migrations, insert-if-absent, claiming) is the [`Dialect`].

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Connection, Database, Executor, FromRow, Pool};

use super::rows::{self, Bind, ClaimedRow, KeyStateRow, RowsAffected, SqlDb, StoredRow};
use super::{
    ApiKeys, ClaimRequest, ClaimedEvent, DeliveryLog, DeliveryOutcome, DeliveryState, EventWriter,
    OutboxClaims, OutboxLag, OutboxMetrics, OutboxReplay, OutboxStatus, PublishRetry, Readiness,
    Store, StoredEvent,
};
use crate::error::Result;
use crate::event::{Event, EventKey};

#[async_trait]
pub trait Dialect: Send + Sync + 'static {
    type DB: SqlDb;

    fn name(&self) -> &'static str;

    /// This database's migrations (`infra/migrations/<name>`), applied on connect.
    fn migrations(&self) -> &'static Migrator;

    /// See [`EventWriter::insert_unique`].
    async fn insert_unique(
        &self,
        pool: &Pool<Self::DB>,
        events: &[&Event],
    ) -> Result<Vec<(bool, String)>>;

    /// Leases due rows to `claim.owner` until `expires_at`, which also becomes their next
    /// attempt time; returns how many. The leased rows are read back by owner.
    async fn lease_due(
        &self,
        pool: &Pool<Self::DB>,
        claim: &ClaimRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<u64>;

    /// SQL for the milliseconds from timestamp expression `start` to `end`, as a double.
    fn millis_between(&self, start: &str, end: &str) -> String;

    /// Whether the database computes nearest-rank percentiles itself
    /// (`percentile_disc(p) WITHIN GROUP (ORDER BY …)`); elsewhere they are read by rank.
    fn has_percentile_disc(&self) -> bool {
        false
    }
}

pub struct SqlStore<D: Dialect> {
    pool: Pool<D::DB>,
    dialect: D,
}

impl<D: Dialect> SqlStore<D>
where
    <D::DB as Database>::Connection: Migrate,
{
    pub async fn new(pool: Pool<D::DB>, dialect: D, migrate: bool) -> Result<Self> {
        if migrate {
            dialect.migrations().run(&pool).await?;
        }
        Ok(Self { pool, dialect })
    }
}

impl<D: Dialect> SqlStore<D> {
    pub fn pool(&self) -> &Pool<D::DB> {
        &self.pool
    }

    pub(crate) fn sql_dialect(&self) -> &D {
        &self.dialect
    }
}

// One impl per role, each bounded by only what its queries need of the database beyond
// `SqlDb` (which `Dialect::DB` implies). A pool runs queries wherever a connection does, so a
// role that uses transactions names the connection's `Executor` alone.

#[async_trait]
impl<D: Dialect> Readiness for SqlStore<D> {
    async fn ping(&self) -> Result<()> {
        self.pool.acquire().await?.ping().await?;
        Ok(())
    }
}

#[async_trait]
impl<D: Dialect> Store for SqlStore<D>
where
    for<'c> &'c Pool<D::DB>: Executor<'c, Database = D::DB>,
    DateTime<Utc>: Bind<D::DB>,
    SqlStore<D>: EventWriter + OutboxClaims + DeliveryLog + OutboxReplay + OutboxMetrics + ApiKeys,
{
    fn dialect(&self) -> &'static str {
        self.dialect.name()
    }

    async fn requeue_undelivered(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(rows::execute(&self.pool, rows::requeue_undelivered::<D::DB>(now)).await?)
    }

    async fn release_leases(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(rows::execute(&self.pool, rows::release_leases::<D::DB>(now)).await?)
    }
}

#[async_trait]
impl<D: Dialect> EventWriter for SqlStore<D>
where
    for<'c> &'c Pool<D::DB>: Executor<'c, Database = D::DB>,
    StoredRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    String: Bind<D::DB>,
{
    async fn insert_unique(&self, events: &[&Event]) -> Result<Vec<(bool, String)>> {
        self.dialect.insert_unique(&self.pool, events).await
    }

    async fn get_event(&self, key: &EventKey) -> Result<Option<StoredEvent>> {
        let row: Option<StoredRow> = rows::select_stored::<D::DB>(key)
            .build_query_as()
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(StoredEvent::try_from).transpose()?)
    }
}

#[async_trait]
impl<D: Dialect> OutboxClaims for SqlStore<D>
where
    for<'c> &'c mut <D::DB as Database>::Connection: Executor<'c, Database = D::DB>,
    ClaimedRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    String: Bind<D::DB>,
    i32: Bind<D::DB>,
    DateTime<Utc>: Bind<D::DB>,
    SqlStore<D>: OutboxLag,
{
    async fn claim_batch(&self, claim: &ClaimRequest) -> Result<Vec<ClaimedEvent>> {
        let expires_at = claim.now + claim.lease_ttl;
        // A claim the database rolled back as a deadlock victim leased nothing, so it is
        // safe to run again.
        let leased = retry_when_rolled_back(move || async move {
            match self.dialect.lease_due(&self.pool, claim, expires_at).await {
                Err(crate::Error::Database(error)) => Err(error),
                Err(other) => Ok(Err(other)),
                Ok(count) => Ok(Ok(count)),
            }
        })
        .await??;
        read_leased(&self.pool, &claim.owner, leased, expires_at).await
    }

    async fn claim_keys(
        &self,
        claim: &ClaimRequest,
        keys: &[EventKey],
    ) -> Result<Vec<ClaimedEvent>> {
        let expires_at = claim.now + claim.lease_ttl;
        // Guarded by the due check: a statement run again after a rollback leases nothing twice.
        let leased = update_in_chunks(&self.pool, keys, |chunk| {
            rows::lease_keys::<D::DB>(claim, chunk, expires_at)
        })
        .await?;
        read_leased(&self.pool, &claim.owner, leased, expires_at).await
    }

    async fn mark_published(
        &self,
        owner: &str,
        keys: &[EventKey],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        update_in_chunks(&self.pool, keys, |chunk| {
            rows::mark_published::<D::DB>(owner, chunk, now)
        })
        .await
    }

    async fn reschedule(
        &self,
        owner: &str,
        retries: &[PublishRetry],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        // Each settle statement is guarded by owner and status, so running the transaction
        // again after the database rolled it back changes nothing twice.
        Ok(retry_when_rolled_back(move || async move {
            let mut tx = self.pool.begin().await?;
            let mut changed = 0;
            for retry in retries {
                changed += rows::reschedule_one::<D::DB>(owner, retry, now)
                    .build()
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok(changed)
        })
        .await?)
    }
}

#[async_trait]
impl<D: Dialect> DeliveryLog for SqlStore<D>
where
    for<'c> &'c mut <D::DB as Database>::Connection: Executor<'c, Database = D::DB>,
    KeyStateRow: for<'r> FromRow<'r, <D::DB as Database>::Row>,
    String: Bind<D::DB>,
    DateTime<Utc>: Bind<D::DB>,
{
    async fn delivery_states(&self, keys: &[EventKey]) -> Result<HashMap<EventKey, DeliveryState>> {
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(rows::CHUNK) {
            let rows: Vec<KeyStateRow> = rows::select_delivery_states::<D::DB>(chunk)
                .build_query_as()
                .fetch_all(&self.pool)
                .await?;
            for row in rows {
                let state = DeliveryState {
                    status: rows::parse_status(&row.status)?,
                    attempts: row.attempts.max(0) as u32,
                };
                found.insert(
                    EventKey {
                        tenant_id: row.tenant_id,
                        event_id: row.event_id,
                    },
                    state,
                );
            }
        }
        Ok(found)
    }

    async fn statuses(&self, keys: &[EventKey]) -> Result<HashMap<EventKey, OutboxStatus>> {
        let states = self.delivery_states(keys).await?;
        Ok(states
            .into_iter()
            .map(|(key, state)| (key, state.status))
            .collect())
    }

    async fn record_outcomes(
        &self,
        outcomes: &[DeliveryOutcome],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let done: Vec<EventKey> = outcomes
            .iter()
            .filter(|o| o.status == OutboxStatus::Done)
            .map(|o| o.key.clone())
            .collect();
        let done = &done;
        retry_when_rolled_back(move || async move {
            let mut tx = self.pool.begin().await?;
            for chunk in done.chunks(rows::CHUNK) {
                rows::mark_done::<D::DB>(chunk, now)
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            // Failures are the rare path and each carries its own error text.
            for outcome in outcomes.iter().filter(|o| o.status != OutboxStatus::Done) {
                rows::mark_failure::<D::DB>(outcome, now)
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await?;
        Ok(())
    }
}

/// Runs the UPDATE `statement` makes for each chunk of `keys` (bind-parameter limits), each
/// one again when the database rolled it back; answers the rows changed. Every such statement
/// is guarded by the rows' state, so running one twice changes nothing twice.
async fn update_in_chunks<DB: SqlDb>(
    pool: &Pool<DB>,
    keys: &[EventKey],
    statement: impl Fn(&[EventKey]) -> sqlx::QueryBuilder<DB>,
) -> Result<u64>
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
{
    let mut changed = 0;
    for chunk in keys.chunks(rows::CHUNK) {
        changed += retry_when_rolled_back(|| rows::execute(pool, statement(chunk))).await?;
    }
    Ok(changed)
}

/// Reads back the `leased` rows that `owner` leased until `expires_at`, events and all.
async fn read_leased<DB: SqlDb>(
    pool: &Pool<DB>,
    owner: &str,
    leased: u64,
    expires_at: DateTime<Utc>,
) -> Result<Vec<ClaimedEvent>>
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    ClaimedRow: for<'r> FromRow<'r, <DB as Database>::Row>,
    String: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    if leased == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<ClaimedRow> = rows::select_claimed::<DB>(owner, expires_at)
        .build_query_as()
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(ClaimedEvent::try_from)
        .collect::<Result<_, _>>()?)
}

/// Runs `attempt` again when the database rolled it back as a deadlock victim or for a
/// serialization failure (SQLSTATE 40001; PostgreSQL's deadlock is 40P01). InnoDB picks such
/// victims among concurrent settles and claims as a matter of course and asks for a restart.
async fn retry_when_rolled_back<T, F, Fut>(mut attempt: F) -> std::result::Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
{
    const ATTEMPTS: u32 = 5;
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(error) if tries < ATTEMPTS && rolled_back(&error) => {
                tracing::debug!(%error, tries, "transaction rolled back by the database; running it again");
                tokio::time::sleep(std::time::Duration::from_millis(5 << tries)).await;
                tries += 1;
            }
            other => return other,
        }
    }
}

fn rolled_back(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01")),
        _ => false,
    }
}
