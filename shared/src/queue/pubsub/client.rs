//! The Pub/Sub client side of the queue (cargo feature `pubsub`).

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::retry_policy::RetryableErrors;

use super::config::PubsubConfig;
use super::{ATTRIBUTE_CORRELATION_ID, ATTRIBUTE_EVENT_TYPE, ATTRIBUTE_TENANT_ID};
use crate::error::{Error, Result};
use crate::queue::{PublishResult, Queue, QueueMessage};

/// Pub/Sub allows at most 1000 messages in one Publish request; a drain round larger than
/// that is split by the drain, and the client splits further by its own thresholds.
const MAX_MESSAGES_PER_CALL: usize = 1000;

/// Pub/Sub takes messages (and Publish requests) of up to 10 MB; the rest is room for the
/// attributes and the request's own framing.
const MAX_MESSAGE_BYTES: usize = 9_000_000;

/// Where the client connects, and whether it sends credentials (the dead-letter redrive's
/// subscriber connects the same way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A local server over plain gRPC, without credentials.
    Local(String),
    /// A Google endpoint (`None`: the client's global default) with ADC.
    Google(Option<String>),
}

pub(crate) fn target(config: &PubsubConfig) -> Result<Target> {
    if let Some(endpoint) = config.pubsub_endpoint.as_deref().filter(|e| !e.is_empty()) {
        return if endpoint.starts_with("http://") {
            Ok(Target::Local(endpoint.to_string()))
        } else if endpoint.starts_with("https://") {
            Ok(Target::Google(Some(endpoint.to_string())))
        } else {
            Err(Error::setting(
                "FLUXGATE_PUBSUB_ENDPOINT",
                format!("must be an http:// or https:// URL, not {endpoint:?}"),
            ))
        };
    }
    match config
        .pubsub_emulator_host
        .as_deref()
        .filter(|h| !h.is_empty())
    {
        Some(host) => Ok(Target::Local(format!("http://{host}"))),
        None => Ok(Target::Google(None)),
    }
}

pub struct PubsubQueue {
    publisher: Publisher,
    topic: String,
}

impl PubsubQueue {
    /// Builds the client once (per cold start). Nothing is sent until the first publish.
    pub async fn connect(config: &PubsubConfig) -> Result<Self> {
        // The Google clients take the process's default crypto provider (see `crate::tls`).
        crate::tls::install_crypto_provider();
        let topic = config.topic()?;
        let publish_timeout = config
            .pubsub_publish_timeout
            .to_std()
            .unwrap_or(Duration::from_secs(30));
        let mut builder = Publisher::builder(topic.clone())
            .set_message_count_threshold(config.pubsub_batch_messages.clamp(1, 1000))
            // The drain flushes after each round, so waiting for more messages buys nothing.
            .set_delay_threshold(Duration::from_millis(10))
            // The client's default keeps retrying for 10 minutes, past any drain budget; the
            // outbox's own backoff takes over sooner.
            .with_retry_policy(RetryableErrors.with_time_limit(publish_timeout));
        let target = target(config)?;
        builder = match &target {
            Target::Local(endpoint) => builder.with_endpoint(endpoint).with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            ),
            Target::Google(Some(endpoint)) => builder.with_endpoint(endpoint),
            Target::Google(None) => builder,
        };
        let publisher = builder
            .build()
            .await
            .map_err(|e| Error::dependency_caused(format!("Pub/Sub publisher for {topic}"), e))?;
        tracing::info!(%topic, target = ?target, "Pub/Sub publisher ready");
        Ok(Self { publisher, topic })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes `messages` and answers each on its own: `Ok` once Pub/Sub has it, or why not.
    pub(crate) async fn publish_messages(
        &self,
        messages: impl IntoIterator<Item = Message>,
    ) -> Vec<PublishResult> {
        let pending: Vec<_> = messages
            .into_iter()
            .map(|m| self.publisher.publish(m))
            .collect();
        // Send what is buffered now rather than after the delay threshold.
        self.publisher.flush().await;
        let mut results = Vec::with_capacity(pending.len());
        for publish in pending {
            results.push(publish.await.map(|_message_id| ()).map_err(|e| {
                // The PublishError's Display hides the status; its source holds it.
                match std::error::Error::source(&e) {
                    Some(source) => format!("{e}: {source}"),
                    None => e.to_string(),
                }
            }));
        }
        results
    }
}

/// The Pub/Sub message of one queue message: the event as data, and its attributes.
pub fn to_message(message: &QueueMessage) -> Message {
    let attributes = &message.attributes;
    // What the events of a pack do not share is left off (empty), as on SQS.
    let pairs: Vec<(&str, String)> = [
        (ATTRIBUTE_TENANT_ID, Some(&attributes.tenant_id)),
        (ATTRIBUTE_EVENT_TYPE, Some(&attributes.event_type)),
        (ATTRIBUTE_CORRELATION_ID, attributes.correlation_id.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.filter(|v| !v.is_empty()).map(|v| (name, v.clone())))
    .collect();
    Message::new()
        .set_data(bytes::Bytes::from(message.body.clone()))
        .set_attributes(pairs)
}

#[async_trait]
impl Queue for PubsubQueue {
    fn max_batch(&self) -> usize {
        MAX_MESSAGES_PER_CALL
    }

    fn max_message_bytes(&self) -> usize {
        MAX_MESSAGE_BYTES
    }

    async fn publish_batch(&self, messages: &[QueueMessage]) -> Result<Vec<PublishResult>> {
        Ok(self.publish_messages(messages.iter().map(to_message)).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(emulator: Option<&str>, endpoint: Option<&str>) -> PubsubConfig {
        PubsubConfig {
            pubsub_topic: Some("projects/p/topics/t".into()),
            pubsub_emulator_host: emulator.map(str::to_string),
            pubsub_endpoint: endpoint.map(str::to_string),
            ..PubsubConfig::default()
        }
    }

    #[test]
    fn local_servers_get_no_credentials_and_google_gets_adc() {
        assert_eq!(
            target(&config(Some("127.0.0.1:8085"), None)).expect("target"),
            Target::Local("http://127.0.0.1:8085".into())
        );
        assert_eq!(
            target(&config(Some("127.0.0.1:8085"), Some("http://localhost:9"))).expect("target"),
            Target::Local("http://localhost:9".into()),
            "the explicit endpoint wins"
        );
        assert_eq!(
            target(&config(
                None,
                Some("https://europe-west1-pubsub.googleapis.com")
            ))
            .expect("target"),
            Target::Google(Some("https://europe-west1-pubsub.googleapis.com".into()))
        );
        assert_eq!(
            target(&config(None, None)).expect("target"),
            Target::Google(None)
        );
        assert!(target(&config(None, Some("localhost:9"))).is_err());
    }
}
