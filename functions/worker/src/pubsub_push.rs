//! `POST /v1/pubsub/push`: the worker as the endpoint of a Pub/Sub push subscription (Cloud
//! Run). Pub/Sub posts one message per request in its documented envelope
//!
//! ```json
//! {"message": {"data": "<base64>", "attributes": {"tenantId": "…"}, "messageId": "…",
//!              "publishTime": "2026-01-01T00:00:00.000Z"},
//!  "subscription": "projects/P/subscriptions/S", "deliveryAttempt": 2}
//! ```
//!
//! and reads only the status code: 2xx acknowledges, anything else has Pub/Sub deliver again
//! with the subscription's retry backoff. So:
//! - DONE (or DEAD by a permanent error, or already DONE: a redelivery) → 200, acknowledged;
//! - a transient failure → 503: FAILED in the outbox, and Pub/Sub retries;
//! - a transient failure at `deliveryAttempt` ≥ `FLUXGATE_MAX_RECEIVE_COUNT` → DEAD in the
//!   outbox and still 503: only a negative answer lets the subscription's dead-letter policy
//!   (max delivery attempts = the same number) forward it to the dead-letter topic, where
//!   replay finds it. An acknowledgement would make it vanish instead;
//! - an envelope or body that is not what the drain publishes → 200 with an ERROR log line
//!   (`malformed_push = true`, the reason and the message id) and the `malformed` counter of
//!   [`DeliveryStats`]: redelivering it could never succeed, so it must not be retried forever.
//!   No outbox row can be marked, since such a message names no event we know.
//!
//! `deliveryAttempt` is present only when the subscription has a dead-letter policy; without
//! one every delivery counts as the first. The caller is authenticated by Cloud Run itself
//! (the service does not allow unauthenticated calls; Pub/Sub sends an OIDC token), so this
//! handler does not look at tokens.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};

use fluxgate::http as fhttp;

use crate::{Delivery, DeliveryStats, Verdict, Worker};

pub const PUSH_PATH: &str = "/v1/pubsub/push";

/// The push envelope. Fields are optional here so that a missing one is reported by name;
/// unknown fields (Pub/Sub also sends `message_id` and `publish_time` spellings, and
/// `orderingKey`) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushEnvelope {
    message: Option<PushMessage>,
    subscription: Option<String>,
    delivery_attempt: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushMessage {
    data: Option<String>,
    #[serde(default)]
    attributes: HashMap<String, String>,
    message_id: Option<String>,
    publish_time: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PushAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    /// `ack`, `retry` or `malformed`.
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The push route; what it counts goes to the worker's [`crate::DeliveryStats`].
pub fn router(worker: Worker) -> Router {
    Router::new()
        .route(PUSH_PATH, post(push))
        .with_state(worker)
}

/// A push delivery that could be read.
struct Pushed {
    delivery: Delivery,
    subscription: Option<String>,
    publish_time: Option<String>,
    correlation_id: Option<String>,
}

/// Reads the envelope; `Err` names what is wrong and the message id when there is one.
fn read_envelope(body: &[u8]) -> Result<Pushed, (Option<String>, String)> {
    let text = fhttp::utf8(body).map_err(|e| (None, e.to_string()))?;
    let envelope: PushEnvelope = fhttp::parse_json(text).map_err(|e| (None, e.to_string()))?;
    let message = envelope
        .message
        .ok_or_else(|| (None, "message is required".to_string()))?;
    let message_id = message
        .message_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| (None, "message.messageId is required".to_string()))?;
    let data = message
        .data
        .ok_or_else(|| (Some(message_id.clone()), "message.data is required".into()))?;
    let body = base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|e| {
            (
                Some(message_id.clone()),
                format!("message.data is not base64: {e}"),
            )
        })?;
    Ok(Pushed {
        delivery: Delivery {
            message_id,
            body,
            receive_count: envelope.delivery_attempt.unwrap_or(1).max(1),
        },
        subscription: envelope.subscription,
        publish_time: message.publish_time,
        correlation_id: message
            .attributes
            .get(fluxgate::queue::ATTRIBUTE_CORRELATION_ID)
            .cloned(),
    })
}

async fn push(State(worker): State<Worker>, body: axum::body::Bytes) -> Response {
    let pushed = match read_envelope(&body) {
        Ok(pushed) => pushed,
        Err((message_id, reason)) => return malformed(worker.stats(), message_id, reason),
    };
    let message_id = pushed.delivery.message_id.clone();
    tracing::debug!(
        %message_id,
        subscription = pushed.subscription.as_deref().unwrap_or(""),
        publish_time = pushed.publish_time.as_deref().unwrap_or(""),
        correlation_id = pushed.correlation_id.as_deref().unwrap_or(""),
        delivery_attempt = pushed.delivery.receive_count,
        "push delivery"
    );
    let verdict = match worker.process(std::slice::from_ref(&pushed.delivery)).await {
        Ok(mut verdicts) => verdicts.pop().unwrap_or(Verdict::Retry),
        Err(e) => {
            // The outcome could not be recorded (database down): let Pub/Sub deliver again.
            tracing::warn!(%message_id, error = %e.chain(), "push delivery not recorded; asking for redelivery");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(message_id),
                "retry",
                Some(e.chain()),
            );
        }
    };
    match verdict {
        Verdict::Ack => answer(StatusCode::OK, Some(message_id), "ack", None),
        Verdict::Retry => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(message_id),
            "retry",
            None,
        ),
        Verdict::Malformed(reason) => malformed(worker.stats(), Some(message_id), reason),
    }
}

/// Acknowledges a delivery that can never succeed, loudly.
fn malformed(stats: &DeliveryStats, message_id: Option<String>, reason: String) -> Response {
    stats.count_malformed();
    tracing::error!(
        malformed_push = true,
        message_id = message_id.as_deref().unwrap_or(""),
        %reason,
        "malformed Pub/Sub push acknowledged without processing (redelivery cannot help)"
    );
    answer(StatusCode::OK, message_id, "malformed", Some(reason))
}

fn answer(
    status: StatusCode,
    message_id: Option<String>,
    verdict: &'static str,
    reason: Option<String>,
) -> Response {
    (
        status,
        Json(PushAnswer {
            message_id,
            verdict,
            reason,
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_envelope() {
        let body = br#"{
            "message": {
                "attributes": {"tenantId": "t1", "correlationId": "c-1"},
                "data": "eyJhIjoxfQ==",
                "messageId": "2070443601311540",
                "message_id": "2070443601311540",
                "publishTime": "2021-02-26T19:13:55.749Z",
                "publish_time": "2021-02-26T19:13:55.749Z"
            },
            "subscription": "projects/myproject/subscriptions/mysubscription"
        }"#;
        let pushed = read_envelope(body).expect("valid envelope");
        assert_eq!(pushed.delivery.message_id, "2070443601311540");
        assert_eq!(pushed.delivery.body, br#"{"a":1}"#);
        assert_eq!(pushed.delivery.receive_count, 1, "no dead-letter policy");
        assert_eq!(pushed.correlation_id.as_deref(), Some("c-1"));
    }

    #[test]
    fn names_what_is_wrong() {
        let cases: [(&[u8], &str); 5] = [
            (b"not json", "JSON"),
            (br#"{"subscription": "s"}"#, "message is required"),
            (br#"{"message": {"data": "e30="}}"#, "message.messageId"),
            (
                br#"{"message": {"messageId": "1"}}"#,
                "message.data is required",
            ),
            (
                br#"{"message": {"messageId": "1", "data": "%%%"}}"#,
                "not base64",
            ),
        ];
        for (body, expected) in cases {
            let (_, reason) = read_envelope(body).err().expect("malformed");
            assert!(
                reason.to_lowercase().contains(&expected.to_lowercase()),
                "{reason}"
            );
        }
    }
}
