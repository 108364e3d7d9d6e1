//! Where the drain hands events to, and where the worker takes them from. One trait for the
//! publishing side (one file per queue), and the message format every queue carries.

mod in_memory;
mod pubsub;
mod sqs;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::{QueueConfig, QueueKind};
use crate::error::{Error, Result};
use crate::event::{Event, EventKey};

pub use in_memory::{Delivery, InMemoryQueue, InMemoryQueueConfig};
pub use pubsub::{
    ATTRIBUTE_CORRELATION_ID, ATTRIBUTE_EVENT_TYPE, ATTRIBUTE_TENANT_ID, PubsubQueue,
};
pub(crate) use pubsub::{Target as PubsubTarget, target as pubsub_target};
pub use sqs::{MAX_ENTRIES_PER_REQUEST, MAX_REQUEST_BYTES, SqsQueue};

/// Builds the queue the config names, once per process (cold start): the SQS client is made
/// here from the AWS SDK's standard configuration and reused by every publish.
pub async fn connect(config: &QueueConfig) -> Result<Arc<dyn Queue>> {
    match config.queue {
        QueueKind::Memory => Ok(Arc::new(InMemoryQueue::new(InMemoryQueueConfig::default()))),
        QueueKind::Sqs => {
            let url = config
                .sqs_queue_url
                .as_deref()
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .ok_or_else(|| {
                    Error::Config("FLUXGATE_QUEUE=sqs needs FLUXGATE_SQS_QUEUE_URL".into())
                })?;
            tracing::info!(queue_url = url, "publishing to SQS");
            Ok(Arc::new(SqsQueue::from_env(url).await))
        }
        QueueKind::Pubsub => Ok(Arc::new(PubsubQueue::connect(&config.pubsub).await?)),
    }
}

/// One event on its way through a queue. The body is the whole event as JSON, so the worker
/// needs nothing else; the attributes let queue-side filters and people read it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueMessage {
    pub key: EventKey,
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

impl QueueMessage {
    pub fn from_event(event: &Event) -> Result<Self> {
        Ok(Self {
            key: event.key(),
            body: serde_json::to_vec(event).map_err(|e| Error::Queue(e.to_string()))?,
            attributes: MessageAttributes {
                tenant_id: event.tenant_id.clone(),
                event_type: event.event_type.clone(),
                correlation_id: event.correlation_id.clone(),
            },
        })
    }
}

/// The result of publishing one message of a batch.
pub type PublishResult = std::result::Result<(), String>;

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Most messages one `publish_batch` call sends at once (the caller splits larger sets).
    fn max_batch(&self) -> usize;

    /// Publishes the messages and answers for each, in order. `Err` means none were sent.
    async fn publish_batch(&self, messages: &[QueueMessage]) -> Result<Vec<PublishResult>>;
}
