//! An SQS dead-letter queue, redriven by receive → resend → delete. SQS's own message-move
//! task (`StartMessageMoveTask`) would do this server-side, but the moto server the tests run
//! against does not implement it, and this way works on every SQS-compatible endpoint.
//!
//! Nothing is lost half-way: a message is deleted from the dead-letter queue only after
//! `SendMessageBatch` reported that entry sent. A message whose resend failed (or a redrive
//! that stops) stays on the dead-letter queue and shows again after its visibility timeout; at
//! worst a message is sent twice, which the worker's dedup key makes harmless.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use super::{DeadLetters, RedriveReport};
use crate::error::{Error, Result};
use crate::queue::SqsQueue;

/// Seconds a received dead letter stays hidden while it is resent.
const VISIBILITY_SECONDS: i32 = 60;

#[derive(Clone)]
pub struct SqsDeadLetters {
    /// The dead-letter queue: where messages are received, and deleted once resent.
    dead_letters: SqsQueue,
    /// The queue they are resent to.
    queue: SqsQueue,
}

impl SqsDeadLetters {
    pub fn new(
        client: Client,
        dead_letter_url: impl Into<String>,
        queue_url: impl Into<String>,
    ) -> Self {
        Self {
            dead_letters: SqsQueue::new(client.clone(), dead_letter_url),
            queue: SqsQueue::new(client, queue_url),
        }
    }

    /// Clients from the SDK's standard configuration (region, credentials, `AWS_ENDPOINT_URL`).
    pub async fn from_env(
        dead_letter_url: impl Into<String>,
        queue_url: impl Into<String>,
    ) -> Self {
        let sdk = crate::aws::load_config().await;
        Self::new(Client::new(&sdk), dead_letter_url, queue_url)
    }
}

fn sqs_error(what: &str, err: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::queue_caused(what, err)
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    async fn redrive(&self, max: u64) -> Result<RedriveReport> {
        let mut moved = 0u64;
        while moved < max {
            let want = (max - moved).min(10) as i32;
            let received = self
                .dead_letters
                .receive_request(want)
                .message_attribute_names("All")
                .visibility_timeout(VISIBILITY_SECONDS)
                .wait_time_seconds(1)
                .send()
                .await
                .map_err(|e| sqs_error("receive from the dead-letter queue", e))?;
            let messages = received.messages();
            if messages.is_empty() {
                break;
            }
            let mut entries = Vec::with_capacity(messages.len());
            for (i, message) in messages.iter().enumerate() {
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(message.body().unwrap_or_default())
                    .set_message_attributes(message.message_attributes().cloned())
                    .build()
                    .map_err(|e| sqs_error("build a resend entry", e))?;
                entries.push(entry);
            }
            let sent = self
                .queue
                .send_batch(entries)
                .await
                .map_err(|e| sqs_error("resend to the queue", e))?;
            // Only what SendMessageBatch reported sent leaves the dead-letter queue.
            let mut resent = Vec::new();
            for ok in sent.successful() {
                let receipt = ok.id().parse::<usize>().ok().and_then(|i| messages.get(i));
                if let Some(receipt) = receipt.and_then(|m| m.receipt_handle()) {
                    resent.push(receipt.to_owned());
                }
            }
            for failed in sent.failed() {
                tracing::warn!(
                    entry = failed.id(),
                    code = failed.code(),
                    "dead letter not resent; it stays on the dead-letter queue"
                );
            }
            if resent.is_empty() {
                // Nothing went through this round: stop rather than spin on the same messages.
                break;
            }
            self.dead_letters.delete(&resent).await?;
            moved += resent.len() as u64;
        }
        Ok(RedriveReport {
            moved,
            remaining: self.dead_letters.approximate_messages().await,
        })
    }
}
