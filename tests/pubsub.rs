//! Google Cloud's path: the drain publishing through the real `google-cloud-pubsub` client to
//! the Pub/Sub test server (see `fluxgate_tests::pubsub_server` for why that one is a mock),
//! the worker answering push deliveries in the documented envelope over HTTP, and the whole
//! pipeline end to end over HTTP.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use fluxgate::config::{DrainConfig, WorkerConfig};
use fluxgate::event::{Event, EventKey};
use fluxgate::queue::{self, PubsubConfig, Queue, QueueConfig, QueueKind, SqsConfig};
use fluxgate::sink::{self, LocalFileSink, Sink, WarehouseRow};
use fluxgate::store::{OutboxStatus, Store};
use fluxgate_outbox_drain::{Drain, StoppedBy};
use fluxgate_tests::pubsub_server::{PublishedMessage, PubsubTestServer};
use fluxgate_tests::{
    ADMIN_KEY, FlakySink, TestBigQuery, TestDb, authenticator, event, far_deadline,
};
use fluxgate_worker::Worker;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const TOPIC: &str = "projects/fluxgate-test/topics/events";
const SUBSCRIPTION: &str = "projects/fluxgate-test/subscriptions/events-push";

/// The queue exactly as the drain binary builds it from its settings.
async fn pubsub_queue(server: &PubsubTestServer, batch_messages: u32) -> Arc<dyn Queue> {
    queue::connect(&server.queue_config(TOPIC, batch_messages))
        .await
        .expect("the Pub/Sub queue connects to the test server")
}

/// Thirty events of acme (e0000…e0029) stored on a SQLite database of their own, and a Pub/Sub
/// test server that has the topic.
async fn thirty_events_and_a_server() -> (TestDb, PubsubTestServer, Vec<Event>) {
    let db = TestDb::sqlite().await;
    let server = PubsubTestServer::start(&[TOPIC]).await;
    let events: Vec<Event> = (0..30)
        .map(|i| event("acme", &format!("e{i:04}")))
        .collect();
    db.store.insert_events(&events).await.expect("insert");
    (db, server, events)
}

fn with_correlation(mut event: Event, correlation_id: &str) -> Event {
    event.correlation_id = Some(correlation_id.into());
    event
}

async fn statuses(store: &dyn Store, events: &[Event]) -> HashMap<EventKey, OutboxStatus> {
    let keys: Vec<_> = events.iter().map(Event::key).collect();
    store.statuses(&keys).await.expect("statuses")
}

/// The events a published message carries (packed, whole).
fn decoded(message: &PublishedMessage) -> Vec<Event> {
    fluxgate_tests::carried_by(&message.data).expect("a published message carries whole events")
}

/// The one event of a message the drain published one event per message.
fn decoded_one(message: &PublishedMessage) -> Event {
    let mut events = decoded(message);
    assert_eq!(events.len(), 1, "one event per message here");
    events.remove(0)
}

#[tokio::test]
async fn the_drain_publishes_in_batches_with_attributes_through_the_real_client() {
    let db = TestDb::sqlite().await;
    let server = PubsubTestServer::start(&[TOPIC]).await;
    let events: Vec<Event> = (0..250)
        .map(|i| with_correlation(event("acme", &format!("e{i:04}")), &format!("corr-{i}")))
        .collect();
    db.store.insert_events(&events).await.expect("insert");
    let drain = Drain::new(
        db.store.clone(),
        pubsub_queue(&server, 40).await,
        DrainConfig {
            drain_batch_size: 100,
            // One event per message: this is about the client's batching of messages.
            pack_max_events: 1,
            ..DrainConfig::default()
        },
    );

    let summary = drain.run(far_deadline()).await.expect("drain");
    assert_eq!((summary.claimed, summary.published), (250, 250));
    assert_eq!(summary.rounds, 3);

    let requests = server.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.outcome.is_ok() && !r.had_credentials),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|r| r.message_data.len() <= 40),
        "the client keeps to the batch size: {:?}",
        requests
            .iter()
            .map(|r| r.message_data.len())
            .collect::<Vec<_>>()
    );
    assert!(
        requests.len() >= 7 && requests.len() < 250,
        "{} requests for 250 messages: batched",
        requests.len()
    );

    let published = server.published();
    assert_eq!(published.len(), 250);
    let by_id: HashMap<String, &PublishedMessage> = published
        .iter()
        .map(|m| (decoded_one(m).event_id, m))
        .collect();
    for (i, sent) in events.iter().enumerate() {
        let message = by_id[&sent.event_id];
        assert_eq!(&decoded_one(message), sent);
        assert_eq!(
            message.attributes,
            HashMap::from([
                ("tenantId".to_string(), "acme".to_string()),
                ("eventType".to_string(), sent.event_type.clone()),
                ("correlationId".to_string(), format!("corr-{i}")),
            ])
        );
    }
    assert!(
        statuses(db.store.as_ref(), &events)
            .await
            .values()
            .all(|s| *s == OutboxStatus::Published)
    );
    assert_eq!(drain.run(far_deadline()).await.expect("drain").claimed, 0);
}

#[tokio::test]
async fn a_failed_publish_reschedules_only_the_messages_it_carried_with_backoff() {
    let (db, server, events) = thirty_events_and_a_server().await;
    // Every request that carries e0015 fails with UNAVAILABLE, which the client retries until
    // its publish timeout (2 s here); the rest of its requests go through.
    server.fail_requests_with(
        |m| String::from_utf8_lossy(&m.data).contains("\"e0015\""),
        tonic::Code::Unavailable,
        None,
    );
    let drain = Drain::new(
        db.store.clone(),
        pubsub_queue(&server, 10).await,
        DrainConfig {
            drain_batch_size: 30,
            retry_backoff: fluxgate::config::parse_schedule("7m").expect("schedule"),
            // One event per message, so a request carries several and only its own fail.
            pack_max_events: 1,
            ..DrainConfig::default()
        },
    );

    let before = fluxgate::now();
    let summary = drain.run(far_deadline()).await.expect("drain");
    let requests = server.requests();
    let failed: HashSet<String> = requests
        .iter()
        .filter(|r| r.outcome.is_err())
        .flat_map(|r| r.message_data.iter())
        .flat_map(|data| fluxgate_tests::carried_by(data).expect("events"))
        .map(|event| event.event_id)
        .collect();
    assert!(failed.contains("e0015"));
    assert!(
        requests.iter().filter(|r| r.outcome.is_err()).count() > 1,
        "the client retried the transient failure"
    );
    assert_eq!(summary.claimed, 30);
    assert_eq!(summary.retried as usize, failed.len());
    assert_eq!(summary.published as usize, 30 - failed.len());
    assert!(failed.len() < 30, "only the failing request's messages");

    let published: HashSet<String> = server
        .published()
        .iter()
        .map(|m| decoded_one(m).event_id)
        .collect();
    for sent in &events {
        let stored = db.stored(&sent.key()).await;
        if failed.contains(&sent.event_id) {
            assert_eq!(stored.outbox.status, OutboxStatus::Pending);
            assert_eq!(stored.outbox.attempts, 1);
            assert!(stored.outbox.next_attempt_at >= before + TimeDelta::minutes(7));
            assert!(
                stored
                    .outbox
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("failed by the Pub/Sub test server")),
                "{:?}",
                stored.outbox.last_error
            );
            assert!(!published.contains(&sent.event_id));
        } else {
            assert_eq!(stored.outbox.status, OutboxStatus::Published);
            assert!(published.contains(&sent.event_id));
        }
    }
    // Backoff: the failed ones are not due again yet.
    server.heal();
    assert_eq!(drain.run(far_deadline()).await.expect("drain").claimed, 0);
}

#[tokio::test]
async fn the_explicit_endpoint_setting_reaches_a_local_server_without_credentials() {
    let db = TestDb::sqlite().await;
    let server = PubsubTestServer::start(&[TOPIC]).await;
    let events: Vec<Event> = (0..5).map(|i| event("acme", &format!("e{i}"))).collect();
    db.store.insert_events(&events).await.expect("insert");
    let queue = queue::connect(&QueueConfig {
        queue: QueueKind::Pubsub,
        sqs: SqsConfig::default(),
        pubsub: PubsubConfig {
            pubsub_topic: Some(TOPIC.into()),
            pubsub_endpoint: Some(server.endpoint()),
            ..PubsubConfig::default()
        },
    })
    .await
    .expect("connect by FLUXGATE_PUBSUB_ENDPOINT");
    let drain = Drain::new(db.store.clone(), queue, DrainConfig::default());
    assert_eq!(drain.run(far_deadline()).await.expect("drain").published, 5);
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "one batch");
    assert!(!requests[0].had_credentials);
    assert_eq!(requests[0].topic, TOPIC);
}

#[tokio::test]
async fn an_unknown_topic_fails_every_message_and_nothing_is_lost() {
    let db = TestDb::sqlite().await;
    let server = PubsubTestServer::start(&["projects/fluxgate-test/topics/other"]).await;
    let events: Vec<Event> = (0..5).map(|i| event("acme", &format!("e{i}"))).collect();
    db.store.insert_events(&events).await.expect("insert");
    let drain = Drain::new(
        db.store.clone(),
        pubsub_queue(&server, 100).await,
        DrainConfig::default(),
    );
    let summary = drain.run(far_deadline()).await.expect("drain");
    assert_eq!(
        (summary.claimed, summary.published, summary.retried),
        (5, 0, 5)
    );
    assert!(
        statuses(db.store.as_ref(), &events)
            .await
            .values()
            .all(|s| *s == OutboxStatus::Pending)
    );
    assert!(summary.verdict().is_err());
}

// ----- the worker's push endpoint over HTTP -------------------------------------------------

/// A real HTTP server on 127.0.0.1:0 serving `app`; its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{addr}")
}

/// Where the worker under test loads events, and how a test reads them back.
enum Warehouse {
    /// The local-file warehouse (JSON Lines in Hive partitions).
    Files(tempfile::TempDir),
    /// A dataset of its own on bqemulator, written by the sink the worker builds from its
    /// settings (`fluxgate::sink::connect`), read back with queries.
    BigQuery(Box<TestBigQuery>),
}

impl Warehouse {
    fn files() -> Self {
        Self::Files(tempfile::tempdir().expect("tempdir"))
    }

    async fn bigquery() -> Self {
        Self::BigQuery(Box::new(TestBigQuery::new().await))
    }

    async fn sink(&self) -> Arc<dyn Sink> {
        match self {
            Self::Files(dir) => Arc::new(LocalFileSink::open(dir.path()).await.expect("sink")),
            Self::BigQuery(bq) => sink::connect(&bq.sink_config())
                .await
                .expect("the BigQuery sink as the worker builds it"),
        }
    }

    /// Rows by event id, as JSON with the warehouse's column names.
    async fn rows(&self) -> HashMap<String, Vec<Value>> {
        match self {
            Self::Files(dir) => fluxgate_tests::warehouse_file_rows(dir.path()),
            Self::BigQuery(bq) => {
                let mut rows: HashMap<String, Vec<Value>> = HashMap::new();
                for row in bq.rows().await {
                    let id = row.event_id.clone();
                    rows.entry(id)
                        .or_default()
                        .push(serde_json::to_value(&row).expect("json"));
                }
                rows
            }
        }
    }

    async fn cleanup(self) {
        if let Self::BigQuery(bq) = self {
            bq.cleanup().await;
        }
    }
}

struct PushWorker {
    url: String,
    worker: Worker,
    sink: Arc<FlakySink>,
    warehouse: Warehouse,
    http: reqwest::Client,
}

impl PushWorker {
    async fn start(store: Arc<dyn Store>, failing: &[&str]) -> Self {
        Self::start_on(store, Warehouse::files(), failing).await
    }

    async fn start_on(store: Arc<dyn Store>, warehouse: Warehouse, failing: &[&str]) -> Self {
        // The declared fake around the real warehouse (see fluxgate_tests::FlakySink).
        let sink = Arc::new(FlakySink::new(warehouse.sink().await, failing, &[]));
        let worker = Worker::new(
            store,
            sink.clone(),
            WorkerConfig {
                max_receive_count: 5,
            },
        );
        let url = serve(fluxgate_worker::service(worker.clone())).await;
        Self {
            url,
            worker,
            sink,
            warehouse,
            http: reqwest::Client::new(),
        }
    }

    async fn push(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/v1/pubsub/push", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("push to the worker");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn push_envelope(&self, envelope: &Value) -> (u16, Value) {
        self.push(envelope.to_string()).await
    }

    async fn rows(&self) -> HashMap<String, Vec<Value>> {
        self.warehouse.rows().await
    }
}

/// A push envelope exactly as documented, for `event` as the drain publishes it.
fn envelope(event: &Event, message_id: &str, delivery_attempt: Option<u32>) -> Value {
    use base64::Engine;
    let mut envelope = json!({
        "message": {
            "attributes": {"tenantId": event.tenant_id, "eventType": event.event_type},
            "data": base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(event).expect("json")),
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": "2026-11-22T01:02:03.456Z",
            "publish_time": "2026-11-22T01:02:03.456Z"
        },
        "subscription": SUBSCRIPTION
    });
    if let Some(attempt) = delivery_attempt {
        envelope["deliveryAttempt"] = json!(attempt);
    }
    envelope
}

async fn status_of(db: &TestDb, event: &Event) -> OutboxStatus {
    db.stored(&event.key()).await.outbox.status
}

/// One stored event of acme on a database of its own, and a push worker whose warehouse fails
/// that event's type when `failing` (through the declared fake FlakySink).
struct PushCase {
    db: TestDb,
    sent: Event,
    worker: PushWorker,
}

impl PushCase {
    async fn start(db: TestDb, id: &str, failing: bool) -> Self {
        let sent = event("acme", id);
        db.store
            .insert_events(std::slice::from_ref(&sent))
            .await
            .expect("insert");
        let failing_types: Vec<&str> = if failing {
            vec![sent.event_type.as_str()]
        } else {
            Vec::new()
        };
        let worker = PushWorker::start(db.store.clone(), &failing_types).await;
        Self { db, sent, worker }
    }

    /// Pushes the event in message `message_id`, as delivery `attempt`.
    async fn push(&self, message_id: &str, attempt: Option<u32>) -> (u16, Value) {
        let envelope = envelope(&self.sent, message_id, attempt);
        self.worker.push_envelope(&envelope).await
    }

    async fn status(&self) -> OutboxStatus {
        status_of(&self.db, &self.sent).await
    }
}

#[tokio::test]
async fn a_push_is_acknowledged_when_loaded_and_a_redelivery_makes_no_second_row() {
    let case = PushCase::start(TestDb::postgres().await, "o-1", false).await;

    let (status, body) = case.push("m-1", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verdict"], "ack");
    assert_eq!(case.status().await, OutboxStatus::Done);

    // Pub/Sub delivers at least once: the same message again, and again with a new id.
    for (id, attempt) in [("m-1", Some(2)), ("m-1-dup", None)] {
        let (status, _) = case.push(id, attempt).await;
        assert_eq!(status, 200);
    }
    let rows = case.worker.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows["o-1"].len(), 1, "no second row");
    assert_eq!(rows["o-1"][0]["payload"], json!(case.sent.payload));
    case.db.cleanup().await;
}

#[tokio::test]
async fn a_transient_sink_failure_is_a_5xx_and_failed_then_done_after_recovery() {
    let case = PushCase::start(TestDb::postgres().await, "o-2", true).await;

    let (status, body) = case.push("m-2", Some(1)).await;
    assert_eq!(status, 503, "Pub/Sub retries on 5xx: {body}");
    assert_eq!(case.status().await, OutboxStatus::Failed);
    assert!(case.worker.rows().await.is_empty());

    case.worker.sink.heal();
    let (status, _) = case.push("m-2", Some(2)).await;
    assert_eq!(status, 200);
    assert_eq!(case.status().await, OutboxStatus::Done);
    assert_eq!(case.worker.rows().await["o-2"].len(), 1);
    case.db.cleanup().await;
}

#[tokio::test]
async fn the_last_delivery_attempt_is_dead_and_left_to_the_dead_letter_policy() {
    let case = PushCase::start(TestDb::postgres().await, "o-3", true).await;

    let (status, _) = case.push("m-3", Some(4)).await;
    assert_eq!(status, 503);
    assert_eq!(case.status().await, OutboxStatus::Failed);

    // deliveryAttempt 5 = FLUXGATE_MAX_RECEIVE_COUNT: DEAD, and still a negative answer so
    // that the subscription (max delivery attempts 5) forwards it to the dead-letter topic.
    let (status, body) = case.push("m-3", Some(5)).await;
    assert_eq!(status, 503, "{body}");
    let stored = case.db.stored(&case.sent.key()).await;
    assert_eq!(stored.outbox.status, OutboxStatus::Dead);
    assert!(
        stored
            .outbox
            .last_error
            .is_some_and(|e| e.contains("warehouse timed out"))
    );
    case.db.cleanup().await;
}

#[tokio::test]
async fn a_malformed_push_is_acknowledged_logged_and_changes_nothing() {
    let PushCase { db, sent, worker } = PushCase::start(TestDb::sqlite().await, "o-4", false).await;

    use base64::Engine;
    let not_an_event = base64::engine::general_purpose::STANDARD.encode(br#"{"hello": 1}"#);
    let bodies = [
        "this is not json".to_string(),
        json!({"subscription": SUBSCRIPTION}).to_string(),
        json!({"message": {"data": "e30="}, "subscription": SUBSCRIPTION}).to_string(),
        json!({"message": {"messageId": "m-x"}, "subscription": SUBSCRIPTION}).to_string(),
        json!({"message": {"messageId": "m-y", "data": "***"}}).to_string(),
        json!({"message": {"messageId": "m-z", "data": not_an_event}, "deliveryAttempt": 1})
            .to_string(),
    ];
    for body in &bodies {
        let (status, answer) = worker.push(body.clone()).await;
        assert_eq!(status, 200, "acknowledged, never retried forever: {body}");
        assert_eq!(answer["verdict"], "malformed", "{answer}");
        assert!(answer["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
    assert_eq!(worker.worker.stats().malformed(), bodies.len() as u64);
    assert_eq!(status_of(&db, &sent).await, OutboxStatus::Pending);
    assert!(worker.rows().await.is_empty());
}

// ----- end to end ---------------------------------------------------------------------------

#[tokio::test]
async fn end_to_end_into_the_file_warehouse() {
    end_to_end(Warehouse::files()).await;
}

/// The same path into BigQuery (bqemulator): the worker's sink is built from a `SinkConfig`
/// exactly as the worker binary builds it, and the rows are read back with a query. The
/// failing row is injected by `FlakySink` in front of the real sink (bqemulator has no way to
/// time out one row on demand); the max-attempts → DEAD case is covered on the file warehouse
/// by `the_last_delivery_attempt_is_dead_and_left_to_the_dead_letter_policy`, as it does not
/// depend on the warehouse.
#[tokio::test]
async fn end_to_end_into_bigquery() {
    end_to_end(Warehouse::bigquery().await).await;
}

/// Ingest over HTTP → drain over HTTP → the Pub/Sub test server → each published message
/// pushed to the worker over HTTP → rows in the warehouse equal to the events, DONE in the
/// outbox; a failing row is 5xx and FAILED, then DONE after recovery; redelivery adds nothing.
async fn end_to_end(warehouse: Warehouse) {
    let db = TestDb::postgres().await;
    let server = PubsubTestServer::start(&[TOPIC]).await;
    let http = reqwest::Client::new();

    let ingest = serve(fluxgate_ingest::service(
        db.store.clone(),
        fluxgate::config::Limits::default(),
        authenticator(db.store.clone()).await,
    ))
    .await;
    let drain = Drain::new(
        db.store.clone(),
        pubsub_queue(&server, 100).await,
        DrainConfig::default(),
    );
    let drain_url = serve(fluxgate_outbox_drain::service(drain)).await;
    let worker = PushWorker::start_on(db.store.clone(), warehouse, &["order.flaky"]).await;

    // 1. ingest over HTTP: 40 events in one batch and one alone.
    let batch: Vec<Value> = (0..40)
        .map(|i| {
            json!({"tenantId": "acme", "eventId": format!("o-{i:03}"),
                   "eventType": if i == 7 { "order.flaky" } else { "order.created" },
                   "source": "shop", "payload": {"orderId": i, "lines": [{"sku": "a", "qty": i}]}})
        })
        .collect();
    let answer = http
        .post(format!("{ingest}/v1/events/batch"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "events": batch }))
        .send()
        .await
        .expect("ingest batch");
    assert!(answer.status().is_success(), "{}", answer.status());
    let answer = http
        .post(format!("{ingest}/v1/events"))
        .bearer_auth(ADMIN_KEY)
        .header("x-correlation-id", "corr-single")
        .json(
            &json!({"tenantId": "beta", "eventId": "single", "eventType": "user.signed_up",
                      "payload": {"plan": "pro"}}),
        )
        .send()
        .await
        .expect("ingest one");
    assert_eq!(answer.status(), 202);

    // 2. drain over HTTP, as Cloud Scheduler calls it.
    let summary: Value = http
        .post(format!("{drain_url}/v1/drain"))
        .send()
        .await
        .expect("drain")
        .json()
        .await
        .expect("summary");
    assert_eq!(summary["published"], 41, "{summary}");

    // 3. the push subscription: each published message to the worker, as Pub/Sub posts it.
    // One message per tenant: the 40 events of acme packed together, beta's alone.
    let published = server.published();
    assert_eq!(published.len(), 2);
    let single = published
        .iter()
        .find(|m| m.attributes.get("tenantId").map(String::as_str) == Some("beta"))
        .expect("the single event");
    assert_eq!(single.attributes["correlationId"], "corr-single");
    let mut retried = Vec::new();
    for message in &published {
        let (status, _) = worker
            .push_envelope(&message.push_envelope(SUBSCRIPTION, Some(1)))
            .await;
        if status != 200 {
            assert_eq!(status, 503);
            retried.push(message);
        }
    }
    assert_eq!(
        retried.len(),
        1,
        "the pack with the flaky row asks for redelivery"
    );
    let pack = decoded(retried[0]);
    assert_eq!(pack.len(), 40);
    for event in &pack {
        let want = if event.event_type == "order.flaky" {
            OutboxStatus::Failed
        } else {
            OutboxStatus::Done
        };
        // Each event of a pack is settled on its own: the others are loaded already.
        assert_eq!(status_of(&db, event).await, want, "{}", event.event_id);
    }
    // Pub/Sub redelivers after its backoff; the warehouse has recovered meanwhile. And a
    // duplicate delivery of an already loaded message changes nothing.
    worker.sink.heal();
    let (status, _) = worker
        .push_envelope(&retried[0].push_envelope(SUBSCRIPTION, Some(2)))
        .await;
    assert_eq!(status, 200);
    let (status, _) = worker
        .push_envelope(&published[0].push_envelope(SUBSCRIPTION, Some(2)))
        .await;
    assert_eq!(status, 200);

    // 4. the warehouse holds exactly the events, and the outbox says DONE.
    let rows = worker.rows().await;
    assert_eq!(rows.len(), 41);
    for sent in published.iter().flat_map(decoded) {
        let stored = db.stored(&sent.key()).await;
        assert_eq!(
            stored.outbox.status,
            OutboxStatus::Done,
            "{}",
            sent.event_id
        );
        assert_eq!(stored.event, sent, "the message carries the stored event");
        let row = &rows[&sent.event_id];
        assert_eq!(row.len(), 1, "one row for {}", sent.event_id);
        assert_eq!(row[0]["tenant_id"], json!(sent.tenant_id));
        assert_eq!(row[0]["event_type"], json!(sent.event_type));
        assert_eq!(row[0]["payload"], json!(sent.payload));
        assert_eq!(row[0]["payload_sha256"], json!(sent.payload_sha256));
        if matches!(worker.warehouse, Warehouse::BigQuery(_)) {
            // Every column equals the event's, except when it was loaded.
            let mut expected =
                serde_json::to_value(WarehouseRow::new(&sent, fluxgate::now())).expect("json");
            let mut got = row[0].clone();
            expected["ingested_at"] = Value::Null;
            got["ingested_at"] = Value::Null;
            assert_eq!(got, expected, "the BigQuery row of {}", sent.event_id);
        }
    }
    let statuses = statuses(
        db.store.as_ref(),
        &published.iter().flat_map(decoded).collect::<Vec<_>>(),
    )
    .await;
    assert!(statuses.values().all(|s| *s == OutboxStatus::Done));
    assert_eq!(worker.worker.stats().malformed(), 0);
    worker.warehouse.cleanup().await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_stop_during_a_publish_settles_the_rounds_in_flight_and_leaves_the_rest_claimable() {
    let (db, server, events) = thirty_events_and_a_server().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let drain = Drain::new(
        db.store.clone(),
        pubsub_queue(&server, 100).await,
        DrainConfig {
            drain_batch_size: 10,
            ..DrainConfig::default()
        },
    )
    .with_stop(stop.clone());

    server.hold();
    let run = tokio::spawn({
        let drain = drain.clone();
        async move { drain.run(far_deadline()).await }
    });
    server.until_a_request_waits(Duration::from_secs(10)).await;
    stop.cancel(); // what SIGTERM does in the binaries
    server.release();
    let summary = run.await.expect("join").expect("drain");
    assert_eq!(summary.stopped_by, StoppedBy::Shutdown);
    // The round held at the queue, and the next one, claimed beside it before the stop
    // (pipelined rounds): both settle, nothing more is claimed.
    assert_eq!((summary.claimed, summary.published), (20, 20));

    let counts = statuses(db.store.as_ref(), &events)
        .await
        .into_values()
        .fold(HashMap::new(), |mut counts, s| {
            *counts.entry(s).or_insert(0) += 1;
            counts
        });
    assert_eq!(counts[&OutboxStatus::Published], 20);
    assert_eq!(counts[&OutboxStatus::Pending], 10);
    // The rest was never claimed, so the next run takes it at once.
    let next = Drain::new(
        db.store.clone(),
        pubsub_queue(&server, 100).await,
        DrainConfig::default(),
    );
    assert_eq!(next.run(far_deadline()).await.expect("drain").published, 10);
    let carried: Vec<Event> = server.published().iter().flat_map(decoded).collect();
    assert_eq!(carried.len(), 30, "each event published once");
}
