//! metrics: `GET /v1/outbox/summary` (counts per status), `GET /v1/metrics` (counts by status
//! and type, lag, latency, throughput), `GET /v1/events/failed` (FAILED and DEAD events with
//! their last error, paginated) and `GET /metrics` (Prometheus text; on Lambda also
//! CloudWatch EMF log lines). Every figure is SQL the database answers from an index.
//!
//! A tenant key reads its own tenant only (naming another is a 404); admins read any tenant
//! or all of them. `GET /metrics` spans all tenants, so it is admin-only.

pub mod emf;
pub mod prometheus;
pub mod report;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::TimeDelta;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use fluxgate::api::{Api, ReadProblems};
use fluxgate::auth::Authenticator;
use fluxgate::error::{Error, Result};
use fluxgate::query::{QueryParams, check_range};
use fluxgate::runtime::{ApiConfig, Function};
use fluxgate::store::{FailedEvent, OutboxFilter, OutboxMetrics};
use fluxgate::tenant::TenantScope;

use report::{MetricsReport, Summary};

/// Latency window of `GET /v1/metrics` without `window`, and of `GET /metrics`.
pub const DEFAULT_WINDOW: TimeDelta = TimeDelta::minutes(15);
pub const MAX_PAGE_SIZE: u64 = 500;
pub const DEFAULT_PAGE_SIZE: u64 = 50;

/// metrics' settings, from the environment (each also a flag; `--help` lists them).
#[derive(clap::Parser)]
#[command(about = "Outbox figures over HTTP and Prometheus", version)]
pub struct Config {
    #[command(flatten)]
    pub api: ApiConfig,
}

/// metrics as a function: its store, its callers' keys and its routes.
pub async fn function(config: Config) -> Result<Function> {
    let (store, auth) = config.api.open().await?;
    Ok(Function::http(service(store, auth), config.api.port()))
}

#[derive(Clone, FromRef)]
pub struct MetricsState {
    pub store: Arc<dyn OutboxMetrics>,
    /// Who may read which tenant's figures (the `TenantScope` extractor asks it).
    pub auth: Authenticator,
}

fluxgate::http_api! {
    MetricsState, "fluxgate metrics",
    tag "metrics": "Outbox figures: counts, lag, latency, throughput, failures",
    routes [summary, metrics, failed_events, prometheus_text],
}

/// metrics as a whole service (see [`Api::into_service`]).
pub fn service(store: Arc<dyn OutboxMetrics>, auth: Authenticator) -> Router {
    let state = MetricsState {
        store: store.clone(),
        auth,
    };
    state.into_service(store)
}

/// The query parameters that choose the events counted, as documented; [`Read::filter`]
/// reads them (through [`QueryParams`], so that a bad one is named in the answer).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by QueryParams, never built
struct FilterQuery {
    /// One tenant (a tenant key: its own, the default)
    #[param(rename = "tenantId")]
    tenant_id: Option<String>,
    /// Received at or after (RFC 3339; without an offset, UTC)
    from: Option<String>,
    /// Received before (RFC 3339; without an offset, UTC)
    to: Option<String>,
}

/// What a read of figures starts from: the store, who calls, and the query string, whose
/// parameters each handler names (so that an unknown or bad one is named in the answer).
pub struct Read {
    store: Arc<dyn OutboxMetrics>,
    scope: TenantScope,
    raw_query: Option<String>,
}

impl FromRequestParts<MetricsState> for Read {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &MetricsState) -> Result<Self> {
        let scope = TenantScope::from_request_parts(parts, state).await?;
        Ok(Self::new(state, scope, parts.uri.query()))
    }
}

impl Read {
    /// A read of `state`'s figures by `scope`, with the query string `raw_query`.
    pub fn new(state: &MetricsState, scope: TenantScope, raw_query: Option<&str>) -> Self {
        Self {
            store: state.store.clone(),
            scope,
            raw_query: raw_query.map(str::to_owned),
        }
    }

    /// The query's parameters, each of them one of `known`.
    fn params(&self, known: &[&str]) -> Result<QueryParams> {
        QueryParams::parse(self.raw_query.as_deref(), known)
    }

    /// `tenantId`, `from`, `to` of a query, held to what the caller may read.
    fn filter(&self, query: &QueryParams) -> Result<OutboxFilter> {
        let requested = query.text("tenantId")?;
        let tenant_id = self.scope.tenant_filter(requested.as_deref())?;
        let from = query.time("from")?;
        let to = query.time("to")?;
        check_range(from, to)?;
        Ok(OutboxFilter {
            tenant_id,
            from,
            to,
        })
    }
}

/// Counts per status (pending, published, done, failed, dead) and their total.
#[utoipa::path(get, path = "/v1/outbox/summary", tag = "metrics",
    params(FilterQuery),
    responses((status = 200, description = "Counts per status", body = Summary), ReadProblems))]
pub async fn summary(read: Read) -> Result<Json<Summary>> {
    let filter = read.filter(&read.params(&["tenantId", "from", "to"])?)?;
    let counts = read.store.status_counts(&filter).await?;
    Ok(Json(Summary::new(&filter, counts)))
}

/// Counts by status and type, lag, receive-to-DONE latency (avg, p50, p95), throughput.
#[utoipa::path(get, path = "/v1/metrics", tag = "metrics",
    params(FilterQuery,
           ("window" = Option<String>, Query, description = "Latency window ending now, e.g. 15m (default) or 1h; 1m to 7d")),
    responses((status = 200, description = "The figures", body = MetricsReport), ReadProblems))]
pub async fn metrics(read: Read) -> Result<Json<MetricsReport>> {
    let query = read.params(&["tenantId", "from", "to", "window"])?;
    let filter = read.filter(&query)?;
    let window = query.duration(
        "window",
        TimeDelta::minutes(1),
        TimeDelta::days(7),
        DEFAULT_WINDOW,
    )?;
    let report = report::collect(read.store.as_ref(), &filter, window, fluxgate::now()).await?;
    Ok(Json(report))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedPage {
    pub items: Vec<FailedEvent>,
    pub page: u64,
    pub limit: u64,
    /// FAILED and DEAD events in all (of the tenant, when one is named).
    pub total: u64,
}

/// FAILED and DEAD events, newest received first, with their last error.
#[utoipa::path(get, path = "/v1/events/failed", tag = "metrics",
    params(("tenantId" = Option<String>, Query, description = "One tenant (a tenant key: its own, the default)"),
           ("page" = Option<u64>, Query, description = "1-based page (default 1)"),
           ("limit" = Option<u64>, Query, description = "Events per page, 1 to 500 (default 50)")),
    responses((status = 200, description = "One page", body = FailedPage), ReadProblems))]
pub async fn failed_events(read: Read) -> Result<Json<FailedPage>> {
    let query = read.params(&["tenantId", "page", "limit"])?;
    let tenant = read
        .scope
        .tenant_filter(query.text("tenantId")?.as_deref())?;
    let page = query.number("page", 1, 1_000_000, 1)?;
    let limit = query.number("limit", 1, MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE)?;
    let (items, total) = read
        .store
        .failed_events(tenant.as_deref(), (page - 1) * limit, limit as u32)
        .await?;
    Ok(Json(FailedPage {
        items,
        page,
        limit,
        total,
    }))
}

/// Prometheus text (OpenMetrics) for all tenants; on Lambda also an EMF log line.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses(
        (status = 200, description = "Counters and gauges", content_type = "application/openmetrics-text", body = String),
        (status = 403, description = "Not an admin", content_type = "application/problem+json")))]
pub async fn prometheus_text(
    State(state): State<MetricsState>,
    scope: TenantScope,
) -> Result<Response> {
    scope.require_admin()?;
    let report = report::collect(
        state.store.as_ref(),
        &OutboxFilter::default(),
        DEFAULT_WINDOW,
        fluxgate::now(),
    )
    .await?;
    fluxgate::runtime::emit_metrics(&emf::render(&report));
    let text = prometheus::render(&report)
        .map_err(|e| Error::internal_caused("cannot write the Prometheus text", e))?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(prometheus::CONTENT_TYPE),
    );
    Ok(response)
}
