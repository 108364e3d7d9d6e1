//! Authentication and tenant isolation on the ingest API, through the real router, real keys
//! in a real database and the real `TenantScope` extractor: a key acts for its own tenant
//! only, bad credentials are 401, the admin key reaches every tenant, and no key is logged.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::TimeDelta;
use fluxgate::auth::{AdminAuth, AuthConfig, AuthMode, Authenticator};
use fluxgate::config::Limits;
use fluxgate::store::Store;
use fluxgate_tests::{
    ADMIN_KEY, CapturedLog, TestDb, auth_config, authenticator, authenticator_with, key, router,
    tenant_key,
};
use serde_json::{Value, json};

struct Answer {
    status: StatusCode,
    www_authenticate: Option<String>,
    body: Value,
}

fn app(store: Arc<dyn Store>, auth: Authenticator) -> Router {
    fluxgate_ingest::service(store, Limits::default(), auth)
}

/// ingest on `store`, its callers authenticated by the keys `store` holds.
async fn keyed_app(store: &Arc<dyn Store>) -> Router {
    app(store.clone(), authenticator(store.clone()).await)
}

/// A new key of tenant acme, and [`keyed_app`].
async fn acme_key_and_app(store: &Arc<dyn Store>) -> (String, Router) {
    let acme = tenant_key(store.as_ref(), "acme").await;
    (acme, keyed_app(store).await)
}

/// Sends `body` (GET when `None`) with the given headers.
async fn call(app: &Router, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> Answer {
    let mut request = match &body {
        Some(_) => Request::post(path).header(header::CONTENT_TYPE, "application/json"),
        None => Request::get(path),
    };
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request");
    let answer = router::send(app, request).await;
    Answer {
        status: answer.status,
        www_authenticate: answer.header("www-authenticate").map(str::to_owned),
        body: answer.json(),
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn order(tenant: Option<&str>, id: &str) -> Value {
    let mut body = json!({"eventId": id, "eventType": "order.created", "payload": {"id": id}});
    if let Some(tenant) = tenant {
        body["tenantId"] = json!(tenant);
    }
    body
}

async fn stored(store: &dyn Store, tenant: &str, ids: &[&str]) -> usize {
    let keys: Vec<_> = ids.iter().map(|id| key(tenant, id)).collect();
    store.statuses(&keys).await.expect("statuses").len()
}

fn assert_401(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(answer.body["type"], "urn:fluxgate:problem:unauthorized");
    assert_eq!(
        answer.www_authenticate.as_deref(),
        Some("Bearer realm=\"fluxgate\"")
    );
}

#[tokio::test]
async fn a_key_writes_and_reads_its_own_tenant_only() {
    let db = TestDb::postgres().await;
    let store = db.store.clone();
    let (acme, app) = acme_key_and_app(&store).await;
    let acme_bearer = bearer(&acme);
    let as_acme = [("authorization", acme_bearer.as_str())];

    let post_as_acme = async |body| call(&app, "/v1/events", &as_acme, Some(body)).await;

    // The key names the tenant; a body may repeat it.
    let answer = post_as_acme(order(None, "o-1")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["tenantId"], "acme");
    let answer = post_as_acme(order(Some("acme"), "o-2")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);

    // Another tenant in the body: 403 naming the field, nothing written anywhere.
    let answer = post_as_acme(order(Some("globex"), "g-1")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(answer.body["type"], "urn:fluxgate:problem:forbidden");
    assert_eq!(answer.body["field"], "tenantId");
    assert_eq!(stored(store.as_ref(), "globex", &["g-1"]).await, 0);
    assert_eq!(stored(store.as_ref(), "acme", &["g-1"]).await, 0);

    // One such item refuses the whole batch before anything is written.
    let batch = json!([
        order(None, "b-1"),
        order(Some("globex"), "b-2"),
        order(None, "b-3")
    ]);
    let answer = call(&app, "/v1/events/batch", &as_acme, Some(batch)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(answer.body["field"], "tenantId");
    assert_eq!(stored(store.as_ref(), "acme", &["b-1", "b-3"]).await, 0);
    assert_eq!(stored(store.as_ref(), "globex", &["b-2"]).await, 0);
    // The same batch for the own tenant goes through.
    let batch = json!([order(None, "b-1"), order(Some("acme"), "b-2")]);
    let answer = call(&app, "/v1/events/batch", &as_acme, Some(batch)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["counts"]["accepted"], 2);

    // Reading: the own event, and another tenant's existing event looks missing.
    let admin = bearer(ADMIN_KEY);
    let answer = call(
        &app,
        "/v1/events",
        &[("authorization", &admin)],
        Some(order(Some("globex"), "g-9")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let own = call(&app, "/v1/events/acme/o-1", &as_acme, None).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let theirs = call(&app, "/v1/events/globex/g-9", &as_acme, None).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.body);
    let nothing = call(&app, "/v1/events/globex/never", &as_acme, None).await;
    assert_eq!(nothing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        theirs.body["title"], nothing.body["title"],
        "an existing event of another tenant answers like a missing one"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn missing_unknown_malformed_and_revoked_keys_are_401() {
    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    let (acme, app) = acme_key_and_app(&store).await;
    let body = || Some(order(Some("acme"), "o-1"));

    assert_401(&call(&app, "/v1/events", &[], body()).await);
    assert_401(&call(&app, "/v1/events/acme/o-1", &[], None).await);
    assert_401(&call(&app, "/v1/events", &[("authorization", "Bearer ")], body()).await);
    assert_401(
        &call(
            &app,
            "/v1/events",
            &[("authorization", "Basic YTpi")],
            body(),
        )
        .await,
    );
    assert_401(&call(&app, "/v1/events", &[("x-api-key", "not-a-key")], body()).await);
    // The right shape and a real key id, but another secret.
    let key_id = &acme[4..16];
    let forged = format!("fgk_{key_id}_{}", "A".repeat(43));
    assert_401(&call(&app, "/v1/events", &[("x-api-key", &forged)], body()).await);
    // A well-formed key nobody issued.
    let unknown = format!("fgk_0123456789ab_{}", "A".repeat(43));
    assert_401(
        &call(
            &app,
            "/v1/events",
            &[("authorization", &bearer(&unknown))],
            body(),
        )
        .await,
    );
    assert_eq!(stored(store.as_ref(), "acme", &["o-1"]).await, 0);

    // Both headers work, and the scheme name is case-insensitive.
    let answer = call(&app, "/v1/events", &[("x-api-key", &acme)], body()).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let lower = format!("bearer {acme}");
    let answer = call(
        &app,
        "/v1/events/acme/o-1",
        &[("authorization", &lower)],
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // Behind Cloud Run's IAM, Authorization holds Google's identity token and the key travels
    // in X-Api-Key: the key is what counts.
    let identity_token = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwcyJ9.c2lnbmF0dXJl";
    let answer = call(
        &app,
        "/v1/events/acme/o-1",
        &[("authorization", identity_token), ("x-api-key", &acme)],
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // Revoked: refused from the next request on (no lookup cache in this authenticator).
    store
        .revoke_key(key_id, fluxgate::now())
        .await
        .expect("revoke");
    let answer = call(&app, "/v1/events/acme/o-1", &[("x-api-key", &acme)], None).await;
    assert_401(&answer);
    let answer = call(
        &app,
        "/v1/events",
        &[("x-api-key", &acme)],
        Some(order(None, "o-2")),
    )
    .await;
    assert_401(&answer);
    assert_eq!(stored(store.as_ref(), "acme", &["o-2"]).await, 0);
}

#[tokio::test]
async fn a_cached_lookup_keeps_a_revoked_key_until_the_ttl_ends() {
    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    let acme = tenant_key(store.as_ref(), "acme").await;
    let config = AuthConfig {
        auth_cache_ttl: TimeDelta::hours(1),
        ..auth_config()
    };
    let app = app(
        store.clone(),
        authenticator_with(store.clone(), &config).await,
    );
    let headers = [("x-api-key", acme.as_str())];
    let answer = call(&app, "/v1/events", &headers, Some(order(None, "o-1"))).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    store
        .revoke_key(&acme[4..16], fluxgate::now())
        .await
        .expect("revoke");
    // The documented trade-off: within the TTL the warm instance still accepts the key.
    let answer = call(&app, "/v1/events", &headers, Some(order(None, "o-2"))).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    // A new instance (a fresh cache) refuses it.
    let fresh = app_with_config(&db, &config).await;
    assert_401(&call(&fresh, "/v1/events", &headers, Some(order(None, "o-3"))).await);
}

async fn app_with_config(db: &TestDb, config: &AuthConfig) -> Router {
    app(
        db.store.clone(),
        authenticator_with(db.store.clone(), config).await,
    )
}

#[tokio::test]
async fn the_admin_key_reaches_every_tenant_and_must_name_one() {
    let db = TestDb::mariadb().await;
    let app = app_with_config(&db, &auth_config()).await;
    let admin = bearer(ADMIN_KEY);
    let headers = [("authorization", admin.as_str())];
    for tenant in ["acme", "globex"] {
        let answer = call(
            &app,
            "/v1/events",
            &headers,
            Some(order(Some(tenant), "e-1")),
        )
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        let read = call(&app, &format!("/v1/events/{tenant}/e-1"), &headers, None).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    }
    let answer = call(&app, "/v1/events", &headers, Some(order(None, "e-2"))).await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["field"], "tenantId");
    // Close is not enough.
    let almost = bearer(&format!("{ADMIN_KEY}x"));
    assert_401(
        &call(
            &app,
            "/v1/events/acme/e-1",
            &[("authorization", &almost)],
            None,
        )
        .await,
    );
    db.cleanup().await;
}

#[tokio::test]
async fn auth_off_is_open_and_platform_admin_trusts_the_iam_in_front() {
    let db = TestDb::sqlite().await;
    let off = AuthConfig {
        mode: AuthMode::Off,
        ..AuthConfig::default()
    };
    let app = app_with_config(&db, &off).await;
    let answer = call(&app, "/v1/events", &[], Some(order(Some("acme"), "o-1"))).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let answer = call(&app, "/v1/events/acme/o-1", &[], None).await;
    assert_eq!(answer.status, StatusCode::OK);

    // Behind API Gateway IAM / Cloud Run IAM the platform has authenticated the caller (its
    // Authorization header is the platform's, not an API key).
    let platform = AuthConfig {
        admin_auth: AdminAuth::Platform,
        ..AuthConfig::default()
    };
    let app = app_with_config(&db, &platform).await;
    let sigv4 = [("authorization", "AWS4-HMAC-SHA256 Credential=AKIA/…")];
    let answer = call(&app, "/v1/events/acme/o-1", &sigv4, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn weak_or_unavailable_admin_keys_are_refused_at_start() {
    let db = TestDb::sqlite().await;
    let short = AuthConfig {
        admin_key: Some("too-short".into()),
        ..AuthConfig::default()
    };
    let both = AuthConfig {
        admin_key: Some(ADMIN_KEY.into()),
        admin_key_secret_id: Some("fluxgate/admin-key".into()),
        ..AuthConfig::default()
    };
    for refused in [short, both] {
        let started = Authenticator::from_config(&refused, db.store.clone()).await;
        assert!(started.is_err(), "{refused:?}");
    }
    let debug = format!("{:?}", auth_config());
    assert!(!debug.contains(ADMIN_KEY), "{debug}");
}

/// Every log line, at every level, of successful and failed requests: the key id may show,
/// the secret never.
#[tokio::test]
async fn keys_never_reach_the_log() {
    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    let acme = tenant_key(store.as_ref(), "acme").await;
    let revoked = tenant_key(store.as_ref(), "acme").await;
    store
        .revoke_key(&revoked[4..16], fluxgate::now())
        .await
        .expect("revoke");
    let app = keyed_app(&store).await;
    let forged = format!("{}{}", &acme[..17], "B".repeat(43));

    // A current-thread test runtime: everything the requests log happens on this thread.
    let (log, guard) = CapturedLog::start();
    let ok = call(
        &app,
        "/v1/events",
        &[("authorization", &bearer(&acme))],
        Some(order(None, "o-1")),
    )
    .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    for bad in [&forged, &revoked] {
        assert_401(
            &call(
                &app,
                "/v1/events",
                &[("x-api-key", bad)],
                Some(order(None, "o-2")),
            )
            .await,
        );
    }
    assert_401(
        &call(
            &app,
            "/v1/events",
            &[("authorization", "Bearer garbage-key")],
            Some(order(None, "o-3")),
        )
        .await,
    );
    let admin = call(
        &app,
        "/v1/events/acme/o-1",
        &[("x-api-key", ADMIN_KEY)],
        None,
    )
    .await;
    assert_eq!(admin.status, StatusCode::OK);
    drop(guard);

    let text = log.text();
    assert!(
        text.contains("authentication failed") && text.contains(&revoked[4..16]),
        "the failures are logged, with the key id: {text}"
    );
    for secret in [&acme, &forged, &revoked] {
        assert!(
            !text.contains(&secret[17..]),
            "a key secret is in the log:\n{text}"
        );
    }
    assert!(!text.contains("garbage-key"), "{text}");
    assert!(!text.contains(ADMIN_KEY), "{text}");
}
