//! The BigQuery sink against bqemulator (started by `scripts/test.sh`): rows equal to the
//! events, the table created partitioned and clustered, per-row refusals, whole-request
//! failures, the worker end to end with PostgreSQL, and the key from an AWS secret (moto).

use std::collections::HashMap;

use chrono::{TimeZone, Utc};
use fluxgate::config::WorkerConfig;
use fluxgate::event::Event;
use fluxgate::queue::QueueMessage;
use fluxgate::secrets::SecretsManager;
use fluxgate::sink::BigQueryConfig;
use fluxgate::sink::bigquery::{
    BigQueryCredentials, BigQuerySink, BigQueryTarget, BigQueryWriteMode, CLUSTERING_FIELDS,
    PARTITION_FIELD, events_schema,
};
use fluxgate::sink::{self, RowError, Sink, WarehouseRow};
use fluxgate::store::OutboxStatus;
use fluxgate_tests::aws::{create_secret, moto_config};
use fluxgate_tests::{TestBigQuery, TestDb, event, event_with_payload};
use fluxgate_worker::{Delivery, Verdict, Worker};
use serde_json::json;

fn rows_of(events: &[Event]) -> Vec<WarehouseRow> {
    let ingested_at = fluxgate::now();
    events
        .iter()
        .map(|e| WarehouseRow::new(e, ingested_at))
        .collect()
}

fn sorted(mut rows: Vec<WarehouseRow>) -> Vec<WarehouseRow> {
    rows.sort_by(|a, b| (&a.tenant_id, &a.event_id).cmp(&(&b.tenant_id, &b.event_id)));
    rows
}

/// Events with every optional field set on some of them and a nested payload.
fn varied_events() -> Vec<Event> {
    let mut full = event_with_payload(
        "acme",
        "e-full",
        json!({ "order": { "id": 42, "lines": [1, 2.5, "x", null, true] }, "note": "é ✓" }),
    );
    full.source = Some("shop-web".into());
    full.metadata = json!({ "region": "eu", "attempt": 1 })
        .as_object()
        .cloned()
        .map(Into::into);
    full.correlation_id = Some("c-123".into());
    vec![full, event("acme", "e-plain"), event("globex", "e-other")]
}

/// [`varied_events`], the third with an event time BigQuery refuses: a TIMESTAMP past
/// 9999-12-31.
fn varied_events_the_third_refused() -> Vec<Event> {
    let mut events = varied_events();
    events[2].event_ts = Utc
        .with_ymd_and_hms(10_000, 6, 1, 0, 0, 0)
        .single()
        .expect("chrono reaches year 10000");
    events
}

#[tokio::test]
async fn payload_numbers_reach_the_table_in_the_clients_digits() {
    let bq = TestBigQuery::new().await;
    let sink = bq.sink().await;
    let mut exact = event("acme", "e-exact");
    exact.payload = fluxgate::json_object::JsonObject::canonical(
        r#"{"big": 123456789012345678901234567890, "pi": 3.1415926535897932}"#,
        "payload",
    )
    .expect("object");
    let rows = rows_of(std::slice::from_ref(&exact));
    assert_eq!(sink.write_rows(&rows).await.expect("write"), vec![Ok(())]);
    let stored = bq.rows().await;
    assert_eq!(
        stored[0].payload.get(),
        r#"{"big":123456789012345678901234567890,"pi":3.1415926535897932}"#
    );
    bq.cleanup().await;
}

#[tokio::test]
async fn rows_written_equal_the_events_in_a_table_partitioned_and_clustered() {
    let bq = TestBigQuery::new().await;
    let sink = bq.sink().await;
    let rows = rows_of(&varied_events());

    let results = sink.write_rows(&rows).await.expect("write");
    assert_eq!(results, vec![Ok(()); rows.len()]);
    assert_eq!(bq.rows().await, sorted(rows.clone()));

    let table = bq.table().await;
    let partitioning = table.time_partitioning.expect("the table is partitioned");
    assert_eq!(partitioning.r#type, "DAY");
    assert_eq!(partitioning.field.as_deref(), Some(PARTITION_FIELD));
    assert_eq!(
        table.clustering.and_then(|c| c.fields),
        Some(CLUSTERING_FIELDS.map(String::from).to_vec())
    );
    let created: Vec<(String, String)> = table
        .schema
        .fields()
        .as_deref()
        .expect("fields")
        .iter()
        .map(|f| {
            let kind = serde_json::to_value(&f.r#type).expect("a column type");
            (f.name.clone(), kind.as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let expected: Vec<(String, String)> = events_schema()
        .expect("schema")
        .into_iter()
        .map(|f| (f.name, f.kind))
        .collect();
    assert_eq!(created, expected);

    // Another process (a new cold start) finds the table and appends to it.
    let later = rows_of(&[event("acme", "e-later")]);
    let results = bq.sink().await.write_rows(&later).await.expect("write");
    assert_eq!(results, vec![Ok(())]);
    let mut all = rows;
    all.extend(later);
    assert_eq!(bq.rows().await, sorted(all));
    bq.cleanup().await;
}

#[tokio::test]
async fn more_rows_than_one_request_takes_all_arrive_once() {
    let bq = TestBigQuery::new().await;
    let events: Vec<Event> = (0..1201)
        .map(|i| event("acme", &format!("e{i:05}")))
        .collect();
    let rows = rows_of(&events);
    let results = bq.sink().await.write_rows(&rows).await.expect("write");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(bq.rows().await, sorted(rows));
    bq.cleanup().await;
}

#[tokio::test]
async fn a_row_bigquery_refuses_is_permanent_and_the_others_are_written() {
    let bq = TestBigQuery::new().await;
    let events = varied_events();
    let mut rows = rows_of(&events);
    // BigQuery's TIMESTAMP and DATE end at 9999-12-31; a row beyond is refused as invalid
    // (real BigQuery and bqemulator alike), whatever else is in the request.
    let far = Utc
        .with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
        .single()
        .expect("chrono reaches year 10000");
    rows[1].event_ts = far;
    rows[1].event_date = far.date_naive();

    let results = bq.sink().await.write_rows(&rows).await.expect("write");
    assert_eq!(results[0], Ok(()));
    assert!(
        matches!(&results[1], Err(RowError::Permanent(m)) if m.contains("invalid")),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], Ok(()));
    assert_eq!(
        bq.rows().await,
        sorted(vec![rows[0].clone(), rows[2].clone()])
    );
    bq.cleanup().await;
}

#[tokio::test]
async fn an_endpoint_that_does_not_answer_fails_the_whole_call() {
    let bq = TestBigQuery::new().await;
    // A port that was just free: nothing listens there.
    let port = fluxgate_tests::free_port();
    let down = TestBigQuery::sink_at(&format!("http://127.0.0.1:{port}"), bq.target.clone()).await;
    let rows = rows_of(&varied_events());
    let err = down
        .write_rows(&rows)
        .await
        .expect_err("nothing can be written");
    assert!(err.to_string().contains("BigQuery"), "{err}");
    bq.cleanup().await;
}

#[tokio::test]
async fn a_table_deleted_under_a_running_sink_fails_the_insert_then_comes_back() {
    let bq = TestBigQuery::new().await;
    let sink = bq.sink().await;
    let first = rows_of(&[event("acme", "e1")]);
    assert_eq!(sink.write_rows(&first).await.expect("write"), vec![Ok(())]);

    bq.client()
        .table()
        .delete(&bq.target.project, &bq.target.dataset, &bq.target.table)
        .await
        .expect("delete the table");
    let second = rows_of(&[event("acme", "e2")]);
    // The sink believes the table exists, so this is insertAll failing as a whole (404).
    sink.write_rows(&second)
        .await
        .expect_err("the table is gone");
    // The sink forgot the table and re-creates it at the next write.
    assert_eq!(sink.write_rows(&second).await.expect("write"), vec![Ok(())]);
    assert_eq!(bq.rows().await, second);
    bq.cleanup().await;
}

#[tokio::test]
async fn a_key_twice_in_one_call_makes_one_row() {
    let bq = TestBigQuery::new().await;
    let rows = rows_of(&[event("acme", "e1"), event("acme", "e2")]);
    let doubled = vec![rows[0].clone(), rows[1].clone(), rows[0].clone()];
    let results = bq.sink().await.write_rows(&doubled).await.expect("write");
    assert_eq!(results, vec![Ok(()); 3]);
    assert_eq!(bq.rows().await, rows);
    bq.cleanup().await;
}

fn deliveries(events: &[Event], receive_count: u32) -> Vec<Delivery> {
    events
        .iter()
        .map(|e| Delivery {
            message_id: format!("m-{}", e.event_id),
            body: QueueMessage::from_event(e).expect("message").body,
            receive_count,
        })
        .collect()
}

/// Stores `events`, and delivers each once to a worker whose sink, writing in `mode`, is built
/// the way the worker binary builds it (FLUXGATE_SINK=bigquery, emulator endpoint); the worker
/// and its verdicts.
async fn store_and_deliver(
    db: &TestDb,
    bq: &TestBigQuery,
    mode: BigQueryWriteMode,
    events: &[Event],
) -> (Worker, Vec<Verdict>) {
    db.store.insert_events(events).await.expect("insert");
    let sink = sink::connect(&bq.sink_config_in(mode)).await.expect("sink");
    let worker = Worker::new(db.store.clone(), sink, WorkerConfig::default());
    let verdicts = worker
        .process(&deliveries(events, 1))
        .await
        .expect("process");
    (worker, verdicts)
}

#[tokio::test]
async fn the_worker_loads_deliveries_into_bigquery_once_and_records_done() {
    let (db, bq) = tokio::join!(TestDb::postgres(), TestBigQuery::new());
    let events = varied_events();
    let (worker, verdicts) =
        store_and_deliver(&db, &bq, BigQueryWriteMode::Streaming, &events).await;
    assert_eq!(verdicts, vec![Verdict::Ack; events.len()]);
    let keys: Vec<_> = events.iter().map(Event::key).collect();
    let statuses = db.store.statuses(&keys).await.expect("statuses");
    assert!(
        statuses.values().all(|s| *s == OutboxStatus::Done),
        "{statuses:?}"
    );

    let written = bq.rows().await;
    let ingested_at = written.first().expect("rows").ingested_at;
    let expected: Vec<WarehouseRow> = events
        .iter()
        .map(|e| WarehouseRow::new(e, ingested_at))
        .collect();
    assert_eq!(written, sorted(expected));

    // The same messages again (a redelivery after a lost acknowledgement): acknowledged, and
    // still one row each — by the worker's DONE check, as bqemulator ignores insert ids.
    let verdicts = worker
        .process(&deliveries(&events, 2))
        .await
        .expect("process");
    assert_eq!(verdicts, vec![Verdict::Ack; events.len()]);
    assert_eq!(bq.rows().await, written);

    tokio::join!(bq.cleanup(), db.cleanup());
}

#[tokio::test]
async fn the_worker_records_a_refused_row_dead_and_loads_the_rest() {
    let (db, bq) = tokio::join!(TestDb::postgres(), TestBigQuery::new());
    let events = varied_events_the_third_refused();
    let (_, verdicts) = store_and_deliver(&db, &bq, BigQueryWriteMode::Streaming, &events).await;
    // Refused for good: acknowledged (no point in redelivering) and recorded DEAD.
    assert_eq!(verdicts, vec![Verdict::Ack; 3]);
    let keys: Vec<_> = events.iter().map(Event::key).collect();
    let statuses: HashMap<_, _> = db.store.statuses(&keys).await.expect("statuses");
    assert_eq!(statuses[&keys[0]], OutboxStatus::Done);
    assert_eq!(statuses[&keys[1]], OutboxStatus::Done);
    assert_eq!(statuses[&keys[2]], OutboxStatus::Dead);
    let written: Vec<_> = bq.rows().await.into_iter().map(|r| r.key()).collect();
    assert_eq!(written, vec![keys[0].clone(), keys[1].clone()]);

    tokio::join!(bq.cleanup(), db.cleanup());
}

fn config_with_secret(secret_id: &str) -> BigQueryConfig {
    BigQueryConfig {
        bigquery_project: Some("fluxgate-test".into()),
        bigquery_dataset: "fluxgate".into(),
        bigquery_table: "events".into(),
        bigquery_location: None,
        bigquery_endpoint: None,
        bigquery_grpc_endpoint: None,
        bigquery_write_mode: BigQueryWriteMode::Streaming,
        bigquery_credentials_secret_id: Some(secret_id.into()),
    }
}

/// On AWS the service-account key comes from Secrets Manager (moto here).
#[tokio::test]
async fn the_service_account_key_comes_from_the_aws_secret() {
    let secrets = SecretsManager::new(&moto_config().await);
    let key = json!({
        "type": "service_account",
        "project_id": "fluxgate-test",
        "private_key_id": "k1",
        "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n",
        "client_email": "loader@fluxgate-test.iam.gserviceaccount.com",
        "client_id": "1",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string();
    let id = create_secret(&key).await;
    match config_with_secret(&id)
        .credentials_with(&secrets)
        .await
        .expect("the secret is read")
    {
        BigQueryCredentials::ServiceAccountKey(fetched) => assert_eq!(fetched.expose(), key),
        other => panic!("expected the key from the secret, got {other:?}"),
    }

    // A secret that holds something else is refused without being quoted.
    let id = create_secret("postgres://loader:hunter2@db.internal/events").await;
    let credentials = config_with_secret(&id)
        .credentials_with(&secrets)
        .await
        .expect("the secret is read");
    let target = BigQueryTarget {
        project: "fluxgate-test".into(),
        dataset: "fluxgate".into(),
        table: "events".into(),
        location: None,
    };
    let Err(err) = BigQuerySink::connect(
        target,
        credentials,
        &Default::default(),
        BigQueryWriteMode::Streaming,
    )
    .await
    else {
        panic!("a secret that is not a service-account key must be refused");
    };
    let text = err.to_string();
    assert!(text.contains("service-account key"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

// ---- The write modes: storage-write (Storage Write API over bqemulator's gRPC port: pending
// streams, offsets, finalize, batch commit) and load (load jobs from bqemulator's upload
// endpoint, `uploadType=multipart`); the tests above are streaming's (insertAll).
//
// What is not the real service here: bqemulator names an uploaded load job itself (it ignores
// the job id the client gives), so a retried batch's "409 already exists" answer is not
// exercised; on the emulator the worker's lookup of redelivered rows is what keeps a second
// row out (the test below). And bqemulator does not report `row_errors` on AppendRows; the
// refused row below is refused by fluxgate's own range check, which mirrors BigQuery's
// (TIMESTAMP and DATE end at 9999-12-31), before anything is sent.

const EXACTLY_ONCE_MODES: [BigQueryWriteMode; 2] =
    [BigQueryWriteMode::StorageWrite, BigQueryWriteMode::Load];

/// Each mode writes rows equal to the events, column for column, into a table it creates.
#[tokio::test]
async fn bigquery_storage_write_and_load_write_rows_equal_to_the_events() {
    for mode in EXACTLY_ONCE_MODES {
        let bq = TestBigQuery::new().await;
        let sink = bq.sink_in(mode).await;
        let rows = rows_of(&varied_events());
        let results = sink.write_rows(&rows).await.expect("write");
        assert_eq!(results, vec![Ok(()); rows.len()], "{mode:?}");
        assert_eq!(bq.rows().await, sorted(rows), "{mode:?}");
        // A key twice in one call is written once.
        let again = rows_of(&[event("acme", "e-twice")]);
        let doubled = vec![again[0].clone(), again[0].clone()];
        assert_eq!(
            sink.write_rows(&doubled).await.expect("write"),
            vec![Ok(()); 2]
        );
        assert_eq!(bq.rows().await.len(), 4, "{mode:?}");
        bq.cleanup().await;
    }
}

/// The crash the DONE check cannot see: the batch reached the table, the worker died before
/// recording DONE, and the queue delivers it again. The worker asks the table first (only
/// for a redelivery) and writes nothing twice.
#[tokio::test]
async fn bigquery_a_redelivered_batch_adds_no_row_in_storage_write_and_load() {
    for mode in EXACTLY_ONCE_MODES {
        let (db, bq) = tokio::join!(TestDb::postgres(), TestBigQuery::new());
        let events = varied_events();
        db.store.insert_events(&events).await.expect("insert");
        let sink = sink::connect(&bq.sink_config_in(mode)).await.expect("sink");
        // The first delivery's write, committed; its DONE never recorded.
        let first = rows_of(&events);
        assert_eq!(
            sink.write_rows(&first).await.expect("write"),
            vec![Ok(()); 3]
        );
        let worker = Worker::new(db.store.clone(), sink, WorkerConfig::default());
        let verdicts = worker
            .process(&deliveries(&events, 2))
            .await
            .expect("process");
        assert_eq!(verdicts, vec![Verdict::Ack; events.len()], "{mode:?}");
        let keys: Vec<_> = events.iter().map(Event::key).collect();
        let statuses = db.store.statuses(&keys).await.expect("statuses");
        assert!(
            statuses.values().all(|s| *s == OutboxStatus::Done),
            "{mode:?}: {statuses:?}"
        );
        assert_eq!(bq.rows().await, sorted(first), "{mode:?}: no second row");
        tokio::join!(bq.cleanup(), db.cleanup());
    }
}

/// A row BigQuery refuses (a TIMESTAMP past 9999-12-31) is DEAD with the reason; the others
/// of its batch are DONE and in the table.
#[tokio::test]
async fn bigquery_a_refused_row_is_dead_with_the_reason_in_storage_write_and_load() {
    for mode in EXACTLY_ONCE_MODES {
        let (db, bq) = tokio::join!(TestDb::postgres(), TestBigQuery::new());
        let events = varied_events_the_third_refused();
        let (_, verdicts) = store_and_deliver(&db, &bq, mode, &events).await;
        assert_eq!(verdicts, vec![Verdict::Ack; 3], "{mode:?}");
        let stored = db
            .store
            .get_event(&events[2].key())
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(stored.outbox.status, OutboxStatus::Dead, "{mode:?}");
        let reason = stored.outbox.last_error.unwrap_or_default();
        assert!(
            reason.contains("invalid") && reason.contains("event_ts"),
            "{mode:?}: {reason}"
        );
        let written: Vec<_> = bq.rows().await.into_iter().map(|r| r.key()).collect();
        assert_eq!(written, vec![events[0].key(), events[1].key()], "{mode:?}");
        tokio::join!(bq.cleanup(), db.cleanup());
    }
}
