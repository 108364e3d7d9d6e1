//! Receive → DONE latency of the release `fluxgate-local` binary on PostgreSQL: single events
//! POSTed at a steady 500 events/s for 20 s (× FLUXGATE_BENCH_SCALE), each request sent on its
//! tick whatever the answers before it took; then, once every outbox row is DONE, the latency
//! of each event from the database (`outbox.done_at - events.received_at`, both written by
//! fluxgate-local's clock). Targets (issue 11): p50 ≤ 50 ms, p99 ≤ 500 ms.
//!
//! Baseline: the database's own round trip for the same rows, one INSERT transaction of an
//! event and its outbox row (what ingest writes), timed one after another on one connection.
//!
//!   scripts/bench.sh latency             # builds the release binary first

use std::time::{Duration, Instant};

use fluxgate_tests::bench::raw::RawSql;
use fluxgate_tests::bench::{self, LocalProcess, Sql, percentile};
use fluxgate_tests::{TestDb, event};
use serde_json::json;
use sqlx::{Connection, PgConnection};

const EVENTS_PER_SECOND: u64 = 500;
const SECONDS: u64 = 20;
const BASELINE_INSERTS: usize = 2_000;
const PERCENTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// p50, p95 and p99 of the values, in their order.
fn percentiles(mut values: Vec<f64>) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    PERCENTILES.map(|p| percentile(&values, p))
}

/// POSTs `events` single events at EVENTS_PER_SECOND; answers the achieved rate and the
/// client's answer times in ms.
async fn send_steadily(local: &LocalProcess, events: u64) -> (f64, Vec<f64>) {
    let url = format!("http://{}/v1/events", local.address);
    let bearer = format!("Bearer {}", local.dev_key());
    let client = reqwest::Client::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / EVENTS_PER_SECOND as u32);
    let started = Instant::now();
    let mut requests = Vec::with_capacity(events as usize);
    for i in 0..events {
        ticks.tick().await;
        let request = client
            .post(&url)
            .header("authorization", &bearer)
            .json(&json!({
                "tenantId": "dev",
                "eventId": format!("e{i:07}"),
                "eventType": "page.viewed",
                "payload": {"path": "/pricing", "userId": i, "ms": 123.4, "tags": ["a", "b"]},
            }))
            .send();
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = request.await.expect("send");
            let answered = sent.elapsed();
            assert!(
                response.status().is_success(),
                "{}",
                response.text().await.unwrap_or_default()
            );
            answered.as_secs_f64() * 1000.0
        }));
    }
    let sent_rate = bench::rate(events as usize, started.elapsed());
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        answers.push(request.await.expect("request task"));
    }
    (sent_rate, answers)
}

/// Receive → DONE of every event, in ms.
async fn receive_to_done(db: &TestDb) -> Vec<f64> {
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM (o.done_at - e.received_at)) * 1000)::float8 \
         FROM outbox o JOIN events e USING (tenant_id, event_id)",
    )
    .fetch_all(&mut conn)
    .await
    .expect("latencies")
}

/// One INSERT transaction of an event and its outbox row, BASELINE_INSERTS times, in ms each.
async fn insert_round_trips(db: &TestDb) -> Vec<f64> {
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    let mut times = Vec::with_capacity(BASELINE_INSERTS);
    for i in 0..BASELINE_INSERTS {
        let rows = [event("baseline", &format!("b{i:07}"))];
        let started = Instant::now();
        let mut tx = conn.begin().await.expect("begin");
        sqlx::Postgres::insert_rows(&mut tx, &rows).await;
        tx.commit().await.expect("commit");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times
}

async fn run() {
    let events = EVENTS_PER_SECOND * SECONDS * bench::scale() as u64;
    let load_before = bench::load_average();
    let db = TestDb::postgres().await;
    let mut local = LocalProcess::spawn(&db.url);
    local.ready().await;
    let (sent_rate, answers) = send_steadily(&local, events).await;
    Sql::connect(&db)
        .await
        .wait_all_done(events as usize, &mut local, Duration::from_secs(300))
        .await;
    let done = percentiles(receive_to_done(&db).await);
    let answered = percentiles(answers);
    drop(local);
    let baseline = percentiles(insert_round_trips(&db).await);
    db.cleanup().await;

    let row = |what: &str, [p50, p95, p99]: [f64; 3]| {
        format!("| {what} | {p50:.1} | {p95:.1} | {p99:.1} |")
    };
    println!(
        "\nReceive → DONE latency, release fluxgate-local on PostgreSQL, {events} single events POSTed at {sent_rate:.0}/s\n"
    );
    println!("| | p50 ms | p95 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "{}",
        row("fluxgate-local: received → DONE (database times)", done)
    );
    println!("| target (issue 11) | ≤ 50 | – | ≤ 500 |");
    println!(
        "{}",
        row("fluxgate-local: POST answered (client)", answered)
    );
    println!(
        "{}",
        row(
            "baseline: INSERT event + outbox row, one transaction (PostgreSQL round trip)",
            baseline
        )
    );
    println!(
        "\n(load average {load_before} before, {} after)",
        bench::load_average()
    );
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}
