//! Eager publish: ingest hands what it just stored to the queue before it answers, racing the
//! scheduled drain without either publishing an event twice (both lease rows the same way),
//! and leaving what it cannot publish PENDING for the drain. On PostgreSQL, MariaDB and SQLite;
//! the queue is the in-process one, whose every message the test can read back, and the Pub/Sub
//! test server (the suite's one declared mock) for a queue that refuses everything.
//! Concurrent requests' publishes are coalesced: a gate in front of the in-process queue holds
//! the first publish while the other requests commit (the gate is test code; the queue behind
//! it is the real in-process one).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fluxgate::config::DrainConfig;
use fluxgate::event::{Event, EventKey};
use fluxgate::queue::{InMemoryQueue, InMemoryQueueConfig, PublishResult, Queue, QueueMessage};
use fluxgate::store::{EventWriter, OutboxStatus};
use fluxgate_outbox_drain::{Drain, EagerConfig, EagerWriter};
use fluxgate_tests::pubsub_server::PubsubTestServer;
use fluxgate_tests::{DbKind, TestDb, event, far_deadline, per_database};
use tonic::Code;

const TOPIC: &str = "projects/fluxgate-test/topics/events";
const WRITERS: usize = 4;
const BATCHES: usize = 25;
const PER_BATCH: usize = 4;

/// Every event the in-process queue holds, as often as it holds it.
async fn published(queue: &InMemoryQueue) -> HashMap<EventKey, usize> {
    let mut seen = HashMap::new();
    loop {
        let deliveries = queue.receive(1000, Duration::from_millis(50)).await;
        if deliveries.is_empty() {
            return seen;
        }
        for delivery in deliveries {
            for event in fluxgate_tests::carried_by(&delivery.message.body).expect("a pack") {
                *seen.entry(event.key()).or_default() += 1;
            }
            queue.ack(delivery.receipt);
        }
    }
}

/// Ingest's writer as `function()` builds it, publishing eagerly to `queue` when it can.
async fn eager_writer(db: &TestDb, queue: fluxgate::queue::QueueConfig) -> Arc<dyn EventWriter> {
    let eager = EagerConfig {
        eager_publish: true,
        eager_publish_timeout: chrono::TimeDelta::seconds(30),
        queue,
        drain: DrainConfig::default(),
    };
    eager.writer(db.store.clone()).await.expect("writer")
}

/// Stores one new event of acme through `writer`; the answer does not depend on the queue.
async fn store_one(writer: &dyn EventWriter, id: &str) -> Event {
    let stored = event("acme", id);
    let outcome = writer
        .insert_events(std::slice::from_ref(&stored))
        .await
        .expect("stored, whatever the queue says");
    assert_eq!(outcome.len(), 1);
    stored
}

async fn eager_publish_and_drain_runs_racing_publish_each_event_once(kind: DbKind) {
    let db = TestDb::of(kind).await;
    let queue = Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()));
    let config = DrainConfig {
        // Small rounds, so that the drain runs many claims while ingest commits.
        drain_batch_size: 3,
        ..DrainConfig::default()
    };
    let drain = Drain::new(db.store.clone(), queue.clone(), config);
    let writer: Arc<dyn EventWriter> = Arc::new(EagerWriter::publishing(
        db.store.clone(),
        drain.clone(),
        Duration::from_secs(30),
    ));

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for b in 0..BATCHES {
                    let batch: Vec<Event> = (0..PER_BATCH)
                        .map(|i| event("acme", &format!("w{w}-b{b}-e{i}")))
                        .collect();
                    writer.insert_events(&batch).await.expect("insert");
                }
            })
        })
        .collect();
    let racing_drain = {
        let drain = drain.clone();
        tokio::spawn(async move {
            let mut published = 0;
            for _ in 0..200 {
                published += drain
                    .run(far_deadline())
                    .await
                    .expect("drain run")
                    .published;
                tokio::task::yield_now().await;
            }
            published
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    let by_drain = racing_drain.await.expect("drain");
    // Whatever eager publish left (none, unless a drain round held it) goes now.
    drain.run(far_deadline()).await.expect("last drain run");

    let seen = published(&queue).await;
    let total = WRITERS * BATCHES * PER_BATCH;
    assert_eq!(seen.len(), total, "{kind}: every event published");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{kind}: published more than once: {twice:?}"
    );
    for key in seen.keys() {
        assert_eq!(db.stored(key).await.outbox.status, OutboxStatus::Published);
    }
    eprintln!("{kind}: {total} events, {by_drain} of them published by the racing drain");
    db.cleanup().await;
}

per_database!(#[tokio::test] eager_publish_and_drain_runs_racing_publish_each_event_once: postgres, mariadb, sqlite);

#[tokio::test]
async fn an_event_eager_publish_cannot_publish_stays_pending_for_the_drain() {
    let db = TestDb::sqlite().await;
    let server = PubsubTestServer::start(&[TOPIC]).await;
    server.fail_everything(Code::PermissionDenied);
    let writer = eager_writer(&db, server.queue_config(TOPIC, 100)).await;
    let stored = store_one(writer.as_ref(), "refused-by-the-queue").await;
    let row = db.stored(&stored.key()).await.outbox;
    assert_eq!(row.status, OutboxStatus::Pending, "left for the drain");
    assert_eq!(row.attempts, 1, "the failed publish counts as an attempt");

    // A published event is published by ingest, before the answer.
    server.heal();
    let next = store_one(writer.as_ref(), "published-at-once").await;
    assert_eq!(
        db.stored(&next.key()).await.outbox.status,
        OutboxStatus::Published
    );
    let carried = fluxgate_tests::unpack(server.published().iter().map(|m| m.data.as_slice()));
    assert_eq!(
        carried.iter().map(Event::key).collect::<Vec<_>>(),
        vec![next.key()]
    );
    db.cleanup().await;
}

#[tokio::test]
async fn without_a_managed_queue_ingest_does_not_publish() {
    let db = TestDb::sqlite().await;
    let memory = fluxgate::queue::QueueConfig {
        queue: fluxgate::queue::QueueKind::Memory,
        ..PubsubTestServer::start(&[TOPIC])
            .await
            .queue_config(TOPIC, 1)
    };
    let writer = eager_writer(&db, memory).await;
    let stored = store_one(writer.as_ref(), "waits-for-the-drain").await;
    assert_eq!(
        db.stored(&stored.key()).await.outbox.status,
        OutboxStatus::Pending
    );
    db.cleanup().await;
}

/// The in-process queue behind a gate that holds every publish until opened, counting the
/// `publish_batch` calls that reach it.
struct GatedQueue {
    inner: Arc<InMemoryQueue>,
    open: tokio::sync::Semaphore,
    calls: AtomicUsize,
}

#[async_trait]
impl Queue for GatedQueue {
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes()
    }

    async fn publish_batch(
        &self,
        messages: &[QueueMessage],
    ) -> fluxgate::error::Result<Vec<PublishResult>> {
        let _open = self.open.acquire().await.expect("gate");
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.publish_batch(messages).await
    }
}

#[tokio::test]
async fn concurrent_requests_share_one_eager_publish() {
    const REQUESTS: usize = 20;
    let db = TestDb::postgres().await;
    let memory = Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()));
    let gated = Arc::new(GatedQueue {
        inner: memory.clone(),
        open: tokio::sync::Semaphore::new(0),
        calls: AtomicUsize::new(0),
    });
    let drain = Drain::new(db.store.clone(), gated.clone(), DrainConfig::default());
    let writer: Arc<dyn EventWriter> = Arc::new(EagerWriter::publishing(
        db.store.clone(),
        drain,
        Duration::from_secs(30),
    ));
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move { store_one(writer.as_ref(), &format!("together-{i}")).await })
        })
        .collect();
    // The first publish waits at the gate until every request has committed.
    let sql = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let deadline =
        fluxgate_tests::Deadline::after(Duration::from_secs(30), Duration::from_millis(10));
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&sql)
            .await
            .expect("count");
        if stored == REQUESTS as i64 {
            break;
        }
        deadline
            .next(|| format!("{REQUESTS} requests committed, {stored} so far"))
            .await;
    }
    sql.close().await;
    gated.open.add_permits(usize::MAX >> 4);
    for request in requests {
        request.await.expect("request");
    }

    let seen = published(&memory).await;
    assert_eq!(seen.len(), REQUESTS, "every event published");
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");
    let calls = gated.calls.load(Ordering::SeqCst);
    assert!(
        calls <= 3,
        "{REQUESTS} concurrent requests took {calls} queue requests; the ones that committed \
         while the first publish was held should have gone out together"
    );
    db.cleanup().await;
}
