//! Drain and delivery throughput: N PENDING events (100,000 × FLUXGATE_BENCH_SCALE) seeded
//! into a fresh database, then
//! - fluxgate: the release `fluxgate-local` binary started on that database (drain → in-process
//!   queue → worker → file warehouse → DONE), timed from its start until every outbox row is
//!   DONE (polled every 50 ms);
//! - raw SQL: the same outbox transitions straight in SQL by one client, 500 events a round
//!   (claim with the product's claim statement, read the events, mark PUBLISHED, read the
//!   statuses, mark DONE): `pgbench` with `drain_pgbench.sql` on PostgreSQL, the same statements
//!   from one sqlx connection on MariaDB and SQLite (pgbench is PostgreSQL only).
//!
//! Each side gets a freshly seeded database; the sides alternate which goes first; the best
//! of FLUXGATE_BENCH_ROUNDS (default 3) rounds counts.
//!
//!   scripts/bench.sh drain                 # PostgreSQL (builds the release binary first)
//!   FLUXGATE_BENCH_DATABASES=postgres,mysql,sqlite scripts/bench.sh drain
//!   FLUXGATE_DRAIN_BATCH_SIZE=500 scripts/bench.sh drain    # FLUXGATE_* reach fluxgate-local

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fluxgate::event::Event;
use fluxgate_tests::bench::{self, LocalProcess, Sql};
use fluxgate_tests::{DbKind, LEASE_TTL, TestDb, event_with_payload};
use serde_json::json;
use sqlx::mysql::MySqlConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Database, Encode, Executor, FromRow, IntoArguments, QueryBuilder, Type};

const EVENTS: usize = 100_000;
/// Events per round of the raw baseline.
const BATCH: usize = 500;
const OWNER: &str = "raw-baseline";

/// A fresh database holding `events` PENDING events of one tenant, written by the store's own
/// insert (events and outbox rows), with fresh planner statistics.
async fn seeded(kind: DbKind, events: usize) -> TestDb {
    let db = TestDb::of(kind).await;
    let all: Vec<Event> = (0..events)
        .map(|i| {
            let payload = json!({"path": "/pricing", "userId": i, "ms": 123.4, "tags": ["a", "b"]});
            event_with_payload("bench", &format!("e{i:07}"), payload)
        })
        .collect();
    for chunk in all.chunks(BATCH) {
        let refs: Vec<&Event> = chunk.iter().collect();
        db.store.insert_unique(&refs).await.expect("seed events");
    }
    Sql::connect(&db).await.analyze().await;
    db
}

/// Events/s and warehouse files of `fluxgate-local` draining the seeded database.
async fn through_fluxgate(db: &TestDb, events: usize) -> (f64, usize) {
    let sql = Sql::connect(db).await;
    let limit = Duration::from_secs(600) * bench::scale() as u32;
    let started = Instant::now();
    let mut local = LocalProcess::spawn(&db.url);
    sql.wait_all_done(events, &mut local, limit).await;
    let rate = bench::rate(events, started.elapsed());
    (rate, local.warehouse_files())
}

/// Events/s of the raw SQL baseline on the seeded database.
async fn raw_sql(db: &TestDb, events: usize) -> f64 {
    let elapsed = match db.kind {
        DbKind::Postgres => pgbench(&db.url, events),
        DbKind::MariaDb => {
            let mut conn = MySqlConnection::connect(&db.url).await.expect("connect");
            // As the store's sessions (mysql.rs SESSION_SETUP).
            conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .await
                .expect("isolation level");
            drain_raw::<sqlx::MySql>(&mut conn, Claim::SkipLocked).await
        }
        DbKind::Sqlite => {
            // As the store opens it (connect.rs).
            let options = SqliteConnectOptions::from_str(&db.url)
                .expect("SQLite URL")
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true);
            let mut conn = SqliteConnection::connect_with(&options)
                .await
                .expect("connect");
            drain_raw::<sqlx::Sqlite>(&mut conn, Claim::Rowid).await
        }
    };
    let done = Sql::connect(db).await.count("DONE").await;
    assert_eq!(done, events as i64, "the raw baseline left rows not DONE");
    bench::rate(events, elapsed)
}

fn pgbench(url: &str, events: usize) -> Duration {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/drain_pgbench.sql");
    let started = Instant::now();
    let output = Command::new("pgbench")
        .args(["--no-vacuum", "--client=1"])
        .arg(format!("--transactions={}", events.div_ceil(BATCH)))
        .arg(format!("--define=batch={BATCH}"))
        .arg(format!("--file={}", script.display()))
        .arg(url)
        .output()
        .expect("run pgbench (scripts/bench.sh installs it)");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

/// How the raw baseline claims, as the store does on that database.
#[derive(Clone, Copy)]
enum Claim {
    /// mysql.rs lease_skip_locked: select due keys `FOR UPDATE SKIP LOCKED`, lease them.
    SkipLocked,
    /// sqlite.rs LEASE_DUE: one `UPDATE … WHERE rowid IN (SELECT … LIMIT)`.
    Rowid,
}

/// Rounds of claim, read, PUBLISHED, statuses, DONE until nothing is left to claim.
async fn drain_raw<DB>(conn: &mut DB::Connection, claim: Claim) -> Duration
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    DateTime<Utc>: for<'t> Encode<'t, DB> + Type<DB>,
    (String, String): for<'r> FromRow<'r, DB::Row>,
{
    let started = Instant::now();
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
        match claim {
            Claim::SkipLocked => {
                let mut tx = conn.begin().await.expect("begin");
                let mut select = QueryBuilder::<DB>::new(
                    "SELECT tenant_id, event_id FROM outbox WHERE status = 'PENDING' AND next_attempt_at <= ",
                );
                select.push_bind(now).push(format!(
                    " ORDER BY next_attempt_at LIMIT {BATCH} FOR UPDATE SKIP LOCKED"
                ));
                let keys: Vec<(String, String)> = select
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .expect("select due");
                if !keys.is_empty() {
                    push_keys_in(&mut lease, &keys);
                    lease.build().execute(&mut *tx).await.expect("lease");
                }
                tx.commit().await.expect("commit");
            }
            Claim::Rowid => {
                lease
                    .push("rowid IN (SELECT rowid FROM outbox WHERE status = 'PENDING' AND next_attempt_at <= ")
                    .push_bind(now)
                    .push(format!(" ORDER BY next_attempt_at LIMIT {BATCH})"));
                lease.build().execute(&mut *conn).await.expect("lease");
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
        let keys: Vec<(String, String)> = read
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .expect("read claimed");
        if keys.is_empty() {
            return started.elapsed();
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
        push_keys_in(&mut published, &keys);
        published
            .build()
            .execute(&mut *conn)
            .await
            .expect("published");

        let mut statuses =
            QueryBuilder::<DB>::new("SELECT tenant_id, event_id, status FROM outbox WHERE ");
        push_keys_in(&mut statuses, &keys);
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
        push_keys_in(&mut done, &keys);
        done.build().execute(&mut *tx).await.expect("done");
        tx.commit().await.expect("commit");
    }
}

/// `(tenant_id = ? AND event_id IN (?, …)) OR …`, grouped by tenant as the store writes it
/// (rows.rs push_keys_in).
fn push_keys_in<DB: Database>(qb: &mut QueryBuilder<DB>, keys: &[(String, String)])
where
    String: for<'t> Encode<'t, DB> + Type<DB>,
{
    let mut by_tenant: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (tenant, id) in keys {
        by_tenant.entry(tenant).or_default().push(id);
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

fn main() {
    let events = EVENTS * bench::scale();
    let rounds = bench::rounds();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut table = vec![
        format!(
            "\nDrain + delivery of {events} PENDING events, release fluxgate-local against one raw SQL client, best of {rounds} rounds\n"
        ),
        "| database | fluxgate-local events/s | raw SQL events/s | raw SQL by | fluxgate / raw | warehouse files |".into(),
        "|---|---:|---:|---|---:|---:|".into(),
    ];
    for kind in bench::databases("postgres") {
        let (mut ours, mut raw, mut files) = (0.0_f64, 0.0_f64, 0);
        for round in 1..=rounds {
            // Alternate which side goes first, so neither always meets a warmer server.
            for fluxgate_side in [round % 2 == 1, round % 2 == 0] {
                runtime.block_on(async {
                    let db = seeded(kind, events).await;
                    if fluxgate_side {
                        let (rate, written) = through_fluxgate(&db, events).await;
                        eprintln!("{kind} round {round}: fluxgate-local {rate:.0} events/s, {written} warehouse files");
                        if rate > ours {
                            (ours, files) = (rate, written);
                        }
                    } else {
                        let rate = raw_sql(&db, events).await;
                        eprintln!("{kind} round {round}: raw SQL {rate:.0} events/s");
                        raw = raw.max(rate);
                    }
                    db.cleanup().await;
                });
            }
        }
        let by = match kind {
            DbKind::Postgres => "pgbench, 1 client",
            _ => "sqlx, 1 client (no pgbench)",
        };
        table.push(format!(
            "| {kind} | {ours:.0} | {raw:.0} | {by} | {:.2} | {files} |",
            ours / raw
        ));
    }
    println!("{}", table.join("\n"));
}
