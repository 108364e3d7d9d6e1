//! Requests to an axum router in-process (no socket), and its answer read back whole: status,
//! headers, and the body as bytes, JSON or text.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

/// What a router answered.
pub struct RouterAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RouterAnswer {
    /// A header as text, when present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Content-Type`, or empty.
    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }

    /// The body as JSON, or `Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` through `app` and reads the whole answer.
pub async fn send(app: &Router, request: Request<Body>) -> RouterAnswer {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the whole body");
    RouterAnswer {
        status,
        headers,
        body,
    }
}

/// A request with a JSON `body` (none when `None`) and, when given, `Authorization: Bearer key`.
pub fn json_request(
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("a valid request")
}
