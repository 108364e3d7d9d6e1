//! The replay and metrics functions over HTTP (their real routers), on the database
//! `FLUXGATE_TEST_DB` names (SQLite by default): replay brings a DEAD event to DONE through
//! the real drain and worker, dry runs change nothing, figures match known rows, the
//! Prometheus text parses, tenants cannot read or replay each other's events, the in-memory
//! dead letters are redriven, and every route is in the OpenAPI document and nothing else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, TimeDelta, Utc};
use fluxgate::api::Api;
use fluxgate::auth::Admin;
use fluxgate::config::{DrainConfig, WorkerConfig};
use fluxgate::dead_letters::DeadLetters;
use fluxgate::event::Event;
use fluxgate::queue::{InMemoryQueue, InMemoryQueueConfig, Queue, QueueMessage};
use fluxgate::sink::LocalFileSink;
use fluxgate::store::{DeliveryOutcome, OutboxStatus, Store};
use fluxgate::tenant::TenantScope;
use fluxgate_metrics::MetricsState;
use fluxgate_outbox_drain::Drain;
use fluxgate_tests::{ADMIN_KEY, TestDb, authenticator, event_at, router};
use fluxgate_worker::{Delivery, Verdict, Worker};
use serde_json::{Value, json};

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value, String) {
    // The admin key: these tests are about replay and metrics, not who may call them
    // (tests/auth_api.rs is); per-tenant scoping is checked on the handlers below.
    let request = router::json_request(method.as_str(), uri, Some(ADMIN_KEY), body.as_ref());
    let answer = router::send(app, request).await;
    if answer.status.is_client_error() || answer.status.is_server_error() {
        assert_eq!(
            answer.content_type(),
            "application/problem+json",
            "{uri}: {}",
            answer.text()
        );
    }
    (answer.status, answer.json(), answer.text())
}

/// [`call`] with GET and no body.
async fn get(app: &Router, uri: &str) -> (StatusCode, Value, String) {
    call(app, Method::GET, uri, None).await
}

/// [`call`] with POST.
async fn post(app: &Router, uri: &str, body: Option<Value>) -> (StatusCode, Value, String) {
    call(app, Method::POST, uri, body).await
}

async fn replay_app(store: Arc<dyn Store>, dead_letters: Option<Arc<dyn DeadLetters>>) -> Router {
    let auth = authenticator(store.clone()).await;
    fluxgate_replay::service(store, dead_letters, auth)
}

async fn metrics_app(store: Arc<dyn Store>) -> Router {
    let auth = authenticator(store.clone()).await;
    fluxgate_metrics::service(store, auth)
}

/// `count` events of acme, `<prefix>0`, `<prefix>1`, …, received a second apart from `ago`
/// before now, made DEAD with `error` ([`dead_events`]). Answers when the first was received.
async fn dead_acme_events(
    store: &Arc<dyn Store>,
    prefix: &str,
    count: i64,
    ago: TimeDelta,
    error: &str,
) -> DateTime<Utc> {
    let base = fluxgate::now() - ago;
    let events: Vec<Event> = (0..count)
        .map(|i| {
            event_at(
                "acme",
                &format!("{prefix}{i}"),
                base + TimeDelta::seconds(i),
            )
        })
        .collect();
    dead_events(store, &events, error).await;
    base
}

/// Inserts `events`, publishes them with the real drain, and records each as DEAD with `error`.
async fn dead_events(store: &Arc<dyn Store>, events: &[Event], error: &str) {
    settled_events(store, events, OutboxStatus::Dead, error).await;
}

/// Inserts `events`, publishes them with the real drain (to a queue of their own, dropped with
/// the messages, as a queue drops what it dead-letters), and records each as `status` (FAILED
/// or DEAD) with `error`.
async fn settled_events(
    store: &Arc<dyn Store>,
    events: &[Event],
    status: OutboxStatus,
    error: &str,
) {
    store.insert_events(events).await.expect("insert");
    let queue = Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()));
    let drain = Drain::new(store.clone(), queue, DrainConfig::default());
    let summary = drain
        .run(Instant::now() + Duration::from_secs(30))
        .await
        .expect("drain");
    assert_eq!(summary.published, events.len() as u64);
    // What the worker records at a message's last receive before the queue dead-letters it.
    let outcomes: Vec<DeliveryOutcome> = events
        .iter()
        .map(|e| DeliveryOutcome {
            key: e.key(),
            status,
            error: Some(error.into()),
        })
        .collect();
    store
        .record_outcomes(&outcomes, fluxgate::now())
        .await
        .expect("record");
}

#[tokio::test]
async fn replay_then_drain_then_worker_brings_a_dead_event_to_done() {
    let db = TestDb::from_env().await;
    let store = db.store.clone();
    let queue = Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()));
    let event = event_at("acme", "order-1", fluxgate::now() - TimeDelta::minutes(5));
    dead_events(&store, std::slice::from_ref(&event), "warehouse refused").await;
    let app = replay_app(store.clone(), None).await;

    let (status, body, _) = post(&app, "/v1/events/acme/order-1/replay", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "PENDING");

    let drain = Drain::new(store.clone(), queue.clone(), DrainConfig::default());
    let summary = drain
        .run(Instant::now() + Duration::from_secs(30))
        .await
        .expect("drain");
    assert_eq!(summary.published, 1);
    let warehouse = tempfile::tempdir().expect("tempdir");
    let sink = Arc::new(LocalFileSink::open(warehouse.path()).await.expect("sink"));
    let worker = Worker::new(store.clone(), sink, WorkerConfig::default());
    let batch = queue.receive(10, Duration::from_secs(1)).await;
    assert_eq!(batch.len(), 1);
    let deliveries: Vec<Delivery> = batch.iter().map(Delivery::from).collect();
    assert_eq!(
        worker.process(&deliveries).await.expect("worker"),
        vec![Verdict::Ack]
    );
    let stored = store
        .get_event(&event.key())
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.outbox.status, OutboxStatus::Done);

    // DONE is not replayable; an unknown event is a 404.
    let (status, body, _) = post(&app, "/v1/events/acme/order-1/replay", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _, _) = post(&app, "/v1/events/acme/nope/replay", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    db.cleanup().await;
}

#[tokio::test]
async fn replay_by_filter_counts_on_a_dry_run_and_moves_otherwise() {
    let db = TestDb::from_env().await;
    let base = dead_acme_events(&db.store, "e", 5, TimeDelta::hours(1), "boom").await;
    let app = replay_app(db.store.clone(), None).await;
    let summary = || async {
        db.store
            .status_counts(&Default::default())
            .await
            .expect("counts")
    };
    let before = summary().await;

    let dry = json!({"tenantId": "acme", "statuses": ["DEAD"], "limit": 3, "dryRun": true});
    let (status, body, _) = post(&app, "/v1/replay", Some(dry)).await;
    assert_eq!(
        (status, body.clone()),
        (StatusCode::OK, json!({"dryRun": true, "replayed": 3}))
    );
    assert_eq!(summary().await, before, "a dry run changed rows");

    for (bad, field) in [
        (json!({"statuses": ["DONE"]}), "statuses[0]"),
        (json!({"limit": 0}), "limit"),
        (
            json!({"from": "2024-02-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"}),
            "to",
        ),
        (json!({"from": "yesterday"}), "from"),
        (json!({"tenant": "acme"}), "body"),
    ] {
        let (status, body, _) = post(&app, "/v1/replay", Some(bad.clone())).await;
        assert!(status.is_client_error(), "{bad}: {status}");
        if field != "body" {
            assert_eq!(body["field"], field, "{bad}: {body}");
        }
        assert_eq!(summary().await, before, "a refused replay changed rows");
    }

    let from = (base + TimeDelta::seconds(1)).to_rfc3339();
    let real = json!({"tenantId": "acme", "from": from, "limit": 100});
    let (status, body, _) = post(&app, "/v1/replay", Some(real)).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"dryRun": false, "replayed": 4}))
    );
    let after = summary().await;
    assert_eq!((after.pending, after.dead), (4, 1));
    db.cleanup().await;
}

/// The reference outbox API's retry and summary, called as its clients call them.
#[tokio::test]
async fn the_reference_retry_and_summary_answer_as_written() {
    let db = TestDb::from_env().await;
    let base = fluxgate::now() - TimeDelta::minutes(30);
    let failed: Vec<Event> = (0..3)
        .map(|i| event_at("tenant-123", &format!("f{i}"), base + TimeDelta::seconds(i)))
        .chain([event_at("globex", "g0", base)])
        .collect();
    settled_events(
        &db.store,
        &failed,
        OutboxStatus::Failed,
        "503 from the warehouse",
    )
    .await;
    let dead = event_at("tenant-123", "d0", base);
    dead_events(&db.store, std::slice::from_ref(&dead), "refused").await;
    let app = replay_app(db.store.clone(), None).await;

    let (status, body, _) = post(&app, "/v1/outbox/retry?tenantId=tenant-123&limit=2", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"tenantId": "tenant-123", "retriedCount": 2, "message": "Retried 2 failed records"})
    );
    let statuses = db
        .store
        .statuses(&[
            failed[0].key(),
            failed[1].key(),
            failed[2].key(),
            failed[3].key(),
            dead.key(),
        ])
        .await
        .expect("statuses");
    use OutboxStatus::{Dead, Failed, Pending};
    let expected = [Pending, Pending, Failed, Failed, Dead];
    for (event, status) in failed.iter().chain([&dead]).zip(expected) {
        assert_eq!(statuses[&event.key()], status, "{}", event.event_id);
    }

    // The tenant's own key, tenantId left out: its own tenant; the DEAD row stays.
    let own = fluxgate_tests::tenant_key(db.store.as_ref(), "tenant-123").await;
    let request = router::json_request("POST", "/v1/outbox/retry", Some(&own), None);
    let answer = router::send(&app, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["retriedCount"], 1);
    let request =
        router::json_request("POST", "/v1/outbox/retry?tenantId=globex", Some(&own), None);
    let answer = router::send(&app, request).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    assert_eq!(answer.json()["field"], "tenantId");
    for (uri, field) in [
        ("/v1/outbox/retry?tenantId=tenant-123&limit=0", "limit"),
        ("/v1/outbox/retry?tenantId=tenant-123&max=5", "max"),
        ("/v1/outbox/retry", "tenantId"),
    ] {
        let (status, body, _) = post(&app, uri, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
        assert_eq!(body["field"], field, "{uri}");
    }

    // The summary with naive timestamps (UTC), as the reference clients send them.
    let metrics = metrics_app(db.store.clone()).await;
    let naive = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%dT%H:%M:%S").to_string();
    let from = base - TimeDelta::minutes(1);
    let to = fluxgate::now() + TimeDelta::minutes(1);
    let uri = format!(
        "/v1/outbox/summary?tenantId=tenant-123&from={}&to={}",
        naive(from),
        naive(to)
    );
    let (status, body, _) = get(&metrics, &uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["pending"].clone(),
            body["failed"].clone(),
            body["dead"].clone(),
            body["total"].clone()
        ),
        (json!(3), json!(0), json!(1), json!(4))
    );
    assert_eq!(body["from"], format!("{}Z", naive(from)));
    db.cleanup().await;
}

#[tokio::test]
async fn metrics_match_known_rows_and_bad_parameters_are_named() {
    let db = TestDb::from_env().await;
    let base = dead_acme_events(&db.store, "d", 3, TimeDelta::minutes(30), "row rejected").await;
    let pending = event_at("acme", "p0", base + TimeDelta::minutes(10));
    let other = event_at("globex", "g0", base);
    db.store
        .insert_events(&[pending, other])
        .await
        .expect("insert");
    let app = metrics_app(db.store.clone()).await;

    let (status, body, _) = get(&app, "/v1/outbox/summary?tenantId=acme").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"tenantId": "acme", "pending": 1, "published": 0, "done": 0, "failed": 0, "dead": 3, "total": 4})
    );
    let to = (base + TimeDelta::seconds(2)).to_rfc3339();
    let uri = format!(
        "/v1/outbox/summary?tenantId=acme&to={}",
        to.replace('+', "%2B")
    );
    let (_, body, _) = get(&app, &uri).await;
    assert_eq!(
        (body["dead"].clone(), body["total"].clone()),
        (json!(2), json!(2))
    );

    let (status, body, _) = get(&app, "/v1/metrics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["counts"]["total"], 5);
    assert_eq!(body["counts"]["byStatus"]["pending"], 2);
    assert_eq!(
        body["counts"]["byType"][0],
        json!({"eventType": "test.created", "count": 5})
    );
    let lag = body["lagSeconds"].as_f64().expect("lag");
    assert!(
        (1799.0..1900.0).contains(&lag),
        "lag {lag}: the oldest PENDING was received 30 min ago"
    );
    assert_eq!(body["latency"]["windowSeconds"], 900);
    assert_eq!(
        body["throughput"],
        json!({"last1m": 0, "last5m": 0, "last15m": 0})
    );

    let (status, body, _) = get(&app, "/v1/events/failed?tenantId=acme&page=2&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["total"].clone(), body["page"].clone()),
        (json!(3), json!(2))
    );
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["items"][0]["eventId"], "d0");
    assert_eq!(body["items"][0]["lastError"], "row rejected");

    for (uri, field) in [
        ("/v1/events/failed?page=0", "page"),
        ("/v1/events/failed?limit=501", "limit"),
        ("/v1/outbox/summary?from=last-week", "from"),
        (
            "/v1/outbox/summary?from=2024-02-01T00:00:00Z&to=2024-01-01T00:00:00Z",
            "to",
        ),
        ("/v1/outbox/summary?tenant=acme", "tenant"),
        ("/v1/metrics?window=forever", "window"),
        ("/v1/outbox/summary?tenantId=", "tenantId"),
    ] {
        let (status, body, _) = get(&app, uri).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
        assert_eq!(body["field"], field, "{uri}: {body}");
    }
    db.cleanup().await;
}

#[tokio::test]
async fn prometheus_text_parses_and_carries_the_figures() {
    let db = TestDb::from_env().await;
    let base = dead_acme_events(&db.store, "d", 2, TimeDelta::minutes(10), "x").await;
    db.store
        .insert_events(&[event_at("acme", "p", base)])
        .await
        .expect("insert");
    let app = metrics_app(db.store.clone()).await;
    let (status, _, text) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{text}");

    let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP")).collect();
    assert!(helps.len() >= 10, "{text}");
    for help in helps {
        assert!(
            help.ends_with('.') && !help.ends_with(".."),
            "one full stop per help text: {help}"
        );
    }
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no sample {name} {label:?} in\n{text}"));
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: unexpected {other:?}"),
        }
    };
    assert_eq!(value("fluxgate_events_ingested_total", None), 3.0);
    assert_eq!(value("fluxgate_events_published_total", None), 2.0);
    assert_eq!(value("fluxgate_events_done_total", None), 0.0);
    assert_eq!(value("fluxgate_events_dead", None), 2.0);
    assert_eq!(
        value("fluxgate_outbox_events", Some(("status", "PENDING"))),
        1.0
    );
    assert_eq!(
        value("fluxgate_outbox_events", Some(("status", "DEAD"))),
        2.0
    );
    let lag = value("fluxgate_outbox_lag_seconds", None);
    assert!((599.0..700.0).contains(&lag), "lag {lag}");
    // Every sample line is `name{labels} value`, as the format demands.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (_, number) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(number.parse::<f64>().is_ok(), "not a number in {line:?}");
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );

    let report = fluxgate_metrics::report::collect(
        db.store.as_ref(),
        &Default::default(),
        TimeDelta::minutes(15),
        fluxgate::now(),
    )
    .await
    .expect("report");
    let emf = fluxgate_metrics::emf::render(&report);
    assert_eq!(emf["EventsDead"], 2.0);
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "fluxgate");
    let declared = emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .expect("metrics")
        .clone();
    for metric in declared {
        let name = metric["Name"].as_str().expect("name");
        assert!(emf[name].is_number(), "EMF declares {name} without a value");
    }
    db.cleanup().await;
}

/// The status of a handler's answer.
async fn status_of(answer: impl Future<Output = impl IntoResponse>) -> StatusCode {
    answer.await.into_response().status()
}

#[tokio::test]
async fn a_tenant_cannot_read_another_tenants_figures_or_replay() {
    use fluxgate_metrics::{Read, failed_events, metrics, prometheus_text, summary};

    let db = TestDb::from_env().await;
    let store = db.store.clone();
    dead_events(&store, &[event_at("acme", "a1", fluxgate::now())], "x").await;
    let metrics_state = MetricsState {
        store: store.clone(),
        auth: authenticator(store.clone()).await,
    };
    let on_metrics = || State(metrics_state.clone());
    let read = |scope, query| Read::new(&metrics_state, scope, query);
    let globex = || TenantScope::Tenant("globex".into());
    let acme = || TenantScope::Tenant("acme".into());
    let of_acme = Some("tenantId=acme");

    // Reads: another tenant's figures are a 404, as if they did not exist.
    let reads = [
        status_of(summary(read(globex(), of_acme))).await,
        status_of(failed_events(read(globex(), of_acme))).await,
        status_of(metrics(read(globex(), of_acme))).await,
    ];
    assert_eq!(
        reads,
        [StatusCode::NOT_FOUND; 3],
        "summary, failed events, metrics"
    );
    // Without a tenantId a tenant key sees its own tenant only.
    let own = failed_events(read(globex(), None)).await.expect("own");
    assert_eq!(own.0.total, 0);
    let own = failed_events(read(acme(), None)).await.expect("own");
    assert_eq!(own.0.total, 1);

    // Across tenants is for admins.
    assert_eq!(
        status_of(prometheus_text(on_metrics(), acme())).await,
        StatusCode::FORBIDDEN,
        "prometheus text"
    );
    // Replays are admin-only, even of the tenant's own events: their handlers take an `Admin`,
    // which a tenant's scope is not (403, before any body is read).
    for tenant in [acme(), globex()] {
        let refused = Admin::try_from(tenant).expect_err("a tenant is no admin");
        assert_eq!(refused.into_response().status(), StatusCode::FORBIDDEN);
    }
    let after = store
        .get_event(&fluxgate_tests::key("acme", "a1"))
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        after.outbox.status,
        OutboxStatus::Dead,
        "a refused replay changed the event"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn in_memory_dead_letters_are_redriven_to_the_queue() {
    let db = TestDb::sqlite().await;
    let queue = Arc::new(InMemoryQueue::new(InMemoryQueueConfig {
        max_receive_count: 1,
        ..Default::default()
    }));
    let messages: Vec<QueueMessage> = (0..3)
        .map(|i| {
            QueueMessage::from_event(&event_at("acme", &format!("m{i}"), fluxgate::now()))
                .expect("message")
        })
        .collect();
    queue.publish_batch(&messages).await.expect("publish");
    for delivery in queue.receive(10, Duration::ZERO).await {
        queue.nack(delivery.receipt, Duration::ZERO);
    }
    assert_eq!((queue.len(), queue.dead_letters().len()), (0, 3));
    let app = replay_app(db.store.clone(), Some(queue.clone())).await;

    let (status, body, _) = post(&app, "/v1/dlq/redrive", Some(json!({"max": 2}))).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"moved": 2, "remaining": 1}))
    );
    let (status, body, _) = post(&app, "/v1/dlq/redrive", None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"moved": 1, "remaining": 0}))
    );
    let again = queue.receive(10, Duration::ZERO).await;
    let mut ids: Vec<String> = again
        .iter()
        .map(|d| d.message.keys[0].event_id.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, ["m0", "m1", "m2"]);
    assert!(
        again.iter().all(|d| d.receive_count == 1),
        "a redriven message starts counting again"
    );
    let (status, body, _) = post(&app, "/v1/dlq/redrive", Some(json!({"max": 0}))).await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("max"))
    );

    // A process without a dead-letter queue says so.
    let none = replay_app(db.store.clone(), None).await;
    let (status, _, _) = post(&none, "/v1/dlq/redrive", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    db.cleanup().await;
}

/// `{param}` segments filled with a value, so the path can be requested.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "x"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `service` answered with its problem+json fallback (a path it does not serve).
fn is_fallback(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::NOT_FOUND
        && body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("route "))
}

/// `service` really serves each endpoint (not the problem+json fallback, not a 405), and each
/// of their paths answers any other method with a 405 (HEAD aside: axum answers it where GET
/// is served).
async fn check_served(
    name: &str,
    endpoints: &std::collections::BTreeSet<(String, String)>,
    service: &Router,
) {
    for (method, path) in endpoints {
        let method: Method = method.parse().expect("method");
        let (status, body, _) = call(service, method.clone(), &concrete(path), None).await;
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{name}: {method} {path}"
        );
        assert!(
            !is_fallback(status, &body),
            "{name}: {method} {path} is listed but not served"
        );
    }
    let paths: std::collections::BTreeSet<&String> = endpoints.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            if endpoints.contains(&(method.to_string(), path.clone())) {
                continue;
            }
            let (status, _, _) = call(service, method.clone(), &concrete(path), None).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{name}: {method} {path} is served, but not listed"
            );
        }
    }
}

/// The common endpoints are documented beside the function's own, nothing else is, and the
/// service really serves each documented endpoint and no other method on its paths.
async fn check_document(
    name: &str,
    routed: std::collections::BTreeSet<(String, String)>,
    document: &utoipa::openapi::OpenApi,
    service: Router,
) {
    let mut served = routed;
    served.extend(fluxgate::api::common_endpoints());
    let documented = fluxgate::api::documented(document);
    assert_eq!(
        served, documented,
        "{name}: the router's endpoints and the OpenAPI paths differ"
    );
    let json = serde_json::to_value(document).expect("document");
    assert!(
        json["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{name}: not OpenAPI 3.1"
    );

    check_served(name, &documented, &service).await;
    let (status, served_json, _) = get(&service, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        served_json, json,
        "{name}: /openapi.json is not the generated document"
    );
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_nothing_else() {
    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    check_document(
        "ingest",
        fluxgate_ingest::IngestState::endpoints(),
        &fluxgate_ingest::IngestState::openapi(),
        fluxgate_ingest::service(
            store.clone(),
            Default::default(),
            authenticator(store.clone()).await,
        ),
    )
    .await;
    check_document(
        "replay",
        fluxgate_replay::ReplayState::endpoints(),
        &fluxgate_replay::ReplayState::openapi(),
        fluxgate_replay::service(store.clone(), None, authenticator(store.clone()).await),
    )
    .await;
    check_document(
        "metrics",
        fluxgate_metrics::MetricsState::endpoints(),
        &fluxgate_metrics::MetricsState::openapi(),
        metrics_app(store.clone()).await,
    )
    .await;

    // local serves all three, and no drain trigger: it drains on its own loop.
    let queue = Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()));
    let drain = Drain::new(store.clone(), queue.clone(), DrainConfig::default());
    let local = fluxgate_local::app(
        store.clone(),
        Default::default(),
        drain,
        Some(queue),
        authenticator(store.clone()).await,
    );
    let mut all = fluxgate_ingest::IngestState::endpoints();
    all.extend(fluxgate_replay::ReplayState::endpoints());
    all.extend(fluxgate_metrics::MetricsState::endpoints());
    let (status, body, _) = post(&local, "/v1/drain", None).await;
    assert!(
        is_fallback(status, &body),
        "local serves POST /v1/drain ({status}): {body}"
    );
    check_document("local", all, &fluxgate_local::openapi(), local).await;

    // The worker is called by queues (SQS through Lambda, Pub/Sub push), not by clients: it has
    // no OpenAPI document, and its endpoints are in no client's. Its routes are listed here
    // (tests/cloudrun_manifests.rs checks this list against the routes its source declares);
    // each is really served, and it serves nothing else.
    let worker_routes: std::collections::BTreeSet<(String, String)> = [
        ("POST", WORKER_MESSAGES_PATH),
        ("POST", fluxgate_worker::pubsub_push::PUSH_PATH),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    let warehouse = tempfile::tempdir().expect("tempdir");
    let sink = Arc::new(LocalFileSink::open(warehouse.path()).await.expect("sink"));
    let worker =
        fluxgate_worker::service(Worker::new(store.clone(), sink, WorkerConfig::default()));
    let mut worker_endpoints = worker_routes.clone();
    worker_endpoints.extend(
        fluxgate::api::common_endpoints()
            .into_iter()
            .filter(|(_, path)| path != "/openapi.json"),
    );
    check_served("worker", &worker_endpoints, &worker).await;
    for (method, path) in [
        ("GET", "/openapi.json"),
        ("GET", "/v1/events"),
        ("POST", "/v1/drain"),
    ] {
        let (status, body, _) = call(&worker, method.parse().expect("method"), path, None).await;
        assert!(
            is_fallback(status, &body),
            "worker: {method} {path} is served ({status}): {body}"
        );
    }
    for (name, document) in [
        ("ingest", fluxgate_ingest::IngestState::openapi()),
        ("replay", fluxgate_replay::ReplayState::openapi()),
        ("metrics", fluxgate_metrics::MetricsState::openapi()),
        ("local", fluxgate_local::openapi()),
    ] {
        let documented = fluxgate::api::documented(&document);
        assert!(
            documented.is_disjoint(&worker_routes),
            "{name}'s client document describes a worker endpoint"
        );
    }
    db.cleanup().await;
}

/// The worker's batch endpoint (functions/worker/src/http_trigger.rs).
const WORKER_MESSAGES_PATH: &str = "/v1/messages";

/// SQS on the moto server: dead letters go back to the main queue, and each is deleted from
/// the dead-letter queue only after it was resent.
#[tokio::test]
async fn sqs_dead_letters_are_redriven_to_the_queue() {
    use fluxgate::dead_letters::SqsDeadLetters;
    use fluxgate_tests::aws::TestQueue;

    let queue = TestQueue::create().await;
    let dead = TestQueue::create().await;
    for i in 0..13 {
        dead.client
            .send_message()
            .queue_url(&dead.url)
            .message_body(format!("{{\"n\":{i}}}"))
            .message_attributes(
                "tenantId",
                aws_sdk_sqs::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("acme")
                    .build()
                    .expect("attribute"),
            )
            .send()
            .await
            .expect("send a dead letter");
    }
    let db = TestDb::sqlite().await;
    let redrive: Arc<dyn DeadLetters> = Arc::new(SqsDeadLetters::new(
        dead.client.clone(),
        &dead.url,
        &queue.url,
    ));
    let app = replay_app(db.store.clone(), Some(redrive)).await;

    let (status, body, _) = post(&app, "/v1/dlq/redrive", Some(json!({"max": 11}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["moved"], 11);
    let (status, body, _) = post(&app, "/v1/dlq/redrive", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"moved": 2, "remaining": 0}));

    let moved = queue.receive(13, Duration::from_secs(10)).await;
    let mut bodies: Vec<String> = moved
        .iter()
        .filter_map(|m| m.body().map(str::to_owned))
        .collect();
    // Counted as they are, copies included: each dead letter exactly once, nothing more.
    let mut expected: Vec<String> = (0..13).map(|i| format!("{{\"n\":{i}}}")).collect();
    bodies.sort();
    expected.sort();
    assert_eq!(bodies, expected, "every dead letter is on the queue once");
    let extra = queue.leftovers().await;
    assert!(
        extra.is_empty(),
        "more than the 13 dead letters reached the queue: {:?}",
        extra.iter().map(|m| m.body()).collect::<Vec<_>>()
    );
    assert!(
        moved
            .iter()
            .all(|m| fluxgate_tests::aws::string_attribute(m, "tenantId") == Some("acme")),
        "attributes were not carried over"
    );
    assert!(
        dead.leftovers().await.is_empty(),
        "dead letters left behind"
    );
    queue.delete().await;
    dead.delete().await;
    db.cleanup().await;
}

/// Every client operation says how its key is sent and that it may answer 401; the health
/// checks and the document stay open; the batch takes NDJSON as well as JSON.
/// Every `$ref` in `json`.
fn references(json: &Value) -> Vec<&str> {
    match json {
        Value::Object(map) => map
            .iter()
            .flat_map(|(key, value)| match (key.as_str(), value) {
                ("$ref", Value::String(target)) => vec![target.as_str()],
                _ => references(value),
            })
            .collect(),
        Value::Array(items) => items.iter().flat_map(references).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn the_openapi_documents_describe_api_keys_and_the_batch_formats() {
    let common = fluxgate::api::common_endpoints();
    for (name, document) in [
        ("ingest", fluxgate_ingest::IngestState::openapi()),
        ("replay", fluxgate_replay::ReplayState::openapi()),
        ("metrics", fluxgate_metrics::MetricsState::openapi()),
        ("local", fluxgate_local::openapi()),
    ] {
        let json = serde_json::to_value(&document).expect("document");
        for target in references(&json) {
            assert!(
                json.pointer(target.trim_start_matches('#')).is_some(),
                "{name}: {target} is referenced but not in the document"
            );
        }
        let schemes = &json["components"]["securitySchemes"];
        assert_eq!(
            schemes["bearerApiKey"]["scheme"], "bearer",
            "{name}: {schemes}"
        );
        assert_eq!(
            schemes["headerApiKey"]["name"], "X-Api-Key",
            "{name}: {schemes}"
        );
        for (method, path) in fluxgate::api::documented(&document) {
            let operation = &json["paths"][&path][method.to_ascii_lowercase()];
            if common.contains(&(method.clone(), path.clone())) {
                assert!(
                    operation.get("security").is_none(),
                    "{name}: {method} {path} is open"
                );
                continue;
            }
            assert_eq!(
                operation["security"],
                json!([{"bearerApiKey": []}, {"headerApiKey": []}]),
                "{name}: {method} {path}"
            );
            assert!(
                operation["responses"]["401"].is_object(),
                "{name}: {method} {path} lists no 401"
            );
        }
    }
    let ingest = serde_json::to_value(fluxgate_ingest::IngestState::openapi()).expect("document");
    let batch = &ingest["paths"]["/v1/events/batch"]["post"]["requestBody"]["content"];
    assert!(
        batch["application/json"].is_object() && batch["application/x-ndjson"].is_object(),
        "{batch}"
    );
}
