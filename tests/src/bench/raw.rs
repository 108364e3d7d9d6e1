//! The raw SQL baselines of the benchmarks: the rows fluxgate's store writes, written with
//! plain statements through sqlx on one connection, with nothing of fluxgate around them.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use fluxgate::event::Event;
use fluxgate::json_object::JsonObject;
use sqlx::types::Json;
use sqlx::{
    Connection, Database, Encode, Executor, FromRow, IntoArguments, MySql, Postgres, QueryBuilder,
    Sqlite, Type,
};

use crate::LEASE_TTL;

/// The lease owner of the raw drain rounds.
const OWNER: &str = "raw-baseline";

pub type Work<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// How [`RawSql::drain_rounds`] claims, as the store does on that database.
#[derive(Clone, Copy)]
pub enum Claim {
    /// mysql.rs lease_skip_locked: select due keys `FOR UPDATE SKIP LOCKED`, lease them.
    SkipLocked,
    /// sqlite.rs LEASE_DUE: one `UPDATE … WHERE rowid IN (SELECT … LIMIT)`.
    Rowid,
}

/// The baselines on PostgreSQL, MariaDB and SQLite.
pub trait RawSql: Database {
    /// The rows ingest writes for `events`, in the caller's transaction: the events, then their
    /// PENDING outbox rows, one multi-row INSERT each. No validation, no idempotency check.
    fn insert_rows<'a>(conn: &'a mut Self::Connection, events: &'a [Event]) -> Work<'a>;

    /// The outbox transitions of the drain and the worker, `batch` events a round, until
    /// nothing is left to claim: claim, read the claimed events, mark them PUBLISHED, read
    /// their statuses, mark them DONE in a transaction — the store's statements (rows.rs), for
    /// the events of one tenant.
    fn drain_rounds<'a>(conn: &'a mut Self::Connection, claim: Claim, batch: usize) -> Work<'a>;
}

macro_rules! raw_sql {
    ($($db:ty),*) => {$(
        impl RawSql for $db {
            fn insert_rows<'a>(conn: &'a mut Self::Connection, events: &'a [Event]) -> Work<'a> {
                Box::pin(Raw::<$db>::insert_rows(conn, events))
            }

            fn drain_rounds<'a>(
                conn: &'a mut Self::Connection,
                claim: Claim,
                batch: usize,
            ) -> Work<'a> {
                Box::pin(Raw::<$db>::drain_rounds(conn, claim, batch))
            }
        }
    )*};
}

raw_sql!(Postgres, MySql, Sqlite);

/// The statements, written once for every database sqlx can run them on.
struct Raw<DB>(PhantomData<DB>);

impl<DB> Raw<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    Option<String>: for<'t> Encode<'t, DB> + Type<DB>,
    DateTime<Utc>: for<'t> Encode<'t, DB> + Type<DB>,
    Json<JsonObject>: for<'t> Encode<'t, DB> + Type<DB>,
    (String, String): for<'r> FromRow<'r, DB::Row>,
{
    async fn insert_rows(conn: &mut DB::Connection, events: &[Event]) {
        let mut insert = QueryBuilder::<DB>::new(
            "INSERT INTO events (tenant_id, event_id, event_type, event_ts, received_at, source, \
             payload, payload_sha256, correlation_id) ",
        );
        insert.push_values(events, |mut row, e| {
            row.push_bind(e.tenant_id.clone())
                .push_bind(e.event_id.clone())
                .push_bind(e.event_type.clone())
                .push_bind(e.event_ts)
                .push_bind(e.received_at)
                .push_bind(e.source.clone())
                .push_bind(Json(e.payload.clone()))
                .push_bind(e.payload_sha256.clone())
                .push_bind(e.correlation_id.clone());
        });
        Self::execute(&mut insert, conn, "insert events").await;
        let mut outbox = QueryBuilder::<DB>::new(
            "INSERT INTO outbox (tenant_id, event_id, status, attempts, next_attempt_at, created_at, updated_at) ",
        );
        outbox.push_values(events, |mut row, e| {
            row.push_bind(e.tenant_id.clone())
                .push_bind(e.event_id.clone())
                .push("'PENDING'")
                .push("0")
                .push_bind(e.received_at)
                .push_bind(e.received_at)
                .push_bind(e.received_at);
        });
        Self::execute(&mut outbox, conn, "insert outbox").await;
    }

    async fn drain_rounds(conn: &mut DB::Connection, claim: Claim, batch: usize) {
        loop {
            let now = fluxgate::now();
            let expires = now + LEASE_TTL;
            let mut lease = QueryBuilder::<DB>::new("UPDATE outbox SET lease_owner = ");
            lease
                .push_bind(OWNER.to_owned())
                .push(", lease_expires_at = ")
                .push_bind(expires)
                .push(", next_attempt_at = ")
                .push_bind(expires)
                .push(", updated_at = ")
                .push_bind(now)
                .push(" WHERE ");
            let due = format!(" ORDER BY next_attempt_at LIMIT {batch}");
            match claim {
                Claim::SkipLocked => {
                    let mut tx = conn.begin().await.expect("begin");
                    let mut select = QueryBuilder::<DB>::new(
                        "SELECT tenant_id, event_id FROM outbox WHERE status = 'PENDING' AND next_attempt_at <= ",
                    );
                    select
                        .push_bind(now)
                        .push(&due)
                        .push(" FOR UPDATE SKIP LOCKED");
                    let keys = Self::keys(&mut select, &mut tx, "select due").await;
                    if !keys.is_empty() {
                        Self::push_keys_in(&mut lease, &keys);
                        Self::execute(&mut lease, &mut tx, "lease").await;
                    }
                    tx.commit().await.expect("commit");
                }
                Claim::Rowid => {
                    lease
                        .push("rowid IN (SELECT rowid FROM outbox WHERE status = 'PENDING' AND next_attempt_at <= ")
                        .push_bind(now)
                        .push(&due)
                        .push(")");
                    Self::execute(&mut lease, conn, "lease").await;
                }
            }

            let mut read = QueryBuilder::<DB>::new(
                "SELECT e.tenant_id, e.event_id, e.event_type, e.event_ts, e.received_at, e.source, \
                 e.payload, e.payload_sha256, e.metadata, e.correlation_id, o.attempts \
                 FROM outbox o JOIN events e ON e.tenant_id = o.tenant_id AND e.event_id = o.event_id \
                 WHERE o.status = 'PENDING' AND o.lease_owner = ",
            );
            read.push_bind(OWNER.to_owned())
                .push(" AND o.lease_expires_at = ")
                .push_bind(expires)
                .push(" AND o.next_attempt_at = ")
                .push_bind(expires)
                .push(" ORDER BY o.created_at, o.tenant_id, o.event_id");
            let keys = Self::keys(&mut read, conn, "read claimed").await;
            if keys.is_empty() {
                return;
            }

            let mut published =
                QueryBuilder::<DB>::new("UPDATE outbox SET status = 'PUBLISHED', published_at = ");
            published
                .push_bind(now)
                .push(", updated_at = ")
                .push_bind(now)
                .push(", lease_owner = NULL, lease_expires_at = NULL WHERE status = 'PENDING' AND lease_owner = ")
                .push_bind(OWNER.to_owned())
                .push(" AND ");
            Self::push_keys_in(&mut published, &keys);
            Self::execute(&mut published, conn, "published").await;

            let mut statuses =
                QueryBuilder::<DB>::new("SELECT tenant_id, event_id, status FROM outbox WHERE ");
            Self::push_keys_in(&mut statuses, &keys);
            statuses
                .build()
                .fetch_all(&mut *conn)
                .await
                .expect("statuses");

            let done_at = fluxgate::now();
            let mut tx = conn.begin().await.expect("begin");
            let mut done = QueryBuilder::<DB>::new("UPDATE outbox SET status = 'DONE', done_at = ");
            done.push_bind(done_at)
                .push(", updated_at = ")
                .push_bind(done_at)
                .push(", last_error = NULL, lease_owner = NULL, lease_expires_at = NULL WHERE status <> 'DONE' AND ");
            Self::push_keys_in(&mut done, &keys);
            Self::execute(&mut done, &mut tx, "done").await;
            tx.commit().await.expect("commit");
        }
    }

    /// Runs the statement `query`; `what` names it when it fails.
    async fn execute(query: &mut QueryBuilder<DB>, conn: &mut DB::Connection, what: &str) {
        let done = query.build().execute(conn).await;
        done.unwrap_or_else(|e| panic!("{what}: {e}"));
    }

    /// The `(tenant_id, event_id)` pairs `query` selects; `what` names it when it fails.
    async fn keys(
        query: &mut QueryBuilder<DB>,
        conn: &mut DB::Connection,
        what: &str,
    ) -> Vec<(String, String)> {
        let selected = query.build_query_as().fetch_all(conn).await;
        selected.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// `tenant_id = ? AND event_id IN (?, …)`: the store's key filter (rows.rs push_keys_in)
    /// for keys of one tenant.
    fn push_keys_in(qb: &mut QueryBuilder<DB>, keys: &[(String, String)]) {
        let tenant = &keys[0].0;
        assert!(
            keys.iter().all(|(t, _)| t == tenant),
            "the raw drain rounds take the events of one tenant"
        );
        qb.push("tenant_id = ")
            .push_bind(tenant.clone())
            .push(" AND event_id IN (");
        let mut ids = qb.separated(", ");
        for (_, id) in keys {
            ids.push_bind(id.clone());
        }
        qb.push(")");
    }
}
