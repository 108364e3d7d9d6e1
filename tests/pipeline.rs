//! The drain and the worker against real databases: safe claiming under concurrent runs,
//! leases that come back after a crash, backoff and DEAD, and the worker's verdicts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use fluxgate::config::{DrainConfig, Schedule, WorkerConfig};
use fluxgate::event::Event;
use fluxgate::queue::{InMemoryQueue, InMemoryQueueConfig, QueueMessage};
use fluxgate::sink::{LocalFileSink, Sink, WarehouseRow};
use fluxgate::store::{ClaimRequest, OutboxStatus, Store};
use fluxgate_outbox_drain::{Drain, StoppedBy};
use fluxgate_tests::{
    DbKind, OutcomeEvents, TestDb, claim_request, event, event_at, far_deadline, keys,
    one_event_and_file_warehouse, outcome_events, per_database, unpack, warehouse_row_count,
};
use fluxgate_worker::{Delivery, Verdict, Worker};

fn drain_config() -> DrainConfig {
    DrainConfig {
        drain_batch_size: 25,
        ..DrainConfig::default()
    }
}

async fn seed(store: &dyn Store, tenant: &str, count: usize) -> Vec<Event> {
    let events: Vec<Event> = (0..count)
        .map(|i| event(tenant, &format!("e{i:04}")))
        .collect();
    store.insert_events(&events).await.expect("insert");
    events
}

async fn status_counts(store: &dyn Store, events: &[Event]) -> HashMap<OutboxStatus, usize> {
    let keys: Vec<_> = events.iter().map(Event::key).collect();
    let mut counts = HashMap::new();
    for status in store.statuses(&keys).await.expect("statuses").into_values() {
        *counts.entry(status).or_insert(0) += 1;
    }
    counts
}

/// Everything the queue holds, received once.
async fn drain_queue(queue: &InMemoryQueue) -> Vec<QueueMessage> {
    let mut all = Vec::new();
    loop {
        let batch = queue.receive(100, Duration::ZERO).await;
        if batch.is_empty() {
            return all;
        }
        for delivery in batch {
            queue.ack(delivery.receipt);
            all.push(delivery.message);
        }
    }
}

#[tokio::test]
async fn a_drain_publishes_every_due_row_once_and_stops_when_empty() {
    let db = TestDb::postgres().await;
    let events = seed(db.store.as_ref(), "acme", 60).await;
    let queue = Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()));
    let drain = Drain::new(db.store.clone(), queue.clone(), drain_config());

    let summary = drain.run(far_deadline()).await.expect("drain");
    assert_eq!(summary.claimed, 60);
    assert_eq!(summary.published, 60);
    assert_eq!(summary.rounds, 3, "batches of 25");
    assert_eq!(summary.stopped_by, StoppedBy::Empty);

    let messages = drain_queue(&queue).await;
    assert_eq!(messages.len(), 3, "one pack per round");
    let carried = unpack(messages.iter().map(|m| m.body.as_slice()));
    assert_eq!(carried.len(), 60);
    assert_eq!(carried[0], events[0], "a message carries whole events");
    assert_eq!(messages[0].attributes.tenant_id, "acme");
    assert_eq!(
        status_counts(db.store.as_ref(), &events).await[&OutboxStatus::Published],
        60
    );

    let again = drain.run(far_deadline()).await.expect("drain");
    assert_eq!(again.claimed, 0, "published rows are not published again");
    db.cleanup().await;
}

#[tokio::test]
async fn a_spent_time_budget_stops_the_run_and_leaves_rows_for_the_next() {
    let db = TestDb::sqlite().await;
    seed(db.store.as_ref(), "acme", 10).await;
    let queue = Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()));
    let drain = Drain::new(db.store.clone(), queue, drain_config());
    let summary = drain.run(Instant::now()).await.expect("drain");
    assert_eq!(summary.stopped_by, StoppedBy::TimeBudget);
    assert_eq!(summary.claimed, 0);
    assert_eq!(
        drain.run(far_deadline()).await.expect("drain").published,
        10
    );
}

/// Two drains at once, many times over: no row is ever published twice.
async fn concurrent_drains_never_publish_a_row_twice(kind: DbKind) {
    let db = TestDb::of(kind).await;
    let events = seed(db.store.as_ref(), "acme", 400).await;
    let queue = Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()));
    let config = DrainConfig {
        drain_batch_size: 7,
        ..DrainConfig::default()
    };
    let drains: Vec<Drain> = (0..3)
        .map(|_| Drain::new(db.store.clone(), queue.clone(), config.clone()))
        .collect();
    let runs = drains.iter().map(|drain| {
        let drain = drain.clone();
        tokio::spawn(async move { drain.run(far_deadline()).await.expect("drain") })
    });
    let mut published = 0;
    for run in runs.collect::<Vec<_>>() {
        published += run.await.expect("join").published;
    }
    assert_eq!(published, 400);
    let messages = drain_queue(&queue).await;
    let mut seen = HashMap::new();
    for key in messages.iter().flat_map(|m| &m.keys) {
        *seen.entry(key.clone()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 400, "every row is in some message");
    assert!(
        seen.values().all(|&n| n == 1),
        "some row was published twice"
    );
    assert_eq!(
        status_counts(db.store.as_ref(), &events).await[&OutboxStatus::Published],
        400
    );
    db.cleanup().await;
}

per_database!(#[tokio::test] concurrent_drains_never_publish_a_row_twice: postgres, sqlite);

/// Time is the injected `now` of the claims, never a sleep: the crashed run's claims are made
/// at chosen moments, so one lease has surely expired and the other surely holds when the
/// drain (which reads the wall clock) runs.
#[tokio::test]
async fn claims_of_a_crashed_run_come_back_after_the_lease() {
    let db = TestDb::postgres().await;
    let store = db.store.as_ref();
    let t0 = fluxgate::now();
    let lease = TimeDelta::minutes(10);
    let crashed_claim = |now| ClaimRequest {
        owner: "crashed-run".into(),
        limit: 100,
        lease_ttl: lease,
        now,
    };
    let received = t0 - TimeDelta::hours(1);
    let batch = |prefix: &str| -> Vec<Event> {
        (0..5)
            .map(|i| event_at("acme", &format!("{prefix}{i}"), received))
            .collect()
    };

    // A run claims rows now and dies before publishing: its lease holds for ten minutes.
    let held = batch("held-");
    store.insert_events(&held).await.expect("insert");
    let claimed = store.claim_batch(&crashed_claim(t0)).await.expect("claim");
    assert_eq!(claimed.len(), 5);
    // The same run had claimed other rows half an hour ago: that lease ended 20 minutes ago.
    let expired = batch("expired-");
    store.insert_events(&expired).await.expect("insert");
    let claimed = store
        .claim_batch(&crashed_claim(t0 - TimeDelta::minutes(30)))
        .await
        .expect("claim");
    assert_eq!(
        claimed.len(),
        5,
        "only the expired- rows were due half an hour ago"
    );

    let queue = Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()));
    let drain = Drain::new(db.store.clone(), queue.clone(), drain_config());
    let summary = drain.run(far_deadline()).await.expect("drain");
    assert_eq!(
        (summary.claimed, summary.published),
        (5, 5),
        "the expired lease gives its rows back, the holding one does not"
    );
    let messages = drain_queue(&queue).await;
    let mut published: Vec<_> = unpack(messages.iter().map(|m| m.body.as_slice()))
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    published.sort();
    let mut expected: Vec<_> = expired.iter().map(|e| e.event_id.clone()).collect();
    expected.sort();
    assert_eq!(
        published, expected,
        "while its lease holds, no other run takes a row"
    );

    // The crashed run, should it wake up, settles nothing it lost.
    let settled = store
        .mark_published("crashed-run", &keys(&expired), fluxgate::now())
        .await
        .expect("mark");
    assert_eq!(settled, 0);
    assert_eq!(
        status_counts(store, &expired).await[&OutboxStatus::Published],
        5
    );
    assert_eq!(status_counts(store, &held).await[&OutboxStatus::Pending], 5);

    // The held rows come back the moment their lease ends, and not before.
    let next = |now| claim_request("next-run", 100, now);
    let early = store
        .claim_batch(&next(t0 + lease - TimeDelta::seconds(1)))
        .await
        .expect("claim");
    assert!(early.is_empty(), "claimed before the lease ended");
    let back = store
        .claim_batch(&next(t0 + lease + TimeDelta::seconds(1)))
        .await
        .expect("claim");
    let mut back: Vec<_> = back.iter().map(|c| c.event.event_id.clone()).collect();
    back.sort();
    let mut expected: Vec<_> = held.iter().map(|e| e.event_id.clone()).collect();
    expected.sort();
    assert_eq!(back, expected);
    db.cleanup().await;
}

#[tokio::test]
async fn failed_publishes_back_off_and_end_dead() {
    let db = TestDb::postgres().await;
    let events = seed(db.store.as_ref(), "acme", 4).await;
    // A queue with no room refuses every message.
    let full = Arc::new(InMemoryQueue::new(InMemoryQueueConfig {
        capacity: 0,
        ..Default::default()
    }));
    let config = DrainConfig {
        retry_backoff: Schedule(vec![TimeDelta::minutes(1), TimeDelta::minutes(5)]),
        max_attempts: 3,
        ..drain_config()
    };
    let drain = Drain::new(db.store.clone(), full, config.clone());

    let before = fluxgate::now();
    let first = drain.run(far_deadline()).await.expect("drain");
    assert_eq!((first.claimed, first.retried, first.dead), (4, 4, 0));
    let stored = db.stored(&events[0].key()).await;
    assert_eq!(stored.outbox.status, OutboxStatus::Pending);
    assert_eq!(stored.outbox.attempts, 1);
    assert!(
        stored
            .outbox
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("full"))
    );
    let delay = stored.outbox.next_attempt_at - before;
    assert!(
        delay >= TimeDelta::minutes(1) && delay < TimeDelta::minutes(2),
        "first backoff is 1m, got {delay}"
    );
    assert_eq!(
        drain.run(far_deadline()).await.expect("drain").claimed,
        0,
        "not due before its backoff"
    );

    // The later attempts, as the schedule makes them due: claim at the due time directly.
    for attempt in 2..=3 {
        let due = db.stored(&events[0].key()).await.outbox.next_attempt_at;
        let claimed = db
            .store
            .claim_batch(&claim_request("later", 100, due))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 4);
        let retries: Vec<_> = claimed
            .iter()
            .map(|c| fluxgate_outbox_drain::retry_for(c, &config, due, "still full".into()))
            .collect();
        db.store
            .reschedule("later", &retries, due)
            .await
            .expect("reschedule");
        let stored = db.stored(&events[0].key()).await;
        assert_eq!(stored.outbox.attempts, attempt);
        if attempt == 2 {
            assert_eq!(stored.outbox.next_attempt_at - due, TimeDelta::minutes(5));
        }
    }
    assert_eq!(
        status_counts(db.store.as_ref(), &events).await[&OutboxStatus::Dead],
        4
    );
    let far_future = fluxgate::now() + TimeDelta::days(365);
    assert!(
        db.store
            .claim_batch(&claim_request("any", 100, far_future))
            .await
            .expect("claim")
            .is_empty(),
        "DEAD is never claimed"
    );
    db.cleanup().await;
}

fn delivery(event: &Event, receive_count: u32) -> Delivery {
    Delivery {
        message_id: format!("m-{}", event.event_id),
        body: serde_json::to_vec(event).expect("json"),
        receive_count,
    }
}

#[tokio::test]
async fn the_worker_records_done_failed_and_dead_and_never_writes_twice() {
    let db = TestDb::postgres().await;
    let warehouse = tempfile::tempdir().expect("tempdir");
    // The declared fake around the real file warehouse (see fluxgate_tests::FlakySink): it
    // fails order.flaky transiently and order.refused permanently.
    let (events, sink) = outcome_events(db.store.as_ref(), warehouse.path()).await;
    let worker = Worker::new(
        db.store.clone(),
        sink.clone(),
        OutcomeEvents::worker_config(),
    );

    let mut batch = vec![
        delivery(&events.ok, 1),
        delivery(&events.flaky, 1),
        delivery(&events.last, 3),
        delivery(&events.refused, 1),
    ];
    batch.push(Delivery {
        message_id: "garbage".into(),
        body: b"{\"not\": \"an event\"}".to_vec(),
        receive_count: 1,
    });
    let verdicts = worker.process(&batch).await.expect("process");
    assert_eq!(verdicts[0], Verdict::Ack);
    assert_eq!(
        verdicts[1],
        Verdict::Retry,
        "a transient failure is retried by the queue"
    );
    assert_eq!(
        verdicts[2],
        Verdict::Retry,
        "the last delivery goes on to the dead-letter queue"
    );
    assert_eq!(
        verdicts[3],
        Verdict::Ack,
        "a permanent failure is not retried"
    );
    assert!(matches!(verdicts[4], Verdict::Malformed(_)));

    events
        .assert_first_delivery_recorded(&db, warehouse.path())
        .await;

    // The warehouse recovers; the queue delivers the failed one again, and the done one too
    // (at-least-once): one more row, not two.
    sink.heal();
    let verdicts = worker
        .process(&[delivery(&events.flaky, 2), delivery(&events.ok, 2)])
        .await
        .expect("process");
    assert_eq!(verdicts, vec![Verdict::Ack, Verdict::Ack]);
    assert_eq!(
        db.stored(&events.flaky.key()).await.outbox.status,
        OutboxStatus::Done
    );
    assert_eq!(warehouse_row_count(warehouse.path()), 2);

    // A redelivered DONE event is acknowledged without touching the warehouse, even while
    // the warehouse would fail it.
    sink.fail_transiently("order.created");
    let verdicts = worker
        .process(&[delivery(&events.ok, 3)])
        .await
        .expect("process");
    assert_eq!(verdicts, vec![Verdict::Ack]);
    assert_eq!(
        db.stored(&events.ok.key()).await.outbox.status,
        OutboxStatus::Done
    );
    assert_eq!(warehouse_row_count(warehouse.path()), 2);
    db.cleanup().await;
}

#[tokio::test]
async fn the_same_message_twice_in_one_batch_makes_one_row() {
    let db = TestDb::sqlite().await;
    let (e, warehouse, sink) = one_event_and_file_warehouse(db.store.as_ref(), "twice").await;
    let worker = Worker::new(db.store.clone(), sink, WorkerConfig::default());
    let verdicts = worker
        .process(&[delivery(&e, 1), delivery(&e, 1)])
        .await
        .expect("process");
    assert_eq!(verdicts, vec![Verdict::Ack, Verdict::Ack]);
    assert_eq!(warehouse_row_count(warehouse.path()), 1);

    // A restarted process rebuilds the warehouse's index from its files.
    let reopened = Arc::new(LocalFileSink::open(warehouse.path()).await.expect("sink"));
    let rows = [WarehouseRow::new(&e, fluxgate::now())];
    reopened.write_rows(&rows).await.expect("write");
    assert_eq!(warehouse_row_count(warehouse.path()), 1);
}
