//! Where events and their outbox rows live. One trait per role a function plays (ingest writes
//! events, the drain claims, the worker logs deliveries, replay and metrics administer), the
//! umbrella [`Store`] over them all, and one file per database.
//!
//! Every method takes `now` from the caller instead of reading the database clock, so that
//! the same rules hold on every database and tests can move time without sleeping.

mod admin;
mod api_keys;
mod batch;
mod config;
mod connect;
mod mysql;
mod postgres;
mod returning;
mod rows;
mod sql_store;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::event::{Event, EventKey};

pub use admin::{
    FailedEvent, LATENCY_BUCKETS_MS, Latency, MAX_TYPES, OutboxFilter, OutboxMetrics, OutboxReplay,
    REPLAY_BATCH, REPLAYABLE, ReplayFilter, ReplayOne, StatusCounts, Throughput, TypeCount,
};
pub use api_keys::{ActiveKey, ApiKeyInfo, ApiKeys, NewApiKey, TenantRecord};
pub use batch::InsertOutcome;
pub use config::DatabaseConfig;
pub use connect::{connect, redact};
pub use mysql::{MySql, MySqlClaimMode, MySqlClaimSetting, MySqlStore};
pub use postgres::{Postgres, PostgresStore};
pub use sql_store::{Dialect, SqlStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{Sqlite, SqliteStore};

/// Where an event is on its way to the warehouse.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboxStatus {
    /// Waiting for the drain (first time, or again after a failed publish or a replay).
    Pending,
    /// Handed to the queue; the worker has not answered yet.
    Published,
    /// In the warehouse.
    Done,
    /// The worker failed; the queue will deliver it again.
    Failed,
    /// Given up: retries used up or a permanent error. Only a replay brings it back.
    Dead,
}

impl OutboxStatus {
    pub const ALL: [OutboxStatus; 5] = [
        Self::Pending,
        Self::Published,
        Self::Done,
        Self::Failed,
        Self::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Published => "PUBLISHED",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
            Self::Dead => "DEAD",
        }
    }
}

impl fmt::Display for OutboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutboxStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("unknown outbox status {text:?}"))
    }
}

/// The outbox row of one event, as the read API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxState {
    pub status: OutboxStatus,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub event: Event,
    pub outbox: OutboxState,
}

/// A claim on due outbox rows for one drain run.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Unique per drain run; only the owner may settle what it claimed.
    pub owner: String,
    pub limit: u32,
    pub lease_ttl: TimeDelta,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedEvent {
    pub event: Event,
    /// Failed publishes so far.
    pub attempts: u32,
}

/// What becomes of a claimed row whose publish failed.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRetry {
    pub key: EventKey,
    /// The new failure count.
    pub attempts: u32,
    /// `Pending` (tried again at `next_attempt_at`) or `Dead`.
    pub status: OutboxStatus,
    pub next_attempt_at: DateTime<Utc>,
    pub error: String,
}

/// The worker's verdict on one delivered event.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryOutcome {
    pub key: EventKey,
    /// `Done`, `Failed` or `Dead`.
    pub status: OutboxStatus,
    pub error: Option<String>,
}

/// A round trip to the database: what `/readyz` asks of a function's store. Every role below
/// includes it, so a function that holds only its role can still say whether it is ready.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    async fn ping(&self) -> Result<()>;
}

/// ingest's role: events go in, each with its outbox row, and one can be read back.
#[async_trait]
pub trait EventWriter: Readiness {
    /// Stores events that are new, each with its outbox row, all in one transaction, and
    /// tells for each input what happened. Idempotent per (tenant, event id): the same
    /// payload again is a duplicate and writes nothing; a different payload is a conflict.
    /// Repeats inside `events` are judged the same way as across calls.
    async fn insert_events(&self, events: &[Event]) -> Result<Vec<InsertOutcome>> {
        let batch = batch::UniqueBatch::of(events);
        let stored_hashes = self.insert_unique(&batch.unique).await?;
        Ok(batch.outcomes(&stored_hashes))
    }

    /// Inserts events whose keys are distinct, skipping keys that exist. Returns, in input
    /// order, whether each was inserted and the payload hash now stored under its key.
    async fn insert_unique(&self, events: &[&Event]) -> Result<Vec<(bool, String)>>;

    async fn get_event(&self, key: &EventKey) -> Result<Option<StoredEvent>>;
}

/// How far behind the outbox is. Shared by the drain (its outbox-lag metric after each run)
/// and the metrics function.
#[async_trait]
pub trait OutboxLag: Readiness {
    /// When the oldest PENDING event was received (the lag is `now` minus this).
    async fn oldest_pending(&self, tenant_id: Option<&str>) -> Result<Option<DateTime<Utc>>>;
}

/// The drain's role: lease due rows, then settle each as published or to be retried.
#[async_trait]
pub trait OutboxClaims: OutboxLag {
    /// Leases up to `limit` due PENDING rows to `owner`, oldest due first. Rows leased by a
    /// run whose lease has expired are due again.
    async fn claim_batch(&self, claim: &ClaimRequest) -> Result<Vec<ClaimedEvent>>;

    /// Leases those of `keys` that are due, under the same lease as [`claim_batch`] (so a
    /// drain run and this never both take a row): eager publish, right after ingest stored
    /// them. Rows already leased, or no longer PENDING, are left alone; `claim.limit` is not
    /// used.
    ///
    /// [`claim_batch`]: OutboxClaims::claim_batch
    async fn claim_keys(
        &self,
        claim: &ClaimRequest,
        keys: &[EventKey],
    ) -> Result<Vec<ClaimedEvent>>;

    /// Marks rows this owner still holds as PUBLISHED and releases them. Returns rows changed.
    async fn mark_published(
        &self,
        owner: &str,
        keys: &[EventKey],
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// Puts rows whose publish failed back to PENDING with a later attempt time, or DEAD.
    async fn reschedule(
        &self,
        owner: &str,
        retries: &[PublishRetry],
        now: DateTime<Utc>,
    ) -> Result<u64>;
}

/// Where a delivered event stands in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryState {
    pub status: OutboxStatus,
    /// Failed publishes and deliveries so far (and, in `fluxgate-local`, deliveries a stop
    /// interrupted).
    pub attempts: u32,
}

impl DeliveryState {
    /// Whether an earlier delivery may already have written the event to the warehouse
    /// without its outcome being recorded: it failed once (FAILED, or attempts counted), so
    /// a write may have landed before the failure was seen. A first delivery of a fresh event
    /// is neither.
    pub fn may_be_written(&self) -> bool {
        self.status == OutboxStatus::Failed || self.attempts > 0
    }
}

/// The worker's role: where each delivered event stands, and the verdicts on them.
#[async_trait]
pub trait DeliveryLog: Readiness {
    /// Current status of each key that exists.
    async fn statuses(&self, keys: &[EventKey]) -> Result<HashMap<EventKey, OutboxStatus>>;

    /// Status and attempts of each key that exists.
    async fn delivery_states(&self, keys: &[EventKey]) -> Result<HashMap<EventKey, DeliveryState>>;

    /// Records the worker's verdicts in one transaction. DONE is final: a late failure report
    /// for an event already in the warehouse does not move it back.
    async fn record_outcomes(&self, outcomes: &[DeliveryOutcome], now: DateTime<Utc>)
    -> Result<()>;
}

/// Every role over one database: what [`connect`] opens. A function hands on only the role it
/// plays (`Arc<dyn Store>` upcasts to `Arc<dyn DeliveryLog>` and the others), and the one pool
/// serves them all, tenants and API keys included.
#[async_trait]
pub trait Store:
    EventWriter + OutboxClaims + DeliveryLog + OutboxReplay + OutboxMetrics + ApiKeys
{
    /// `postgres`, `mysql` or `sqlite`.
    fn dialect(&self) -> &'static str;

    /// Puts PUBLISHED and FAILED rows back to PENDING: for an in-process queue, whose messages
    /// die with the process, this is what a real queue's visibility timeout does. Only `local`
    /// runs one, and it plays every role, so this stays with the whole store.
    async fn requeue_undelivered(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Releases every claim on PENDING rows at once. Only for the one drain of a database
    /// (local at start-up), whose crashed predecessor's claims would otherwise wait out the
    /// lease TTL; where other drains may be alive, their leases must hold.
    async fn release_leases(&self, now: DateTime<Utc>) -> Result<u64>;
}
