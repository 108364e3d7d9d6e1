//! ingest: `POST /v1/events`, `POST /v1/events/batch` (and its alias `/v1/events/bulk`),
//! `GET /v1/events/{tenantId}/{eventId}`.
//!
//! Every rule is checked before anything is written; each accepted event is stored with its
//! outbox row in one transaction, so nothing answered with a 2xx can be lost.

mod batch;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use fluxgate::api::Api;
use fluxgate::auth::Authenticator;
use fluxgate::config::Limits;
use fluxgate::error::{Error, Problem, Result};
use fluxgate::event::{Event, EventInput, EventKey};
use fluxgate::http::{self as fhttp, BodyFormat, CorrelationId};
use fluxgate::runtime::{ApiConfig, Function};
use fluxgate::store::{EventWriter, InsertOutcome, OutboxState};
use fluxgate::tenant::TenantScope;
use fluxgate_outbox_drain::EagerConfig;
use utoipa::{IntoResponses, ToSchema};

/// ingest's settings, from the environment (each also a flag; `--help` lists them).
#[derive(clap::Parser)]
#[command(about = "Takes events in over HTTP", version)]
pub struct Config {
    #[command(flatten)]
    pub api: ApiConfig,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub eager: EagerConfig,
}

/// ingest as a function: its store (publishing what it stores at once, where a queue is
/// configured), its callers' keys and its routes.
pub async fn function(config: Config) -> Result<Function> {
    let (store, auth) = config.api.open().await?;
    let writer = config.eager.writer(store).await?;
    let port = config.api.port();
    Ok(Function::http(service(writer, config.limits, auth), port))
}

#[derive(Clone, FromRef)]
pub struct IngestState {
    /// Only what ingest does with the store: write events and read one back.
    pub store: Arc<dyn EventWriter>,
    pub limits: Arc<Limits>,
    /// Who may write and read which tenant's events (the `TenantScope` extractor asks it).
    pub auth: Authenticator,
}

fluxgate::http_api! {
    IngestState, "fluxgate ingest",
    tag "ingest": "Events in, stored once per (tenant, event id) with their outbox row",
    schemas [batch::BatchResponse],
    routes [post_event, batch::post_batch, batch::post_bulk, get_event],
}

/// ingest as a whole service (see [`Api::into_service`]).
pub fn service(store: Arc<dyn EventWriter>, limits: Limits, auth: Authenticator) -> Router {
    let state = IngestState {
        store: store.clone(),
        limits: Arc::new(limits),
        auth,
    };
    state.into_service(store)
}

/// The answer to one event: its key, and whether it was stored now or before.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AcceptedEvent)]
struct Accepted<'a> {
    tenant_id: &'a str,
    event_id: &'a str,
    /// `accepted` (202) or `duplicate` (200); the same id with a different payload is a 409
    /// problem instead.
    #[schema(value_type = AcceptedStatus)]
    status: InsertOutcome,
}

/// `status` of an [`Accepted`] answer, for the document.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(description = "Whether the event was stored now or before.")]
#[allow(dead_code)] // never built: it describes `status`
enum AcceptedStatus {
    /// Stored now, with its outbox row (202).
    Accepted,
    /// Stored before with the same payload; nothing written (200).
    Duplicate,
}

/// What every write of events may answer besides its own answers.
#[derive(IntoResponses)]
#[allow(dead_code)] // never built: it describes the answers
pub(crate) enum WriteProblems {
    /// Not JSON, not UTF-8, bad gzip
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(Problem),
    /// A `tenantId` that is not the key's tenant; nothing is written
    #[response(status = 403, content_type = "application/problem+json")]
    ForeignTenant(Problem),
    /// Body too large
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// A content type or encoding it does not read
    #[response(status = 415, content_type = "application/problem+json")]
    Unsupported(Problem),
    /// The database is unavailable; nothing was written
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// One event. The body: `tenantId`, `eventId` (optional), `eventType`, `eventTs` (optional),
/// `payload` (a JSON object), `source`, `metadata`.
#[utoipa::path(post, path = "/v1/events", tag = "ingest",
    request_body(content = EventInput, description = "One event", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: stored with its outbox row", body = Accepted),
        (status = 200, description = "A duplicate: the same id with the same payload; nothing new is written", body = Accepted),
        (status = 409, description = "The id is taken by a different payload", content_type = "application/problem+json"),
        (status = 422, description = "A field breaks a rule; `field` names it", content_type = "application/problem+json"),
        WriteProblems))]
async fn post_event(
    State(state): State<IngestState>,
    scope: TenantScope,
    CorrelationId(correlation_id): CorrelationId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let (format, bytes) = fhttp::read_body(&headers, body, state.limits.max_body_bytes).await?;
    if format != BodyFormat::Json {
        return Err(Error::UnsupportedMedia {
            header: "Content-Type",
            value: "NDJSON is for /v1/events/batch; send one event as application/json".into(),
        });
    }
    let input: EventInput = fhttp::parse_json(fhttp::utf8(&bytes)?)?;
    let event = input.validate(
        &scope,
        &state.limits,
        fluxgate::now(),
        correlation_id.as_deref(),
    )?;
    let outcome = state
        .store
        .insert_events(std::slice::from_ref(&event))
        .await?
        .first()
        .copied()
        .ok_or_else(|| Error::internal("the store answered no outcome"))?;
    let status = match outcome {
        InsertOutcome::Accepted => StatusCode::ACCEPTED,
        InsertOutcome::Duplicate => StatusCode::OK,
        InsertOutcome::Conflict => {
            return Err(Error::Conflict {
                tenant_id: event.tenant_id,
                event_id: event.event_id,
            });
        }
    };
    let body = Accepted {
        tenant_id: &event.tenant_id,
        event_id: &event.event_id,
        status: outcome,
    };
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(value) = event_location(&event).parse() {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

fn event_location(event: &Event) -> String {
    format!(
        "/v1/events/{}/{}",
        event.tenant_id,
        fhttp::encode_path_segment(&event.event_id)
    )
}

/// An event as stored, with its outbox row.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct EventView {
    #[serde(flatten)]
    event: Event,
    outbox: OutboxState,
}

/// The event with its outbox state.
#[utoipa::path(get, path = "/v1/events/{tenantId}/{eventId}", tag = "ingest",
    params(("tenantId" = String, Path, description = "Tenant of the event"),
           ("eventId" = String, Path, description = "Id of the event")),
    responses(
        (status = 200, description = "The event and its outbox row", body = EventView),
        (status = 404, description = "No such event (or another tenant's)", content_type = "application/problem+json")))]
async fn get_event(
    State(state): State<IngestState>,
    scope: TenantScope,
    Path((tenant_id, event_id)): Path<(String, String)>,
) -> Result<axum::Json<EventView>> {
    let not_found = || Error::NotFound(format!("event {event_id} of tenant {tenant_id}"));
    // A tenant that may not see this one gets the same answer as for a missing event, so
    // tenants cannot probe each other's ids.
    if !scope.may_read(&tenant_id) {
        return Err(not_found());
    }
    let key = EventKey {
        tenant_id: tenant_id.clone(),
        event_id: event_id.clone(),
    };
    let stored = state.store.get_event(&key).await?.ok_or_else(not_found)?;
    Ok(axum::Json(EventView {
        event: stored.event,
        outbox: stored.outbox,
    }))
}
