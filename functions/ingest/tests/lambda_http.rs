//! The ingest binary on AWS Lambda: the same router and the same answers through API Gateway's
//! HTTP API (payload 2.0, on a named stage), its REST API (payload 1.0) and a Function URL,
//! invoked through cargo-lambda's Lambda Runtime API against a real PostgreSQL database.

use fluxgate::store::OutboxStatus;
use std::time::Duration;

use fluxgate::event::Event;
use fluxgate_tests::aws::{TestQueue, moto_env};
use fluxgate_tests::lambda::LambdaFunction;
use fluxgate_tests::{TestDb, key, tenant_key, unpack};
use serde_json::{Value, json};

const TENANT: &str = "acme";

fn event_body(event_id: &str) -> String {
    json!({
        "tenantId": TENANT,
        "eventId": event_id,
        "eventType": "order.created",
        "eventTs": fluxgate::now().to_rfc3339(),
        "payload": {"total": 42}
    })
    .to_string()
}

/// An HTTP API (payload 2.0) request; `stage` `$default` is also the shape of a Function URL.
fn http_api_event(
    method: &str,
    stage: &str,
    path: &str,
    api_key: &str,
    body: Option<String>,
) -> Value {
    let raw_path = if stage == "$default" {
        path.to_owned()
    } else {
        format!("/{stage}{path}")
    };
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": {
            "authorization": format!("Bearer {api_key}"),
            "content-type": "application/json",
            "host": "abc123.execute-api.us-east-1.amazonaws.com",
            "x-correlation-id": "corr-lambda-1"
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "curl/8"
            },
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": stage,
            "time": "22/Nov/2026:05:00:00 +0000",
            "timeEpoch": 1_795_237_200_000_u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// A REST API (payload 1.0) request through a `{proxy+}` resource on stage `prod`.
fn rest_api_event(method: &str, path: &str, api_key: &str) -> Value {
    json!({
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Authorization": format!("Bearer {api_key}"), "Host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {"Authorization": [format!("Bearer {api_key}")], "Host": ["abc123.execute-api.us-east-1.amazonaws.com"]},
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": {"proxy": path.trim_start_matches('/')},
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "resourceId": "res1",
            "stage": "prod",
            "requestId": "req-2",
            "identity": {"sourceIp": "192.0.2.1", "userAgent": "curl/8"},
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "apiId": "abc123",
            "path": format!("/prod{path}"),
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": 1_795_237_200_000_u64
        },
        "body": null,
        "isBase64Encoded": false
    })
}

fn header<'a>(answer: &'a Value, name: &str) -> Option<&'a str> {
    answer["headers"]
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .and_then(|(_, value)| value.as_str())
}

/// `POST /v1/events` with `body`, as API Gateway's HTTP API sends it on `stage`.
async fn post_event(function: &mut LambdaFunction, stage: &str, key: &str, body: String) -> Value {
    let event = http_api_event("POST", stage, "/v1/events", key, Some(body));
    match function.invoke(&event).await {
        Ok(answer) => answer,
        Err(e) => panic!("invoke failed: {e}\n{}", function.log_text()),
    }
}

fn body_json(answer: &Value) -> Value {
    let body = answer["body"].as_str().expect("a text body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body {body:?} is not JSON: {e}"))
}

#[tokio::test]
async fn ingest_answers_api_gateway_and_function_url_events_like_its_http_server() {
    let db = TestDb::postgres().await;
    let api_key = tenant_key(db.store.as_ref(), TENANT).await;
    let env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("FLUXGATE_DB_MIGRATE", "false".to_owned()),
    ];
    let mut function =
        LambdaFunction::start(env!("CARGO_BIN_EXE_fluxgate-ingest").as_ref(), &env).await;

    // HTTP API on stage `prod`: the stage is not part of the route
    let answer = post_event(&mut function, "prod", &api_key, event_body("e-1")).await;
    assert_eq!(answer["statusCode"], 202, "{answer}");
    assert_eq!(body_json(&answer)["status"], "accepted");
    assert_eq!(header(&answer, "x-correlation-id"), Some("corr-lambda-1"));
    let stored = db.stored(&key(TENANT, "e-1")).await;
    assert_eq!(stored.outbox.status, OutboxStatus::Pending);
    assert_eq!(
        stored.event.correlation_id.as_deref(),
        Some("corr-lambda-1")
    );

    // the same event again through a Function URL: a duplicate, 200
    let answer = post_event(&mut function, "$default", &api_key, event_body("e-1")).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(body_json(&answer)["status"], "duplicate");

    // the REST API reads it back
    let answer = function
        .invoke(&rest_api_event("GET", "/v1/events/acme/e-1", &api_key))
        .await
        .expect("invoke");
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(body_json(&answer)["eventId"], "e-1");

    // bad input: the same problem document, naming the field, and nothing written
    let bad = json!({"tenantId": TENANT, "eventId": "e-2", "eventType": "", "payload": {}});
    let answer = post_event(&mut function, "prod", &api_key, bad.to_string()).await;
    assert_eq!(answer["statusCode"], 422, "{answer}");
    assert_eq!(
        header(&answer, "content-type"),
        Some("application/problem+json")
    );
    assert_eq!(body_json(&answer)["field"], "eventType");
    assert!(
        db.store
            .get_event(&key(TENANT, "e-2"))
            .await
            .expect("get")
            .is_none()
    );

    // no key: 401 through Lambda as on a port
    let answer = function
        .invoke(&http_api_event(
            "GET",
            "prod",
            "/v1/events/acme/e-1",
            "not-a-key",
            None,
        ))
        .await
        .expect("invoke");
    assert_eq!(answer["statusCode"], 401, "{answer}");

    drop(function);
    db.cleanup().await;
}

/// Eager publish on Lambda, set up as `template.yaml` sets it up: the event is on the SQS queue
/// (moto) and its outbox row PUBLISHED by the time ingest answers, without a drain run; a
/// duplicate publishes nothing.
#[tokio::test]
async fn ingest_publishes_what_it_stored_to_sqs_before_answering() {
    let db = TestDb::postgres().await;
    let api_key = tenant_key(db.store.as_ref(), TENANT).await;
    let queue = TestQueue::create().await;
    let mut env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("FLUXGATE_DB_MIGRATE", "false".to_owned()),
        ("FLUXGATE_QUEUE", "sqs".to_owned()),
        ("FLUXGATE_SQS_QUEUE_URL", queue.url.clone()),
    ];
    env.extend(moto_env());
    let mut function =
        LambdaFunction::start(env!("CARGO_BIN_EXE_fluxgate-ingest").as_ref(), &env).await;

    let post = http_api_event(
        "POST",
        "prod",
        "/v1/events",
        &api_key,
        Some(event_body("eager-1")),
    );
    let answer = function
        .invoke(&post)
        .await
        .unwrap_or_else(|e| panic!("invoke failed: {e}\n{}", function.log_text()));
    assert_eq!(answer["statusCode"], 202, "{answer}");
    assert_eq!(
        db.stored(&key(TENANT, "eager-1")).await.outbox.status,
        OutboxStatus::Published,
        "published before the answer\n{}",
        function.log_text()
    );
    let messages = queue.receive(1, Duration::from_secs(5)).await;
    let carried = unpack(
        messages
            .iter()
            .map(|m| m.body().unwrap_or_default().as_bytes()),
    );
    assert_eq!(
        carried.iter().map(Event::key).collect::<Vec<_>>(),
        vec![key(TENANT, "eager-1")]
    );

    let answer = function.invoke(&post).await.expect("invoke");
    assert_eq!(answer["statusCode"], 200, "a duplicate: {answer}");
    assert!(
        queue.leftovers().await.is_empty(),
        "a duplicate is not published again"
    );
    queue.delete().await;
    db.cleanup().await;
}
