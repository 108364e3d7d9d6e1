//! HTTP plumbing every function shares: reading bodies within limits (gzip included),
//! correlation ids, health routes.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flate2::read::GzDecoder;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::{Error, ErrorReport, Result};
use crate::store::Readiness;

pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// Media types a body may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    NdJson,
}

/// Reads the body up to `limit` bytes after decoding (`Content-Encoding: gzip` or none), and
/// tells its format from `Content-Type` (JSON when absent).
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(BodyFormat, Bytes)> {
    let format = body_format(headers)?;
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim())
    {
        None | Some("") | Some("identity") => false,
        Some(v) if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") => true,
        Some(other) => {
            return Err(Error::UnsupportedMedia {
                header: "Content-Encoding",
                value: other.to_owned(),
            });
        }
    };
    let raw = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                Error::TooLarge { limit }
            } else {
                Error::malformed("body", format!("could not be read: {e}"))
            }
        })?
        .to_bytes();
    if !gzip {
        return Ok((format, raw));
    }
    // Read one byte past the limit to tell "exactly at the limit" from "too large" without
    // inflating a gzip bomb any further.
    let mut decoded = Vec::with_capacity(raw.len() * 4);
    GzDecoder::new(raw.as_ref())
        .take(limit as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|e| Error::malformed("body", format!("is not valid gzip: {e}")))?;
    if decoded.len() > limit {
        return Err(Error::TooLarge { limit });
    }
    Ok((format, Bytes::from(decoded)))
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
    };
    let media = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" | "text/json" => Ok(BodyFormat::Json),
        m if m.ends_with("+json") => Ok(BodyFormat::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/json-seq" => Ok(BodyFormat::NdJson),
        _ => Err(Error::UnsupportedMedia {
            header: "Content-Type",
            value: format!(
                "{} (send application/json, or application/x-ndjson to the batch endpoint)",
                value.to_str().unwrap_or("(not text)")
            ),
        }),
    }
}

/// The body as UTF-8 text, or an error that says where it stops being UTF-8.
pub fn utf8(body: &[u8]) -> Result<&str> {
    std::str::from_utf8(body).map_err(|e| {
        Error::malformed(
            "body",
            format!(
                "is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Parses JSON into `T`, telling a syntax error (400, the body) from a value of the wrong
/// type (422, naming the field by its path).
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(&e))?;
    de.end()
        .map_err(|e| Error::malformed("body", format!("is not valid JSON: {e}")))?;
    Ok(value)
}

fn json_error(error: &serde_path_to_error::Error<serde_json::Error>) -> Error {
    let inner = error.inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return Error::malformed("body", format!("is not valid JSON: {inner}"));
    }
    let path = error.path().to_string();
    let field = if path == "." || path.is_empty() {
        "body".to_owned()
    } else {
        path
    };
    // serde's message carries its own position; the field name is what the client needs.
    let detail = inner.to_string();
    let detail = detail
        .split(" at line ")
        .next()
        .unwrap_or(&detail)
        .to_owned();
    Error::invalid(field, detail)
}

/// The request's correlation id (taken from `X-Correlation-Id` or made by the middleware).
#[derive(Debug, Clone)]
pub struct CorrelationId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get(&CORRELATION_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned);
        Ok(Self(id))
    }
}

/// Takes `X-Correlation-Id` or makes one, opens a span with it so every log line of the
/// request carries it, echoes it on the response, and logs an error answer once (see
/// [`log_error`]).
pub fn with_observability(router: Router) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(CORRELATION_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    // One line per request at INFO, with status and latency: the access log.
                    .on_response(DefaultOnResponse::new().level(Level::INFO))
                    // A 5xx is logged once, with its cause, by `log_error`; not again here.
                    .on_failure(())
                    .make_span_with(|request: &Request<Body>| {
                        let correlation_id = request
                            .headers()
                            .get(&CORRELATION_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!(
                            "request",
                            method = %request.method(),
                            path = %request.uri().path(),
                            correlation_id = %correlation_id,
                        )
                    }),
            )
            .layer(PropagateRequestIdLayer::new(CORRELATION_ID))
            .layer(axum::middleware::map_response(log_error)),
    )
}

/// The one place an error answer is logged, inside the request's span: `error!` for a 5xx,
/// `info!` for a 4xx, with the error's whole cause chain. The report is taken off the
/// response, so a router served through this twice still logs it once.
async fn log_error(mut response: Response) -> Response {
    if let Some(report) = response.extensions_mut().remove::<ErrorReport>() {
        if report.status.is_server_error() {
            tracing::error!(status = report.status.as_u16(), error = %report.message, "request failed");
        } else {
            tracing::info!(status = report.status.as_u16(), error = %report.message, "request rejected");
        }
    }
    response
}

/// A function as a whole HTTP service: its `routes` (with their state), health checks whose
/// `/readyz` pings `readiness`, problem+json 404s, correlation ids and the access log.
pub fn service(routes: Router, readiness: Arc<dyn Readiness>) -> Router {
    let routes = routes.merge(health_routes(readiness));
    with_observability(
        routes
            .method_not_allowed_fallback(method_not_allowed)
            .fallback(not_found),
    )
}

/// `GET /healthz` (the process answers) and `GET /readyz` (the database answers too).
pub fn health_routes(store: Arc<dyn Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(store)
}

#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "The process answers", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "meta", responses(
    (status = 200, description = "The process and its database answer", body = String),
    (status = 503, description = "The database does not answer", content_type = "application/problem+json")))]
pub(crate) async fn readyz(State(store): State<Arc<dyn Readiness>>) -> impl IntoResponse {
    match store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => e.into_response(),
    }
}

/// A path served with other methods: problem+json like every other refusal (axum keeps the
/// `Allow` header it lists them in).
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    Error::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// Unknown routes answer with a problem document like every other error.
pub async fn not_found(uri: axum::http::Uri) -> Error {
    Error::NotFound(format!("route {}", uri.path()))
}

/// Percent-encodes an id for use as one path segment (event ids may hold `/` or spaces).
pub fn encode_path_segment(segment: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}
