//! MySQL 8 and MariaDB. MySQL has no `INSERT … RETURNING`, so insert-if-absent locks the keys
//! that exist and inserts the rest, starting over when a concurrent insert gets in between.
//! Claims use `FOR UPDATE SKIP LOCKED` where the server has it (MySQL >= 8.0.1, MariaDB >= 10.6)
//! and otherwise an atomic `UPDATE … ORDER BY … LIMIT` followed by a fetch by lease owner.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnection, MySqlDatabaseError};
use sqlx::{MySql as Db, MySqlPool, QueryBuilder};

use super::ClaimRequest;
use super::rows::{self, KeyHashRow};
use super::sql_store::{Dialect, SqlStore};
use crate::error::{Error, Result};
use crate::event::{Event, EventKey};

/// Run on every new connection. Strict mode makes an over-long id an error instead of a
/// silent truncation that would merge two keys, whatever the server's global `sql_mode`.
/// READ COMMITTED (Postgres' default) avoids gap locks, which under REPEATABLE READ make
/// concurrent inserts of neighbouring new keys (time-ordered UUIDv7 ids) deadlock each other.
pub(crate) const SESSION_SETUP: &str = "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'); \
     SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// The store's own transactions set their isolation themselves, so they stay free of gap
/// locks even on a pool opened without [`SESSION_SETUP`].
const BEGIN: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION";

const ER_LOCK_DEADLOCK: u16 = 1213;

/// Attempts of one insert transaction that lost a race to a concurrent insert of the same key.
const INSERT_ATTEMPTS: u32 = 5;

/// How due outbox rows are leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MySqlClaimMode {
    /// `SELECT … FOR UPDATE SKIP LOCKED`, then update the selected rows: concurrent drains
    /// neither wait for nor take each other's rows.
    SkipLocked,
    /// One `UPDATE … ORDER BY next_attempt_at LIMIT n` (atomic per row), then read the rows back
    /// by lease owner. For servers without SKIP LOCKED; concurrent drains queue on row locks.
    ClaimThenFetch,
}

impl fmt::Display for MySqlClaimMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SkipLocked => "skip-locked",
            Self::ClaimThenFetch => "claim-then-fetch",
        })
    }
}

/// `FLUXGATE_MYSQL_CLAIM_MODE`: a fixed [`MySqlClaimMode`], or `auto` to pick by server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MySqlClaimSetting {
    #[default]
    Auto,
    SkipLocked,
    ClaimThenFetch,
}

/// What `SELECT VERSION()` says, e.g. `8.0.36-0ubuntu0.22.04.1` or `10.11.6-MariaDB-0+deb12u1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerVersion {
    pub mariadb: bool,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    pub fn parse(text: &str) -> Option<Self> {
        let mariadb = text.to_ascii_lowercase().contains("mariadb");
        // MariaDB 10 announced itself as `5.5.5-10.x.y-MariaDB` to old MySQL clients.
        let text = match text.strip_prefix("5.5.5-") {
            Some(rest) if mariadb => rest,
            _ => text,
        };
        let numeric_end = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let mut parts = text[..numeric_end]
            .split('.')
            .map(|p| p.parse::<u32>().ok());
        let major = parts.next().flatten()?;
        // Missing parts count as 0 (`8.0.mysql_aurora.3.04.0` is 8.0.0).
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Self {
            mariadb,
            major,
            minor,
            patch,
        })
    }

    pub fn has_skip_locked(&self) -> bool {
        let version = (self.major, self.minor, self.patch);
        if self.mariadb {
            version >= (10, 6, 0)
        } else {
            version >= (8, 0, 1)
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = if self.mariadb { "MariaDB" } else { "MySQL" };
        write!(f, "{server} {}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The mode `setting` asks for on a server that reported `version`. An unrecognised version
/// gets claim-then-fetch, which works on every server.
pub(crate) fn choose_claim_mode(setting: MySqlClaimSetting, version: &str) -> MySqlClaimMode {
    match setting {
        MySqlClaimSetting::SkipLocked => MySqlClaimMode::SkipLocked,
        MySqlClaimSetting::ClaimThenFetch => MySqlClaimMode::ClaimThenFetch,
        MySqlClaimSetting::Auto => match ServerVersion::parse(version) {
            Some(v) if v.has_skip_locked() => MySqlClaimMode::SkipLocked,
            _ => MySqlClaimMode::ClaimThenFetch,
        },
    }
}

pub struct MySql {
    setting: MySqlClaimSetting,
    /// Chosen at the first claim when the setting is `auto` and the pool is lazy (the server's
    /// version needs a connection), at connect otherwise.
    claim_mode: tokio::sync::OnceCell<MySqlClaimMode>,
}

pub type MySqlStore = SqlStore<MySql>;

static MIGRATIONS: Migrator = sqlx::migrate!("../infra/migrations/mysql");

impl MySql {
    pub fn new(claim_mode: MySqlClaimMode) -> Self {
        let setting = match claim_mode {
            MySqlClaimMode::SkipLocked => MySqlClaimSetting::SkipLocked,
            MySqlClaimMode::ClaimThenFetch => MySqlClaimSetting::ClaimThenFetch,
        };
        Self {
            setting,
            claim_mode: tokio::sync::OnceCell::new_with(Some(claim_mode)),
        }
    }

    /// A dialect that asks the server its version at the first claim, if `setting` needs it.
    pub fn deferred(setting: MySqlClaimSetting) -> Self {
        Self {
            setting,
            claim_mode: tokio::sync::OnceCell::new(),
        }
    }

    /// Asks the server its version now and picks the claim mode `setting` calls for.
    pub async fn detect(pool: &MySqlPool, setting: MySqlClaimSetting) -> Result<Self> {
        let dialect = Self::deferred(setting);
        dialect.claim_mode(pool).await?;
        Ok(dialect)
    }

    /// The claim mode, asking the server its version the first time when the setting is
    /// `auto`.
    pub async fn claim_mode(&self, pool: &MySqlPool) -> Result<MySqlClaimMode> {
        let setting = self.setting;
        self.claim_mode
            .get_or_try_init(|| async move {
                if setting != MySqlClaimSetting::Auto {
                    return Ok(choose_claim_mode(setting, ""));
                }
                let version: String = sqlx::query_scalar("SELECT VERSION()")
                    .fetch_one(pool)
                    .await?;
                let claim_mode = choose_claim_mode(setting, &version);
                let parsed = ServerVersion::parse(&version);
                if parsed.is_none() {
                    tracing::warn!(%version, "unrecognised MySQL server version; claiming without SKIP LOCKED");
                }
                tracing::info!(
                    %version,
                    server = %parsed.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into()),
                    ?setting,
                    %claim_mode,
                    "MySQL outbox claim mode"
                );
                Ok::<_, Error>(claim_mode)
            })
            .await
            .copied()
    }
}

#[async_trait]
impl Dialect for MySql {
    type DB = Db;

    fn name(&self) -> &'static str {
        "mysql"
    }

    fn millis_between(&self, start: &str, end: &str) -> String {
        // `1e3` is a DOUBLE literal, so the quotient is a double rather than a DECIMAL.
        format!("(TIMESTAMPDIFF(MICROSECOND, {start}, {end}) / 1e3)")
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }

    async fn insert_unique(
        &self,
        pool: &MySqlPool,
        events: &[&Event],
    ) -> Result<Vec<(bool, String)>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Taking locks in key order keeps two overlapping batches from deadlocking each other.
        let mut sorted = events.to_vec();
        sorted
            .sort_unstable_by(|a, b| (&a.tenant_id, &a.event_id).cmp(&(&b.tenant_id, &b.event_id)));
        let mut attempt = 1;
        let stored = loop {
            let mut tx = pool.begin_with(BEGIN).await?;
            let result = lock_or_insert(&mut tx, &sorted).await;
            let error = match result {
                Ok(stored) => match tx.commit().await {
                    Ok(()) => break stored,
                    Err(e) => e,
                },
                Err(e) => {
                    // Best effort: a deadlock already rolled the transaction back, and a
                    // dropped transaction rolls back anyway.
                    let _ = tx.rollback().await;
                    e
                }
            };
            if attempt >= INSERT_ATTEMPTS || !lost_race(&error) {
                return Err(error.into());
            }
            tracing::debug!(attempt, %error, "concurrent insert of the same keys; retrying");
            tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
            attempt += 1;
        };
        Ok(events
            .iter()
            .map(|event| match stored.get(&event.key()) {
                Some(hash) => (false, hash.clone()),
                None => (true, event.payload_sha256.clone()),
            })
            .collect())
    }

    async fn lease_due(
        &self,
        pool: &MySqlPool,
        claim: &ClaimRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<u64> {
        if claim.limit == 0 {
            return Ok(0);
        }
        match self.claim_mode(pool).await? {
            MySqlClaimMode::SkipLocked => lease_skip_locked(pool, claim, expires_at).await,
            MySqlClaimMode::ClaimThenFetch => lease_in_place(pool, claim, expires_at).await,
        }
    }
}

/// Locks the rows that exist among `events` and inserts the others with their outbox rows.
/// Returns the stored payload hash of each key that existed; every other key was inserted.
/// A concurrent transaction inserting one of the missing keys makes this fail with a
/// duplicate key or a deadlock, and the caller starts over.
async fn lock_or_insert(
    conn: &mut MySqlConnection,
    events: &[&Event],
) -> Result<HashMap<EventKey, String>, sqlx::Error> {
    let mut stored = HashMap::new();
    for chunk in events.chunks(rows::CHUNK) {
        let keys: Vec<EventKey> = chunk.iter().map(|e| e.key()).collect();
        let mut select = rows::select_hashes::<Db>(&keys);
        select.push(" FOR UPDATE");
        let found: Vec<KeyHashRow> = select.build_query_as().fetch_all(&mut *conn).await?;
        for row in found {
            let key = EventKey {
                tenant_id: row.tenant_id,
                event_id: row.event_id,
            };
            stored.insert(key, row.payload_sha256);
        }
    }
    let new_events: Vec<&Event> = events
        .iter()
        .copied()
        .filter(|e| !stored.contains_key(&e.key()))
        .collect();
    for chunk in new_events.chunks(rows::CHUNK) {
        let mut insert = QueryBuilder::<Db>::new(rows::INSERT_EVENT_COLUMNS);
        rows::push_event_values(&mut insert, chunk);
        insert.build().execute(&mut *conn).await?;
        rows::insert_outbox_rows::<Db>(chunk)
            .build()
            .execute(&mut *conn)
            .await?;
    }
    Ok(stored)
}

/// A concurrent transaction inserted one of our keys first (duplicate key), or we and it
/// locked in opposite orders (deadlock; the server rolled us back). Starting over sees its row.
fn lost_race(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                || db
                    .try_downcast_ref::<MySqlDatabaseError>()
                    .is_some_and(|e| e.number() == ER_LOCK_DEADLOCK)
        }
        _ => false,
    }
}

/// Selects due rows, skipping those another drain has locked, and leases them. A deadlock or
/// lock wait timeout is returned as an error; the drain tries again next round.
async fn lease_skip_locked(
    pool: &MySqlPool,
    claim: &ClaimRequest,
    expires_at: DateTime<Utc>,
) -> Result<u64> {
    let mut tx = pool.begin_with(BEGIN).await?;
    let mut select = QueryBuilder::<Db>::new(
        "SELECT tenant_id, event_id FROM outbox WHERE status = 'PENDING' AND next_attempt_at <= ",
    );
    select
        .push_bind(claim.now)
        .push(" ORDER BY next_attempt_at LIMIT ")
        .push(claim.limit)
        .push(" FOR UPDATE SKIP LOCKED");
    let due: Vec<(String, String)> = select.build_query_as().fetch_all(&mut *tx).await?;
    let keys: Vec<EventKey> = due
        .into_iter()
        .map(|(tenant_id, event_id)| EventKey {
            tenant_id,
            event_id,
        })
        .collect();
    let mut leased = 0;
    for chunk in keys.chunks(rows::CHUNK) {
        let mut update = rows::lease_update::<Db>(claim, expires_at);
        rows::push_keys_in(&mut update, chunk);
        leased += update.build().execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(leased)
}

/// Leases due rows in one statement. InnoDB locks each row as it updates it and re-checks the
/// condition on rows a concurrent claim changed, so two drains never lease the same row.
async fn lease_in_place(
    pool: &MySqlPool,
    claim: &ClaimRequest,
    expires_at: DateTime<Utc>,
) -> Result<u64> {
    let mut update = rows::lease_update::<Db>(claim, expires_at);
    update
        .push("status = 'PENDING' AND next_attempt_at <= ")
        .push_bind(claim.now)
        // A literal: a placeholder in UPDATE's LIMIT is not accepted by every server version.
        .push(" ORDER BY next_attempt_at LIMIT ")
        .push(claim.limit);
    Ok(update.build().execute(pool).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> ServerVersion {
        ServerVersion::parse(text).expect("parses")
    }

    #[test]
    fn parses_mysql_and_mariadb_versions() {
        let mysql = |major, minor, patch| ServerVersion {
            mariadb: false,
            major,
            minor,
            patch,
        };
        let mariadb = |major, minor, patch| ServerVersion {
            mariadb: true,
            major,
            minor,
            patch,
        };
        assert_eq!(v("8.0.36"), mysql(8, 0, 36));
        assert_eq!(v("8.0.36-0ubuntu0.22.04.1"), mysql(8, 0, 36));
        assert_eq!(v("5.7.44-log"), mysql(5, 7, 44));
        assert_eq!(v("8.0.mysql_aurora.3.04.0"), mysql(8, 0, 0));
        assert_eq!(v("9.1.0-commercial"), mysql(9, 1, 0));
        assert_eq!(v("10.11.19-MariaDB-0+deb12u1"), mariadb(10, 11, 19));
        assert_eq!(v("5.5.5-10.5.23-MariaDB-log"), mariadb(10, 5, 23));
        assert_eq!(v("11.4.2-MariaDB"), mariadb(11, 4, 2));
        assert_eq!(ServerVersion::parse("garbage"), None);
        assert_eq!(ServerVersion::parse(""), None);
    }

    #[test]
    fn skip_locked_starts_at_mysql_8_0_1_and_mariadb_10_6() {
        assert!(!v("8.0.0").has_skip_locked());
        assert!(v("8.0.1").has_skip_locked());
        assert!(v("8.4.3").has_skip_locked());
        assert!(v("9.0.1").has_skip_locked());
        assert!(!v("5.7.44").has_skip_locked());
        assert!(!v("10.5.23-MariaDB").has_skip_locked());
        assert!(v("10.6.0-MariaDB").has_skip_locked());
        assert!(v("10.11.19-MariaDB-0+deb12u1").has_skip_locked());
        assert!(v("11.4.2-MariaDB").has_skip_locked());
    }

    #[test]
    fn auto_follows_the_version_and_an_explicit_setting_wins() {
        use MySqlClaimMode::*;
        use MySqlClaimSetting as S;
        assert_eq!(choose_claim_mode(S::Auto, "8.0.36"), SkipLocked);
        assert_eq!(choose_claim_mode(S::Auto, "10.11.19-MariaDB"), SkipLocked);
        assert_eq!(
            choose_claim_mode(S::Auto, "10.5.23-MariaDB"),
            ClaimThenFetch
        );
        assert_eq!(choose_claim_mode(S::Auto, "5.7.44"), ClaimThenFetch);
        assert_eq!(choose_claim_mode(S::Auto, "who knows"), ClaimThenFetch);
        assert_eq!(choose_claim_mode(S::SkipLocked, "5.7.44"), SkipLocked);
        assert_eq!(
            choose_claim_mode(S::ClaimThenFetch, "8.0.36"),
            ClaimThenFetch
        );
    }
}
