//! The admin queries (metrics and replay) on a large outbox: generates N events (default
//! 1 000 000) with their outbox rows server-side, then times each aggregation.
//!
//!   cargo bench -p fluxgate-tests --bench metrics                       # PostgreSQL and MariaDB
//!   cargo test -p fluxgate-tests --bench metrics    # the same in the dev profile (the database does the work)
//!   FLUXGATE_BENCH_DATABASES=postgres FLUXGATE_BENCH_ROWS=200000 cargo bench -p fluxgate-tests --bench metrics
//!
//! The rows: 50 tenants, 10 event types, received evenly over the last 24 h; 90 % DONE
//! (latency 0–60 s), 5 % PENDING, 2 % PUBLISHED, 2 % FAILED, 1 % DEAD.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use fluxgate::store::{OutboxFilter, REPLAYABLE, ReplayFilter, Store};
use fluxgate_tests::{DbKind, TestDb};
use sqlx::{AssertSqlSafe, Connection, Executor};

const STATUS: &str = "CASE WHEN i % 100 < 90 THEN 'DONE' WHEN i % 100 < 95 THEN 'PENDING' \
     WHEN i % 100 < 97 THEN 'PUBLISHED' WHEN i % 100 < 99 THEN 'FAILED' ELSE 'DEAD' END";

async fn generate(db: &TestDb, rows: u64) {
    match db.kind {
        DbKind::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
            let series = format!(
                "(SELECT i, now() - i * interval '1 microsecond' * (86400000000 / {rows}) AS ts, \
                 (i * 7919) % 60000 AS latency_ms FROM generate_series(1::bigint, {rows}) AS i) s"
            );
            conn.execute(AssertSqlSafe(format!(
                "INSERT INTO events (tenant_id, event_id, event_type, event_ts, received_at, payload, payload_sha256) \
                 SELECT 'tenant-' || (i % 50), 'e' || i, 'type.' || (i % 10), ts, ts, '{{\"n\":1}}'::jsonb, repeat('0', 64) FROM {series}"
            )))
            .await
            .expect("events");
            conn.execute(AssertSqlSafe(format!(
                "INSERT INTO outbox (tenant_id, event_id, status, attempts, next_attempt_at, last_error, published_at, done_at, created_at, updated_at) \
                 SELECT 'tenant-' || (i % 50), 'e' || i, {STATUS}, CASE WHEN i % 100 >= 97 THEN 3 ELSE 0 END, ts, \
                 CASE WHEN i % 100 >= 97 THEN 'sink timeout' END, \
                 CASE WHEN i % 100 < 90 OR i % 100 >= 95 THEN ts END, \
                 CASE WHEN i % 100 < 90 THEN ts + latency_ms * interval '1 millisecond' END, ts, ts FROM {series}"
            )))
            .await
            .expect("outbox");
            conn.execute("ANALYZE events; ANALYZE outbox")
                .await
                .expect("analyze");
        }
        DbKind::MariaDb => {
            let mut conn = sqlx::MySqlConnection::connect(&db.url)
                .await
                .expect("connect");
            conn.execute("SET time_zone = '+00:00'").await.expect("tz");
            // MariaDB's Sequence engine: seq_1_to_N is a table of 1..N.
            let series = format!(
                "(SELECT seq AS i, UTC_TIMESTAMP(6) - INTERVAL (seq * (86400000000 DIV {rows})) MICROSECOND AS ts, \
                 (seq * 7919) % 60000 AS latency_ms FROM seq_1_to_{rows}) s"
            );
            conn.execute(AssertSqlSafe(format!(
                "INSERT INTO events (tenant_id, event_id, event_type, event_ts, received_at, payload, payload_sha256) \
                 SELECT CONCAT('tenant-', i % 50), CONCAT('e', i), CONCAT('type.', i % 10), ts, ts, '{{\"n\":1}}', REPEAT('0', 64) FROM {series}"
            )))
            .await
            .expect("events");
            conn.execute(AssertSqlSafe(format!(
                "INSERT INTO outbox (tenant_id, event_id, status, attempts, next_attempt_at, last_error, published_at, done_at, created_at, updated_at) \
                 SELECT CONCAT('tenant-', i % 50), CONCAT('e', i), {STATUS}, CASE WHEN i % 100 >= 97 THEN 3 ELSE 0 END, ts, \
                 CASE WHEN i % 100 >= 97 THEN 'sink timeout' END, \
                 CASE WHEN i % 100 < 90 OR i % 100 >= 95 THEN ts END, \
                 CASE WHEN i % 100 < 90 THEN ts + INTERVAL latency_ms * 1000 MICROSECOND END, ts, ts FROM {series}"
            )))
            .await
            .expect("outbox");
            conn.execute("ANALYZE TABLE events, outbox")
                .await
                .expect("analyze");
        }
        DbKind::Sqlite => panic!("the metrics bench runs on PostgreSQL and MariaDB"),
    }
}

/// Median of five runs (after one warm-up).
async fn time<F, Fut, T>(label: &str, mut run: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = fluxgate::Result<T>>,
    T: std::fmt::Debug,
{
    let first = run().await.expect(label);
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        run().await.expect(label);
        times.push(started.elapsed());
    }
    times.sort();
    let shown = format!("{first:?}");
    let shown: String = shown.chars().take(90).collect();
    println!(
        "  {label:<44} {:>9.1} ms   {shown}",
        times[2].as_secs_f64() * 1000.0
    );
}

async fn bench(kind: DbKind, rows: u64) {
    let db = TestDb::of(kind).await;
    let started = Instant::now();
    generate(&db, rows).await;
    println!(
        "\n{kind}: {rows} events + outbox rows generated in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let store: &dyn Store = db.store.as_ref();
    let admin = store;
    let now = fluxgate::now();
    let tenant = OutboxFilter {
        tenant_id: Some("tenant-7".into()),
        ..Default::default()
    };
    let last_hour = OutboxFilter {
        from: Some(now - TimeDelta::hours(1)),
        to: Some(now),
        ..Default::default()
    };
    let all = OutboxFilter::default();

    for (name, filter) in [
        ("status counts, all tenants, all time", &all),
        ("status counts, one tenant, all time", &tenant),
        ("status counts, all tenants, last hour", &last_hour),
    ] {
        time(name, || admin.status_counts(filter)).await;
    }
    time("counts by type, all tenants, all time", || {
        admin.type_counts(&all)
    })
    .await;
    time("counts by type, one tenant", || admin.type_counts(&tenant)).await;
    time("lag (oldest PENDING), all tenants", || {
        admin.oldest_pending(None)
    })
    .await;
    time("lag (oldest PENDING), one tenant", || {
        admin.oldest_pending(Some("tenant-7"))
    })
    .await;
    time("latency avg/p50/p95, last 15 min", || {
        admin.latency(None, now - TimeDelta::minutes(15), now)
    })
    .await;
    time("latency avg/p50/p95, last hour", || {
        admin.latency(None, now - TimeDelta::hours(1), now)
    })
    .await;
    time("latency avg/p50/p95, one tenant, last hour", || {
        admin.latency(Some("tenant-7"), now - TimeDelta::hours(1), now)
    })
    .await;
    time("throughput 1/5/15 min", || admin.throughput(None, now)).await;
    for (name, tenant, offset) in [
        ("failed list page 1 (50), all tenants", None, 0),
        ("failed list page 100 (50), all tenants", None, 4950),
        ("failed list page 1 (50), one tenant", Some("tenant-7"), 0),
    ] {
        time(name, || async {
            admin
                .failed_events(tenant, offset, 50)
                .await
                .map(|(i, t)| (i.len(), t))
        })
        .await;
    }
    let dead = ReplayFilter {
        rows: all.clone(),
        statuses: REPLAYABLE.to_vec(),
        limit: 100_000,
    };
    time("replay dry run (FAILED+DEAD, limit 100k)", || {
        admin.count_replayable(&dead)
    })
    .await;
    let started = Instant::now();
    let replay = ReplayFilter {
        rows: all.clone(),
        statuses: REPLAYABLE.to_vec(),
        limit: 10_000,
    };
    let moved = admin
        .replay_matching(&replay, "bench", now)
        .await
        .expect("replay");
    println!(
        "  {:<44} {:>9.1} ms   {moved} rows in batches of 500",
        "replay 10 000 FAILED/DEAD rows",
        started.elapsed().as_secs_f64() * 1000.0
    );
    db.cleanup().await;
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("FLUXGATE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let databases =
        std::env::var("FLUXGATE_BENCH_DATABASES").unwrap_or_else(|_| "postgres,mariadb".into());
    for name in databases.split(',').map(str::trim) {
        let kind = match name {
            "postgres" => DbKind::Postgres,
            "mariadb" | "mysql" => DbKind::MariaDb,
            other => panic!("FLUXGATE_BENCH_DATABASES: unknown {other:?} (postgres, mariadb)"),
        };
        bench(kind, rows).await;
    }
}
