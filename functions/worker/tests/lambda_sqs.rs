//! The AWS shape end to end, on real services: events taken in over HTTP by ingest, published
//! by the drain's Lambda handler on an EventBridge scheduled event to an SQS queue (moto),
//! received from SQS, and handed as an SQS event to the worker binary running under the Lambda
//! Runtime API (cargo-lambda), which loads them into BigQuery (bqemulator) and records DONE in
//! PostgreSQL. Then what SQS's partial batch failures promise: a redelivery makes no second
//! row; only failed messages are named; the last receive records DEAD; bad bodies are named,
//! and the function lives on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_sqs::types::Message;
use fluxgate::config::{DrainConfig, Limits};
use fluxgate::event::{Event, EventKey};
use fluxgate::queue::SqsQueue;
use fluxgate::store::{OutboxStatus, Store};
use fluxgate_outbox_drain::Drain;
use fluxgate_tests::aws::{TestQueue, moto_config};
use fluxgate_tests::lambda::{LambdaFunction, scheduled_event};
use fluxgate_tests::{BIGQUERY_PROJECT, TestBigQuery, TestDb, authenticator, key, tenant_key};
use serde_json::{Value, json};

const TENANT: &str = "acme";
const MAX_RECEIVE_COUNT: u32 = 3;

/// An SQS message as the Lambda event source mapping hands it over.
fn sqs_record(message: &Message, queue_arn: &str) -> Value {
    let attributes: HashMap<String, String> = message
        .attributes()
        .map(|attributes| {
            attributes
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let message_attributes: serde_json::Map<String, Value> = message
        .message_attributes()
        .map(|attributes| {
            attributes
                .iter()
                .map(|(name, value)| {
                    (
                        name.clone(),
                        json!({
                            "stringValue": value.string_value(),
                            "dataType": value.data_type(),
                            "stringListValues": [],
                            "binaryListValues": []
                        }),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": message.message_id(),
        "receiptHandle": message.receipt_handle(),
        "body": message.body(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.md5_of_body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1"
    })
}

fn record(message_id: &str, body: &str, receive_count: u32) -> Value {
    json!({
        "messageId": message_id,
        "receiptHandle": format!("receipt-{message_id}"),
        "body": body,
        "attributes": {"ApproximateReceiveCount": receive_count.to_string()},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:fluxgate-events",
        "awsRegion": "us-east-1"
    })
}

fn sqs_event(records: Vec<Value>) -> Value {
    json!({ "Records": records })
}

/// The message ids a worker answer names as failed, sorted.
fn failed_ids(answer: &Value) -> Vec<String> {
    let mut ids: Vec<String> = answer["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("an SqsBatchResponse: {answer}"))
        .iter()
        .map(|failure| {
            failure["itemIdentifier"]
                .as_str()
                .expect("itemIdentifier")
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

async fn serve_ingest(db: &TestDb) -> SocketAddr {
    let auth = authenticator(db.store.clone()).await;
    let app = fluxgate_ingest::service(db.store.clone(), Limits::default(), auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

async fn status_of(store: &dyn Store, key: &EventKey) -> OutboxStatus {
    store
        .statuses(std::slice::from_ref(key))
        .await
        .expect("statuses")[key]
}

/// The worker binary under cargo-lambda, loading into `bigquery_url` (which may not answer).
async fn worker(db: &TestDb, bq: &TestBigQuery, bigquery_url: &str) -> LambdaFunction {
    let mut env = vec![
        ("DATABASE_URL", db.url.clone()),
        // The test database is migrated; a Lambda worker does not migrate.
        ("FLUXGATE_DB_MIGRATE", "false".to_owned()),
        ("FLUXGATE_SINK", "bigquery".to_owned()),
        ("FLUXGATE_BIGQUERY_PROJECT", BIGQUERY_PROJECT.to_owned()),
        ("FLUXGATE_BIGQUERY_DATASET", bq.target.dataset.clone()),
        ("FLUXGATE_BIGQUERY_TABLE", bq.target.table.clone()),
        ("FLUXGATE_BIGQUERY_ENDPOINT", bigquery_url.to_owned()),
        // One REST endpoint to take down for the outage cases; the write modes have their own
        // tests (tests/bigquery_sink.rs, local_e2e).
        ("FLUXGATE_BIGQUERY_WRITE_MODE", "streaming".to_owned()),
        ("FLUXGATE_MAX_RECEIVE_COUNT", MAX_RECEIVE_COUNT.to_string()),
    ];
    env.extend(fluxgate_tests::aws::moto_env());
    LambdaFunction::start(env!("CARGO_BIN_EXE_fluxgate-worker").as_ref(), &env).await
}

/// A copy of `event` under `event_id`, stored.
async fn store_copy(db: &TestDb, event: &Event, event_id: &str) -> Event {
    let copy = Event {
        event_id: event_id.into(),
        ..event.clone()
    };
    db.store
        .insert_events(std::slice::from_ref(&copy))
        .await
        .expect("insert");
    copy
}

#[tokio::test]
async fn events_travel_from_ingest_through_sqs_to_bigquery_under_the_lambda_runtime() {
    let db = TestDb::postgres().await;
    let bq = TestBigQuery::new().await;
    let queue = TestQueue::create().await;
    let api_key = tenant_key(db.store.as_ref(), TENANT).await;

    // 1. ingest over HTTP
    let ingest = serve_ingest(&db).await;
    let events: Vec<Value> = (0..7)
        .map(|i| {
            json!({
                "tenantId": TENANT,
                "eventId": format!("order-{i:02}"),
                "eventType": "order.created",
                "eventTs": fluxgate::now().to_rfc3339(),
                "source": "lambda-e2e",
                "payload": {"n": i, "tags": ["a", "b"], "nested": {"ok": true}}
            })
        })
        .collect();
    let answer = reqwest::Client::new()
        .post(format!("http://{ingest}/v1/events/batch"))
        .bearer_auth(&api_key)
        .json(&events)
        .send()
        .await
        .expect("ingest");
    assert!(answer.status().is_success(), "ingest answered {answer:?}");

    // 2. the drain's Lambda handler on the scheduled event, publishing to SQS on moto
    let sqs = SqsQueue::new(aws_sdk_sqs::Client::new(&moto_config().await), &queue.url);
    let drain = Drain::new(
        db.store.clone(),
        std::sync::Arc::new(sqs),
        DrainConfig::default(),
    );
    let deadline = std::time::SystemTime::now() + Duration::from_secs(35);
    let summary = drain
        .scheduled_run(&scheduled_event(), deadline)
        .await
        .expect("drain run");
    assert_eq!((summary.claimed, summary.published), (7, 7));

    // 3. SQS hands the messages over as one event; the worker runs under the Runtime API
    let received = queue.receive(7, Duration::from_secs(20)).await;
    assert_eq!(
        received.len(),
        1,
        "the seven events travel packed in one message"
    );
    let queue_arn = format!("arn:aws:sqs:us-east-1:123456789012:{}", queue.name);
    let batch = sqs_event(received.iter().map(|m| sqs_record(m, &queue_arn)).collect());
    let mut function = worker(&db, &bq, &bq.url).await;
    let answer = function.invoke(&batch).await.unwrap_or_else(|e| {
        panic!("worker failed: {e}\n{}", function.log_text());
    });
    assert_eq!(failed_ids(&answer), Vec::<String>::new(), "{answer}");

    // 4. rows equal to the events, DONE in the database
    let stored: Vec<Event> = {
        let mut stored = Vec::new();
        for i in 0..7 {
            let key = key(TENANT, &format!("order-{i:02}"));
            stored.push(db.stored(&key).await.event);
            assert_eq!(status_of(db.store.as_ref(), &key).await, OutboxStatus::Done);
        }
        stored
    };
    let rows = bq.rows().await;
    assert_eq!(rows.len(), 7);
    for (row, event) in rows.iter().zip(&stored) {
        assert_eq!(row.key(), event.key());
        assert_eq!(row.event_type, event.event_type);
        assert_eq!(row.event_ts, event.event_ts);
        assert_eq!(row.payload, event.payload);
        assert_eq!(row.payload_sha256, event.payload_sha256);
    }

    // 5. the same SQS messages delivered again: acknowledged, still one row each
    let again = function.invoke(&batch).await.expect("redelivery");
    assert_eq!(failed_ids(&again), Vec::<String>::new());
    assert_eq!(bq.rows().await.len(), 7, "a redelivery makes no second row");

    // 6. bad bodies are named failed (SQS dead-letters them after the last receive), the
    //    good message beside them is loaded, and the function answers the next event too
    let fresh = store_copy(&db, &stored[0], "order-99").await;
    let mixed = sqs_event(vec![
        record("bad-json", "{not json", 1),
        record("bad-shape", r#"{"tenantId": 42}"#, 1),
        record("empty", "", 1),
        record("good", &serde_json::to_string(&fresh).expect("json"), 1),
    ]);
    let answer = function.invoke(&mixed).await.expect("mixed batch");
    assert_eq!(failed_ids(&answer), vec!["bad-json", "bad-shape", "empty"]);
    assert_eq!(
        status_of(db.store.as_ref(), &fresh.key()).await,
        OutboxStatus::Done
    );
    assert_eq!(bq.rows().await.len(), 8);
    drop(function);

    // 7. with the warehouse down, only the message that failed is named (the one already
    //    loaded is acknowledged), it is FAILED; at the last receive it is DEAD, and still
    //    named so that SQS moves it to the dead-letter queue
    let late = store_copy(&db, &stored[1], "order-late").await;
    let mut down = worker(&db, &bq, "http://127.0.0.1:9").await;
    let body = |event: &Event| serde_json::to_string(event).expect("json");
    let status_of_late = async || status_of(db.store.as_ref(), &late.key()).await;
    let answer = down
        .invoke(&sqs_event(vec![
            record("loaded", &body(&stored[2]), 2),
            record("late", &body(&late), 1),
        ]))
        .await
        .expect("batch with the warehouse down");
    assert_eq!(failed_ids(&answer), vec!["late"]);
    assert_eq!(status_of_late().await, OutboxStatus::Failed);
    let answer = down
        .invoke(&sqs_event(vec![record(
            "late",
            &body(&late),
            MAX_RECEIVE_COUNT,
        )]))
        .await
        .expect("last receive");
    assert_eq!(failed_ids(&answer), vec!["late"]);
    assert_eq!(status_of_late().await, OutboxStatus::Dead);
    let dead = db.stored(&late.key()).await;
    assert!(
        dead.outbox
            .last_error
            .as_deref()
            .is_some_and(|e| !e.is_empty()),
        "DEAD carries the last error: {dead:?}"
    );
    drop(down);

    queue.delete().await;
    bq.cleanup().await;
    db.cleanup().await;
}
