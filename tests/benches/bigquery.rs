//! BigQuery write modes against bqemulator: N PENDING events (20,000 × FLUXGATE_BENCH_SCALE)
//! seeded into PostgreSQL, then the release `fluxgate-local` with `FLUXGATE_SINK=bigquery`
//! started on them in each `FLUXGATE_BIGQUERY_WRITE_MODE` (drain → in-process queue → worker →
//! bqemulator → DONE), timed from its start until every outbox row is DONE. Requests are
//! counted by the emulator itself (its `/metrics`: REST and gRPC calls), per 100,000 events.
//!
//! Baseline, in the same run: the emulator's own rate for the same rows written directly by a
//! plain client (gcp-bigquery-client `insertAll`, 500 rows a request, 4 requests at once, as
//! fluxgate-local's 4 consumers), with no database and no queue. The sides alternate which
//! goes first; the best of FLUXGATE_BENCH_ROUNDS (default 3) rounds counts.
//!
//!   scripts/bench.sh bigquery     # starts bqemulator when it is not running

use std::time::{Duration, Instant};

use fluxgate::event::Event;
use fluxgate::sink::WarehouseRow;
use fluxgate::sink::bigquery::BigQueryWriteMode;
use fluxgate_tests::bench::{self, LocalProcess, Sql};
use fluxgate_tests::{DbKind, TestBigQuery, TestDb, WRITE_MODES, event_with_payload};
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use serde_json::json;

const EVENTS: usize = 20_000;

fn events(count: usize) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let payload = json!({"path": "/pricing", "userId": i, "ms": 123.4, "tags": ["a", "b"]});
            event_with_payload("bench", &format!("e{i:07}"), payload)
        })
        .collect()
}

async fn seeded(all: &[Event]) -> TestDb {
    let db = TestDb::of(DbKind::Postgres).await;
    for chunk in all.chunks(500) {
        let refs: Vec<&Event> = chunk.iter().collect();
        db.store.insert_unique(&refs).await.expect("seed events");
    }
    Sql::connect(&db).await.analyze().await;
    db
}

/// REST + gRPC calls the emulator has answered so far (its own Prometheus counters).
async fn emulator_requests(url: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("bqemulator /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| {
            l.starts_with("bqemulator_rest_requests_total{")
                || l.starts_with("bqemulator_grpc_requests_total{")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Rows/s and requests of fluxgate-local delivering the seeded events in `mode`.
async fn through_fluxgate(mode: BigQueryWriteMode, all: &[Event]) -> (f64, f64) {
    let db = seeded(all).await;
    let bq = TestBigQuery::new().await;
    let sql = Sql::connect(&db).await;
    let before = emulator_requests(&bq.url).await;
    let started = Instant::now();
    let mut local = LocalProcess::spawn_with(&db.url, &bq.env_in(mode));
    sql.wait_all_done(all.len(), &mut local, Duration::from_secs(1800))
        .await;
    let rate = bench::rate(all.len(), started.elapsed());
    let requests = emulator_requests(&bq.url).await - before;
    drop(local);
    let expected = i64::try_from(all.len()).expect("count");
    assert_eq!(
        bq.count().await,
        (expected, expected),
        "{mode:?}: every event once in the table"
    );
    bq.cleanup().await;
    db.cleanup().await;
    (rate, requests)
}

/// Rows/s of a plain client writing the same rows straight into the emulator.
async fn plain_client(all: &[Event]) -> (f64, f64) {
    let bq = TestBigQuery::new().await;
    // The table, made as the sink makes it (not timed).
    let sink = bq.sink().await;
    let at = fluxgate::now();
    let first = vec![WarehouseRow::new(&all[0], at)];
    fluxgate::sink::Sink::write_rows(&sink, &first)
        .await
        .expect("create the table");
    let rows: Vec<serde_json::Value> = all[1..]
        .iter()
        .map(|e| {
            let row = WarehouseRow::new(e, at);
            json!({"tenant_id": row.tenant_id, "event_id": row.event_id, "event_type": row.event_type,
                   "event_ts": row.event_ts.to_rfc3339(), "event_date": row.event_date.to_string(),
                   "payload": row.payload.get(), "payload_sha256": row.payload_sha256,
                   "received_at": row.received_at.to_rfc3339(), "ingested_at": at.to_rfc3339()})
        })
        .collect();
    let before = emulator_requests(&bq.url).await;
    let started = Instant::now();
    let batches: Vec<Vec<serde_json::Value>> = rows.chunks(500).map(<[_]>::to_vec).collect();
    let client = bq.client().clone();
    let target = bq.target.clone();
    let mut pending = batches.into_iter();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < 4 {
            let Some(batch) = pending.next() else { break };
            let client = client.clone();
            let target = target.clone();
            running.spawn(async move {
                let mut request = TableDataInsertAllRequest::new();
                for row in batch {
                    request.add_row(None, row).expect("row");
                }
                client
                    .tabledata()
                    .insert_all(&target.project, &target.dataset, &target.table, request)
                    .await
                    .expect("insertAll");
            });
        }
        if running.join_next().await.is_none() {
            break;
        }
    }
    let rate = bench::rate(all.len(), started.elapsed());
    let requests = emulator_requests(&bq.url).await - before;
    bq.cleanup().await;
    (rate, requests)
}

fn main() {
    let count = EVENTS * bench::scale();
    let rounds = bench::rounds();
    let runtime = bench::runtime();
    let all = events(count);
    let per_100k = |requests: f64| requests * 100_000.0 / count as f64;
    let load_before = bench::load_average();
    let mut baseline = (0.0_f64, 0.0_f64);
    let mut best: Vec<(f64, f64)> = vec![(0.0, 0.0); WRITE_MODES.len()];
    for round in 1..=rounds {
        runtime.block_on(async {
            let plain_first = round % 2 == 1;
            if plain_first {
                let (rate, requests) = plain_client(&all).await;
                eprintln!("round {round}: plain insertAll {rate:.0} rows/s");
                if rate > baseline.0 {
                    baseline = (rate, requests);
                }
            }
            for (i, mode) in WRITE_MODES.iter().enumerate() {
                let (rate, requests) = through_fluxgate(*mode, &all).await;
                eprintln!(
                    "round {round}: {} {rate:.0} rows/s, {:.0} requests per 100k",
                    mode.as_str(),
                    per_100k(requests)
                );
                if rate > best[i].0 {
                    best[i] = (rate, requests);
                }
            }
            if !plain_first {
                let (rate, requests) = plain_client(&all).await;
                eprintln!("round {round}: plain insertAll {rate:.0} rows/s");
                if rate > baseline.0 {
                    baseline = (rate, requests);
                }
            }
        });
    }
    // scripts/bench.sh builds the release binary unless FLUXGATE_BENCH_LOCAL_BINARY names one.
    let binary = std::env::var("FLUXGATE_BENCH_LOCAL_BINARY")
        .map(|path| format!("fluxgate-local {path}"))
        .unwrap_or_else(|_| "release fluxgate-local".to_owned());
    let mut table = vec![
        format!(
            "\nBigQuery write modes: {count} PENDING events on PostgreSQL delivered by {binary} into bqemulator, best of {rounds} rounds; baseline: a plain client's insertAll of the same rows (500 a request, 4 at once)\n"
        ),
        "| mode | rows/s | requests per 100,000 events | rows/s / plain client |".into(),
        "|---|---:|---:|---:|".into(),
    ];
    for (mode, (rate, requests)) in WRITE_MODES.iter().zip(&best) {
        table.push(format!(
            "| {} | {rate:.0} | {:.0} | {:.2} |",
            mode.as_str(),
            per_100k(*requests),
            rate / baseline.0
        ));
    }
    table.push(format!(
        "| plain client (insertAll, baseline) | {:.0} | {:.0} | 1.00 |",
        baseline.0,
        per_100k(baseline.1)
    ));
    table.push(format!(
        "\n(load average {load_before} before, {} after)",
        bench::load_average()
    ));
    println!("{}", table.join("\n"));
}
