//! Ingest throughput from the outside, on PostgreSQL: `wrk` posting new events to the release
//! `fluxgate-ingest` binary (each of 8 tenants with its own API key, 32 connections), beside
//! `pgbench` writing the same rows — the event and its PENDING outbox row — at the same
//! concurrency into the same tables. Events are counted in the database. Each side gets a fresh
//! database, the sides alternate which goes first, and each side's best of
//! FLUXGATE_BENCH_ROUNDS (default 3) rounds counts.
//!
//!   scripts/bench.sh ingest                          # builds the release binary, installs wrk
//!   FLUXGATE_BENCH_SECONDS=30 scripts/bench.sh ingest   # longer runs (default 15 s)
//!
//! Settings `FLUXGATE_*` of the environment reach `fluxgate-ingest` (for example
//! `FLUXGATE_DB_MAX_CONNECTIONS`, default here: the 32 connections pgbench gets).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fluxgate_tests::bench::{self, LocalProcess, rate};
use fluxgate_tests::{DbKind, TestDb, tenant_key};
use sqlx::PgPool;

const CONNECTIONS: usize = 32;
const TENANTS: usize = 8;

#[derive(Clone, Copy)]
enum Workload {
    Single,
    Batch,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Single => "one event per request",
            Self::Batch => "500 per request",
        }
    }

    fn events_per_request(self) -> usize {
        match self {
            Self::Single => 1,
            Self::Batch => 500,
        }
    }

    fn raw_sql(self) -> &'static str {
        match self {
            Self::Single => "INSERT+INSERT+COMMIT",
            Self::Batch => "INSERT … SELECT of 500, both tables",
        }
    }

    fn pgbench_script(self) -> PathBuf {
        let name = match self {
            Self::Single => "ingest_single_pgbench.sql",
            Self::Batch => "ingest_batch_pgbench.sql",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches")
            .join(name)
    }
}

fn seconds() -> u64 {
    std::env::var("FLUXGATE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

/// The binary `scripts/bench.sh` built and copied out of the shared target folder.
fn ingest_binary() -> PathBuf {
    std::env::var_os("FLUXGATE_BENCH_INGEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| bench::release_binary("fluxgate-ingest"))
}

async fn events_stored(url: &str) -> i64 {
    let pool = PgPool::connect(url).await.expect("connect");
    let count = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count events");
    pool.close().await;
    count
}

/// Events/s that `wrk` got into the database through `fluxgate-ingest`, and the process's peak
/// resident set in KiB.
async fn through_fluxgate(db: &TestDb, workload: Workload) -> (f64, Option<u64>) {
    let mut keys = Vec::with_capacity(TENANTS);
    for tenant in 0..TENANTS {
        let tenant = format!("tenant-{tenant}");
        let key = tenant_key(db.store.as_ref(), &tenant).await;
        keys.push(format!("{tenant}={key}"));
    }
    let mut ingest = LocalProcess::spawn_function(&ingest_binary(), &db.url);
    ingest.ready().await;
    let started = Instant::now();
    let output = Command::new("wrk")
        .args(["--threads", "2", "--connections", &CONNECTIONS.to_string()])
        .arg(format!("--duration={}s", seconds()))
        .arg("--timeout=30s")
        .arg("--script")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ingest_wrk.lua"))
        .arg(format!("http://{}", ingest.address))
        .env("FLUXGATE_BENCH_KEYS", keys.join(","))
        .env(
            "FLUXGATE_BENCH_EVENTS_PER_REQUEST",
            workload.events_per_request().to_string(),
        )
        .output()
        .expect("run wrk (scripts/bench.sh installs it)");
    let elapsed = started.elapsed();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !report.contains("Non-2xx"),
        "wrk failed or got error answers:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    ingest.assert_running();
    let peak = ingest.peak_rss_kib();
    drop(ingest);
    let stored = events_stored(&db.url).await;
    (rate(stored as usize, elapsed), peak)
}

/// Events/s that `pgbench` wrote with the same rows at the same concurrency.
async fn raw_sql(db: &TestDb, workload: Workload) -> f64 {
    let elapsed = bench::pgbench(
        [
            "--no-vacuum".to_owned(),
            "--protocol=prepared".to_owned(),
            "--jobs=2".to_owned(),
            format!("--client={CONNECTIONS}"),
            format!("--time={}", seconds()),
            format!("--define=batch={}", workload.events_per_request()),
            format!("--file={}", workload.pgbench_script().display()),
        ],
        &db.url,
    );
    rate(events_stored(&db.url).await as usize, elapsed)
}

fn main() {
    let rounds = bench::rounds();
    let runtime = bench::runtime();
    let load_before = bench::load_average();
    let mut rows = Vec::new();
    let mut peak_rss = 0_u64;
    for workload in [Workload::Single, Workload::Batch] {
        let (mut ours, mut raw) = (0.0_f64, 0.0_f64);
        for round in 1..=rounds {
            // Alternate which side goes first, so neither always meets a warmer server.
            for fluxgate_side in [round % 2 == 1, round % 2 == 0] {
                runtime.block_on(async {
                    let db = TestDb::of(DbKind::Postgres).await;
                    if fluxgate_side {
                        let (events, peak) = through_fluxgate(&db, workload).await;
                        eprintln!(
                            "{} round {round}: fluxgate {events:.0} events/s, peak RSS {peak:?} KiB",
                            workload.name()
                        );
                        ours = ours.max(events);
                        peak_rss = peak_rss.max(peak.unwrap_or(0));
                    } else {
                        let events = raw_sql(&db, workload).await;
                        eprintln!("{} round {round}: pgbench {events:.0} events/s", workload.name());
                        raw = raw.max(events);
                    }
                    db.cleanup().await;
                });
            }
        }
        rows.push(format!(
            "| {} | {ours:.0} ev/s | {raw:.0} ev/s ({}) | {:.2} |",
            workload.name(),
            workload.raw_sql(),
            ours / raw
        ));
    }
    let size = std::fs::metadata(ingest_binary()).map_or(0, |m| m.len());
    println!(
        "\nIngest on PostgreSQL from the outside: wrk → release fluxgate-ingest beside pgbench, \
         {CONNECTIONS} connections, {} s per run, best of {rounds} alternating rounds\n",
        seconds()
    );
    println!("| workload | fluxgate | raw SQL | ratio |");
    println!("|---|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
    println!(
        "\nfluxgate-ingest: {:.1} MiB, peak RSS {:.1} MiB (load average {load_before} before, {} after)",
        size as f64 / (1024.0 * 1024.0),
        peak_rss as f64 / 1024.0,
        bench::load_average()
    );
}
