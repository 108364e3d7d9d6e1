//! What delivery costs, counted on the wire: at the default settings, events of 1 KiB travel
//! at least 200 to a queue request and to a warehouse request (`insertAll`), through Pub/Sub
//! (the test server, the suite's one declared mock) and SQS (moto) into BigQuery
//! (bqemulator, behind a counting proxy that forwards every request unchanged).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fluxgate::config::{DrainConfig, WorkerConfig};
use fluxgate::event::Event;
use fluxgate::queue::{self, PubsubConfig, SqsQueue};
use fluxgate::sink;
use fluxgate::store::OutboxStatus;
use fluxgate_outbox_drain::Drain;
use fluxgate_tests::aws::{TestQueue, moto_config};
use fluxgate_tests::pubsub_server::PubsubTestServer;
use fluxgate_tests::{TestBigQuery, TestDb, event_with_payload};
use fluxgate_worker::{Delivery, Verdict, Worker};
use serde_json::json;

const TOPIC: &str = "projects/fluxgate-test/topics/events";
const EVENTS: usize = 1000;
/// The cost rule of issue 11: at most one request per this many events.
const EVENTS_PER_REQUEST: usize = 200;

/// Events whose payload is 1 KiB of JSON.
fn kibibyte_events() -> Vec<Event> {
    (0..EVENTS)
        .map(|i| {
            event_with_payload(
                "acme",
                &format!("c{i:05}"),
                json!({"orderId": i, "note": "x".repeat(1000)}),
            )
        })
        .collect()
}

/// Forwards every request to bqemulator and counts the `insertAll` calls.
#[derive(Clone)]
struct CountingProxy {
    upstream: String,
    insert_all: Arc<AtomicUsize>,
    client: reqwest::Client,
}

impl CountingProxy {
    async fn start(upstream: &str) -> (String, Arc<AtomicUsize>) {
        let proxy = Self {
            upstream: upstream.trim_end_matches('/').to_owned(),
            insert_all: Arc::default(),
            client: reqwest::Client::new(),
        };
        let counter = proxy.insert_all.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let app = Router::new().fallback(forward).with_state(proxy);
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), counter)
    }
}

async fn forward(State(proxy): State<CountingProxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.uri.path().ends_with("/insertAll") {
        proxy.insert_all.fetch_add(1, Ordering::SeqCst);
    }
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let mut upstream = proxy
        .client
        .request(parts.method, format!("{}{path}", proxy.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST {
            upstream = upstream.header(name, value);
        }
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            let headers = answer.headers().clone();
            let body: Bytes = answer.bytes().await.unwrap_or_default();
            let mut response = (status, body).into_response();
            for (name, value) in &headers {
                if name != axum::http::header::CONTENT_LENGTH
                    && name != axum::http::header::TRANSFER_ENCODING
                {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// A worker writing through the counting proxy into this test's dataset.
async fn counted_worker(db: &TestDb, bq: &TestBigQuery) -> (Worker, Arc<AtomicUsize>) {
    let (proxy, insert_all) = CountingProxy::start(&bq.url).await;
    let mut config = bq.sink_config();
    config.bigquery.bigquery_endpoint = Some(proxy);
    let sink = sink::connect(&config).await.expect("sink");
    (
        Worker::new(db.store.clone(), sink, WorkerConfig::default()),
        insert_all,
    )
}

async fn assert_all_done(db: &TestDb, bq: &TestBigQuery, events: &[Event]) {
    let keys: Vec<_> = events.iter().map(Event::key).collect();
    let statuses = db.store.statuses(&keys).await.expect("statuses");
    assert!(
        statuses.values().all(|s| *s == OutboxStatus::Done) && statuses.len() == EVENTS,
        "every event DONE"
    );
    assert_eq!(bq.rows().await.len(), EVENTS, "one row per event");
}

fn at_most_one_per(requests: usize, what: &str) {
    assert!(
        requests >= 1 && requests * EVENTS_PER_REQUEST <= EVENTS,
        "{requests} {what} for {EVENTS} events of 1 KiB: more than one per {EVENTS_PER_REQUEST}"
    );
}

#[tokio::test]
async fn pubsub_into_bigquery_takes_one_request_per_200_events_at_the_defaults() {
    let (db, bq) = tokio::join!(TestDb::sqlite(), TestBigQuery::new());
    let server = PubsubTestServer::start(&[TOPIC]).await;
    let events = kibibyte_events();
    db.store.insert_events(&events).await.expect("insert");
    // The client's default batch of 100 messages (FLUXGATE_PUBSUB_BATCH_MESSAGES).
    let defaults = PubsubConfig::default().pubsub_batch_messages;
    let queue = queue::connect(&server.queue_config(TOPIC, defaults))
        .await
        .expect("queue");
    let drain = Drain::new(db.store.clone(), queue, DrainConfig::default());
    let summary = drain
        .run(Instant::now() + Duration::from_secs(60))
        .await
        .expect("drain");
    assert_eq!(summary.published as usize, EVENTS);
    at_most_one_per(server.requests().len(), "Publish requests");
    let published = server.published();
    at_most_one_per(published.len(), "messages (push requests)");

    // Pub/Sub pushes each message on its own: one worker call per message.
    let (worker, insert_all) = counted_worker(&db, &bq).await;
    for (i, message) in published.iter().enumerate() {
        let delivery = Delivery {
            message_id: format!("m{i}"),
            body: message.data.clone(),
            receive_count: 1,
        };
        let verdicts = worker.process(&[delivery]).await.expect("process");
        assert_eq!(verdicts, [Verdict::Ack]);
    }
    at_most_one_per(insert_all.load(Ordering::SeqCst), "insertAll requests");
    assert_all_done(&db, &bq, &events).await;
    tokio::join!(bq.cleanup(), db.cleanup());
}

#[tokio::test]
async fn sqs_into_bigquery_takes_one_request_per_200_events_at_the_defaults() {
    let (db, bq) = tokio::join!(TestDb::sqlite(), TestBigQuery::new());
    let queue = TestQueue::create().await;
    let events = kibibyte_events();
    db.store.insert_events(&events).await.expect("insert");
    let sqs = SqsQueue::new(aws_sdk_sqs::Client::new(&moto_config().await), &queue.url);
    let drain = Drain::new(db.store.clone(), Arc::new(sqs), DrainConfig::default());
    drain
        .run(Instant::now() + Duration::from_secs(60))
        .await
        .expect("drain");

    // SendMessageBatch takes at most 256 KiB, so each request carries one full pack here.
    let received = queue.receive(EVENTS, Duration::from_secs(20)).await;
    at_most_one_per(received.len(), "messages (SendMessageBatch requests)");

    // The event source mapping hands the worker up to 10 messages per invocation (the
    // template's default batch size).
    let (worker, insert_all) = counted_worker(&db, &bq).await;
    let deliveries: Vec<Delivery> = received
        .iter()
        .enumerate()
        .map(|(i, m)| Delivery {
            message_id: format!("m{i}"),
            body: m.body().unwrap_or_default().as_bytes().to_vec(),
            receive_count: 1,
        })
        .collect();
    let mut invocations = 0;
    for batch in deliveries.chunks(10) {
        invocations += 1;
        let verdicts = worker.process(batch).await.expect("process");
        assert!(verdicts.iter().all(|v| *v == Verdict::Ack), "{verdicts:?}");
    }
    at_most_one_per(invocations, "worker invocations");
    at_most_one_per(insert_all.load(Ordering::SeqCst), "insertAll requests");
    assert_all_done(&db, &bq, &events).await;
    queue.delete().await;
    tokio::join!(bq.cleanup(), db.cleanup());
}
