//! The drain binary on AWS Lambda: one run per EventBridge scheduled event, invoked through
//! cargo-lambda's Lambda Runtime API, publishing PostgreSQL outbox rows to an SQS queue on the
//! moto server; a CloudWatch metric line (EMF) per run; a failed invocation when it could
//! publish nothing it claimed.

use std::time::Duration;

use fluxgate::event::Event;
use fluxgate::store::OutboxStatus;
use fluxgate_tests::aws::{TestQueue, moto_env};
use fluxgate_tests::lambda::{LambdaFunction, scheduled_event};
use fluxgate_tests::{TestDb, event};
use serde_json::Value;

async fn drain_function(db: &TestDb, queue_url: &str) -> LambdaFunction {
    let mut env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("FLUXGATE_QUEUE", "sqs".to_owned()),
        ("FLUXGATE_SQS_QUEUE_URL", queue_url.to_owned()),
        ("FLUXGATE_DRAIN_BATCH_SIZE", "10".to_owned()),
        ("FLUXGATE_METRICS_NAMESPACE", "fluxgate/test".to_owned()),
    ];
    env.extend(moto_env());
    LambdaFunction::start(env!("CARGO_BIN_EXE_fluxgate-outbox-drain").as_ref(), &env).await
}

async fn statuses(db: &TestDb, events: &[Event]) -> Vec<OutboxStatus> {
    let keys: Vec<_> = events.iter().map(Event::key).collect();
    let found = db.store.statuses(&keys).await.expect("statuses");
    keys.iter().map(|key| found[key]).collect()
}

/// The EMF lines the function wrote so far.
fn metric_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line.get("_aws").is_some())
        .collect()
}

#[tokio::test]
async fn a_scheduled_invocation_publishes_the_outbox_to_sqs_and_reports_its_figures() {
    let db = TestDb::postgres().await;
    let queue = TestQueue::create().await;
    let events: Vec<Event> = (0..25)
        .map(|i| event("acme", &format!("e{i:03}")))
        .collect();
    db.store.insert_events(&events).await.expect("insert");

    let mut function = drain_function(&db, &queue.url).await;
    let summary = function
        .invoke(&scheduled_event())
        .await
        .unwrap_or_else(|e| panic!("drain failed: {e}\n{}", function.log_text()));
    assert_eq!(summary["claimed"], 25, "{summary}");
    assert_eq!(summary["published"], 25);
    assert_eq!(summary["rounds"], 3, "batches of 10");
    assert_eq!(summary["stoppedBy"], "empty");
    assert_eq!(
        statuses(&db, &events).await,
        vec![OutboxStatus::Published; 25]
    );
    let received = queue.receive(25, Duration::from_secs(20)).await;
    assert_eq!(
        received.len(),
        3,
        "one message per round: the round's events, packed"
    );
    let carried = fluxgate_tests::unpack(
        received
            .iter()
            .map(|m| m.body().unwrap_or_default().as_bytes()),
    );
    assert_eq!(carried, events, "every event, once, in order");

    // the metric line for the run, in the configured namespace
    let lines = metric_lines(&function.log_text());
    let line = lines
        .iter()
        .find(|line| line["DrainPublished"] == 25.0)
        .unwrap_or_else(|| panic!("no EMF line of the run in:\n{}", function.log_text()));
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "fluxgate/test"
    );
    assert_eq!(line["OutboxLag"], 0.0, "nothing is pending after the run");

    // nothing due: a quiet run
    let summary = function
        .invoke(&scheduled_event())
        .await
        .expect("second run");
    assert_eq!(summary["claimed"], 0);

    drop(function);
    queue.delete().await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_run_that_can_publish_nothing_fails_the_invocation_and_keeps_the_rows() {
    let db = TestDb::postgres().await;
    let events: Vec<Event> = (0..3).map(|i| event("acme", &format!("x{i}"))).collect();
    db.store.insert_events(&events).await.expect("insert");
    let missing = format!(
        "{}/123456789012/no-such-queue",
        fluxgate_tests::aws::moto_url()
    );

    let mut function = drain_function(&db, &missing).await;
    let error = function
        .invoke(&scheduled_event())
        .await
        .expect_err("publishing to a missing queue fails the invocation");
    assert!(
        error["errorType"]
            .as_str()
            .is_some_and(|t| t.starts_with("fluxgate:")),
        "{error}"
    );
    assert!(
        error["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("published none")),
        "{error}"
    );
    // back to PENDING with backoff, with the error, for a later run
    assert_eq!(statuses(&db, &events).await, vec![OutboxStatus::Pending; 3]);
    let stored = db.stored(&events[0].key()).await;
    assert_eq!(stored.outbox.attempts, 1);
    assert!(stored.outbox.last_error.is_some());
    assert!(stored.outbox.next_attempt_at > fluxgate::now());

    drop(function);
    db.cleanup().await;
}
