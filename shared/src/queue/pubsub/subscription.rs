//! A Pub/Sub pull subscription read by unary `Pull` and settled by `Acknowledge` /
//! `ModifyAckDeadline`: the dead-letter redrive (replay) and `fluxgate-local`'s worker on
//! Pub/Sub both read one.
//!
//! Why not google-cloud-pubsub: that crate (1.7) only subscribes by `StreamingPull`, an
//! endless stream with no "nothing left" answer, whose at-least-once acks are fire-and-forget
//! (the acknowledgement's outcome is never reported); its unary `Pull` / `Acknowledge` stubs
//! are crate-private. So these use the client generated from the published protos
//! (`googleapis-tonic-google-pubsub-v1`, the same protos the test server serves) over a tonic
//! channel, with Application Default Credentials from `google-cloud-auth` (the official
//! client's own credential crate) on Google's endpoint, and none against a local server
//! (`PUBSUB_EMULATOR_HOST`, `FLUXGATE_PUBSUB_ENDPOINT=http://…`).

use std::time::Duration;

use axum::http::Extensions;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1::subscriber_client::SubscriberClient;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1::{
    AcknowledgeRequest, ModifyAckDeadlineRequest, PullRequest, ReceivedMessage,
};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::config::PubsubConfig;
use super::{Target, target};
use crate::error::{Error, Result};
use crate::grpc::{GrpcStatus, lazy_channel};

/// Google's global Pub/Sub endpoint (the official client's default too).
const GOOGLE_ENDPOINT: &str = "https://pubsub.googleapis.com";
/// Deadline of `Acknowledge` and `ModifyAckDeadline`.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// One pull subscription. Cheap to clone.
#[derive(Clone)]
pub struct PubsubSubscription {
    subscriber: SubscriberClient<Channel>,
    /// `None` for a local server: no credentials go there.
    credentials: Option<Credentials>,
    name: String,
}

fn pubsub_error(what: &str, status: tonic::Status) -> Error {
    Error::queue_caused(what, GrpcStatus(status))
}

impl PubsubSubscription {
    /// The subscription `name` (checked by the caller) on the server `config` names; nothing
    /// is sent until the first pull.
    pub fn connect(config: &PubsubConfig, name: String) -> Result<Self> {
        let (endpoint, credentials) = match &target(config)? {
            Target::Local(endpoint) => (endpoint.clone(), None),
            Target::Google(endpoint) => {
                let credentials = google_cloud_auth::credentials::Builder::default()
                    .build()
                    .map_err(|e| Error::dependency_caused("Google credentials for Pub/Sub", e))?;
                (
                    endpoint
                        .clone()
                        .unwrap_or_else(|| GOOGLE_ENDPOINT.to_owned()),
                    Some(credentials),
                )
            }
        };
        let bad_endpoint = |e: tonic::transport::Error| {
            Error::dependency_caused(format!("Pub/Sub endpoint {endpoint}"), e)
        };
        Ok(Self {
            subscriber: SubscriberClient::new(lazy_channel(&endpoint, bad_endpoint)?),
            credentials,
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A request with credentials (for Google) and a deadline.
    async fn request<T>(&self, message: T, deadline: Duration) -> Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        if let Some(credentials) = &self.credentials {
            // Without an entity tag in the extensions the answer is always `New`.
            match credentials.headers(Extensions::new()).await {
                Ok(CacheableResource::New { data, .. }) => {
                    *request.metadata_mut() = MetadataMap::from_headers(data);
                }
                Ok(CacheableResource::NotModified) => {}
                Err(e) => return Err(Error::queue_caused("Google credentials", e)),
            }
        }
        request.set_timeout(deadline);
        Ok(request)
    }

    /// Up to `max` messages, leased to us until the ack deadline; empty when none came within
    /// `wait`.
    pub async fn pull(&self, max: u64, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        #[allow(deprecated)] // return_immediately: false is the recommended (default) value
        let pull = PullRequest {
            subscription: self.name.clone(),
            return_immediately: false,
            max_messages: i32::try_from(max).unwrap_or(i32::MAX),
        };
        let request = self.request(pull, wait).await?;
        match self.subscriber.clone().pull(request).await {
            Ok(response) => Ok(response.into_inner().received_messages),
            // A pull that waited its deadline out found nothing.
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => Ok(Vec::new()),
            Err(status) => Err(pubsub_error(&format!("pull from {}", self.name), status)),
        }
    }

    /// Acknowledges the messages: Pub/Sub will not deliver them again.
    pub async fn acknowledge(&self, ack_ids: Vec<String>) -> Result<()> {
        let ack = AcknowledgeRequest {
            subscription: self.name.clone(),
            ack_ids,
        };
        let request = self.request(ack, ACK_WAIT).await?;
        self.subscriber
            .clone()
            .acknowledge(request)
            .await
            .map(|_| ())
            .map_err(|status| pubsub_error(&format!("acknowledge on {}", self.name), status))
    }

    /// Hands messages back for another delivery after `delay` (0: at once). Only a courtesy:
    /// if it fails, they come back when their ack deadline passes.
    pub async fn hand_back(&self, ack_ids: Vec<String>, delay: Duration) {
        let count = ack_ids.len();
        let nack = ModifyAckDeadlineRequest {
            subscription: self.name.clone(),
            ack_ids,
            ack_deadline_seconds: i32::try_from(delay.as_secs()).unwrap_or(600).min(600),
        };
        let sent = match self.request(nack, ACK_WAIT).await {
            Ok(request) => self
                .subscriber
                .clone()
                .modify_ack_deadline(request)
                .await
                .map_err(|s| pubsub_error("hand back", s)),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(count, subscription = %self.name, error = %e.chain(), "messages not handed back; they return after their ack deadline");
        }
    }
}
