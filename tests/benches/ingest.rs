//! Ingest throughput: fluxgate's HTTP API (validation, idempotency, event + outbox row in one
//! transaction) beside a raw baseline that writes the same rows with plain INSERTs, in the
//! same process, on the same database server, at the same concurrency.
//!
//!   scripts/bench.sh                       # PostgreSQL and MariaDB
//!   FLUXGATE_BENCH_DATABASES=postgres scripts/bench.sh
//!   FLUXGATE_BENCH_SCALE=4 scripts/bench.sh   # four times the events

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::auth::{AuthConfig, Authenticator};
use fluxgate::config::Limits;
use fluxgate::event::Event;
use fluxgate_tests::bench::raw::RawSql;
use fluxgate_tests::bench::{self, rate};
use fluxgate_tests::{DbKind, TestDb, database_config, event_with_payload, tenant_key};
use serde_json::{Value, json};
use sqlx::Pool;
use sqlx::pool::PoolOptions;

const CONCURRENCY: usize = 32;
const BATCH_SIZE: usize = 500;

#[derive(Clone, Copy)]
enum Workload {
    Single,
    Batch,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Single => "single event per request",
            Self::Batch => "batch of 500 per request",
        }
    }

    /// Requests each of the concurrent clients sends.
    fn requests_per_client(self, scale: usize) -> usize {
        match self {
            Self::Single => 60 * scale,
            Self::Batch => 2 * scale,
        }
    }

    fn events_per_request(self) -> usize {
        match self {
            Self::Single => 1,
            Self::Batch => BATCH_SIZE,
        }
    }
}

fn body(workload: Workload, client: usize, request: usize) -> Value {
    let events: Vec<Value> = (0..workload.events_per_request())
        .map(|i| {
            json!({
                "tenantId": format!("tenant-{}", client % 8),
                "eventId": format!("c{client}-r{request}-e{i}"),
                "eventType": "page.viewed",
                "payload": {"path": "/pricing", "userId": client * 1_000 + i, "ms": 123.4, "tags": ["a", "b"]},
            })
        })
        .collect();
    match workload {
        Workload::Single => events.into_iter().next().unwrap_or(Value::Null),
        Workload::Batch => Value::Array(events),
    }
}

/// Events/s through the real router served on a loopback port.
async fn through_fluxgate(kind: DbKind, workload: Workload, scale: usize) -> f64 {
    let db = TestDb::of(kind).await;
    // The same pool size as the baseline gets, so both sides wait on the database alike.
    let mut config = database_config(&db.url);
    config.db_max_connections = Some(CONCURRENCY as u32);
    let store = fluxgate::store::connect(&db.url, &config)
        .await
        .expect("connect");
    // Each client sends with its tenant's own key, through the default settings (30 s key
    // lookup cache), as a deployment would.
    let mut keys = Vec::with_capacity(8);
    for tenant in 0..8 {
        keys.push(tenant_key(store.as_ref(), &format!("tenant-{tenant}")).await);
    }
    let auth = Authenticator::from_config(&AuthConfig::default(), store.clone())
        .await
        .expect("auth");
    let app = fluxgate_ingest::service(store, Limits::default(), auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let path = match workload {
        Workload::Single => "/v1/events",
        Workload::Batch => "/v1/events/batch",
    };
    let url = format!("http://{address}{path}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");
    let requests = workload.requests_per_client(scale);
    // Bodies are made before the clock starts: only ingest is timed.
    let bodies: Vec<Vec<String>> = (0..CONCURRENCY)
        .map(|c| {
            (0..requests)
                .map(|r| body(workload, c, r).to_string())
                .collect()
        })
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(c, bodies)| {
            let client = client.clone();
            let url = url.clone();
            let bearer = format!("Bearer {}", keys[c % 8]);
            tokio::spawn(async move {
                for body in bodies {
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("authorization", &bearer)
                        .body(body)
                        .send()
                        .await
                        .expect("send");
                    assert!(
                        response.status().is_success(),
                        "{}",
                        response.text().await.unwrap_or_default()
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    let elapsed = started.elapsed();
    server.abort();
    db.cleanup().await;
    rate(
        CONCURRENCY * requests * workload.events_per_request(),
        elapsed,
    )
}

/// Events/s for the same rows written with plain INSERTs: one transaction per request, the
/// event rows and their outbox rows, multi-row for batches. No HTTP, no validation, no
/// idempotency check.
async fn raw_baseline(kind: DbKind, workload: Workload, scale: usize) -> f64 {
    let db = TestDb::of(kind).await;
    let requests = workload.requests_per_client(scale);
    let batches: Vec<Vec<Vec<Event>>> = (0..CONCURRENCY)
        .map(|c| {
            (0..requests)
                .map(|r| match body(workload, c, r) {
                    Value::Array(items) => items.into_iter().map(to_event).collect(),
                    single => vec![to_event(single)],
                })
                .collect()
        })
        .collect();
    // SQLite has one writer: more connections would only wait for each other.
    let elapsed = match kind {
        DbKind::Postgres => run_raw::<sqlx::Postgres>(&db.url, CONCURRENCY, batches).await,
        DbKind::MariaDb => run_raw::<sqlx::MySql>(&db.url, CONCURRENCY, batches).await,
        DbKind::Sqlite => run_raw::<sqlx::Sqlite>(&db.url, 1, batches).await,
    };
    db.cleanup().await;
    rate(
        CONCURRENCY * requests * workload.events_per_request(),
        elapsed,
    )
}

fn to_event(value: Value) -> Event {
    let tenant = value["tenantId"].as_str().unwrap_or_default().to_owned();
    let id = value["eventId"].as_str().unwrap_or_default().to_owned();
    event_with_payload(&tenant, &id, value["payload"].clone())
}

/// The batches written through a pool of `connections` to `url`, as plain statements.
async fn run_raw<DB: RawSql>(
    url: &str,
    connections: usize,
    batches: Vec<Vec<Vec<Event>>>,
) -> Duration {
    let pool: Pool<DB> = PoolOptions::new()
        .max_connections(connections as u32)
        .connect(url)
        .await
        .expect("connect");
    let pool = Arc::new(pool);
    let started = Instant::now();
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|client| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for events in client {
                    let mut tx = pool.begin().await.expect("begin");
                    DB::insert_rows(&mut tx, &events).await;
                    tx.commit().await.expect("commit");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("raw task");
    }
    started.elapsed()
}

fn main() {
    let scale = bench::scale();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("\nIngest throughput, {CONCURRENCY} concurrent clients, scale {scale}\n");
    println!("| database | workload | fluxgate events/s | raw INSERT events/s | fluxgate / raw |");
    println!("|---|---|---:|---:|---:|");
    for kind in bench::databases("postgres,mariadb") {
        for workload in [Workload::Single, Workload::Batch] {
            // The baseline runs first on a fresh database of its own; then fluxgate on another.
            let raw = runtime.block_on(raw_baseline(kind, workload, scale));
            let ours = runtime.block_on(through_fluxgate(kind, workload, scale));
            println!(
                "| {kind} | {} | {ours:.0} | {raw:.0} | {:.2} |",
                workload.name(),
                ours / raw
            );
        }
    }
}
