//! The ingest HTTP API, request by request, through the real router and a real database:
//! every rule answers with problem+json naming the field and changes nothing.
//!
//! Requests carry the admin key (which may name any tenant and must name one), so the body's
//! `tenantId` rules are tested as a deployment sees them; tenant keys are tested in
//! `auth_api.rs`.

use std::io::Write;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{TimeDelta, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use fluxgate::api::Api as _;
use fluxgate::config::Limits;
use fluxgate::store::OutboxStatus;
use fluxgate_tests::{ADMIN_KEY, TestDb, authenticator, key, router};
use serde_json::{Value, json};

struct Api {
    app: Router,
    db: TestDb,
}

struct Answer {
    status: StatusCode,
    content_type: String,
    correlation_id: Option<String>,
    body: Value,
}

impl Api {
    async fn new(db: TestDb) -> Self {
        Self::with_limits(db, Limits::default()).await
    }

    async fn with_limits(db: TestDb, limits: Limits) -> Self {
        let auth = authenticator(db.store.clone()).await;
        Self {
            app: fluxgate_ingest::service(db.store.clone(), limits, auth),
            db,
        }
    }

    async fn send(&self, mut request: Request<Body>) -> Answer {
        request.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {ADMIN_KEY}").parse().expect("header value"),
        );
        let answer = router::send(&self.app, request).await;
        let status = answer.status;
        let content_type = answer.content_type().to_owned();
        let correlation_id = answer.header("x-correlation-id").map(str::to_owned);
        let body = serde_json::from_slice(&answer.body).unwrap_or(Value::String(answer.text()));
        Answer {
            status,
            content_type,
            correlation_id,
            body,
        }
    }

    async fn post(&self, path: &str, content_type: &str, body: impl Into<Body>) -> Answer {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .expect("request");
        self.send(request).await
    }

    async fn post_json(&self, path: &str, body: Value) -> Answer {
        self.post(path, "application/json", body.to_string()).await
    }

    /// Posts one event that must be accepted.
    async fn accepts(&self, event: Value) {
        let answer = self.post_json("/v1/events", event).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Request::get(path).body(Body::empty()).expect("request"))
            .await
    }

    /// How many events the database holds: rejected requests must leave it unchanged.
    async fn stored(&self, tenant: &str, ids: &[&str]) -> usize {
        let keys: Vec<_> = ids.iter().map(|id| key(tenant, id)).collect();
        self.db.store.statuses(&keys).await.expect("statuses").len()
    }
}

/// A `POST` of `body` whose `Content-Encoding` is `encoding`.
fn encoded(path: &str, content_type: &str, encoding: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_ENCODING, encoding)
        .body(body.into())
        .expect("request")
}

fn assert_problem(answer: &Answer, status: StatusCode, field: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(
        answer.content_type, "application/problem+json",
        "{}",
        answer.body
    );
    assert_eq!(answer.body["status"], status.as_u16(), "{}", answer.body);
    assert!(
        answer.body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:fluxgate:problem:"))
    );
    assert!(
        answer.body["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    assert_eq!(answer.body["field"].as_str(), field, "{}", answer.body);
}

fn order(id: &str) -> Value {
    json!({"tenantId": "acme", "eventId": id, "eventType": "order.created", "payload": {"orderId": id, "total": 12.5}})
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

#[tokio::test]
async fn an_accepted_event_is_stored_with_a_pending_outbox_row_and_can_be_read_back() {
    // The event is older than the default age limit allows; this deployment allows it.
    let limits = Limits {
        max_event_age: TimeDelta::days(100_000),
        ..Limits::default()
    };
    let api = Api::with_limits(TestDb::postgres().await, limits).await;
    let request = Request::post("/v1/events")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-correlation-id", "corr-42")
        .body(Body::from(
            json!({"tenantId": "acme", "eventId": "o-1", "eventType": "order.created",
                   "eventTs": "2024-01-15T10:30:00", "source": "shop", "metadata": {"ip": "10.0.0.1"},
                   "payload": {"orderId": 1}})
            .to_string(),
        ))
        .expect("request");
    let answer = api.send(request).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["status"], "accepted");
    assert_eq!(answer.correlation_id.as_deref(), Some("corr-42"));

    let read = api.get("/v1/events/acme/o-1").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(
        read.body["eventTs"], "2024-01-15T10:30:00Z",
        "no offset means UTC"
    );
    assert_eq!(read.body["payload"], json!({"orderId": 1}));
    assert_eq!(read.body["source"], "shop");
    assert_eq!(read.body["metadata"], json!({"ip": "10.0.0.1"}));
    assert_eq!(read.body["correlationId"], "corr-42");
    assert_eq!(read.body["outbox"]["status"], "PENDING");
    assert_eq!(read.body["outbox"]["attempts"], 0);
    api.db.cleanup().await;
}

#[tokio::test]
async fn a_correlation_id_is_made_when_the_client_sends_none() {
    let api = Api::new(TestDb::sqlite().await).await;
    let answer = api.post_json("/v1/events", order("o-1")).await;
    let made = answer
        .correlation_id
        .expect("x-correlation-id on the response");
    assert!(!made.is_empty());
    let read = api.get("/v1/events/acme/o-1").await;
    assert_eq!(read.body["correlationId"], made.as_str());
}

#[tokio::test]
async fn an_event_without_id_gets_a_uuid_v7() {
    let api = Api::new(TestDb::sqlite().await).await;
    let answer = api
        .post_json(
            "/v1/events",
            json!({"tenantId": "acme", "eventType": "x", "payload": {}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let id = answer.body["eventId"].as_str().expect("eventId");
    assert_eq!(
        uuid::Uuid::parse_str(id).expect("uuid").get_version_num(),
        7
    );
}

#[tokio::test]
async fn the_same_event_twice_is_a_duplicate_and_a_different_payload_is_a_conflict() {
    let api = Api::new(TestDb::postgres().await).await;
    api.accepts(order("o-1")).await;

    // Same payload, keys in another order: the canonical hash is the same.
    let again = json!({"tenantId": "acme", "eventId": "o-1", "eventType": "order.created",
                       "payload": {"total": 12.5, "orderId": "o-1"}});
    let duplicate = api.post_json("/v1/events", again).await;
    assert_eq!(duplicate.status, StatusCode::OK, "{}", duplicate.body);
    assert_eq!(duplicate.body["status"], "duplicate");

    let mut changed = order("o-1");
    changed["payload"]["total"] = json!(99);
    let conflict = api.post_json("/v1/events", changed).await;
    assert_problem(&conflict, StatusCode::CONFLICT, None);

    let read = api.get("/v1/events/acme/o-1").await;
    assert_eq!(
        read.body["payload"]["total"], 12.5,
        "the first payload stays"
    );
    api.db.cleanup().await;
}

#[tokio::test]
async fn every_invalid_field_is_named_and_nothing_is_written() {
    let api = Api::new(TestDb::sqlite().await).await;
    let future = (Utc::now() + TimeDelta::hours(2)).to_rfc3339();
    let cases = [
        (
            json!({"eventId": "e1", "eventType": "x", "payload": {}}),
            "tenantId",
        ),
        (
            json!({"tenantId": 5, "eventId": "e1", "eventType": "x", "payload": {}}),
            "tenantId",
        ),
        (
            json!({"tenantId": "a/b", "eventId": "e1", "eventType": "x", "payload": {}}),
            "tenantId",
        ),
        (
            json!({"tenantId": "acme", "eventId": "e1", "payload": {}}),
            "eventType",
        ),
        (
            json!({"tenantId": "acme", "eventId": "e1", "eventType": ["x"], "payload": {}}),
            "eventType",
        ),
        (
            json!({"tenantId": "acme", "eventId": "e1", "eventType": "x"}),
            "payload",
        ),
        (
            json!({"tenantId": "acme", "eventId": "e1", "eventType": "x", "payload": "text"}),
            "payload",
        ),
        (
            json!({"tenantId": "acme", "eventId": "e1", "eventType": "x", "payload": {}, "eventTs": "last tuesday"}),
            "eventTs",
        ),
        (
            json!({"tenantId": "acme", "eventId": "e1", "eventType": "x", "payload": {}, "eventTs": future}),
            "eventTs",
        ),
        (
            json!({"tenantId": "acme", "eventId": "e1", "eventType": "x", "payload": {}, "eventTs": 1700000000}),
            "eventTs",
        ),
        (
            json!({"tenantId": "acme", "eventId": 7, "eventType": "x", "payload": {}}),
            "eventId",
        ),
        (
            json!({"tenantId": "acme", "eventId": "e1", "eventType": "x", "payload": {}, "metadata": [1]}),
            "metadata",
        ),
        (
            json!({"tenantId": "acme", "eventId": "e1", "eventType": "x", "payload": {}, "timestamp": "now"}),
            "timestamp",
        ),
        (
            json!({"tenantId": "acme", "eventId": "e".repeat(129), "eventType": "x", "payload": {}}),
            "eventId",
        ),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (body, field) in cases {
        let answer = api.post_json("/v1/events", body.clone()).await;
        assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY, Some(field));
    }
    assert_eq!(api.stored("acme", &["e1"]).await, 0);
}

#[tokio::test]
async fn unreadable_bodies_are_refused() {
    let api = Api::new(TestDb::sqlite().await).await;
    let malformed = api
        .post("/v1/events", "application/json", r#"{"tenantId": "acme", "#)
        .await;
    assert_problem(&malformed, StatusCode::BAD_REQUEST, Some("body"));

    let trailing = api
        .post(
            "/v1/events",
            "application/json",
            r#"{"tenantId": "acme"} {}"#,
        )
        .await;
    assert_problem(&trailing, StatusCode::BAD_REQUEST, Some("body"));

    let mut latin1 = br#"{"tenantId": "acme", "eventId": "e1", "eventType": "caf"#.to_vec();
    latin1.extend_from_slice(&[0xE9]);
    latin1.extend_from_slice(br#"", "payload": {}}"#);
    let not_utf8 = api.post("/v1/events", "application/json", latin1).await;
    assert_problem(&not_utf8, StatusCode::BAD_REQUEST, Some("body"));
    assert!(
        not_utf8.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("UTF-8"))
    );

    let form = api
        .post("/v1/events", "application/x-www-form-urlencoded", "a=b")
        .await;
    assert_problem(&form, StatusCode::UNSUPPORTED_MEDIA_TYPE, None);

    let bad_gzip = encoded("/v1/events", "application/json", "gzip", "not gzip at all");
    assert_problem(
        &api.send(bad_gzip).await,
        StatusCode::BAD_REQUEST,
        Some("body"),
    );

    let brotli = encoded("/v1/events", "application/json", "br", "{}");
    assert_problem(
        &api.send(brotli).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        None,
    );
    assert_eq!(api.stored("acme", &["e1"]).await, 0);
}

#[tokio::test]
async fn a_method_the_path_does_not_take_is_a_405_problem_naming_the_ones_it_does() {
    let api = Api::new(TestDb::sqlite().await).await;
    let request = Request::put("/v1/events")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_KEY}"))
        .body(Body::from("{}"))
        .expect("request");
    let answer = router::send(&api.app, request).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.content_type(), "application/problem+json");
    assert_eq!(answer.header("allow"), Some("POST"));
    let body: Value = serde_json::from_slice(&answer.body).expect("a problem document");
    assert_eq!(body["detail"], "PUT is not allowed on /v1/events");
    assert_eq!(body["status"], 405);
    api.db.cleanup().await;
}

#[tokio::test]
async fn limits_are_enforced_before_anything_is_written() {
    let limits = Limits {
        max_body_bytes: 2_000,
        max_batch_events: 3,
        max_payload_bytes: 100,
        max_field_length: 16,
        ..Limits::default()
    };
    let api = Api::with_limits(TestDb::sqlite().await, limits).await;

    let big_body = json!({"tenantId": "acme", "eventId": "big", "eventType": "x", "payload": {"pad": "x".repeat(3_000)}});
    assert_problem(
        &api.post_json("/v1/events", big_body.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
    );

    // A gzip body is measured after decoding: a small bomb is still too large.
    let bomb = encoded(
        "/v1/events",
        "application/json",
        "gzip",
        gzip(big_body.to_string().as_bytes()),
    );
    assert_problem(&api.send(bomb).await, StatusCode::PAYLOAD_TOO_LARGE, None);

    let big_payload = json!({"tenantId": "acme", "eventId": "p", "eventType": "x", "payload": {"pad": "x".repeat(200)}});
    assert_problem(
        &api.post_json("/v1/events", big_payload).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("payload"),
    );

    let long_type =
        json!({"tenantId": "acme", "eventId": "t", "eventType": "x".repeat(17), "payload": {}});
    assert_problem(
        &api.post_json("/v1/events", long_type).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("eventType"),
    );

    let four = json!([order("b1"), order("b2"), order("b3"), order("b4")]);
    assert_problem(
        &api.post_json("/v1/events/batch", four).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("events"),
    );

    assert_eq!(
        api.stored("acme", &["big", "p", "t", "b1", "b2", "b3", "b4"])
            .await,
        0
    );
}

#[tokio::test]
async fn a_gzip_body_is_accepted_on_both_endpoints() {
    let api = Api::new(TestDb::sqlite().await).await;
    let single = encoded(
        "/v1/events",
        "application/json",
        "gzip",
        gzip(order("g1").to_string().as_bytes()),
    );
    assert_eq!(api.send(single).await.status, StatusCode::ACCEPTED);

    let ndjson = format!("{}\n{}\n", order("g2"), order("g3"));
    let batch = encoded(
        "/v1/events/batch",
        "application/x-ndjson",
        "gzip",
        gzip(ndjson.as_bytes()),
    );
    let answer = api.send(batch).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["counts"]["accepted"], 2);
    assert_eq!(api.stored("acme", &["g1", "g2", "g3"]).await, 3);
}

#[tokio::test]
async fn a_batch_answers_per_item_and_stores_the_valid_ones() {
    let api = Api::new(TestDb::postgres().await).await;
    api.accepts(order("old")).await;
    let mut conflicting = order("old");
    conflicting["payload"]["total"] = json!(1);
    let mut in_batch_conflict = order("new");
    in_batch_conflict["payload"]["total"] = json!(2);
    let batch = json!({"events": [
        order("new"),                                            // accepted
        order("old"),                                            // duplicate of an earlier request
        conflicting,                                             // conflict with an earlier request
        {"tenantId": "acme", "eventId": "bad", "eventType": "x"}, // invalid: no payload
        order("new"),                                            // duplicate inside the batch
        in_batch_conflict,                                       // conflict inside the batch
    ]});
    let answer = api.post_json("/v1/events/batch", batch).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let statuses: Vec<&str> = answer.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        [
            "accepted",
            "duplicate",
            "conflict",
            "invalid",
            "duplicate",
            "conflict"
        ]
    );
    let items = answer.body["items"].as_array().expect("items");
    assert_eq!(items[3]["index"], 3);
    assert_eq!(
        items[3]["eventId"], "bad",
        "an invalid item still names its id"
    );
    assert_eq!(items[3]["error"]["field"], "payload");
    assert_eq!(
        answer.body["counts"],
        json!({"accepted": 1, "duplicate": 2, "conflict": 2, "invalid": 1})
    );
    assert_eq!(api.stored("acme", &["new", "old", "bad"]).await, 2);
    let statuses = api
        .db
        .store
        .statuses(&[key("acme", "new")])
        .await
        .expect("statuses");
    assert_eq!(
        statuses.get(&key("acme", "new")),
        Some(&OutboxStatus::Pending)
    );
    api.db.cleanup().await;
}

#[tokio::test]
async fn a_batch_may_be_a_plain_array_or_ndjson_with_bad_lines_reported_alone() {
    let api = Api::new(TestDb::sqlite().await).await;
    let array = api
        .post_json("/v1/events/batch", json!([order("a1"), order("a2")]))
        .await;
    assert_eq!(array.body["counts"]["accepted"], 2, "{}", array.body);

    let ndjson = format!("{}\n\n{{not json\n{}\n", order("n1"), order("n2"));
    let answer = api
        .post("/v1/events/batch", "application/x-ndjson", ndjson)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.body["counts"],
        json!({"accepted": 2, "duplicate": 0, "conflict": 0, "invalid": 1})
    );
    assert_eq!(answer.body["items"][1]["error"]["field"], "body");
}

#[tokio::test]
async fn bulk_is_the_batch_under_the_reference_apis_name() {
    let api = Api::new(TestDb::sqlite().await).await;
    let bulk = json!([
        order("b1"),
        order("b1"),
        {"tenantId": "acme", "eventId": "b2", "eventType": "x"},
    ]);
    let answer = api.post_json("/v1/events/bulk", bulk).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({
            "counts": {"accepted": 1, "duplicate": 1, "conflict": 0, "invalid": 1},
            "items": [
                {"index": 0, "eventId": "b1", "status": "accepted"},
                {"index": 1, "eventId": "b1", "status": "duplicate"},
                {"index": 2, "eventId": "b2", "status": "invalid",
                 "error": {"field": "payload", "detail": "is required"}},
            ],
        })
    );
    assert_problem(
        &api.post_json("/v1/events/bulk", json!([])).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("events"),
    );
    api.db.cleanup().await;
}

/// A 30-digit integer and a 17-significant-digit decimal, as a client writes them.
const EXACT_PAYLOAD: &str = r#"{"pi": 3.1415926535897932, "big": 123456789012345678901234567890}"#;

async fn payload_numbers_keep_their_digits(db: TestDb) {
    let api = Api::new(db).await;
    let one = |id: &str, payload: &str| {
        format!(r#"{{"tenantId":"acme","eventId":"{id}","eventType":"n","payload":{payload}}}"#)
    };
    let answer = api
        .post(
            "/v1/events",
            "application/json",
            one("exact", EXACT_PAYLOAD),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let batch = format!(
        "[{},{}]",
        one("exact-b", EXACT_PAYLOAD),
        one("exact-n", EXACT_PAYLOAD)
    );
    let answer = api.post("/v1/events/bulk", "application/json", batch).await;
    assert_eq!(answer.body["counts"]["accepted"], 2, "{}", answer.body);
    let expected = r#""payload":{"big":123456789012345678901234567890,"pi":3.1415926535897932}"#;
    for id in ["exact", "exact-b", "exact-n"] {
        let request = router::json_request(
            "GET",
            &format!("/v1/events/acme/{id}"),
            Some(ADMIN_KEY),
            None,
        );
        let text = router::send(&api.app, request).await.text();
        assert!(text.contains(expected), "{id}: {text}");
    }
    // The hash is of exactly that value: other spacing and key order is the same payload, the
    // same numbers rounded to a double are another.
    let reordered = r#"{"big":123456789012345678901234567890,"pi":3.1415926535897932}"#;
    let answer = api
        .post("/v1/events", "application/json", one("exact", reordered))
        .await;
    assert_eq!(answer.body["status"], "duplicate", "{}", answer.body);
    let rounded = r#"{"big":1.2345678901234568e29,"pi":3.141592653589793}"#;
    let answer = api
        .post("/v1/events", "application/json", one("exact", rounded))
        .await;
    assert_problem(&answer, StatusCode::CONFLICT, None);
    api.db.cleanup().await;
}

#[tokio::test]
async fn payload_numbers_keep_their_digits_on_postgres() {
    payload_numbers_keep_their_digits(TestDb::postgres().await).await;
}

#[tokio::test]
async fn payload_numbers_keep_their_digits_on_mariadb() {
    payload_numbers_keep_their_digits(TestDb::mariadb().await).await;
}

#[tokio::test]
async fn payload_numbers_keep_their_digits_on_sqlite() {
    payload_numbers_keep_their_digits(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn an_empty_or_shapeless_batch_is_refused() {
    let api = Api::new(TestDb::sqlite().await).await;
    const JSON: &str = "application/json";
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    for (content_type, body, status, field) in [
        (JSON, "[]", unprocessable, "events"),
        (JSON, r#"{"events": []}"#, unprocessable, "events"),
        ("application/x-ndjson", "\n\n", unprocessable, "events"),
        (JSON, r#"{"items": []}"#, unprocessable, "events"),
        (JSON, r#""text""#, unprocessable, "body"),
        (JSON, "[{", StatusCode::BAD_REQUEST, "body"),
    ] {
        let answer = api.post("/v1/events/batch", content_type, body).await;
        assert_problem(&answer, status, Some(field));
    }
}

#[tokio::test]
async fn reading_an_unknown_event_or_route_is_a_problem_404() {
    let api = Api::new(TestDb::sqlite().await).await;
    assert_problem(
        &api.get("/v1/events/acme/missing").await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert_problem(&api.get("/v2/nothing").await, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn health_and_readiness() {
    let api = Api::new(TestDb::postgres().await).await;
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(api.get("/readyz").await.status, StatusCode::OK);
    api.db.cleanup().await;
}

/// `found`, or what its `$ref`s lead to in the document.
fn resolved<'d>(document: &'d Value, found: &'d Value) -> &'d Value {
    match found["$ref"].as_str() {
        Some(target) => schema(document, target.trim_start_matches('#')),
        None => found,
    }
}

/// The schema `at` (a JSON pointer into the document) stands for, `$ref`s followed.
fn schema<'d>(document: &'d Value, at: &str) -> &'d Value {
    resolved(
        document,
        document.pointer(at).unwrap_or_else(|| panic!("no {at}")),
    )
}

/// The `$ref` a property's schema names: its own, or the one branch of a `oneOf` that has one
/// (utoipa writes an `Option` of a schema so), or its items'.
fn referenced(property: &Value) -> Option<&str> {
    let own = property["$ref"].as_str();
    let branch = || {
        property["oneOf"]
            .as_array()
            .and_then(|branches| branches.iter().find_map(|b| b["$ref"].as_str()))
    };
    own.or_else(branch).map(|r| r.trim_start_matches('#'))
}

/// The properties an object schema declares and the ones it requires, its `allOf` parts
/// merged.
fn declared<'d>(
    document: &'d Value,
    described: &'d Value,
) -> (Vec<(&'d String, &'d Value)>, Vec<&'d Value>) {
    let mut properties: Vec<_> = described["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .collect();
    let mut required: Vec<_> = described["required"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for part in described["allOf"].as_array().into_iter().flatten() {
        let (more, needed) = declared(document, resolved(document, part));
        properties.extend(more);
        required.extend(needed);
    }
    (properties, required)
}

/// Holds `value` against the document's schema at `at`: every required property is there,
/// and every property it has is declared, down through nested objects and arrays of them.
/// The shape only: the API's own tests check the values.
fn assert_fits(document: &Value, at: &str, value: &Value, path: &str) {
    let (properties, required) = declared(document, schema(document, at));
    for name in required {
        let name = name.as_str().expect("a property name");
        assert!(value.get(name).is_some(), "{path}: no required {name}");
    }
    for (name, field) in value.as_object().expect("an object") {
        let Some((_, property)) = properties.iter().find(|(declared, _)| *declared == name) else {
            panic!("{path}.{name} is not in the document");
        };
        let at = format!("{path}.{name}");
        match field {
            Value::Object(_) => {
                if let Some(target) = referenced(property) {
                    assert_fits(document, target, field, &at);
                }
            }
            Value::Array(elements) => {
                let Some(target) = referenced(&property["items"]) else {
                    continue;
                };
                for (i, element) in elements.iter().enumerate() {
                    if element.is_object() {
                        assert_fits(document, target, element, &format!("{at}[{i}]"));
                    }
                }
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_openapi_document_describes_the_bodies_ingest_takes_and_answers() {
    let document = serde_json::to_value(fluxgate_ingest::IngestState::openapi()).expect("json");
    let body = |path: &str, method: &str| {
        format!("/paths/{path}/{method}/requestBody/content/application~1json/schema")
    };
    let answer = |path: &str, method: &str, status: &str| {
        format!("/paths/{path}/{method}/responses/{status}/content/application~1json/schema")
    };
    let limits = Limits {
        max_event_age: TimeDelta::days(100_000),
        ..Limits::default()
    };
    let api = Api::with_limits(TestDb::sqlite().await, limits).await;

    // Every field the API takes, in the body the document describes.
    let event = json!({"tenantId": "acme", "eventId": "d-1", "eventType": "order.created",
        "eventTs": "2024-01-15T10:30:00", "source": "shop", "metadata": {"ip": "10.0.0.1"},
        "payload": {"orderId": 1}});
    assert_fits(&document, &body("~1v1~1events", "post"), &event, "request");
    let required = &schema(&document, &body("~1v1~1events", "post"))["required"];
    assert_eq!(required, &json!(["eventType", "payload"]));

    // Accepted, then the same again: a duplicate.
    for status in [StatusCode::ACCEPTED, StatusCode::OK] {
        let answered = api.post_json("/v1/events", event.clone()).await;
        assert_eq!(answered.status, status, "{}", answered.body);
        let at = answer("~1v1~1events", "post", status.as_str());
        assert_fits(&document, &at, &answered.body, status.as_str());
    }

    let read = api.get("/v1/events/acme/d-1").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let get = answer("~1v1~1events~1{tenantId}~1{eventId}", "get", "200");
    assert_fits(&document, &get, &read.body, "GET");

    let batch = json!([order("d-2"), {"tenantId": "acme", "eventId": "d-3", "eventType": "x"}]);
    for path in ["batch", "bulk"] {
        // Both JSON forms the document gives: the array, and the object holding it.
        let forms = schema(&document, &body(&format!("~1v1~1events~1{path}"), "post"));
        let list = referenced(&forms["oneOf"][0]["items"]).expect("the array form");
        let wrapped = referenced(&forms["oneOf"][1]["properties"]["events"]["items"]);
        assert_eq!(wrapped, Some(list), "{forms}");
        assert_fits(&document, list, &batch[0], path);
        let answered = api
            .post_json(&format!("/v1/events/{path}"), batch.clone())
            .await;
        assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
        assert!(
            answered.body["items"][1]["error"].is_object(),
            "{}",
            answered.body
        );
        let at = answer(&format!("~1v1~1events~1{path}"), "post", "200");
        assert_fits(&document, &at, &answered.body, path);
    }
    api.db.cleanup().await;
}
