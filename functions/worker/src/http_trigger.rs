//! `POST /v1/messages`: a batch of queue messages over HTTP, answered per message, in the
//! shape of an SQS partial batch response (`batchItemFailures`). Push triggers of particular
//! queues wrap the same [`Worker::process`].

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use fluxgate::error::Result;
use fluxgate::http as fhttp;

use crate::{Delivery, Verdict, Worker};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MessagesRequest {
    messages: Vec<MessageIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MessageIn {
    message_id: String,
    #[serde(default = "first_delivery")]
    receive_count: u32,
    /// The message body (a pack or one event) as the drain published it, kept as text so
    /// no payload number is converted on the way.
    body: Box<RawValue>,
}

fn first_delivery() -> u32 {
    1
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemFailure {
    item_identifier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessagesResponse {
    processed: usize,
    batch_item_failures: Vec<ItemFailure>,
}

pub fn router(worker: Worker) -> Router {
    Router::new()
        .route("/v1/messages", post(post_messages))
        .with_state(worker)
}

/// worker as a whole HTTP service: the batch endpoint and the Pub/Sub push endpoint.
pub fn service(worker: Worker) -> Router {
    let store = worker.store.clone();
    let push = crate::pubsub_push::router(worker.clone());
    fhttp::service(router(worker).merge(push), store)
}

async fn post_messages(
    State(worker): State<Worker>,
    body: axum::body::Bytes,
) -> Result<Json<MessagesResponse>> {
    let request: MessagesRequest = fhttp::parse_json(fhttp::utf8(&body)?)?;
    let deliveries: Vec<Delivery> = request
        .messages
        .into_iter()
        .map(|m| Delivery {
            message_id: m.message_id,
            body: m.body.get().as_bytes().to_vec(),
            receive_count: m.receive_count.max(1),
        })
        .collect();
    let verdicts = worker.process(&deliveries).await?;
    let batch_item_failures = deliveries
        .iter()
        .zip(&verdicts)
        .filter_map(|(delivery, verdict)| match verdict {
            Verdict::Ack => None,
            Verdict::Retry => Some(ItemFailure {
                item_identifier: delivery.message_id.clone(),
                reason: None,
            }),
            Verdict::Malformed(reason) => Some(ItemFailure {
                item_identifier: delivery.message_id.clone(),
                reason: Some(reason.clone()),
            }),
        })
        .collect();
    Ok(Json(MessagesResponse {
        processed: deliveries.len(),
        batch_item_failures,
    }))
}
