//! `SqsQueue` against the moto server (started by `scripts/test.sh`): batching into
//! `SendMessageBatch` requests, the message format, per-message failures, and the drain
//! publishing real outbox rows from PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_sqs::config::{ConfigBag, Intercept};
use aws_sdk_sqs::error::BoxError;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchInput;
use aws_sdk_sqs::types::Message;
use chrono::TimeDelta;
use fluxgate::config::{DrainConfig, Schedule};
use fluxgate::event::Event;
use fluxgate::queue::{MAX_REQUEST_BYTES, Queue, QueueMessage, SqsQueue};
use fluxgate::store::OutboxStatus;
use fluxgate_outbox_drain::{Drain, StoppedBy};
use fluxgate_tests::aws::{TestQueue, moto_config, string_attribute};
use fluxgate_tests::{EVENT_TYPE, TestDb, event, event_with_payload, far_deadline};
use serde_json::json;

const RECEIVE_WITHIN: Duration = Duration::from_secs(20);

/// Records the entry count of every `SendMessageBatch` request the client makes.
#[derive(Debug, Clone, Default)]
struct BatchRequests(Arc<Mutex<Vec<usize>>>);

impl BatchRequests {
    /// The entry counts so far, smallest first (requests go out concurrently).
    fn sizes(&self) -> Vec<usize> {
        let mut sizes = self.0.lock().expect("request log").clone();
        sizes.sort_unstable();
        sizes
    }
}

impl Intercept for BatchRequests {
    fn name(&self) -> &'static str {
        "BatchRequests"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(input) = context.input().downcast_ref::<SendMessageBatchInput>() {
            self.0
                .lock()
                .expect("request log")
                .push(input.entries().len());
        }
        Ok(())
    }
}

/// An `SqsQueue` on `queue_url`, with a client that records its batch requests.
async fn sqs_queue(queue_url: &str) -> (SqsQueue, BatchRequests) {
    let requests = BatchRequests::default();
    let config = aws_sdk_sqs::config::Builder::from(&moto_config().await)
        .interceptor(requests.clone())
        .build();
    let client = aws_sdk_sqs::Client::from_conf(config);
    (SqsQueue::new(client, queue_url), requests)
}

/// A queue of its own on moto, and an `SqsQueue` on it that records its batch requests.
async fn new_queue() -> (TestQueue, SqsQueue, BatchRequests) {
    let queue = TestQueue::create().await;
    let (sqs, requests) = sqs_queue(&queue.url).await;
    (queue, sqs, requests)
}

/// Three events of initech (`<prefix>0`…`<prefix>2`) stored on PostgreSQL, and an `SqsQueue`
/// whose queue does not exist, so every publish fails.
async fn events_for_a_missing_queue(prefix: &str) -> (TestDb, Vec<Event>, SqsQueue, BatchRequests) {
    let db = TestDb::postgres().await;
    let (sqs, requests) = sqs_queue(&missing_queue_url()).await;
    let events: Vec<Event> = (0..3)
        .map(|i| event("initech", &format!("{prefix}{i}")))
        .collect();
    db.store.insert_events(&events).await.expect("insert");
    (db, events, sqs, requests)
}

fn messages_of(events: &[Event]) -> Vec<QueueMessage> {
    events
        .iter()
        .map(|e| QueueMessage::from_event(e).expect("message"))
        .collect()
}

/// Received messages by the event id their body carries.
/// Each event the messages carry (one per message, or a pack), by its id, with its message.
fn by_event_id(received: &[Message]) -> HashMap<String, (Event, &Message)> {
    received
        .iter()
        .flat_map(|message| {
            let body = message.body().expect("a message body");
            let events = fluxgate_tests::carried_by(body.as_bytes()).expect("events");
            events
                .into_iter()
                .map(move |event| (event.event_id.clone(), (event, message)))
        })
        .collect()
}

#[tokio::test]
async fn twenty_five_events_go_out_in_three_requests_with_body_and_attributes() {
    let (queue, sqs, requests) = new_queue().await;
    let events: Vec<Event> = (0..25)
        .map(|i| {
            let mut built = event("acme", &format!("e{i:02}"));
            if i % 2 == 0 {
                built.correlation_id = Some(format!("corr-{i}"));
            }
            built
        })
        .collect();
    let messages = messages_of(&events);

    let results = sqs.publish_batch(&messages).await.expect("publish");
    assert_eq!(results, vec![Ok(()); 25]);
    assert_eq!(
        requests.sizes(),
        [5, 10, 10],
        "SendMessageBatch requests of at most ten"
    );

    let received = queue.receive(25, RECEIVE_WITHIN).await;
    assert_eq!(received.len(), 25);
    let received = by_event_id(&received);
    for (original, message) in events.iter().zip(&messages) {
        let (event, sqs_message) = &received[&original.event_id];
        assert_eq!(event, original, "the body is the whole event");
        assert_eq!(
            sqs_message.body().map(str::as_bytes),
            Some(message.body.as_slice()),
            "the body is QueueMessage.body exactly"
        );
        assert_eq!(string_attribute(sqs_message, "tenantId"), Some("acme"));
        assert_eq!(string_attribute(sqs_message, "eventType"), Some(EVENT_TYPE));
        assert_eq!(
            string_attribute(sqs_message, "correlationId"),
            original.correlation_id.as_deref()
        );
        let attributes = sqs_message.message_attributes().expect("attributes");
        assert!(
            attributes.values().all(|v| v.data_type() == "String"),
            "{attributes:?}"
        );
    }
    assert!(queue.leftovers().await.is_empty(), "each message once");
    queue.delete().await;
}

#[tokio::test]
async fn an_oversize_message_fails_alone_and_the_rest_are_sent() {
    let (queue, sqs, requests) = new_queue().await;
    let mut events: Vec<Event> = (0..12)
        .map(|i| event("acme", &format!("e{i:02}")))
        .collect();
    // Larger than SQS's 256 KiB (moto itself would take up to 1 MiB, so only fluxgate's own
    // limit stops it).
    events[5] = event_with_payload(
        "acme",
        "huge",
        json!({ "blob": "x".repeat(MAX_REQUEST_BYTES) }),
    );
    let messages = messages_of(&events);

    let results = sqs.publish_batch(&messages).await.expect("publish");
    for (index, result) in results.iter().enumerate() {
        if index == 5 {
            let error = result.as_ref().expect_err("the oversize message fails");
            assert!(error.contains("bytes"), "{error}");
        } else {
            assert_eq!(result, &Ok(()), "message {index}");
        }
    }
    assert_eq!(
        requests.sizes(),
        [1, 10],
        "the oversize message is not sent"
    );

    let received = by_event_id(&queue.receive(11, RECEIVE_WITHIN).await)
        .into_keys()
        .collect::<Vec<_>>();
    assert_eq!(received.len(), 11);
    assert!(!received.contains(&"huge".to_owned()));
    assert!(queue.leftovers().await.is_empty());
    queue.delete().await;
}

#[tokio::test]
async fn large_messages_are_split_by_bytes_and_all_arrive() {
    let (queue, sqs, requests) = new_queue().await;
    // About 400 KiB each: two fit in one 1 MiB request, the third needs another.
    let events: Vec<Event> = (0..3)
        .map(|i| {
            event_with_payload(
                "acme",
                &format!("big{i}"),
                json!({ "blob": "y".repeat(400 * 1024) }),
            )
        })
        .collect();

    let results = sqs
        .publish_batch(&messages_of(&events))
        .await
        .expect("publish");
    assert_eq!(results, vec![Ok(()); 3]);
    assert_eq!(requests.sizes(), [1, 2]);
    let received = queue.receive(3, RECEIVE_WITHIN).await;
    let received = by_event_id(&received);
    for original in &events {
        assert_eq!(&received[&original.event_id].0, original);
    }
    queue.delete().await;
}

#[tokio::test]
async fn the_drain_publishes_postgres_rows_to_sqs_and_marks_them_published() {
    let db = TestDb::postgres().await;
    let (queue, sqs, requests) = new_queue().await;
    let events: Vec<Event> = (0..30)
        .map(|i| event("globex", &format!("d{i:02}")))
        .collect();
    db.store.insert_events(&events).await.expect("insert");

    let drain = Drain::new(
        db.store.clone(),
        Arc::new(sqs),
        DrainConfig {
            drain_batch_size: 100,
            ..DrainConfig::default()
        },
    );
    let summary = drain.run(far_deadline()).await.expect("drain");
    assert_eq!(summary.claimed, 30);
    assert_eq!(summary.published, 30);
    assert_eq!(summary.retried, 0);
    assert_eq!(summary.stopped_by, StoppedBy::Empty);
    assert_eq!(
        requests.sizes(),
        [1],
        "30 events of one tenant: one pack, one request"
    );

    let keys: Vec<_> = events.iter().map(Event::key).collect();
    let statuses = db.store.statuses(&keys).await.expect("statuses");
    assert!(
        statuses.values().all(|s| *s == OutboxStatus::Published),
        "{statuses:?}"
    );

    let received = queue.receive(30, RECEIVE_WITHIN).await;
    let received = by_event_id(&received);
    assert_eq!(received.len(), 30);
    for original in &events {
        assert_eq!(&received[&original.event_id].0, original);
    }
    queue.delete().await;
    db.cleanup().await;
}

/// A queue URL on moto that names no queue: every request to it fails as a whole.
fn missing_queue_url() -> String {
    format!(
        "{}/123456789012/fluxgate-missing-{}",
        fluxgate_tests::aws::moto_url(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The stored error of a publish to [`missing_queue_url`] says what failed.
fn assert_missing_queue_error(error: Option<&str>) {
    let error = error.unwrap_or_default();
    assert!(
        error.contains("SendMessageBatch") && error.contains("NonExistentQueue"),
        "the recorded error says what failed: {error}"
    );
}

#[tokio::test]
async fn a_failed_publish_puts_rows_back_to_pending_with_the_error() {
    let (db, events, sqs, _) = events_for_a_missing_queue("f").await;

    let config = DrainConfig::default();
    let first_delay = config.retry_backoff.delay_after(1);
    let drain = Drain::new(db.store.clone(), Arc::new(sqs), config);
    let before = fluxgate::now();
    let summary = drain
        .run(far_deadline())
        .await
        .expect("the run itself succeeds");
    assert_eq!(summary.claimed, 3);
    assert_eq!(summary.published, 0);
    assert_eq!(summary.retried, 3);
    assert_eq!(summary.dead, 0);

    for original in &events {
        let stored = db.stored(&original.key()).await;
        assert_eq!(stored.outbox.status, OutboxStatus::Pending);
        assert_eq!(stored.outbox.attempts, 1);
        assert_missing_queue_error(stored.outbox.last_error.as_deref());
        assert!(
            stored.outbox.next_attempt_at >= before + first_delay,
            "retried after the first backoff step"
        );
    }
    db.cleanup().await;
}

/// The drain's own DEAD path: publishing fails every time (the real SQS client against a queue
/// that does not exist on moto), and `Drain::run` itself retries the rows until their attempts
/// are used up and records them DEAD with the last error. The drain reads the wall clock, so
/// instead of moving its `now`, a zero backoff makes each retry due in the run's next round.
#[tokio::test]
async fn a_publish_that_always_fails_ends_dead_through_the_drain() {
    let (db, events, sqs, requests) = events_for_a_missing_queue("d").await;

    let config = DrainConfig {
        max_attempts: 3,
        retry_backoff: Schedule(vec![TimeDelta::zero()]),
        ..DrainConfig::default()
    };
    let drain = Drain::new(db.store.clone(), Arc::new(sqs), config);
    let summary = drain
        .run(far_deadline())
        .await
        .expect("the run itself succeeds");
    assert_eq!(summary.published, 0);
    assert_eq!(summary.rounds, 3, "one round per attempt: {summary:?}");
    assert_eq!(summary.claimed, 9, "{summary:?}");
    assert_eq!(summary.retried, 6, "attempts 1 and 2 go back to PENDING");
    assert!(summary.dead > 0, "{summary:?}");
    assert_eq!(summary.dead, 3, "attempt 3 is the last");
    assert_eq!(summary.stopped_by, StoppedBy::Empty);
    assert_eq!(
        requests.sizes(),
        [1, 1, 1],
        "each attempt really went to SQS: the three events in one pack"
    );

    for original in &events {
        let stored = db.stored(&original.key()).await;
        assert_eq!(stored.outbox.status, OutboxStatus::Dead);
        assert_eq!(stored.outbox.attempts, 3);
        assert_missing_queue_error(stored.outbox.last_error.as_deref());
    }
    let again = drain.run(far_deadline()).await.expect("drain");
    assert_eq!(again.claimed, 0, "DEAD rows are not claimed again");
    db.cleanup().await;
}
