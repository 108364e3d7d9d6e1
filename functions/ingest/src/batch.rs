//! `POST /v1/events/batch`: a JSON array, `{"events": [...]}`, or NDJSON. Every item gets an
//! answer; the valid items of a mixed batch are stored, in one transaction.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoResponses, ToSchema};

use chrono::{DateTime, Utc};
use fluxgate::config::{Limits, over_limit};
use fluxgate::error::{Error, FieldError, Problem, Result};
use fluxgate::event::{Event, EventInput};
use fluxgate::http::{self as fhttp, BodyFormat, CorrelationId};
use fluxgate::store::InsertOutcome;
use fluxgate::tenant::TenantScope;

use crate::{IngestState, WriteProblems};

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ItemStatus {
    Accepted,
    Duplicate,
    Conflict,
    Invalid,
}

impl From<InsertOutcome> for ItemStatus {
    fn from(outcome: InsertOutcome) -> Self {
        match outcome {
            InsertOutcome::Accepted => Self::Accepted,
            InsertOutcome::Duplicate => Self::Duplicate,
            InsertOutcome::Conflict => Self::Conflict,
        }
    }
}

/// The answer for one item of a batch, by its place in the batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BatchItem)]
struct ItemResult {
    index: usize,
    event_id: Option<String>,
    status: ItemStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<FieldError>,
}

/// How many items of a batch got each answer.
#[derive(Debug, Default, Serialize, ToSchema)]
#[schema(as = BatchCounts)]
struct Counts {
    accepted: usize,
    duplicate: usize,
    conflict: usize,
    invalid: usize,
}

/// A JSON batch body, as the document describes it (`json_items` reads the body itself, so
/// that each item stays text until it is checked).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(
    as = EventBatch,
    description = "A JSON batch: an array of events, or an object whose `events` is one."
)]
#[allow(dead_code)] // never built: it describes the body
enum BatchBody {
    /// The events, in order.
    Events(Vec<EventInput>),
    /// The same, as the `events` of an object.
    Wrapped { events: Vec<EventInput> },
}

/// A batch's answer: counts, and an answer per item in the batch's order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = BatchAnswer)]
pub(crate) struct BatchResponse {
    counts: Counts,
    items: Vec<ItemResult>,
}

/// What a batch answers, besides [`WriteProblems`]. utoipa does not collect the schemas named
/// here, so `BatchResponse` is in `http_api!`'s `schemas`.
#[derive(IntoResponses)]
#[allow(dead_code)] // never built: it describes the answers
pub(crate) enum BatchAnswers {
    /// An answer per item: accepted, duplicate, conflict or invalid
    #[response(status = 200)]
    Answered(BatchResponse),
    /// Empty or too many events (`field` is `events`)
    #[response(status = 422, content_type = "application/problem+json")]
    EmptyOrTooLarge(Problem),
}

#[utoipa::path(post, path = "/v1/events/batch", tag = "ingest",
    request_body(description = "A JSON array of events, `{\"events\": [...]}`, or NDJSON: one event per line",
        content((BatchBody = "application/json"), (String = "application/x-ndjson"))),
    responses(BatchAnswers, WriteProblems))]
pub(crate) async fn post_batch(
    State(state): State<IngestState>,
    scope: TenantScope,
    CorrelationId(correlation_id): CorrelationId,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchResponse>> {
    let limits = &state.limits;
    let (format, bytes) = fhttp::read_body(&headers, body, limits.max_body_bytes).await?;
    let text = fhttp::utf8(&bytes)?;
    let raw_items = match format {
        BodyFormat::Json => json_items(text)?,
        BodyFormat::NdJson => ndjson_items(text),
    };
    if raw_items.is_empty() {
        return Err(Error::invalid("events", "must contain at least one event"));
    }
    if let Some(over) = over_limit(raw_items.len(), limits.max_batch_events, "events") {
        return Err(Error::invalid("events", format!("has {over}")));
    }

    let now = fluxgate::now();
    let mut items = Vec::with_capacity(raw_items.len());
    let mut valid: Vec<Event> = Vec::with_capacity(raw_items.len());
    let mut valid_index = Vec::with_capacity(raw_items.len());
    for (index, raw) in raw_items.into_iter().enumerate() {
        // An item naming another tenant than the key's refuses the whole batch (403) before
        // anything is written: that is a misdirected client, not one bad event.
        match check_item(raw, &scope, limits, now, correlation_id.as_deref())? {
            Ok(event) => {
                items.push(ItemResult {
                    index,
                    event_id: Some(event.event_id.clone()),
                    status: ItemStatus::Accepted,
                    error: None,
                });
                valid_index.push(items.len() - 1);
                valid.push(event);
            }
            Err((error, event_id)) => items.push(ItemResult {
                index,
                event_id,
                status: ItemStatus::Invalid,
                error: Some(error),
            }),
        }
    }

    if !valid.is_empty() {
        let outcomes = state.store.insert_events(&valid).await?;
        for (slot, outcome) in valid_index.into_iter().zip(outcomes) {
            items[slot].status = outcome.into();
        }
    }

    let mut counts = Counts::default();
    for item in &items {
        match item.status {
            ItemStatus::Accepted => counts.accepted += 1,
            ItemStatus::Duplicate => counts.duplicate += 1,
            ItemStatus::Conflict => counts.conflict += 1,
            ItemStatus::Invalid => counts.invalid += 1,
        }
    }
    Ok(Json(BatchResponse { counts, items }))
}

/// The reference outbox API's name for the same call (clients written for it post a JSON array
/// here): answered per item exactly like `/v1/events/batch`.
#[utoipa::path(post, path = "/v1/events/bulk", tag = "ingest",
    request_body(description = "A JSON array of events (also `{\"events\": [...]}` or NDJSON, as /v1/events/batch)",
        content((BatchBody = "application/json"), (String = "application/x-ndjson"))),
    responses(BatchAnswers, WriteProblems))]
pub(crate) async fn post_bulk(
    state: State<IngestState>,
    scope: TenantScope,
    correlation_id: CorrelationId,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchResponse>> {
    post_batch(state, scope, correlation_id, headers, body).await
}

/// Only the id of an item, to name an invalid one; every other member is skipped unread.
#[derive(Deserialize)]
struct ItemId {
    #[serde(rename = "eventId")]
    event_id: Option<String>,
}

/// One item through the same rules as a single event. An invalid item still reports the
/// `eventId` it carried, so the client can tell which one it was. The outer error refuses
/// the whole request (a tenant the caller may not write for). Items stay text until here,
/// so their payload numbers keep every digit.
fn check_item(
    raw: Result<&RawValue, FieldError>,
    scope: &TenantScope,
    limits: &Limits,
    now: DateTime<Utc>,
    correlation_id: Option<&str>,
) -> Result<std::result::Result<Event, (FieldError, Option<String>)>> {
    let raw = match raw {
        Ok(raw) => raw.get(),
        Err(e) => return Ok(Err((e, None))),
    };
    let event_id = || {
        serde_json::from_str::<ItemId>(raw)
            .ok()
            .and_then(|item| item.event_id)
    };
    let item_error = |e: Error| match e {
        Error::InvalidField(f) | Error::Malformed(f) => Ok(f),
        Error::ForbiddenField(_) => Err(e),
        other => Ok(FieldError::new("body", other.to_string())),
    };
    let input: EventInput = match fhttp::parse_json(raw) {
        Ok(input) => input,
        Err(e) => return Ok(Err((item_error(e)?, event_id()))),
    };
    match input.validate(scope, limits, now, correlation_id) {
        Ok(event) => Ok(Ok(event)),
        Err(e) => Ok(Err((item_error(e)?, event_id()))),
    }
}

/// A JSON body: an array of events, or an object whose `events` is one. A syntax error fails
/// the whole request: there is no telling where items begin.
fn json_items(text: &str) -> Result<Vec<Result<&RawValue, FieldError>>> {
    let not_json =
        |e: serde_json::Error| Error::malformed("body", format!("is not valid JSON: {e}"));
    let body: &RawValue = serde_json::from_str(text).map_err(not_json)?;
    let array = match body.get().as_bytes().first() {
        Some(b'[') => body,
        Some(b'{') => {
            let mut object: HashMap<String, &RawValue> =
                serde_json::from_str(body.get()).map_err(not_json)?;
            match object.remove("events") {
                Some(events) if events.get().starts_with('[') => events,
                Some(_) => return Err(Error::invalid("events", "must be an array of events")),
                None => {
                    return Err(Error::invalid(
                        "events",
                        "is required: send a JSON array of events or {\"events\": [...]}",
                    ));
                }
            }
        }
        _ => {
            return Err(Error::invalid(
                "body",
                "must be a JSON array of events or an object with an `events` array",
            ));
        }
    };
    let items: Vec<&RawValue> = serde_json::from_str(array.get()).map_err(not_json)?;
    Ok(items.into_iter().map(Ok).collect())
}

/// NDJSON: one event per line; blank lines are skipped. A line that is not JSON is an invalid
/// item of its own, so one bad line does not cost the others.
fn ndjson_items(text: &str) -> Vec<Result<&RawValue, FieldError>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            serde_json::from_str(line).map_err(|e| {
                FieldError::new(
                    "body",
                    format!("line {} is not valid JSON: {e}", number + 1),
                )
            })
        })
        .collect()
}
