//! The worker's `POST /v1/messages` (functions/worker/src/http_trigger.rs): a batch of queue
//! messages over HTTP, through the worker's real HTTP service, on PostgreSQL and the real file
//! warehouse. Each message is answered on its own in the SQS partial-batch shape: only the
//! messages to retry, and the malformed ones with a reason, are named in
//! `batchItemFailures`; the outbox records DONE / FAILED / DEAD; a redelivery makes no second
//! row; a request that is not such a batch is a 400 / 422 problem and changes nothing.
//!
//! The warehouse is wrapped in the declared fake `FlakySink` (see fluxgate_tests::FlakySink):
//! no real warehouse can be told to fail one row on demand.

use axum::Router;
use axum::http::StatusCode;
use fluxgate::config::WorkerConfig;
use fluxgate::event::Event;
use fluxgate::store::{OutboxStatus, Store};
use fluxgate_tests::router::{self, RouterAnswer};
use fluxgate_tests::{
    OutcomeEvents, TestDb, one_event_and_file_warehouse, outcome_events, warehouse_row_count,
};
use fluxgate_worker::Worker;
use serde_json::{Value, json};

/// A message of the batch, carrying `event` as the drain publishes it.
fn message(event: &Event, receive_count: Option<u32>) -> Value {
    let mut message = json!({
        "messageId": format!("m-{}", event.event_id),
        "body": serde_json::to_value(event).expect("json"),
    });
    if let Some(count) = receive_count {
        message["receiveCount"] = json!(count);
    }
    message
}

async fn post(app: &Router, body: &str) -> RouterAnswer {
    let request = axum::http::Request::post("/v1/messages")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_owned()))
        .expect("request");
    router::send(app, request).await
}

async fn outbox(store: &dyn Store, event: &Event) -> fluxgate::store::OutboxState {
    store
        .get_event(&event.key())
        .await
        .expect("get")
        .expect("stored")
        .outbox
}

#[tokio::test]
async fn post_messages_answers_each_message_and_records_its_outcome() {
    let db = TestDb::postgres().await;
    let store = db.store.as_ref();
    let warehouse = tempfile::tempdir().expect("tempdir");
    let (events, sink) = outcome_events(store, warehouse.path()).await;
    let OutcomeEvents {
        ok,
        flaky,
        last,
        refused,
    } = &events;
    let worker = Worker::new(
        db.store.clone(),
        sink.clone(),
        OutcomeEvents::worker_config(),
    );
    let app = fluxgate_worker::service(worker);

    let batch = json!({"messages": [
        message(ok, None),
        message(flaky, Some(1)),
        message(last, Some(3)),
        message(refused, Some(1)),
        {"messageId": "garbage", "body": {"not": "an event"}},
    ]});
    let answer = post(&app, &batch.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["processed"], 5, "{body}");
    let failures = body["batchItemFailures"].as_array().expect("a list");
    let named: Vec<&str> = failures
        .iter()
        .map(|f| f["itemIdentifier"].as_str().expect("itemIdentifier"))
        .collect();
    assert_eq!(
        named,
        ["m-flaky", "m-last", "garbage"],
        "only the messages to deliver again are named: {body}"
    );
    assert!(
        failures[0].get("reason").is_none() && failures[1].get("reason").is_none(),
        "{body}"
    );
    assert!(
        failures[2]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not an event")),
        "a malformed message says why: {body}"
    );

    events
        .assert_first_delivery_recorded(&db, warehouse.path())
        .await;

    // The warehouse recovers; the queue delivers the retried one again, and the done one too.
    sink.heal();
    let again = json!({"messages": [message(flaky, Some(2)), message(ok, Some(2))]});
    let answer = post(&app, &again.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.json(),
        json!({"processed": 2, "batchItemFailures": []})
    );
    assert_eq!(outbox(store, flaky).await.status, OutboxStatus::Done);
    assert_eq!(
        warehouse_row_count(warehouse.path()),
        2,
        "the redelivered DONE event made no second row"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn a_request_that_is_not_a_batch_is_a_problem_and_changes_nothing() {
    let db = TestDb::sqlite().await;
    let (pending, warehouse, sink) = one_event_and_file_warehouse(db.store.as_ref(), "p1").await;
    let app =
        fluxgate_worker::service(Worker::new(db.store.clone(), sink, WorkerConfig::default()));
    let valid = message(&pending, None);
    // Not JSON is a 400; JSON of another shape is a 422 naming what is wrong.
    let not_json = post(&app, "not json").await;
    assert_eq!(
        not_json.status,
        StatusCode::BAD_REQUEST,
        "{}",
        not_json.text()
    );
    assert_eq!(not_json.content_type(), "application/problem+json");
    for bad in [
        json!([valid]),
        json!({"message": [valid]}),
        json!({"messages": [valid], "extra": 1}),
        json!({"messages": [{"messageId": "m", "body": valid["body"], "color": "red"}]}),
        json!({"messages": [{"body": valid["body"]}]}),
    ] {
        let answer = post(&app, &bad.to_string()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            answer.text()
        );
        assert_eq!(answer.content_type(), "application/problem+json", "{bad}");
        assert!(answer.json()["detail"].is_string(), "{}", answer.text());
    }
    assert_eq!(
        outbox(db.store.as_ref(), &pending).await.status,
        OutboxStatus::Pending
    );
    assert_eq!(warehouse_row_count(warehouse.path()), 0);

    let request = axum::http::Request::get("/v1/messages")
        .body(axum::body::Body::empty())
        .expect("request");
    assert_eq!(
        router::send(&app, request).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    db.cleanup().await;
}
