//! Store conformance: one suite of behaviours every `Store` must show, run against each
//! database (PostgreSQL, MariaDB, SQLite) on a fresh database per test.
//!
//! Time is passed explicitly (`now` values built from `fluxgate::now()`), so lease expiry and
//! retry schedules are tested by moving `now`, never by sleeping.

/// Instantiates every case of [`cases`] for one database: `conformance!(name, constructor)`
/// makes `mod name { #[tokio::test] async fn <case>() … }`.
macro_rules! conformance {
    ($db:ident, $open:path) => {
        mod $db {
            use fluxgate_tests::TestDb;

            conformance!(@cases $open;
                dialect_and_ping,
                idempotent_insert,
                concurrent_writers_of_one_key_with_the_same_payload,
                concurrent_writers_of_one_key_with_different_payloads,
                duplicate_of_a_delivered_event_is_not_delivered_again,
                keys_are_exact_and_full_length,
                batch_outcomes_in_order,
                round_trip,
                claim_order_and_limit,
                claim_follows_next_attempt_at,
                leased_rows_are_not_claimable,
                claim_by_keys_takes_only_due_named_rows,
                concurrent_claims_never_overlap,
                expired_lease_returns_crashed_claims,
                mark_published_only_by_owner,
                reschedule_pending_and_dead,
                worker_outcomes,
                done_is_final,
                statuses_of_existing_keys,
                requeue_undelivered_keeps_final_rows,
                release_leases_frees_every_pending_claim,
                empty_and_unknown_inputs,
                large_batches_cross_chunk_boundaries,
                admin_counts_lag_latency_and_throughput_from_known_rows,
                admin_failed_listing_is_paginated_with_last_error,
                admin_replay_one_event,
                admin_replay_by_filter_dry_run_and_batches,
                retry_failed_moves_a_tenants_oldest_failed_rows_only,
            );
            // Tenants and API keys (`cases/api_keys.rs`).
            conformance!(@cases $open;
                tenants_and_keys_round_trip,
                a_key_is_stored_only_as_its_hash,
            );
        }
    };
    (@cases $open:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let db: TestDb = $open().await;
                super::cases::$case(&db).await;
                db.cleanup().await;
            }
        )+
    };
}

conformance!(postgres, TestDb::postgres);
conformance!(mariadb, TestDb::mariadb);
conformance!(sqlite, TestDb::sqlite);

#[path = "store_conformance/api_keys.rs"]
mod api_keys;

mod cases {
    pub use super::api_keys::*;

    use std::collections::{BTreeSet, HashMap};
    use std::sync::Arc;

    use chrono::{DateTime, TimeDelta, Utc};
    use fluxgate::event::{Event, EventKey};
    use fluxgate::store::{
        ClaimRequest, ClaimedEvent, DeliveryOutcome, InsertOutcome, OutboxStatus, PublishRetry,
        Store, StoredEvent,
    };
    use fluxgate_tests::{
        TestDb, claim_request, event_at, event_with_payload, key, keys, payload_hash,
    };
    use serde_json::{Value, json};
    use tokio::sync::Barrier;
    use tokio::task::JoinSet;

    use InsertOutcome::{Accepted, Conflict, Duplicate};
    use OutboxStatus::{Dead, Done, Failed, Pending, Published};

    const T: &str = "tenant-a";

    fn secs(n: i64) -> TimeDelta {
        TimeDelta::seconds(n)
    }

    fn mins(n: i64) -> TimeDelta {
        TimeDelta::minutes(n)
    }

    /// An event of `T` received at `at` whose payload carries `n`: same id with another `n`
    /// is a different payload.
    fn variant(id: &str, n: i64, at: DateTime<Utc>) -> Event {
        let mut built = event_with_payload(T, id, json!({ "id": id, "n": n }));
        built.event_ts = at;
        built.received_at = at;
        built
    }

    async fn insert(store: &dyn Store, events: &[Event]) -> Vec<InsertOutcome> {
        store.insert_events(events).await.expect("insert_events")
    }

    /// Three events (`<prefix>1` to `<prefix>3`) inserted and published at `at`: their keys.
    async fn three_published(store: &dyn Store, prefix: &str, at: DateTime<Utc>) -> [EventKey; 3] {
        let events = three_inserted(store, prefix, at, TimeDelta::zero()).await;
        publish_all(store, at).await;
        events.each_ref().map(Event::key)
    }

    /// How many of `keys` the store marked PUBLISHED for `owner`.
    async fn mark_published(
        store: &dyn Store,
        owner: &str,
        keys: &[EventKey],
        now: DateTime<Utc>,
    ) -> u64 {
        store
            .mark_published(owner, keys, now)
            .await
            .expect("mark_published")
    }

    /// Events of these ids, received at `at`, inserted.
    async fn inserted(store: &dyn Store, ids: &[&str], at: DateTime<Utc>) -> Vec<Event> {
        let events: Vec<Event> = ids.iter().map(|id| variant(id, 1, at)).collect();
        insert(store, &events).await;
        events
    }

    /// Three events, `<prefix>1` to `<prefix>3`, received `step` apart from `first`, inserted.
    async fn three_inserted(
        store: &dyn Store,
        prefix: &str,
        first: DateTime<Utc>,
        step: TimeDelta,
    ) -> [Event; 3] {
        let events = [0, 1, 2].map(|i| variant(&format!("{prefix}{}", i + 1), 1, first + step * i));
        insert(store, &events).await;
        events
    }

    async fn claim(
        store: &dyn Store,
        owner: &str,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Vec<ClaimedEvent> {
        store
            .claim_batch(&claim_request(owner, limit, now))
            .await
            .expect("claim_batch")
    }

    async fn stored(store: &dyn Store, key: &EventKey) -> StoredEvent {
        store
            .get_event(key)
            .await
            .expect("get_event")
            .unwrap_or_else(|| panic!("{key:?} is not stored"))
    }

    async fn status(store: &dyn Store, key: &EventKey) -> OutboxStatus {
        stored(store, key).await.outbox.status
    }

    fn claimed_ids(claimed: &[ClaimedEvent]) -> BTreeSet<String> {
        claimed.iter().map(|c| c.event.event_id.clone()).collect()
    }

    fn id_set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    fn claimed_keys(claimed: &[ClaimedEvent]) -> Vec<EventKey> {
        claimed.iter().map(|c| c.event.key()).collect()
    }

    /// Claims every due row at `now` and marks it PUBLISHED; returns the keys.
    async fn publish_all(store: &dyn Store, now: DateTime<Utc>) -> Vec<EventKey> {
        let claimed = claim(store, "publisher", 10_000, now).await;
        let keys = claimed_keys(&claimed);
        let changed = store
            .mark_published("publisher", &keys, now)
            .await
            .expect("mark_published");
        assert_eq!(changed, keys.len() as u64, "publish_all: rows marked");
        keys
    }

    fn outcome(key: &EventKey, status: OutboxStatus, error: Option<&str>) -> DeliveryOutcome {
        DeliveryOutcome {
            key: key.clone(),
            status,
            error: error.map(str::to_owned),
        }
    }

    async fn record(store: &dyn Store, outcomes: &[DeliveryOutcome], now: DateTime<Utc>) {
        store
            .record_outcomes(outcomes, now)
            .await
            .expect("record_outcomes");
    }

    pub async fn dialect_and_ping(db: &TestDb) {
        assert_eq!(db.store.dialect(), db.kind.dialect());
        db.store.ping().await.expect("ping");
    }

    pub async fn idempotent_insert(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let first = variant("e-1", 1, t0);
        assert_eq!(
            insert(store, std::slice::from_ref(&first)).await,
            [Accepted]
        );
        let before = stored(store, &first.key()).await;
        assert_eq!(before.event, first);

        // A client's retry: same key and payload, received later with another correlation id.
        let mut retry = variant("e-1", 1, t0 + secs(30));
        retry.correlation_id = Some("retry".into());
        assert_eq!(insert(store, &[retry]).await, [Duplicate]);

        let changed = variant("e-1", 2, t0 + secs(60));
        assert_eq!(insert(store, &[changed]).await, [Conflict]);

        assert_eq!(
            stored(store, &first.key()).await,
            before,
            "a duplicate or a conflict changed the stored event or its outbox row"
        );

        // The same id under another tenant is another event.
        let mut other_tenant = first.clone();
        other_tenant.tenant_id = "tenant-b".into();
        assert_eq!(insert(store, &[other_tenant]).await, [Accepted]);

        // Nothing else was written: exactly the two accepted events have outbox rows.
        let claimed = claim(store, "drain", 100, t0 + mins(5)).await;
        let mut got = claimed_keys(&claimed);
        got.sort();
        assert_eq!(got, vec![key(T, "e-1"), key("tenant-b", "e-1")]);
    }

    /// How many writers race for one key in the concurrent-writer cases.
    const WRITERS: usize = 8;

    /// Each event inserted on its own task, all released at once by a barrier; the outcome of
    /// each, in the order of `events`. Any error fails the test.
    async fn race_inserts(db: &TestDb, events: Vec<Event>) -> Vec<InsertOutcome> {
        let start = Arc::new(Barrier::new(events.len()));
        let mut writers = JoinSet::new();
        for (index, event) in events.into_iter().enumerate() {
            let store: Arc<dyn Store> = Arc::clone(&db.store);
            let start = Arc::clone(&start);
            writers.spawn(async move {
                start.wait().await;
                let outcomes = store
                    .insert_events(std::slice::from_ref(&event))
                    .await
                    .unwrap_or_else(|err| panic!("writer {index}: insert_events failed: {err}"));
                (index, outcomes)
            });
        }
        let mut by_writer = Vec::new();
        while let Some(joined) = writers.join_next().await {
            let (index, outcomes) = joined.expect("a writer panicked");
            assert_eq!(outcomes.len(), 1, "writer {index}: one outcome per event");
            by_writer.push((index, outcomes[0]));
        }
        by_writer.sort_by_key(|(index, _)| *index);
        by_writer.into_iter().map(|(_, outcome)| outcome).collect()
    }

    /// Exactly one events row and one outbox row hold `key`, counted in SQL.
    async fn assert_one_row_each(db: &TestDb, key: &EventKey) {
        assert_eq!(
            db.count_rows("events", key).await,
            1,
            "events rows of {key:?}"
        );
        assert_eq!(
            db.count_rows("outbox", key).await,
            1,
            "outbox rows of {key:?}"
        );
    }

    pub async fn concurrent_writers_of_one_key_with_the_same_payload(db: &TestDb) {
        let t0 = fluxgate::now();
        let events: Vec<Event> = (0..WRITERS).map(|_| variant("race", 1, t0)).collect();
        let winner = events[0].clone();
        let outcomes = race_inserts(db, events).await;
        let accepted = outcomes.iter().filter(|o| **o == Accepted).count();
        assert_eq!(accepted, 1, "exactly one writer wins: {outcomes:?}");
        assert!(
            outcomes.iter().all(|o| *o == Accepted || *o == Duplicate),
            "the others are duplicates: {outcomes:?}"
        );
        assert_one_row_each(db, &winner.key()).await;
        let store = db.store.as_ref();
        assert_eq!(stored(store, &winner.key()).await.event, winner);
        let claimed = claim(store, "drain", 100, t0 + mins(5)).await;
        assert_eq!(claimed_keys(&claimed), vec![winner.key()], "one delivery");
    }

    pub async fn concurrent_writers_of_one_key_with_different_payloads(db: &TestDb) {
        let t0 = fluxgate::now();
        // Three payloads among the writers, so some writers carry the winner's payload.
        let events: Vec<Event> = (0..WRITERS)
            .map(|i| variant("race", (i % 3) as i64, t0))
            .collect();
        let outcomes = race_inserts(db, events.clone()).await;
        let winners: Vec<usize> = (0..WRITERS).filter(|i| outcomes[*i] == Accepted).collect();
        assert_eq!(winners.len(), 1, "exactly one writer wins: {outcomes:?}");
        let winner = &events[winners[0]];
        for (i, (event, outcome)) in events.iter().zip(&outcomes).enumerate() {
            if i == winners[0] {
                continue;
            }
            let expected = if event.payload == winner.payload {
                Duplicate
            } else {
                Conflict
            };
            assert_eq!(
                *outcome, expected,
                "writer {i} (payload {}) against the winner's {}: {outcomes:?}",
                event.payload, winner.payload,
            );
        }
        assert_one_row_each(db, &winner.key()).await;
        let store = db.store.as_ref();
        assert_eq!(
            stored(store, &winner.key()).await.event,
            *winner,
            "the stored event is the winner's"
        );
        let claimed = claim(store, "drain", 100, t0 + mins(5)).await;
        assert_eq!(claimed_keys(&claimed), vec![winner.key()], "one delivery");
    }

    pub async fn duplicate_of_a_delivered_event_is_not_delivered_again(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let delivered = variant("delivered", 1, t0);
        let published = variant("published", 1, t0);
        insert(store, &[delivered.clone(), published.clone()]).await;
        publish_all(store, t0).await;
        record(
            store,
            &[outcome(&delivered.key(), Done, None)],
            t0 + secs(1),
        )
        .await;

        let again = [
            variant("delivered", 1, t0 + mins(1)),
            variant("published", 1, t0 + mins(1)),
        ];
        assert_eq!(insert(store, &again).await, [Duplicate, Duplicate]);
        assert_eq!(status(store, &delivered.key()).await, Done);
        assert_eq!(status(store, &published.key()).await, Published);
        let claimed = claim(store, "drain", 100, t0 + mins(10)).await;
        assert!(
            claimed.is_empty(),
            "a duplicate made its event due again: {:?}",
            claimed_ids(&claimed)
        );
    }

    pub async fn keys_are_exact_and_full_length(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        // Ids that a case-insensitive, accent-insensitive or space-padding comparison would
        // take for one another; each is its own event.
        let ids = ["a", "A", "a ", " a", "\u{e4}", "a\u{308}", "\u{c4}"];
        let mut events: Vec<Event> = ids.iter().map(|id| variant(id, 1, t0)).collect();
        let mut upper = variant("a", 1, t0);
        upper.tenant_id = "TENANT-A".into();
        events.push(upper);
        // The longest ids validation allows (128 characters), multi-byte ones included.
        let long_tenant = "t".repeat(128);
        let long_id = "\u{1f980}".repeat(128);
        let mut long = variant(&long_id, 1, t0);
        long.tenant_id = long_tenant.clone();
        events.push(long.clone());

        let outcomes = insert(store, &events).await;
        assert_eq!(
            outcomes,
            vec![Accepted; events.len()],
            "distinct keys were taken for the same key"
        );
        for event in &events {
            assert_eq!(&stored(store, &event.key()).await.event, event);
        }
        assert_eq!(insert(store, &events).await, vec![Duplicate; events.len()]);
        let statuses = store.statuses(&keys(&events)).await.expect("statuses");
        assert_eq!(statuses.len(), events.len());
        let claimed = claim(store, "drain", 100, t0).await;
        assert_eq!(claimed.len(), events.len());
        assert!(claimed.iter().any(|c| c.event == long));
    }

    pub async fn batch_outcomes_in_order(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        assert_eq!(insert(store, &[variant("old", 1, t0)]).await, [Accepted]);

        let batch = [
            variant("a", 1, t0),
            variant("a", 1, t0),
            variant("a", 2, t0),
            variant("old", 1, t0),
            variant("old", 2, t0),
            variant("b", 1, t0),
            variant("c", 2, t0),
            variant("c", 1, t0),
            variant("c", 2, t0),
        ];
        assert_eq!(
            insert(store, &batch).await,
            [
                Accepted, Duplicate, Conflict, Duplicate, Conflict, Accepted, Accepted, Conflict,
                Duplicate,
            ]
        );
        // The first occurrence of a key in a batch is the one stored.
        assert_eq!(stored(store, &key(T, "a")).await.event, batch[0]);
        assert_eq!(stored(store, &key(T, "c")).await.event, batch[6]);
        assert_eq!(
            stored(store, &key(T, "old")).await.event.payload.to_value()["n"],
            json!(1)
        );
        let claimed = claim(store, "drain", 100, t0).await;
        assert_eq!(claimed_ids(&claimed), id_set(&["old", "a", "b", "c"]));
    }

    pub async fn round_trip(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let mut full = event_with_payload(
            T,
            "round-trip",
            json!({
                "text": "h\u{e9}llo \"quoted\" \\ / \u{1f980} \u{202e} \n\t",
                "int": -42,
                "i64min": i64::MIN,
                "u64max": u64::MAX,
                "beyond_f64": 9_007_199_254_740_993_u64,
                "float": 2.5,
                "one": 1.0,
                "small": 1.0e-7,
                "bool": true,
                "null": null,
                "list": [1, "two", {"three": 3}, []],
                "nested": {"z": {"y": [null]}, "a": {}},
                "": "empty key",
            }),
        );
        full.event_ts = "2024-02-29T23:59:59.123456Z".parse().expect("timestamp");
        full.received_at = t0;
        full.source = Some("sdk-js/1.2.3".into());
        full.metadata = json!({"ip": "203.0.113.7", "tags": ["a", "b"], "depth": {"x": 1}})
            .as_object()
            .cloned()
            .map(Into::into);
        full.correlation_id = Some("corr-\u{e9}-123".into());

        let mut bare = event_at(T, "bare", t0);
        bare.event_ts = "2024-01-01T00:00:00Z".parse().expect("timestamp");

        assert_eq!(
            insert(store, &[full.clone(), bare.clone()]).await,
            [Accepted, Accepted]
        );
        for event in [&full, &bare] {
            let got = stored(store, &event.key()).await;
            assert_eq!(&got.event, event, "the event read back differs");
            assert_eq!(
                payload_hash(&got.event.payload),
                got.event.payload_sha256,
                "the payload read back no longer has its hash"
            );
            let outbox = &got.outbox;
            assert_eq!(outbox.status, Pending);
            assert_eq!(outbox.attempts, 0);
            assert_eq!(outbox.next_attempt_at, t0, "a new row is due at once");
            assert_eq!(outbox.created_at, t0);
            assert_eq!(outbox.updated_at, t0);
            assert_eq!(outbox.last_error, None);
            assert_eq!(outbox.published_at, None);
            assert_eq!(outbox.done_at, None);
        }
        // The claim path decodes the same event.
        let claimed = claim(store, "drain", 10, t0).await;
        assert_eq!(claimed.len(), 2);
        for c in &claimed {
            assert_eq!(c.attempts, 0);
            let expected = if c.event.event_id == "bare" {
                &bare
            } else {
                &full
            };
            assert_eq!(&c.event, expected, "the claimed event differs");
        }
    }

    pub async fn claim_order_and_limit(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        // d1 is due first; insertion order differs from due order.
        let due_minutes_ago = [("d3", 3), ("d5", 1), ("d1", 5), ("d4", 2), ("d2", 4)];
        let mut events: Vec<Event> = due_minutes_ago
            .iter()
            .map(|(id, ago)| variant(id, 1, t0 - mins(*ago)))
            .collect();
        events.push(variant("later", 1, t0 + mins(1)));
        insert(store, &events).await;

        let first = claim(store, "a", 2, t0).await;
        assert_eq!(claimed_ids(&first), id_set(&["d1", "d2"]));
        let second = claim(store, "b", 2, t0).await;
        assert_eq!(claimed_ids(&second), id_set(&["d3", "d4"]));
        let rest = claim(store, "c", 10, t0).await;
        assert_eq!(
            claimed_ids(&rest),
            id_set(&["d5"]),
            "only due rows are claimed"
        );
        assert!(claim(store, "d", 10, t0).await.is_empty());
        // Due now, while the leases above (until t0 + 2m) still hold.
        let later = claim(store, "e", 10, t0 + mins(1)).await;
        assert_eq!(claimed_ids(&later), id_set(&["later"]));

        for c in first.iter().chain(&second).chain(&rest).chain(&later) {
            let original = events
                .iter()
                .find(|e| e.event_id == c.event.event_id)
                .expect("claimed an inserted event");
            assert_eq!(&c.event, original);
            assert_eq!(c.attempts, 0);
        }
    }

    pub async fn claim_follows_next_attempt_at(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        // Received oldest first, but rescheduled newest first: the claim follows the schedule.
        three_inserted(store, "r", t0 - mins(10), mins(1)).await;
        assert_eq!(claim(store, "a", 10, t0).await.len(), 3);
        let retries: Vec<PublishRetry> = [("r1", 3), ("r2", 2), ("r3", 1)]
            .iter()
            .map(|(id, delay)| PublishRetry {
                key: key(T, id),
                attempts: 1,
                status: Pending,
                next_attempt_at: t0 + mins(*delay),
                error: "queue unavailable".into(),
            })
            .collect();
        assert_eq!(
            store
                .reschedule("a", &retries, t0)
                .await
                .expect("reschedule"),
            3
        );
        let at = t0 + mins(5);
        for expected in ["r3", "r2", "r1"] {
            let claimed = claim(store, &format!("next-{expected}"), 1, at).await;
            assert_eq!(
                claimed_ids(&claimed),
                id_set(&[expected]),
                "the earliest next_attempt_at goes first"
            );
            assert_eq!(claimed[0].attempts, 1);
        }
    }

    pub async fn leased_rows_are_not_claimable(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        three_inserted(store, "l", t0, TimeDelta::zero()).await;
        let held = claim(store, "holder", 10, t0).await;
        assert_eq!(held.len(), 3);
        for (owner, at) in [
            ("same-time", t0),
            ("a-minute-later", t0 + mins(1)),
            (
                "just-before-expiry",
                t0 + fluxgate_tests::LEASE_TTL - secs(1),
            ),
        ] {
            let claimed = claim(store, owner, 10, at).await;
            assert!(
                claimed.is_empty(),
                "{owner} claimed leased rows {:?}",
                claimed_ids(&claimed)
            );
        }
        // The holder itself does not get them twice either.
        assert!(claim(store, "holder", 10, t0 + secs(1)).await.is_empty());
    }

    /// Eager publish's claim: only the named rows, only while due, under the same lease as a
    /// drain's claim, so the two never both take a row.
    pub async fn claim_by_keys_takes_only_due_named_rows(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let events = [
            variant("k1", 1, t0),
            variant("k2", 1, t0),
            variant("k3", 1, t0),
        ];
        insert(store, &events).await;
        let named = [
            events[0].key(),
            events[1].key(),
            key("acme", "never-stored"),
        ];
        let eager = claim_request("eager", 0, t0);
        let claimed = store.claim_keys(&eager, &named).await.expect("claim keys");
        assert_eq!(claimed_ids(&claimed), id_set(&["k1", "k2"]));
        assert!(claimed.iter().all(|c| c.attempts == 0));

        // Leased: not the drain's, and not eager publish's again.
        assert_eq!(
            claimed_ids(&claim(store, "drain", 10, t0).await),
            id_set(&["k3"])
        );
        let again = claim_request("eager-again", 0, t0);
        assert!(
            store
                .claim_keys(&again, &named)
                .await
                .expect("claim")
                .is_empty()
        );

        // Settled rows are not due, whoever asks.
        store
            .mark_published("eager", &[events[0].key()], t0)
            .await
            .expect("mark");
        let later = claim_request("eager-later", 0, t0 + fluxgate_tests::LEASE_TTL + secs(1));
        assert_eq!(
            claimed_ids(&store.claim_keys(&later, &named).await.expect("claim")),
            id_set(&["k2"]),
            "k1 is PUBLISHED; k2's lease expired, so it is due again"
        );
        assert!(
            store
                .claim_keys(&later, &[])
                .await
                .expect("no keys")
                .is_empty()
        );
    }

    pub async fn concurrent_claims_never_overlap(db: &TestDb) {
        const ROWS: usize = 400;
        const CLAIMERS: usize = 4;
        const BATCH: u32 = 5;
        let t0 = fluxgate::now();
        let events: Vec<Event> = (0..ROWS)
            .map(|i| variant(&format!("c-{i:04}"), 1, t0 - mins(1)))
            .collect();
        for chunk in events.chunks(100) {
            let outcomes = insert(db.store.as_ref(), chunk).await;
            assert!(outcomes.iter().all(|o| *o == Accepted));
        }

        let start = Arc::new(Barrier::new(CLAIMERS));
        let mut claimers = JoinSet::new();
        for worker in 0..CLAIMERS {
            let store: Arc<dyn Store> = Arc::clone(&db.store);
            let start = Arc::clone(&start);
            claimers.spawn(async move {
                let owner = format!("drain-{worker}");
                let mut mine: Vec<EventKey> = Vec::new();
                start.wait().await;
                for round in 0.. {
                    assert!(round < 10 * ROWS, "{owner} never saw an empty claim");
                    let claimed = store
                        .claim_batch(&claim_request(&owner, BATCH, fluxgate::now()))
                        .await
                        .expect("claim_batch");
                    if claimed.is_empty() {
                        break;
                    }
                    assert!(claimed.len() <= BATCH as usize, "limit exceeded");
                    let keys = claimed_keys(&claimed);
                    let published = store
                        .mark_published(&owner, &keys, fluxgate::now())
                        .await
                        .expect("mark_published");
                    assert_eq!(
                        published,
                        keys.len() as u64,
                        "{owner} claimed rows it could not publish (another owner took them)"
                    );
                    mine.extend(keys);
                    tokio::task::yield_now().await;
                }
                (owner, mine)
            });
        }

        let mut claimed_by: HashMap<EventKey, Vec<String>> = HashMap::new();
        let mut owners_with_rows = 0;
        while let Some(joined) = claimers.join_next().await {
            let (owner, mine) = joined.expect("a claimer panicked");
            if !mine.is_empty() {
                owners_with_rows += 1;
            }
            for key in mine {
                claimed_by.entry(key).or_default().push(owner.clone());
            }
        }
        let twice: Vec<_> = claimed_by
            .iter()
            .filter(|(_, owners)| owners.len() > 1)
            .collect();
        assert!(twice.is_empty(), "rows claimed more than once: {twice:?}");
        assert_eq!(claimed_by.len(), ROWS, "every row is claimed exactly once");
        assert!(owners_with_rows >= 2, "the claims did not run concurrently");
        let store = db.store.as_ref();
        assert!(
            claim(store, "after", 1000, fluxgate::now() + mins(60))
                .await
                .is_empty()
        );
        let statuses = store.statuses(&keys(&events)).await.expect("statuses");
        assert_eq!(statuses.len(), ROWS);
        assert!(statuses.values().all(|s| *s == Published));
    }

    pub async fn expired_lease_returns_crashed_claims(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let events = three_inserted(store, "x", t0, TimeDelta::zero()).await;
        let ttl = secs(60);
        let lease = |owner: &str, now| ClaimRequest {
            owner: owner.into(),
            limit: 10,
            lease_ttl: ttl,
            now,
        };
        let crashed = store
            .claim_batch(&lease("crashed", t0))
            .await
            .expect("claim");
        assert_eq!(crashed.len(), 3);
        let early = store
            .claim_batch(&lease("rescuer", t0 + secs(30)))
            .await
            .expect("claim");
        assert!(early.is_empty(), "rows were taken before the lease expired");

        let after = t0 + ttl + secs(1);
        let rescued = store
            .claim_batch(&lease("rescuer", after))
            .await
            .expect("claim");
        assert_eq!(claimed_ids(&rescued), id_set(&["x1", "x2", "x3"]));
        for c in &rescued {
            assert!(events.contains(&c.event));
        }

        // The crashed run wakes up late: it no longer owns anything.
        let late = keys(&events);
        assert_eq!(
            mark_published(store, "crashed", &late, after + secs(1)).await,
            0,
            "an expired owner still settled rows another run had claimed"
        );
        let late_retry = PublishRetry {
            key: late[0].clone(),
            attempts: 1,
            status: Dead,
            next_attempt_at: after,
            error: "late".into(),
        };
        assert_eq!(
            store
                .reschedule("crashed", &[late_retry], after + secs(1))
                .await
                .expect("reschedule"),
            0
        );
        assert_eq!(
            mark_published(store, "rescuer", &late, after + secs(2)).await,
            3
        );
        let statuses = store.statuses(&late).await.expect("statuses");
        assert!(statuses.values().all(|s| *s == Published), "{statuses:?}");
        assert!(
            claim(store, "much-later", 10, t0 + TimeDelta::days(1))
                .await
                .is_empty()
        );
    }

    pub async fn mark_published_only_by_owner(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let events = three_inserted(store, "m", t0 - secs(3), secs(1)).await;
        let all = keys(&events);
        let owned = claim(store, "owner", 2, t0).await;
        assert_eq!(claimed_ids(&owned), id_set(&["m1", "m2"]));

        assert_eq!(
            mark_published(store, "stranger", &all[..2], t0).await,
            0,
            "a stranger settled another run's rows"
        );
        // Still leased to the owner: not claimable, and not published.
        let other = claim(store, "other", 10, t0).await;
        assert_eq!(claimed_ids(&other), id_set(&["m3"]));

        let t1 = t0 + secs(5);
        assert_eq!(
            mark_published(store, "owner", &all, t1).await,
            2,
            "only the owner's two rows change"
        );
        for k in &all[..2] {
            let row = stored(store, k).await.outbox;
            assert_eq!(row.status, Published);
            assert_eq!(row.published_at, Some(t1));
            assert_eq!(row.updated_at, t1);
        }
        assert_eq!(status(store, &all[2]).await, Pending);
        assert_eq!(
            mark_published(store, "owner", &all[..1], t1 + secs(1)).await,
            0,
            "publishing twice changed a row again"
        );
        // Published rows never come back by lease expiry; m3's expired lease does.
        let much_later = claim(store, "much-later", 10, t0 + TimeDelta::days(1)).await;
        assert_eq!(claimed_ids(&much_later), id_set(&["m3"]));
    }

    pub async fn reschedule_pending_and_dead(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let events = three_inserted(store, "s", t0, TimeDelta::zero()).await;
        let [k1, k2, k3] = events.each_ref().map(Event::key);
        assert_eq!(claim(store, "drain", 10, t0).await.len(), 3);

        let retries = [
            PublishRetry {
                key: k1.clone(),
                attempts: 1,
                status: Pending,
                next_attempt_at: t0 + mins(5),
                error: "boom".into(),
            },
            PublishRetry {
                key: k2.clone(),
                attempts: 5,
                status: Dead,
                next_attempt_at: t0,
                error: "gone".into(),
            },
        ];
        let reschedule = async |owner: &str, now| {
            let settled = store.reschedule(owner, &retries, now).await;
            settled.expect("reschedule")
        };
        assert_eq!(
            reschedule("stranger", t0).await,
            0,
            "a stranger rescheduled another run's rows"
        );
        let t1 = t0 + secs(1);
        assert_eq!(reschedule("drain", t1).await, 2);
        assert_eq!(
            mark_published(store, "drain", std::slice::from_ref(&k3), t1).await,
            1
        );

        let r1 = stored(store, &k1).await.outbox;
        assert_eq!(r1.status, Pending);
        assert_eq!(r1.attempts, 1);
        assert_eq!(r1.last_error.as_deref(), Some("boom"));
        assert_eq!(r1.next_attempt_at, t0 + mins(5));
        assert_eq!(r1.updated_at, t1);
        let r2 = stored(store, &k2).await.outbox;
        assert_eq!(r2.status, Dead);
        assert_eq!(r2.attempts, 5);
        assert_eq!(r2.last_error.as_deref(), Some("gone"));

        // Released: settling again changes nothing.
        assert_eq!(reschedule("drain", t1).await, 0);
        assert!(
            claim(store, "early", 10, t0 + mins(4)).await.is_empty(),
            "a rescheduled row was claimable before its next attempt"
        );
        let due = claim(store, "due", 10, t0 + mins(5)).await;
        assert_eq!(claimed_ids(&due), id_set(&["s1"]));
        assert_eq!(due[0].attempts, 1);
        assert_eq!(
            mark_published(store, "due", std::slice::from_ref(&k1), t0 + mins(5)).await,
            1
        );
        assert!(
            claim(store, "next-year", 10, t0 + TimeDelta::days(365))
                .await
                .is_empty(),
            "a DEAD row was claimed"
        );
        assert_eq!(status(store, &k2).await, Dead);
    }

    pub async fn worker_outcomes(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let [k1, k2, k3] = three_published(store, "w", t0).await;

        let t1 = t0 + mins(1);
        record(
            store,
            &[
                outcome(&k1, Done, None),
                outcome(&k2, Failed, Some("timeout")),
                outcome(&k3, Dead, Some("bad payload")),
            ],
            t1,
        )
        .await;
        let r1 = stored(store, &k1).await.outbox;
        assert_eq!((r1.status, r1.done_at, r1.attempts), (Done, Some(t1), 0));
        assert_eq!(
            r1.published_at,
            Some(t0),
            "DONE keeps when it was published"
        );
        let r2 = stored(store, &k2).await.outbox;
        assert_eq!((r2.status, r2.attempts), (Failed, 1));
        assert_eq!(r2.last_error.as_deref(), Some("timeout"));
        assert_eq!(r2.updated_at, t1);
        assert_eq!(r2.done_at, None);
        let r3 = stored(store, &k3).await.outbox;
        assert_eq!((r3.status, r3.attempts), (Dead, 1));
        assert_eq!(r3.last_error.as_deref(), Some("bad payload"));

        let t2 = t1 + mins(1);
        record(store, &[outcome(&k2, Failed, Some("again"))], t2).await;
        let r2 = stored(store, &k2).await.outbox;
        assert_eq!((r2.status, r2.attempts), (Failed, 2));
        assert_eq!(r2.last_error.as_deref(), Some("again"));

        // The queue's redelivery finally succeeds.
        let t3 = t2 + mins(1);
        record(store, &[outcome(&k2, Done, None)], t3).await;
        let r2 = stored(store, &k2).await.outbox;
        assert_eq!((r2.status, r2.done_at), (Done, Some(t3)));

        assert!(
            claim(store, "drain", 10, t0 + TimeDelta::days(1))
                .await
                .is_empty(),
            "a DONE, FAILED or DEAD row was claimed"
        );
    }

    pub async fn done_is_final(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let [k1, k2, k3] = three_published(store, "f", t0).await;

        let t1 = t0 + mins(1);
        record(store, &[outcome(&k1, Done, None)], t1).await;
        let done = stored(store, &k1).await.outbox;

        for (late, error) in [(Failed, "late failure"), (Dead, "late death")] {
            record(store, &[outcome(&k1, late, Some(error))], t1 + mins(1)).await;
            assert_eq!(
                stored(store, &k1).await.outbox,
                done,
                "a {late} outcome after DONE changed the row"
            );
        }
        record(store, &[outcome(&k1, Done, None)], t1 + mins(2)).await;
        assert_eq!(
            stored(store, &k1).await.outbox.done_at,
            Some(t1),
            "a repeated DONE moved done_at"
        );

        // Within one call, DONE wins whatever the order.
        record(
            store,
            &[
                outcome(&k2, Failed, Some("x")),
                outcome(&k2, Done, None),
                outcome(&k3, Done, None),
                outcome(&k3, Dead, Some("y")),
            ],
            t1,
        )
        .await;
        assert_eq!(status(store, &k2).await, Done);
        assert_eq!(status(store, &k3).await, Done);

        assert_eq!(store.requeue_undelivered(t1).await.expect("requeue"), 0);
        assert_eq!(status(store, &k1).await, Done);
    }

    pub async fn statuses_of_existing_keys(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let names = ["pub", "done", "failed", "dead"];
        let events: Vec<Event> = names.iter().map(|id| variant(id, 1, t0)).collect();
        insert(store, &events).await;
        publish_all(store, t0).await;
        record(
            store,
            &[
                outcome(&key(T, "done"), Done, None),
                outcome(&key(T, "failed"), Failed, Some("x")),
                outcome(&key(T, "dead"), Dead, Some("y")),
            ],
            t0 + secs(1),
        )
        .await;
        insert(store, &[variant("pending", 1, t0)]).await;

        let asked = [
            key(T, "pending"),
            key(T, "pub"),
            key(T, "done"),
            key(T, "failed"),
            key(T, "dead"),
            key(T, "unknown"),
            key("tenant-b", "pub"),
        ];
        let got = store.statuses(&asked).await.expect("statuses");
        let expected: HashMap<EventKey, OutboxStatus> = [
            (key(T, "pending"), Pending),
            (key(T, "pub"), Published),
            (key(T, "done"), Done),
            (key(T, "failed"), Failed),
            (key(T, "dead"), Dead),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, expected);
    }

    /// The one drain of a database, restarted after a crash, takes back its predecessor's
    /// claims at once instead of after the lease TTL; final rows stay as they are.
    pub async fn release_leases_frees_every_pending_claim(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        inserted(store, &["a", "b", "c", "done"], t0).await;
        let crashed = claim(store, "crashed-drain", 4, t0).await;
        assert_eq!(crashed.len(), 4);
        let done = [key(T, "done")];
        mark_published(store, "crashed-drain", &done, t0).await;
        record(store, &[outcome(&done[0], Done, None)], t0).await;
        assert!(
            claim(store, "next-drain", 10, t0).await.is_empty(),
            "leased"
        );

        assert_eq!(store.release_leases(t0).await.expect("release"), 3);
        let next = claim(store, "next-drain", 10, t0).await;
        assert_eq!(claimed_ids(&next), id_set(&["a", "b", "c"]));
        assert_eq!(status(store, &done[0]).await, Done);
    }

    pub async fn requeue_undelivered_keeps_final_rows(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        inserted(store, &["pub", "failed", "done", "dead"], t0).await;
        publish_all(store, t0).await;
        record(
            store,
            &[
                outcome(&key(T, "failed"), Failed, Some("x")),
                outcome(&key(T, "done"), Done, None),
                outcome(&key(T, "dead"), Dead, Some("y")),
            ],
            t0 + secs(1),
        )
        .await;
        // One row still leased to a live drain, one never claimed.
        insert(
            store,
            &[
                variant("leased", 1, t0 + secs(30)),
                variant("waiting", 1, t0 + mins(1)),
            ],
        )
        .await;
        let leased = claim(store, "live-drain", 1, t0 + mins(1)).await;
        assert_eq!(claimed_ids(&leased), id_set(&["leased"]));

        let t1 = t0 + mins(2);
        assert_eq!(
            store.requeue_undelivered(t1).await.expect("requeue"),
            2,
            "only the PUBLISHED and the FAILED row move"
        );
        let expected = [
            ("pub", Pending),
            ("failed", Pending),
            ("done", Done),
            ("dead", Dead),
            ("leased", Pending),
            ("waiting", Pending),
        ];
        for (id, want) in expected {
            assert_eq!(status(store, &key(T, id)).await, want, "{id}");
        }
        let failed = stored(store, &key(T, "failed")).await.outbox;
        assert_eq!(failed.attempts, 1, "requeue keeps the attempt count");
        // A PUBLISHED row's delivery was interrupted: it counts, so the worker checks the
        // warehouse before writing it again.
        let published = key(T, "pub");
        let states = store
            .delivery_states(std::slice::from_ref(&published))
            .await
            .expect("delivery states");
        assert_eq!(states[&published].attempts, 1);
        assert!(states[&published].may_be_written());
        assert_eq!(failed.next_attempt_at, t1);

        // Due again at once, but the live drain's lease still holds.
        let next = claim(store, "next-drain", 10, t1).await;
        assert_eq!(claimed_ids(&next), id_set(&["pub", "failed", "waiting"]));
        let failed_claim = next
            .iter()
            .find(|c| c.event.event_id == "failed")
            .expect("failed is claimed");
        assert_eq!(failed_claim.attempts, 1);
    }

    pub async fn empty_and_unknown_inputs(db: &TestDb) {
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let unknown = key(T, "unknown");
        assert!(insert(store, &[]).await.is_empty());
        assert!(store.statuses(&[]).await.expect("statuses").is_empty());
        assert_eq!(store.mark_published("a", &[], t0).await.expect("mark"), 0);
        assert_eq!(store.reschedule("a", &[], t0).await.expect("reschedule"), 0);
        record(store, &[], t0).await;
        assert!(claim(store, "a", 10, t0).await.is_empty());
        assert_eq!(store.requeue_undelivered(t0).await.expect("requeue"), 0);

        assert!(store.get_event(&unknown).await.expect("get").is_none());
        assert!(
            store
                .statuses(std::slice::from_ref(&unknown))
                .await
                .expect("statuses")
                .is_empty()
        );
        assert_eq!(
            store
                .mark_published("a", std::slice::from_ref(&unknown), t0)
                .await
                .expect("mark"),
            0
        );
        // The worker may report on an event the database no longer has (purged).
        record(
            store,
            &[
                outcome(&unknown, Done, None),
                outcome(&key(T, "gone"), Failed, Some("x")),
            ],
            t0,
        )
        .await;
        assert!(store.get_event(&unknown).await.expect("get").is_none());
    }

    pub async fn large_batches_cross_chunk_boundaries(db: &TestDb) {
        const N: usize = 1100;
        let store = db.store.as_ref();
        let t0 = fluxgate::now();
        let events: Vec<Event> = (0..N)
            .map(|i| {
                let mut e = event_with_payload(
                    T,
                    &format!("big-{i:05}"),
                    json!({"i": i, "pad": "x".repeat(200)}),
                );
                e.event_ts = t0;
                e.received_at = t0;
                e
            })
            .collect();
        let outcomes = insert(store, &events).await;
        assert_eq!(outcomes, vec![Accepted; N]);

        let mut again = events.clone();
        again[N / 2] = event_with_payload(T, &format!("big-{:05}", N / 2), json!({"i": -1}));
        let outcomes = insert(store, &again).await;
        for (i, got) in outcomes.iter().enumerate() {
            let want = if i == N / 2 { Conflict } else { Duplicate };
            assert_eq!(*got, want, "item {i}");
        }

        let all = keys(&events);
        let statuses = store.statuses(&all).await.expect("statuses");
        assert_eq!(statuses.len(), N);
        assert!(statuses.values().all(|s| *s == Pending));
        let claimed = claim(store, "bulk", 2 * N as u32, t0).await;
        assert_eq!(claimed.len(), N);
        assert_eq!(
            mark_published(store, "bulk", &all, t0 + secs(1)).await,
            N as u64
        );
        let middle = stored(store, &all[N / 2]).await;
        assert_eq!(middle.event.payload.to_value()["i"], Value::from(N / 2));
        assert_eq!(middle.outbox.status, Published);
    }

    // ---- admin queries (replay and metrics), migration 0003 ----

    use fluxgate::store::{OutboxFilter, ReplayFilter, ReplayOne, StatusCounts};

    /// Known rows of tenant `T`, all received at `base + i s`:
    /// e0..e3 DONE after 1 s, 2 min, 6 min and 20 min; e4 FAILED; e5 DEAD; e6..e9 PUBLISHED.
    /// e0..e2 are `order.created`, the rest `test.created`. Then two PENDING events of
    /// tenant-b received at base + 5 min.
    async fn known_rows(store: &dyn Store, base: DateTime<Utc>) {
        let mut events: Vec<Event> = (0..10)
            .map(|i| variant(&format!("e{i}"), i, base + secs(i)))
            .collect();
        for event in events.iter_mut().take(3) {
            event.event_type = "order.created".into();
        }
        insert(store, &events).await;
        publish_all(store, base + secs(10)).await;
        let latencies = [secs(1), mins(2), mins(6), mins(20)];
        for (i, latency) in latencies.iter().enumerate() {
            let done_at = base + secs(i as i64) + *latency;
            record(
                store,
                &[outcome(&key(T, &format!("e{i}")), Done, None)],
                done_at,
            )
            .await;
        }
        record(
            store,
            &[outcome(&key(T, "e4"), Failed, Some("sink timeout"))],
            base + mins(1),
        )
        .await;
        record(
            store,
            &[outcome(&key(T, "e5"), Dead, Some("row rejected"))],
            base + mins(2),
        )
        .await;
        let mut pending: Vec<Event> = (0..2)
            .map(|i| variant(&format!("b{i}"), i, base + mins(5)))
            .collect();
        for event in &mut pending {
            event.tenant_id = "tenant-b".into();
        }
        insert(store, &pending).await;
    }

    fn filter(
        tenant: Option<&str>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> OutboxFilter {
        OutboxFilter {
            tenant_id: tenant.map(str::to_owned),
            from,
            to,
        }
    }

    pub async fn admin_counts_lag_latency_and_throughput_from_known_rows(db: &TestDb) {
        let store = db.store.as_ref();
        let admin = store;
        let base = fluxgate::now() - TimeDelta::hours(2);
        known_rows(store, base).await;

        let counts = admin
            .status_counts(&filter(Some(T), None, None))
            .await
            .expect("counts");
        assert_eq!(
            counts,
            StatusCounts {
                pending: 0,
                published: 4,
                done: 4,
                failed: 1,
                dead: 1
            }
        );
        let all = admin
            .status_counts(&OutboxFilter::default())
            .await
            .expect("counts");
        assert_eq!((all.pending, all.total()), (2, 12));
        // from inclusive, to exclusive: e2, e3, e4.
        let ranged = admin
            .status_counts(&filter(Some(T), Some(base + secs(2)), Some(base + secs(5))))
            .await
            .expect("counts");
        assert_eq!(
            ranged,
            StatusCounts {
                done: 2,
                failed: 1,
                ..StatusCounts::default()
            }
        );
        let nobody = admin
            .status_counts(&filter(Some("nobody"), None, None))
            .await
            .expect("counts");
        assert_eq!(nobody.total(), 0);

        let types = admin
            .type_counts(&OutboxFilter::default())
            .await
            .expect("types");
        let types: Vec<(String, u64)> =
            types.into_iter().map(|t| (t.event_type, t.count)).collect();
        assert_eq!(
            types,
            vec![("test.created".into(), 9), ("order.created".into(), 3)]
        );
        let early = admin
            .type_counts(&filter(Some(T), None, Some(base + secs(1))))
            .await
            .expect("types");
        assert_eq!(early.len(), 1);
        assert_eq!(
            (early[0].event_type.as_str(), early[0].count),
            ("order.created", 1)
        );

        assert_eq!(
            admin.oldest_pending(None).await.expect("lag"),
            Some(base + mins(5))
        );
        assert_eq!(admin.oldest_pending(Some(T)).await.expect("lag"), None);

        let latency = admin
            .latency(Some(T), base, base + TimeDelta::hours(1))
            .await
            .expect("latency");
        assert_eq!(latency.completed, 4);
        let ms = |v: Option<f64>| v.map(|v| v.round() as i64);
        // (1 000 + 120 000 + 360 000 + 1 200 000) / 4; nearest rank: p50 = 2nd, p95 = 4th.
        assert_eq!(ms(latency.avg_ms), Some(420_250));
        assert_eq!(ms(latency.p50_ms), Some(120_000));
        assert_eq!(ms(latency.p95_ms), Some(1_200_000));
        assert_eq!(ms(latency.p99_ms), Some(1_200_000));
        // 1 s in the 1 s bucket; 120 s, 360 s and 1 200 s above the last bound (60 s).
        let mut histogram = [0; fluxgate::store::LATENCY_BUCKETS_MS.len() + 1];
        histogram[7] = 1;
        histogram[fluxgate::store::LATENCY_BUCKETS_MS.len()] = 3;
        assert_eq!(latency.histogram, histogram);
        // A window holding only e0 and e1 (done at base + 1 s and base + 121 s).
        let early = admin
            .latency(None, base, base + secs(200))
            .await
            .expect("latency");
        assert_eq!(
            (early.completed, ms(early.p50_ms), ms(early.p95_ms)),
            (2, Some(1_000), Some(120_000))
        );
        let empty = admin
            .latency(Some("nobody"), base, base + TimeDelta::hours(1))
            .await
            .expect("latency");
        assert_eq!(
            (empty.completed, empty.avg_ms, empty.p50_ms),
            (0, None, None)
        );
        assert_eq!(empty.histogram.iter().sum::<u64>(), 0);

        // At base + 400 s: e2 (362 s) in the last minute, e1 (121 s) in five, e0 (1 s) in 15;
        // e3 (1 203 s) is later than "now" and not counted.
        let throughput = admin
            .throughput(Some(T), base + secs(400))
            .await
            .expect("throughput");
        assert_eq!(
            (throughput.last_1m, throughput.last_5m, throughput.last_15m),
            (1, 2, 3)
        );
    }

    pub async fn admin_failed_listing_is_paginated_with_last_error(db: &TestDb) {
        let store = db.store.as_ref();
        let admin = store;
        let base = fluxgate::now() - TimeDelta::hours(2);
        known_rows(store, base).await;
        let (items, total) = admin.failed_events(Some(T), 0, 10).await.expect("failed");
        assert_eq!(total, 2);
        let seen: Vec<(&str, OutboxStatus, Option<&str>)> = items
            .iter()
            .map(|f| (f.event_id.as_str(), f.status, f.last_error.as_deref()))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("e5", Dead, Some("row rejected")),
                ("e4", Failed, Some("sink timeout"))
            ]
        );
        assert_eq!(items[0].event_type, "test.created");
        assert_eq!(items[0].received_at, base + secs(5));
        let (second, total) = admin.failed_events(Some(T), 1, 1).await.expect("page 2");
        assert_eq!(
            (second.len(), second[0].event_id.as_str(), total),
            (1, "e4", 2)
        );
        let (none, total) = admin
            .failed_events(Some("tenant-b"), 0, 10)
            .await
            .expect("failed");
        assert!(none.is_empty());
        assert_eq!(total, 0);
    }

    pub async fn admin_replay_one_event(db: &TestDb) {
        let store = db.store.as_ref();
        let admin = store;
        let base = fluxgate::now() - TimeDelta::hours(2);
        known_rows(store, base).await;
        let now = fluxgate::now();
        let replay = async |id: &str| {
            let replayed = admin.replay_event(&key(T, id), "admin", now).await;
            replayed.unwrap_or_else(|e| panic!("replay {id}: {e}"))
        };
        assert_eq!(replay("e5").await, ReplayOne::Replayed);
        let replayed = stored(store, &key(T, "e5")).await.outbox;
        assert_eq!(
            (replayed.status, replayed.attempts, replayed.next_attempt_at),
            (Pending, 0, now)
        );
        assert_eq!(replay("e5").await, ReplayOne::NotReplayable(Pending));
        assert_eq!(replay("e0").await, ReplayOne::NotReplayable(Done));
        assert_eq!(replay("missing").await, ReplayOne::NotFound);
        // The drain takes it again, and a new failure shows it was replayed once.
        let claimed = claim(store, "drain", 100, now).await;
        assert!(claimed_ids(&claimed).contains("e5"));
        assert_eq!(
            claimed
                .iter()
                .find(|c| c.event.event_id == "e5")
                .map(|c| c.attempts),
            Some(0)
        );
        store
            .mark_published("drain", &claimed_keys(&claimed), now)
            .await
            .expect("publish");
        record(
            store,
            &[outcome(&key(T, "e5"), Dead, Some("again"))],
            now + secs(1),
        )
        .await;
        let (items, _) = admin.failed_events(Some(T), 0, 10).await.expect("failed");
        let e5 = items
            .iter()
            .find(|f| f.event_id == "e5")
            .expect("e5 is dead again");
        assert_eq!((e5.replay_count, e5.last_replayed_at), (1, Some(now)));
    }

    pub async fn admin_replay_by_filter_dry_run_and_batches(db: &TestDb) {
        let store = db.store.as_ref();
        let admin = store;
        let base = fluxgate::now() - TimeDelta::hours(2);
        // 600 DEAD events of T (more than one replay batch), 1 FAILED of T, 1 DEAD of tenant-b.
        let events: Vec<Event> = (0..600)
            .map(|i| variant(&format!("d{i:04}"), i, base + secs(i)))
            .collect();
        let mut other = variant("x", 1, base);
        other.tenant_id = "tenant-b".into();
        let failed = variant("f", 1, base + mins(20));
        let mut all = events.clone();
        all.push(other.clone());
        all.push(failed.clone());
        insert(store, &all).await;
        publish_all(store, base + mins(30)).await;
        let mut outcomes: Vec<DeliveryOutcome> = all
            .iter()
            .map(|e| outcome(&e.key(), Dead, Some("boom")))
            .collect();
        outcomes.last_mut().expect("f").status = Failed;
        record(store, &outcomes, base + mins(31)).await;

        let of_t = |statuses: Vec<OutboxStatus>, limit: u32| ReplayFilter {
            rows: filter(Some(T), None, None),
            statuses,
            limit,
        };
        let before = admin
            .status_counts(&OutboxFilter::default())
            .await
            .expect("counts");
        assert_eq!(
            admin
                .count_replayable(&of_t(vec![Failed, Dead], 10_000))
                .await
                .expect("dry"),
            601
        );
        assert_eq!(
            admin
                .count_replayable(&of_t(vec![Failed], 10_000))
                .await
                .expect("dry"),
            1
        );
        assert_eq!(
            admin
                .count_replayable(&of_t(vec![Dead], 10))
                .await
                .expect("dry"),
            10
        );
        let ranged = ReplayFilter {
            rows: filter(Some(T), Some(base + secs(100)), Some(base + secs(200))),
            statuses: vec![Dead],
            limit: 10_000,
        };
        assert_eq!(admin.count_replayable(&ranged).await.expect("dry"), 100);
        assert_eq!(
            admin
                .status_counts(&OutboxFilter::default())
                .await
                .expect("counts"),
            before,
            "a dry run changed rows"
        );

        let now = fluxgate::now();
        let moved = admin
            .replay_matching(&of_t(vec![Dead], 550), "admin", now)
            .await
            .expect("replay");
        assert_eq!(moved, 550);
        let after = admin
            .status_counts(&filter(Some(T), None, None))
            .await
            .expect("counts");
        assert_eq!((after.pending, after.dead, after.failed), (550, 50, 1));
        // Oldest first: the first 550 by receive time moved.
        assert_eq!(status(store, &key(T, "d0549")).await, Pending);
        assert_eq!(status(store, &key(T, "d0550")).await, Dead);
        let rest = admin
            .replay_matching(&of_t(vec![], 10_000), "admin", now)
            .await
            .expect("replay");
        assert_eq!(rest, 51, "no statuses means FAILED and DEAD");
        assert_eq!(
            status(store, &other.key()).await,
            Dead,
            "another tenant's event moved"
        );
        let everything = admin
            .replay_matching(
                &ReplayFilter {
                    rows: OutboxFilter::default(),
                    statuses: vec![Dead],
                    limit: 10,
                },
                "admin",
                now,
            )
            .await
            .expect("replay");
        assert_eq!(everything, 1);
        let claimed = claim(store, "drain", 10_000, now).await;
        assert_eq!(claimed.len(), 602);
        assert!(
            claimed.iter().all(|c| c.attempts == 0),
            "attempts were not reset"
        );
    }

    pub async fn retry_failed_moves_a_tenants_oldest_failed_rows_only(db: &TestDb) {
        let store = db.store.as_ref();
        let base = fluxgate::now() - TimeDelta::hours(1);
        // Tenant T: five FAILED events received one second apart and one DEAD; tenant-b: one
        // FAILED.
        let mut all: Vec<Event> = (0..5)
            .map(|i| variant(&format!("f{i}"), i, base + secs(i)))
            .collect();
        all.push(variant("dead", 9, base));
        let mut other = variant("other", 1, base);
        other.tenant_id = "tenant-b".into();
        all.push(other.clone());
        insert(store, &all).await;
        publish_all(store, base + mins(1)).await;
        let outcomes: Vec<DeliveryOutcome> = all
            .iter()
            .map(|e| {
                let verdict = if e.event_id == "dead" { Dead } else { Failed };
                outcome(&e.key(), verdict, Some("boom"))
            })
            .collect();
        record(store, &outcomes, base + mins(2)).await;

        let now = fluxgate::now();
        let retried = store
            .retry_failed(T, 3, &format!("tenant:{T}"), now)
            .await
            .expect("retry");
        assert_eq!(retried, 3);
        for (id, expected) in [
            ("f0", Pending),
            ("f1", Pending),
            ("f2", Pending),
            ("f3", Failed),
            ("f4", Failed),
            ("dead", Dead),
        ] {
            assert_eq!(status(store, &key(T, id)).await, expected, "{id}");
        }
        assert_eq!(
            status(store, &other.key()).await,
            Failed,
            "another tenant's row"
        );
        // Due now: the next claim takes exactly those three, attempts reset.
        let claimed = claim(store, "drain", 100, now).await;
        let ids: BTreeSet<&str> = claimed.iter().map(|c| c.event.event_id.as_str()).collect();
        assert_eq!(ids, BTreeSet::from(["f0", "f1", "f2"]));
        assert!(claimed.iter().all(|c| c.attempts == 0));

        assert_eq!(
            store
                .retry_failed(T, 100, "admin", now)
                .await
                .expect("retry"),
            2
        );
        assert_eq!(
            store
                .retry_failed(T, 100, "admin", now)
                .await
                .expect("retry"),
            0,
            "DEAD rows are not retried"
        );
        assert_eq!(status(store, &key(T, "dead")).await, Dead);
    }
}
