//! Tenant isolation through real authentication, on every client route of ingest, replay,
//! metrics and local, on PostgreSQL, MariaDB and SQLite (each test makes its own database;
//! nothing depends on `FLUXGATE_TEST_DB`). Tenant globex holds a real key, created through the
//! store's `ApiKeys` and checked by the real `Authenticator`; it tries every route on tenant
//! acme's data and gets a refusal that changes nothing and shows nothing of acme. As a control,
//! the same request from acme (or the admin, for admin-only routes) succeeds, so each refusal
//! is the isolation at work and not a malformed request. Everything logged meanwhile is
//! captured: no API key and no database password appears in it.
//!
//! Local serves no drain trigger (it drains on its own loop). No service-account key is given to these four functions
//! (only the worker's BigQuery sink takes one), so none can be logged; the log is still checked
//! for private-key material.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use fluxgate::api::Api;
use fluxgate::config::{DrainConfig, Limits};
use fluxgate::queue::{InMemoryQueue, InMemoryQueueConfig};
use fluxgate::store::{DeliveryOutcome, OutboxStatus, Store, StoredEvent};
use fluxgate_outbox_drain::Drain;
use fluxgate_tests::{
    ADMIN_KEY, CapturedLog, DbKind, EVENT_TYPE, TestDb, authenticator, claim_request,
    database_config, event, key, per_database, router, tenant_key,
};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, Executor, MySqlConnection};

/// Who makes the control request of a case.
#[derive(Clone, Copy)]
enum Control {
    /// The owning tenant's own key.
    Owner,
    /// The admin key: the route is admin-only, for tenants' own data too.
    Admin,
}

/// One route, the request globex makes on acme's data, what it gets, and who succeeds with
/// the same request.
struct Case {
    method: &'static str,
    /// The route as the router declares it.
    route: &'static str,
    uri: String,
    body: Option<Value>,
    refused: StatusCode,
    control: Control,
}

/// Every client route; `run` is a prefix that makes the ids written by one app's run its own.
fn cases(run: &str) -> Vec<Case> {
    let order = |id: String| json!({"tenantId": "acme", "eventId": id, "eventType": "order.created", "payload": {"n": 1}});
    let case = |method, route, uri: &str, body, refused, control| Case {
        method,
        route,
        uri: uri.to_owned(),
        body,
        refused,
        control,
    };
    use Control::{Admin, Owner};
    use StatusCode as S;
    vec![
        // ingest: writing into another tenant is forbidden, reading it looks like nothing.
        case(
            "POST",
            "/v1/events",
            "/v1/events",
            Some(order(format!("{run}-one"))),
            S::FORBIDDEN,
            Owner,
        ),
        case(
            "POST",
            "/v1/events/batch",
            "/v1/events/batch",
            Some(json!([order(format!("{run}-batch"))])),
            S::FORBIDDEN,
            Owner,
        ),
        case(
            "POST",
            "/v1/events/bulk",
            "/v1/events/bulk",
            Some(json!([order(format!("{run}-bulk"))])),
            S::FORBIDDEN,
            Owner,
        ),
        case(
            "GET",
            "/v1/events/{tenantId}/{eventId}",
            "/v1/events/acme/a1",
            None,
            S::NOT_FOUND,
            Owner,
        ),
        // replay: admin-only, but for the retry below.
        case(
            "POST",
            "/v1/events/{tenantId}/{eventId}/replay",
            "/v1/events/acme/a1/replay",
            None,
            S::FORBIDDEN,
            Admin,
        ),
        case(
            "POST",
            "/v1/replay",
            "/v1/replay",
            Some(json!({"tenantId": "acme", "dryRun": true})),
            S::FORBIDDEN,
            Admin,
        ),
        case(
            "POST",
            "/v1/dlq/redrive",
            "/v1/dlq/redrive",
            None,
            S::FORBIDDEN,
            Admin,
        ),
        // The reference API's retry: a tenant's own key for its own FAILED rows.
        case(
            "POST",
            "/v1/outbox/retry",
            "/v1/outbox/retry?tenantId=acme&limit=10",
            None,
            S::FORBIDDEN,
            Owner,
        ),
        // metrics: another tenant's figures do not exist for globex; across tenants is admin-only.
        case(
            "GET",
            "/v1/outbox/summary",
            "/v1/outbox/summary?tenantId=acme",
            None,
            S::NOT_FOUND,
            Owner,
        ),
        case(
            "GET",
            "/v1/metrics",
            "/v1/metrics?tenantId=acme",
            None,
            S::NOT_FOUND,
            Owner,
        ),
        case(
            "GET",
            "/v1/events/failed",
            "/v1/events/failed?tenantId=acme",
            None,
            S::NOT_FOUND,
            Owner,
        ),
        case("GET", "/metrics", "/metrics", None, S::FORBIDDEN, Admin),
    ]
}

/// A URL of the test database that carries a password: PostgreSQL (trust authentication)
/// with the password in the URL, MariaDB with a user of its own that has one (made here, with
/// the admin connection). SQLite has none. Returns the URL, the password, and the MariaDB user,
/// dropped again when its guard is dropped (also when the test panics).
async fn url_with_password(db: &TestDb) -> (String, Option<String>, Option<MariaDbUser>) {
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let (url, user) = match db.kind {
        DbKind::Sqlite => return (db.url.clone(), None, None),
        DbKind::Postgres => (
            db.url
                .replacen("postgres@", &format!("postgres:{password}@"), 1),
            None,
        ),
        DbKind::MariaDb => {
            let user = format!(
                "fluxgate_u_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            let name = db.database_name();
            let mut admin = MySqlConnection::connect(&db.url).await.expect("connect");
            for statement in [
                format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"),
                format!("GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'%'"),
            ] {
                admin
                    .execute(AssertSqlSafe(statement))
                    .await
                    .expect("create the user");
            }
            let _ = admin.close().await;
            let (_, at_host) = db.url.split_once('@').expect("the URL has a user");
            let url = format!("mysql://{user}:{password}@{at_host}");
            let guard = MariaDbUser {
                admin_url: db.url.clone(),
                name: user,
            };
            (url, Some(guard))
        }
    };
    assert!(url.contains(&password), "the password is in {url}");
    (url, Some(password), user)
}

/// A MariaDB user this test made; dropped with it. Drop is synchronous and runs inside the
/// test's runtime, so the statement runs on a thread of its own with a small runtime.
struct MariaDbUser {
    admin_url: String,
    name: String,
}

impl Drop for MariaDbUser {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut admin = MySqlConnection::connect(&admin_url).await?;
                admin
                    .execute(AssertSqlSafe(format!("DROP USER IF EXISTS '{name}'@'%'")))
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "tenant_isolation: could not drop the MariaDB user {}",
                self.name
            );
        }
    }
}

/// acme's event a1, delivered and then DEAD (what replay and the failed listing act on).
async fn dead_event(store: &dyn Store) {
    store
        .insert_events(&[event("acme", "a1")])
        .await
        .expect("insert");
    make_a1_dead(store).await;
}

/// a1, PENDING (new, or replayed by a control request), published and recorded DEAD.
async fn make_a1_dead(store: &dyn Store) {
    let now = fluxgate::now();
    let claimed = store
        .claim_batch(&claim_request("drain", 100, now))
        .await
        .expect("claim");
    assert!(
        claimed.iter().any(|c| c.event.key() == key("acme", "a1")),
        "a1 is due"
    );
    store
        .mark_published("drain", &[key("acme", "a1")], now)
        .await
        .expect("publish");
    store
        .record_outcomes(
            &[DeliveryOutcome {
                key: key("acme", "a1"),
                status: OutboxStatus::Dead,
                error: Some("warehouse refused it".into()),
            }],
            now,
        )
        .await
        .expect("record");
}

async fn a1(store: &dyn Store) -> StoredEvent {
    store
        .get_event(&key("acme", "a1"))
        .await
        .expect("get")
        .expect("a1 is stored")
}

async fn send(app: &Router, case: &Case, api_key: &str) -> router::RouterAnswer {
    let request = router::json_request(case.method, &case.uri, Some(api_key), case.body.as_ref());
    router::send(app, request).await
}

/// globex's key on every case, then the control.
async fn check_app(
    name: &str,
    app: &Router,
    store: &dyn Store,
    cases: &[Case],
    keys: (&str, &str),
) {
    let (globex, acme) = keys;
    if a1(store).await.outbox.status != OutboxStatus::Dead {
        make_a1_dead(store).await;
    }
    for case in cases {
        let before = a1(store).await;
        let answer = send(app, case, globex).await;
        let what = format!("{name}: globex {} {}", case.method, case.uri);
        assert_eq!(answer.status, case.refused, "{what}: {}", answer.text());
        assert_eq!(answer.content_type(), "application/problem+json", "{what}");
        // It may repeat what was asked (a path names a1), never what is stored.
        let text = answer.text();
        for stored in [
            before.event.payload_sha256.as_str(),
            EVENT_TYPE,
            "warehouse refused",
        ] {
            assert!(!text.contains(stored), "{what} shows acme's data: {text}");
        }
        assert_eq!(a1(store).await, before, "{what} changed acme's event");
        if let Some(Value::Array(items)) = case.body.as_ref().map(|b| match b {
            Value::Array(_) => b.clone(),
            other => Value::Array(vec![other.clone()]),
        }) {
            for item in items.iter().filter_map(|i| i["eventId"].as_str()) {
                for tenant in ["acme", "globex"] {
                    assert!(
                        store
                            .get_event(&key(tenant, item))
                            .await
                            .expect("get")
                            .is_none(),
                        "{what} wrote {tenant}/{item}"
                    );
                }
            }
        }

        let control = match case.control {
            Control::Owner => acme,
            Control::Admin => ADMIN_KEY,
        };
        let answer = send(app, case, control).await;
        assert!(
            answer.status.is_success(),
            "{name}: the control of {} {} got {}: {}",
            case.method,
            case.uri,
            answer.status,
            answer.text()
        );
    }
}

async fn every_route_is_isolated(kind: DbKind) {
    let db = TestDb::of(kind).await;
    let (url, password, user) = url_with_password(&db).await;
    // A current-thread test runtime: everything the store and the requests log happens on this
    // thread, from connecting with the password on.
    let (log, guard) = CapturedLog::start();
    let store = fluxgate::store::connect(&url, &database_config(&url))
        .await
        .unwrap_or_else(|err| panic!("connect with a password on {}: {err}", db.kind));
    let acme = tenant_key(store.as_ref(), "acme").await;
    let globex = tenant_key(store.as_ref(), "globex").await;
    dead_event(store.as_ref()).await;
    let queue = Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()));

    // The table covers every client route, no more.
    let table: BTreeSet<(String, String)> = cases("x")
        .iter()
        .map(|c| (c.method.to_owned(), c.route.to_owned()))
        .collect();
    let mut routes = fluxgate_ingest::IngestState::endpoints();
    routes.extend(fluxgate_replay::ReplayState::endpoints());
    routes.extend(fluxgate_metrics::MetricsState::endpoints());
    assert_eq!(table, routes, "the table and the functions' routes differ");
    let of = |routes: BTreeSet<(String, String)>, run: &str| -> Vec<Case> {
        cases(run)
            .into_iter()
            .filter(|c| routes.contains(&(c.method.to_owned(), c.route.to_owned())))
            .collect()
    };

    let auth = || authenticator(store.clone());
    let ingest = fluxgate_ingest::service(store.clone(), Limits::default(), auth().await);
    let replay = fluxgate_replay::service(store.clone(), Some(queue.clone()), auth().await);
    let metrics = fluxgate_metrics::service(store.clone(), auth().await);
    let drain = Drain::new(store.clone(), queue.clone(), DrainConfig::default());
    let local = fluxgate_local::app(
        store.clone(),
        Limits::default(),
        drain,
        Some(queue.clone()),
        auth().await,
    );
    let keys = (globex.as_str(), acme.as_str());
    let ingest_cases = of(fluxgate_ingest::IngestState::endpoints(), "ingest");
    let replay_cases = of(fluxgate_replay::ReplayState::endpoints(), "replay");
    let metrics_cases = of(fluxgate_metrics::MetricsState::endpoints(), "metrics");
    assert_eq!(
        ingest_cases.len() + replay_cases.len() + metrics_cases.len(),
        table.len()
    );
    check_app("ingest", &ingest, store.as_ref(), &ingest_cases, keys).await;
    check_app("replay", &replay, store.as_ref(), &replay_cases, keys).await;
    check_app("metrics", &metrics, store.as_ref(), &metrics_cases, keys).await;
    check_app("local", &local, store.as_ref(), &cases("local"), keys).await;
    drop(guard);

    let text = log.text();
    assert!(
        text.contains("acme") || text.contains("/v1/"),
        "the capture saw the requests: {text}"
    );
    let mut secrets = vec![acme.clone(), globex.clone(), ADMIN_KEY.to_owned()];
    // The secret part of a key, without its public id.
    secrets.extend([acme[17..].to_owned(), globex[17..].to_owned()]);
    secrets.extend(password);
    for secret in &secrets {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(secret.as_str()))
            .collect();
        assert!(
            lines.is_empty(),
            "a secret is in the log:\n{}",
            lines.join("\n")
        );
    }
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("private_key"),
        "{text}"
    );
    drop(store);
    drop(user);
    db.cleanup().await;
}

per_database!(#[tokio::test] every_route_is_isolated: postgres, mariadb, sqlite);
