//! Receive → DONE latency of the release `fluxgate-local` binary on PostgreSQL: single events
//! POSTed at a steady 500 events/s for 20 s (× FLUXGATE_BENCH_SCALE), each request sent on its
//! tick whatever the answers before it took; then, once every outbox row is DONE, the latency
//! of each event from the database (`outbox.done_at - events.received_at`, both written by
//! fluxgate-local's clock). Targets (issue 11): p50 ≤ 50 ms, p99 ≤ 500 ms.
//!
//! Baseline: the database's own round trip for the same rows, one INSERT transaction of an
//! event and its outbox row (what ingest writes), timed one after another on one connection.
//!
//! Then what eager publish costs a client where ingest is its own function (Lambda, Cloud Run)
//! and publishes new events before it answers: the release `fluxgate-ingest` on PostgreSQL,
//! single events at EAGER_EVENTS_PER_SECOND, once with no queue configured (events wait for
//! the scheduled drain: the baseline) and once with `FLUXGATE_QUEUE=sqs` on moto; the POST's
//! answer time on both, and receive → PUBLISHED with eager publish. The sides alternate, best
//! of FLUXGATE_BENCH_ROUNDS (p50) each.
//!
//!   scripts/bench.sh latency             # builds the release binaries, starts moto

use std::time::{Duration, Instant};

use fluxgate_tests::aws::{TestQueue, moto_env};
use fluxgate_tests::bench::raw::RawSql;
use fluxgate_tests::bench::{self, LocalProcess, Sql, percentile};
use fluxgate_tests::{TestDb, event, tenant_key};
use serde_json::json;
use sqlx::{Connection, PgConnection};

const EVENTS_PER_SECOND: u64 = 500;
const SECONDS: u64 = 20;
const BASELINE_INSERTS: usize = 2_000;
const PERCENTILES: [f64; 3] = [0.5, 0.95, 0.99];
/// Slower than the fluxgate-local part: every eager publish is a request to moto, a Python
/// server on the same two cores, which is no stand-in for SQS's own capacity.
const EAGER_EVENTS_PER_SECOND: u64 = 200;
const EAGER_SECONDS: u64 = 10;

/// p50, p95 and p99 of the values, in their order.
fn percentiles(mut values: Vec<f64>) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    PERCENTILES.map(|p| percentile(&values, p))
}

/// Where single events are POSTed, and as whom.
struct Target {
    address: std::net::SocketAddr,
    tenant: String,
    key: String,
}

/// POSTs `events` single events at `per_second`; answers the achieved rate and the client's
/// answer times in ms.
async fn send_steadily(target: &Target, per_second: u64, events: u64) -> (f64, Vec<f64>) {
    let url = format!("http://{}/v1/events", target.address);
    let bearer = format!("Bearer {}", target.key);
    let client = reqwest::Client::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second as u32);
    let started = Instant::now();
    let mut requests = Vec::with_capacity(events as usize);
    for i in 0..events {
        ticks.tick().await;
        let request = client
            .post(&url)
            .header("authorization", &bearer)
            .json(&json!({
                "tenantId": target.tenant,
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

/// Receive → PUBLISHED of every published event, in ms.
async fn receive_to_published(db: &TestDb) -> Vec<f64> {
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM (o.published_at - e.received_at)) * 1000)::float8 \
         FROM outbox o JOIN events e USING (tenant_id, event_id) WHERE o.published_at IS NOT NULL",
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

/// The release `fluxgate-ingest` that `scripts/bench.sh` built and copied out of the shared
/// target folder.
fn ingest_binary() -> std::path::PathBuf {
    std::env::var_os("FLUXGATE_BENCH_INGEST_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| bench::release_binary("fluxgate-ingest"))
}

/// One round of `fluxgate-ingest` under single events, with eager publish to an SQS queue on
/// moto or without a queue: the POST answer times' percentiles, and receive → PUBLISHED's with
/// how many events eager publish sent (no drain runs here).
struct IngestRound {
    answered: [f64; 3],
    published: Option<([f64; 3], usize)>,
}

async fn ingest_round(eager: bool) -> IngestRound {
    let events = EAGER_EVENTS_PER_SECOND * EAGER_SECONDS;
    let db = TestDb::postgres().await;
    let key = tenant_key(db.store.as_ref(), "bench").await;
    let queue = if eager {
        Some(TestQueue::create().await)
    } else {
        None
    };
    let mut settings = Vec::new();
    if let Some(queue) = &queue {
        settings.extend(moto_env());
        settings.push(("FLUXGATE_QUEUE", "sqs".to_owned()));
        settings.push(("FLUXGATE_SQS_QUEUE_URL", queue.url.clone()));
    }
    let mut ingest = LocalProcess::spawn_function_with(&ingest_binary(), &db.url, settings);
    ingest.ready().await;
    let target = Target {
        address: ingest.address,
        tenant: "bench".to_owned(),
        key,
    };
    let (_, answers) = send_steadily(&target, EAGER_EVENTS_PER_SECOND, events).await;
    ingest.assert_running();
    drop(ingest);
    let published = if eager {
        let times = receive_to_published(&db).await;
        let count = times.len();
        Some((percentiles(times), count))
    } else {
        None
    };
    if let Some(queue) = queue {
        queue.delete().await;
    }
    db.cleanup().await;
    IngestRound {
        answered: percentiles(answers),
        published,
    }
}

/// Percentiles of the round with the lowest p50.
fn best(rounds: &[[f64; 3]]) -> [f64; 3] {
    rounds
        .iter()
        .copied()
        .min_by(|a, b| a[0].total_cmp(&b[0]))
        .unwrap_or([f64::NAN; 3])
}

async fn eager_publish_cost() {
    let load_before = bench::load_average();
    let (mut without, mut with, mut published) = (Vec::new(), Vec::new(), Vec::new());
    let mut published_events = usize::MAX;
    for round in 1..=bench::rounds() {
        // Alternate which side goes first, so neither always meets a quieter machine.
        for eager in [round % 2 == 0, round % 2 == 1] {
            let measured = ingest_round(eager).await;
            eprintln!(
                "eager publish {eager} round {round}: answered p50 {:.1} ms",
                measured.answered[0]
            );
            if let Some((times, count)) = measured.published {
                with.push(measured.answered);
                published.push(times);
                published_events = published_events.min(count);
            } else {
                without.push(measured.answered);
            }
        }
    }
    let events = EAGER_EVENTS_PER_SECOND * EAGER_SECONDS;
    let row = |what: &str, [p50, p95, p99]: [f64; 3]| {
        format!("| {what} | {p50:.1} | {p95:.1} | {p99:.1} |")
    };
    println!(
        "\nEager publish, release fluxgate-ingest on PostgreSQL, {events} single events POSTed at \
         {EAGER_EVENTS_PER_SECOND}/s, best of {} alternating rounds (by p50)\n",
        bench::rounds()
    );
    println!("| | p50 ms | p95 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "{}",
        row(
            "baseline: POST answered, no queue (the schedule publishes)",
            best(&without)
        )
    );
    println!(
        "{}",
        row(
            "POST answered, eager publish to SQS (moto) before the answer",
            best(&with)
        )
    );
    println!(
        "{}",
        row(
            "received → PUBLISHED, eager publish (database times)",
            best(&published)
        )
    );
    println!(
        "\nPublished by eager publish alone: at least {published_events} of {events} events in every round \
         (load average {load_before} before, {} after)",
        bench::load_average()
    );
}

async fn run() {
    let events = EVENTS_PER_SECOND * SECONDS * bench::scale() as u64;
    let load_before = bench::load_average();
    let db = TestDb::postgres().await;
    let mut local = LocalProcess::spawn(&db.url);
    local.ready().await;
    let target = Target {
        address: local.address,
        tenant: "dev".to_owned(),
        key: local.dev_key(),
    };
    let (sent_rate, answers) = send_steadily(&target, EVENTS_PER_SECOND, events).await;
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
    eager_publish_cost().await;
}

fn main() {
    bench::runtime().block_on(run());
}
