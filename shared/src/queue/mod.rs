//! Where the drain hands events to, and where the worker takes them from. One trait for the
//! publishing side (one file per queue), and the message format every queue carries.

mod in_memory;
pub mod pack;
mod pubsub;
mod sqs;

use std::sync::Arc;

use async_trait::async_trait;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Event, EventKey};

pub use in_memory::{Delivery, InMemoryQueue, InMemoryQueueConfig};
#[cfg(feature = "pubsub")]
pub use pubsub::PubsubQueue;
#[cfg(feature = "pubsub")]
pub use pubsub::PubsubSubscription;
pub use pubsub::config::PubsubConfig;
pub use pubsub::{ATTRIBUTE_CORRELATION_ID, ATTRIBUTE_EVENT_TYPE, ATTRIBUTE_TENANT_ID};
pub use sqs::config::SqsConfig;
#[cfg(feature = "sqs")]
pub use sqs::{MAX_ENTRIES_PER_REQUEST, MAX_REQUEST_BYTES, SqsQueue, SqsReceived};

/// Which queue the drain publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueKind {
    /// In-process; only meaningful where the worker runs in the same process (fluxgate-local).
    Memory,
    /// Amazon SQS (a standard queue): [`SqsConfig`].
    Sqs,
    /// Google Cloud Pub/Sub: [`PubsubConfig`]; the worker takes it by push.
    Pubsub,
}

/// The queue between the drain and the worker: which one, and each one's own settings.
#[derive(Debug, Clone, Args)]
pub struct QueueConfig {
    /// The queue between the drain and the worker.
    #[arg(long, env = "FLUXGATE_QUEUE", value_enum, default_value = "memory")]
    pub queue: QueueKind,
    #[command(flatten)]
    pub sqs: SqsConfig,
    #[command(flatten)]
    pub pubsub: PubsubConfig,
}

/// Builds the queue the config names, once per process (cold start): the SQS client is made
/// here from the AWS SDK's standard configuration and reused by every publish.
pub async fn connect(config: &QueueConfig) -> Result<Arc<dyn Queue>> {
    match config.queue {
        QueueKind::Memory => Ok(Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()))),
        #[cfg(feature = "sqs")]
        QueueKind::Sqs => Ok(Arc::new(SqsQueue::connect(&config.sqs).await?)),
        #[cfg(not(feature = "sqs"))]
        QueueKind::Sqs => Err(Error::not_built("FLUXGATE_QUEUE", "the SQS client", "aws")),
        #[cfg(feature = "pubsub")]
        QueueKind::Pubsub => Ok(Arc::new(PubsubQueue::connect(&config.pubsub).await?)),
        #[cfg(not(feature = "pubsub"))]
        QueueKind::Pubsub => Err(Error::not_built(
            "FLUXGATE_QUEUE",
            "the Pub/Sub client",
            "gcp",
        )),
    }
}

/// Events on their way through a queue: one message carries whole events (a [`pack`]), so the
/// worker needs nothing else; the attributes let queue-side filters and people read it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueMessage {
    /// The events it carries, in order.
    pub keys: Vec<EventKey>,
    pub body: Vec<u8>,
    pub attributes: MessageAttributes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageAttributes {
    pub tenant_id: String,
    pub event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl MessageAttributes {
    /// What all `events` share: the tenant, and the event type and correlation id where they
    /// agree (empty, and so left off the message, where they do not).
    pub fn common_to(events: &[&Event]) -> Self {
        fn common<'a>(mut values: impl Iterator<Item = Option<&'a str>>) -> Option<String> {
            let first = values.next()??;
            values.all(|v| v == Some(first)).then(|| first.to_owned())
        }
        Self {
            tenant_id: common(events.iter().map(|e| Some(e.tenant_id.as_str())))
                .unwrap_or_default(),
            event_type: common(events.iter().map(|e| Some(e.event_type.as_str())))
                .unwrap_or_default(),
            correlation_id: common(events.iter().map(|e| e.correlation_id.as_deref())),
        }
    }
}

impl QueueMessage {
    /// A message of one event in the version-1 format (the event itself, no envelope): what
    /// the drain published before packs, and what the worker still reads.
    pub fn from_event(event: &Event) -> Result<Self> {
        Ok(Self {
            keys: vec![event.key()],
            body: serde_json::to_vec(event)
                .map_err(|e| Error::queue_caused("the event cannot be encoded as JSON", e))?,
            attributes: MessageAttributes::common_to(&[event]),
        })
    }
}

/// The result of publishing one message of a batch.
pub type PublishResult = std::result::Result<(), String>;

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Most messages one `publish_batch` call sends at once (the caller splits larger sets).
    fn max_batch(&self) -> usize;

    /// Largest body one message may have, so the drain packs within it.
    fn max_message_bytes(&self) -> usize;

    /// Publishes the messages and answers for each, in order. `Err` means none were sent.
    async fn publish_batch(&self, messages: &[QueueMessage]) -> Result<Vec<PublishResult>>;
}
