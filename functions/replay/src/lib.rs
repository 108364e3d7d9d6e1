//! replay: `POST /v1/events/{tenantId}/{eventId}/replay` (one event), `POST /v1/replay` (by
//! tenant, status, time range and limit, or a dry run that only counts) and
//! `POST /v1/dlq/redrive` (the queue's dead letters back to the queue), all admin-only (a
//! tenant key gets 403); and `POST /v1/outbox/retry` (the reference outbox API's retry of a
//! tenant's FAILED rows), which a tenant's own key may call too. Each replay is recorded
//! (when, by whom, how many) in the `replays` table, and each event counts its replays.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequest, Path, RawQuery, Request, State};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use fluxgate::api::{AdminProblems, Api};
use fluxgate::auth::{Admin, Authenticator};
use fluxgate::dead_letters::{self, DeadLetters, RedriveReport};
use fluxgate::error::{Error, Result};
use fluxgate::event::EventKey;
use fluxgate::http as fhttp;
use fluxgate::query::{QueryParams, check_range};
use fluxgate::queue::QueueConfig;
use fluxgate::runtime::{ApiConfig, Function};
use fluxgate::store::{
    OutboxFilter, OutboxReplay, OutboxStatus, REPLAYABLE, ReplayFilter, ReplayOne,
};
use fluxgate::tenant::TenantScope;

/// Most rows one `POST /v1/replay` moves; larger replays are several requests.
pub const MAX_REPLAY_LIMIT: u32 = 100_000;
/// Rows a `POST /v1/replay` without `limit` moves at most.
pub const DEFAULT_REPLAY_LIMIT: u32 = 1000;
/// FAILED rows one `POST /v1/outbox/retry` without `limit` moves at most.
pub const DEFAULT_RETRY_LIMIT: u64 = 100;
/// Dead letters one redrive moves at most, and by default.
pub const MAX_REDRIVE: u64 = 100_000;
pub const DEFAULT_REDRIVE: u64 = 1000;
/// Replay bodies are small.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// replay's settings, from the environment (each also a flag; `--help` lists them). The queue
/// settings name the dead letters it redrives ([`dead_letters::connect`]).
#[derive(clap::Parser)]
#[command(about = "Replays FAILED and DEAD events", version)]
pub struct Config {
    #[command(flatten)]
    pub api: ApiConfig,
    #[command(flatten)]
    pub queue: QueueConfig,
}

/// replay as a function: its store, its callers' keys, the queue's dead letters, its routes.
pub async fn function(config: Config) -> Result<Function> {
    let (store, auth) = config.api.open().await?;
    let dead_letters = dead_letters::connect(&config.queue).await?;
    Ok(Function::http(
        service(store, dead_letters, auth),
        config.api.port(),
    ))
}

#[derive(Clone, FromRef)]
pub struct ReplayState {
    pub store: Arc<dyn OutboxReplay>,
    /// The queue's dead letters; `None` where this process cannot reach them.
    pub dead_letters: Option<Arc<dyn DeadLetters>>,
    /// Who may replay which tenant's events (the `TenantScope` extractor asks it).
    pub auth: Authenticator,
}

fluxgate::http_api! {
    ReplayState, "fluxgate replay",
    tag "replay": "FAILED and DEAD events back to PENDING; dead-letter redrive (admin)",
    routes [replay_event, replay_matching, redrive, retry_failed],
}

/// replay as a whole service (see [`Api::into_service`]).
pub fn service(
    store: Arc<dyn OutboxReplay>,
    dead_letters: Option<Arc<dyn DeadLetters>>,
    auth: Authenticator,
) -> Router {
    let state = ReplayState {
        store: store.clone(),
        dead_letters,
        auth,
    };
    state.into_service(store)
}

/// Who is replaying, for the record. Key ids come with authentication; until then an admin
/// caller (or local mode without authentication) is recorded as "admin".
fn requested_by(scope: &TenantScope) -> String {
    match scope {
        TenantScope::Tenant(tenant) => format!("tenant:{tenant}"),
        TenantScope::Admin | TenantScope::Open => "admin".to_owned(),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayedEvent {
    pub tenant_id: String,
    pub event_id: String,
    /// Always `PENDING`: the drain publishes it again on its next run.
    pub status: OutboxStatus,
}

/// One FAILED or DEAD event back to PENDING, due now, attempts reset.
#[utoipa::path(post, path = "/v1/events/{tenantId}/{eventId}/replay", tag = "replay",
    params(("tenantId" = String, Path, description = "Tenant of the event"),
           ("eventId" = String, Path, description = "Id of the event")),
    responses(
        (status = 200, description = "The event is PENDING again", body = ReplayedEvent),
        (status = 403, description = "Not an admin", content_type = "application/problem+json"),
        (status = 404, description = "No such event", content_type = "application/problem+json"),
        (status = 409, description = "The event is not FAILED or DEAD", content_type = "application/problem+json")))]
pub async fn replay_event(
    State(state): State<ReplayState>,
    Admin(scope): Admin,
    Path((tenant_id, event_id)): Path<(String, String)>,
) -> Result<Json<ReplayedEvent>> {
    let key = EventKey {
        tenant_id,
        event_id,
    };
    let outcome = state
        .store
        .replay_event(&key, &requested_by(&scope), fluxgate::now())
        .await?;
    match outcome {
        ReplayOne::Replayed => {
            tracing::info!(tenant_id = %key.tenant_id, event_id = %key.event_id, "event replayed");
            Ok(Json(ReplayedEvent {
                tenant_id: key.tenant_id,
                event_id: key.event_id,
                status: OutboxStatus::Pending,
            }))
        }
        ReplayOne::NotReplayable(status) => Err(Error::WrongState(format!(
            "event {} of tenant {} is {status}; only FAILED or DEAD events are replayed",
            key.event_id, key.tenant_id
        ))),
        ReplayOne::NotFound => Err(Error::NotFound(format!(
            "event {} of tenant {}",
            key.event_id, key.tenant_id
        ))),
    }
}

/// Which events to replay. `from`/`to` bound the time the events were received.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only this tenant's events; all tenants when absent.
    pub tenant_id: Option<String>,
    /// `FAILED`, `DEAD` or both (the default).
    #[serde(default)]
    pub statuses: Vec<OutboxStatus>,
    /// Received at or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Received before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Most events to move (1–100000, default 1000), oldest first.
    pub limit: Option<u32>,
    /// Only count what would move; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayAnswer {
    pub dry_run: bool,
    /// Events moved back to PENDING; on a dry run, how many would be.
    pub replayed: u64,
}

impl ReplayRequest {
    fn into_filter(self) -> Result<(ReplayFilter, bool)> {
        for (i, status) in self.statuses.iter().enumerate() {
            if !REPLAYABLE.contains(status) {
                return Err(Error::invalid(
                    format!("statuses[{i}]"),
                    format!("{status} cannot be replayed (only FAILED or DEAD)"),
                ));
            }
        }
        if let Some(tenant) = &self.tenant_id
            && tenant.trim().is_empty()
        {
            return Err(Error::invalid("tenantId", "must not be empty"));
        }
        check_range(self.from, self.to)?;
        let limit = self.limit.unwrap_or(DEFAULT_REPLAY_LIMIT);
        if !(1..=MAX_REPLAY_LIMIT).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be from 1 to {MAX_REPLAY_LIMIT}"),
            ));
        }
        let statuses = if self.statuses.is_empty() {
            REPLAYABLE.to_vec()
        } else {
            self.statuses
        };
        Ok((
            ReplayFilter {
                rows: OutboxFilter {
                    tenant_id: self.tenant_id,
                    from: self.from,
                    to: self.to,
                },
                statuses,
                limit,
            },
            self.dry_run,
        ))
    }
}

/// FAILED/DEAD events by filter back to PENDING, in transactions of at most 500 rows.
#[utoipa::path(post, path = "/v1/replay", tag = "replay", request_body = ReplayRequest,
    responses(
        (status = 200, description = "How many events moved (or would move, on a dry run)", body = ReplayAnswer),
        AdminProblems))]
pub async fn replay_matching(
    State(state): State<ReplayState>,
    Admin(scope): Admin,
    OptionalJson(request): OptionalJson<ReplayRequest>,
) -> Result<Json<ReplayAnswer>> {
    let (filter, dry_run) = request.into_filter()?;
    let replayed = if dry_run {
        state.store.count_replayable(&filter).await?
    } else {
        state
            .store
            .replay_matching(&filter, &requested_by(&scope), fluxgate::now())
            .await?
    };
    Ok(Json(ReplayAnswer { dry_run, replayed }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedriveRequest {
    /// Most messages to move (1–100000, default 1000).
    pub max: Option<u64>,
}

/// The queue's dead letters back to the queue. A message leaves the dead-letter side only
/// once it is on the queue again, so a redrive that stops half-way loses nothing.
#[utoipa::path(post, path = "/v1/dlq/redrive", tag = "replay", request_body(content = RedriveRequest, description = "Optional"),
    responses(
        (status = 200, description = "Messages moved back", body = RedriveReport),
        (status = 404, description = "No dead-letter queue is configured here", content_type = "application/problem+json"),
        AdminProblems))]
pub async fn redrive(
    State(state): State<ReplayState>,
    _: Admin,
    OptionalJson(request): OptionalJson<RedriveRequest>,
) -> Result<Json<RedriveReport>> {
    let max = request.max.unwrap_or(DEFAULT_REDRIVE);
    if !(1..=MAX_REDRIVE).contains(&max) {
        return Err(Error::invalid(
            "max",
            format!("must be from 1 to {MAX_REDRIVE}"),
        ));
    }
    let dead_letters = state.dead_letters.as_ref().ok_or_else(|| {
        Error::NotFound("dead-letter queue (none is configured for this process)".into())
    })?;
    let report = dead_letters.redrive(max).await?;
    tracing::info!(moved = report.moved, remaining = ?report.remaining, "dead letters redriven");
    Ok(Json(report))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryAnswer {
    pub tenant_id: String,
    /// FAILED rows made PENDING and due now.
    pub retried_count: u64,
    /// `Retried N failed records`, as the reference outbox API says it.
    pub message: String,
}

/// At most `limit` FAILED rows of the tenant, oldest first, back to PENDING and due now (the
/// drain publishes them on its next run); DEAD rows stay DEAD. A tenant's own key may retry
/// its own tenant (`tenantId` may then be left out); the admin key names any tenant.
#[utoipa::path(post, path = "/v1/outbox/retry", tag = "replay",
    params(("tenantId" = Option<String>, Query, description = "The tenant; with a tenant key, its own (the default)"),
           ("limit" = Option<u64>, Query, description = "Most rows to retry, 1–100000 (default 100), oldest first")),
    responses(
        (status = 200, description = "How many FAILED rows are due again", body = RetryAnswer),
        (status = 403, description = "`tenantId` is not the key's tenant", content_type = "application/problem+json"),
        (status = 422, description = "A parameter is invalid or missing; `field` names it", content_type = "application/problem+json")))]
pub async fn retry_failed(
    State(state): State<ReplayState>,
    scope: TenantScope,
    RawQuery(raw): RawQuery,
) -> Result<Json<RetryAnswer>> {
    let query = QueryParams::parse(raw.as_deref(), &["tenantId", "limit"])?;
    let tenant_id = scope.resolve(query.text("tenantId")?.as_deref())?;
    let limit = query.number("limit", 1, MAX_REPLAY_LIMIT.into(), DEFAULT_RETRY_LIMIT)?;
    let retried = state
        .store
        .retry_failed(
            &tenant_id,
            u32::try_from(limit).unwrap_or(MAX_REPLAY_LIMIT),
            &requested_by(&scope),
            fluxgate::now(),
        )
        .await?;
    tracing::info!(%tenant_id, retried, "failed records retried");
    Ok(Json(RetryAnswer {
        message: format!("Retried {retried} failed records"),
        tenant_id,
        retried_count: retried,
    }))
}

/// A small JSON body in which every field is optional, so it may be left out altogether (then
/// `T::default()`); read with fluxgate's rules (size limit, gzip, UTF-8, errors naming the
/// field).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, _: &S) -> Result<Self> {
        let (parts, body) = request.into_parts();
        let (_, bytes) = fhttp::read_body(&parts.headers, body, MAX_BODY_BYTES).await?;
        let text = fhttp::utf8(&bytes)?;
        if text.trim().is_empty() {
            return Ok(Self(T::default()));
        }
        fhttp::parse_json(text).map(Self)
    }
}
