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

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use fluxgate::event::Event;
use fluxgate_tests::bench::raw::{Claim, RawSql, Work};
use fluxgate_tests::bench::{self, LocalProcess, Sql};
use fluxgate_tests::{DbKind, TestDb, event_with_payload};
use serde_json::json;
use sqlx::mysql::MySqlConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Executor};

const EVENTS: usize = 100_000;
/// Events per round of the raw baseline.
const BATCH: usize = 500;

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
            timed(sqlx::MySql::drain_rounds(
                &mut conn,
                Claim::SkipLocked,
                BATCH,
            ))
            .await
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
            timed(sqlx::Sqlite::drain_rounds(&mut conn, Claim::Rowid, BATCH)).await
        }
    };
    let done = Sql::connect(db).await.count("DONE").await;
    assert_eq!(done, events as i64, "the raw baseline left rows not DONE");
    bench::rate(events, elapsed)
}

async fn timed(work: Work<'_>) -> Duration {
    let started = Instant::now();
    work.await;
    started.elapsed()
}

fn pgbench(url: &str, events: usize) -> Duration {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/drain_pgbench.sql");
    bench::pgbench(
        [
            "--no-vacuum".to_owned(),
            "--client=1".to_owned(),
            format!("--transactions={}", events.div_ceil(BATCH)),
            format!("--define=batch={BATCH}"),
            format!("--file={}", script.display()),
        ],
        url,
    )
}

fn main() {
    let events = EVENTS * bench::scale();
    let rounds = bench::rounds();
    let runtime = bench::runtime();
    let mut table = vec![
        format!(
            "\nDrain + delivery of {events} PENDING events, release fluxgate-local against one raw SQL client, best of {rounds} rounds\n"
        ),
        "| database | fluxgate-local events/s | raw SQL events/s | raw SQL by | fluxgate / raw | warehouse files |".into(),
        "|---|---:|---:|---|---:|---:|".into(),
    ];
    let load_before = bench::load_average();
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
    table.push(format!(
        "\n(load average {load_before} before, {} after)",
        bench::load_average()
    ));
    println!("{}", table.join("\n"));
}
