//! A Pub/Sub dead-letter subscription, redriven by pull → republish → acknowledge.
//!
//! Pub/Sub dead-letters a message by publishing it to the dead-letter topic; replay reads that
//! topic's own pull subscription (`FLUXGATE_PUBSUB_DEAD_LETTER_SUBSCRIPTION`), publishes each
//! message (data and attributes) to the main topic (`FLUXGATE_PUBSUB_TOPIC`) and acknowledges
//! it on the dead-letter subscription only after Pub/Sub confirmed that publish. A message
//! whose publish failed is not acknowledged (it is handed back at once with a zero ack
//! deadline, and if even that fails it comes back when its ack deadline passes); a redrive that
//! stops half-way leaves every message it had not acknowledged on the dead-letter
//! subscription. At worst a message is published twice, which the worker's dedup key makes
//! harmless.
//!
//! Which client, and why two: publishing goes through the official `google-cloud-pubsub`
//! client, exactly as the drain publishes ([`PubsubQueue`]: batching, retries of transient
//! errors, one answer per message). But that crate (1.7) only subscribes by `StreamingPull`:
//! an endless stream that has no "nothing left" answer (so a bounded run would end on an idle
//! timer), and whose at-least-once acks are fire-and-forget (the acknowledgement's outcome is
//! never reported). Its unary `Pull` / `Acknowledge` stubs are crate-private. The redrive needs
//! exactly the unary calls: a `Pull` that answers "empty" ends the run, and an `Acknowledge`
//! whose failure we see. So pulling and acknowledging use the client generated from the
//! published protos (`googleapis-tonic-google-pubsub-v1`, the same protos the test server
//! serves) over a tonic channel, with Application Default Credentials from
//! `google-cloud-auth` (the official client's own credential crate) on Google's endpoint, and
//! none against a local server (`PUBSUB_EMULATOR_HOST`, `FLUXGATE_PUBSUB_ENDPOINT=http://…`).
//!
//! How many remain is not known: Pub/Sub has no call that counts a subscription's messages
//! (Cloud Monitoring's `num_undelivered_messages` does), so `remaining` is `None`.

use std::time::Duration;

use async_trait::async_trait;
use axum::http::Extensions;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_pubsub::model::Message;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1::subscriber_client::SubscriberClient;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1::{
    AcknowledgeRequest, ModifyAckDeadlineRequest, PullRequest, ReceivedMessage,
};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::{DeadLetters, RedriveReport};
use crate::error::{Error, Result};
use crate::queue::{PubsubConfig, PubsubQueue, PubsubTarget, pubsub_target};

/// Google's global Pub/Sub endpoint (the official client's default too).
const GOOGLE_ENDPOINT: &str = "https://pubsub.googleapis.com";
/// Messages pulled per round. Each round's messages are leased for the subscription's ack
/// deadline (60 s as `cloudrun/` creates it, 10 s at the least) while they are republished, so
/// a round stays small enough to finish well within it.
const PULL_BATCH: u64 = 100;
/// How long one `Pull` may wait for messages before it counts as empty. Pub/Sub answers a
/// `Pull` on an empty subscription with nothing (or `DEADLINE_EXCEEDED`) after a while.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// Deadline of `Acknowledge` and `ModifyAckDeadline`.
const ACK_WAIT: Duration = Duration::from_secs(30);

pub struct PubsubDeadLetters {
    subscriber: SubscriberClient<Channel>,
    /// `None` for a local server: no credentials go there.
    credentials: Option<Credentials>,
    subscription: String,
    /// Republishes to the main topic with the official client, as the drain does.
    queue: PubsubQueue,
}

fn pubsub_error(what: &str, status: tonic::Status) -> Error {
    Error::queue_caused(what, GrpcStatus(status))
}

/// A gRPC status as the redrive reports it, `Code: message` (the status's own `Display`
/// spells the code out and appends its source), keeping the status's source.
#[derive(Debug)]
struct GrpcStatus(tonic::Status);

impl std::fmt::Display for GrpcStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.0.code(), self.0.message())
    }
}

impl std::error::Error for GrpcStatus {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

impl PubsubDeadLetters {
    /// Builds both clients once (per cold start); nothing is sent until the first redrive.
    pub async fn connect(config: &PubsubConfig) -> Result<Self> {
        let subscription = config.dead_letter_subscription()?;
        let queue = PubsubQueue::connect(config).await?;
        let target = pubsub_target(config)?;
        let (endpoint, credentials) = match &target {
            PubsubTarget::Local(endpoint) => (endpoint.as_str(), None),
            PubsubTarget::Google(endpoint) => {
                let credentials = google_cloud_auth::credentials::Builder::default()
                    .build()
                    .map_err(|e| {
                        Error::dependency_caused("Google credentials for Pub/Sub redrive", e)
                    })?;
                (
                    endpoint.as_deref().unwrap_or(GOOGLE_ENDPOINT),
                    Some(credentials),
                )
            }
        };
        let bad_endpoint = |e: tonic::transport::Error| {
            Error::dependency_caused(format!("Pub/Sub endpoint {endpoint}"), e)
        };
        let mut channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(bad_endpoint)?
            .connect_timeout(Duration::from_secs(10));
        if endpoint.starts_with("https://") {
            channel = channel
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(bad_endpoint)?;
        }
        tracing::info!(%subscription, topic = queue.topic(), target = ?target, "Pub/Sub redrive ready");
        Ok(Self {
            subscriber: SubscriberClient::new(channel.connect_lazy()),
            credentials,
            subscription,
            queue,
        })
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

    /// Up to `max` dead letters, leased to us until the ack deadline; empty when none came.
    async fn pull(&self, max: u64) -> Result<Vec<ReceivedMessage>> {
        #[allow(deprecated)] // return_immediately: false is the recommended (default) value
        let pull = PullRequest {
            subscription: self.subscription.clone(),
            return_immediately: false,
            max_messages: i32::try_from(max).unwrap_or(i32::MAX),
        };
        let request = self.request(pull, PULL_WAIT).await?;
        match self.subscriber.clone().pull(request).await {
            Ok(response) => Ok(response.into_inner().received_messages),
            // A pull that waited its deadline out found nothing.
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => Ok(Vec::new()),
            Err(status) => Err(pubsub_error(
                &format!("pull from {}", self.subscription),
                status,
            )),
        }
    }

    async fn acknowledge(&self, ack_ids: Vec<String>) -> Result<()> {
        let ack = AcknowledgeRequest {
            subscription: self.subscription.clone(),
            ack_ids,
        };
        let request = self.request(ack, ACK_WAIT).await?;
        self.subscriber
            .clone()
            .acknowledge(request)
            .await
            .map(|_| ())
            .map_err(|status| {
                pubsub_error(
                    &format!(
                        "acknowledge republished dead letters on {} (they will be redriven again)",
                        self.subscription
                    ),
                    status,
                )
            })
    }

    /// Hands messages back at once (ack deadline 0) so the next redrive can take them; only a
    /// courtesy: if it fails, they come back when their ack deadline passes.
    async fn hand_back(&self, ack_ids: Vec<String>) {
        let count = ack_ids.len();
        let nack = ModifyAckDeadlineRequest {
            subscription: self.subscription.clone(),
            ack_ids,
            ack_deadline_seconds: 0,
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
            tracing::warn!(count, error = %e.chain(), "dead letters not handed back; they return after their ack deadline");
        }
    }
}

#[async_trait]
impl DeadLetters for PubsubDeadLetters {
    async fn redrive(&self, max: u64) -> Result<RedriveReport> {
        let mut moved = 0u64;
        while moved < max {
            let received = self.pull((max - moved).min(PULL_BATCH)).await?;
            if received.is_empty() {
                break;
            }
            let mut ack_ids = Vec::with_capacity(received.len());
            let mut messages = Vec::with_capacity(received.len());
            for received in received {
                // Pub/Sub always sends the message; one without is left alone (not acked).
                let Some(message) = received.message else {
                    continue;
                };
                ack_ids.push(received.ack_id);
                // Data and attributes as they are; fluxgate sets no ordering keys.
                messages.push(
                    Message::new()
                        .set_data(bytes::Bytes::from(message.data))
                        .set_attributes(message.attributes),
                );
            }
            let results = self.queue.publish_messages(messages).await;
            let mut published = Vec::new();
            let mut failed = Vec::new();
            let mut first_error = None;
            for (ack_id, result) in ack_ids.into_iter().zip(results) {
                match result {
                    Ok(()) => published.push(ack_id),
                    Err(e) => {
                        first_error.get_or_insert(e);
                        failed.push(ack_id);
                    }
                }
            }
            if !published.is_empty() {
                let count = published.len() as u64;
                self.acknowledge(published).await?;
                moved += count;
            }
            if let Some(error) = first_error {
                let count = failed.len();
                self.hand_back(failed).await;
                // Stop rather than pull more that would likely fail the same way; the error
                // tells the caller, and the messages wait on the dead-letter subscription.
                return Err(Error::queue_caused(
                    format!(
                        "{count} dead letters could not be republished to {} and stay on {} ({moved} moved before that)",
                        self.queue.topic(),
                        self.subscription
                    ),
                    error,
                ));
            }
        }
        Ok(RedriveReport {
            moved,
            remaining: None,
        })
    }
}
