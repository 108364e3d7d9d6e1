//! Reading the SQS queue by long polling, for a worker that is not triggered by Lambda's event
//! source mapping (`fluxgate-local` with `FLUXGATE_QUEUE=sqs`): receive, then delete what was
//! handled, and hand back what needs another delivery after a delay.

use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::operation::receive_message::builders::ReceiveMessageFluentBuilder;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

use super::SqsQueue;
use crate::error::{Error, Result};

/// One received message: its body, receipt handle and receive count.
#[derive(Debug, Clone)]
pub struct SqsReceived {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: Vec<u8>,
    /// SQS's ApproximateReceiveCount (1 on the first delivery).
    pub receive_count: u32,
}

impl SqsQueue {
    /// A `ReceiveMessage` request for up to `max` messages (SQS hands out one to ten): the
    /// worker's long poll and the dead-letter redrive each add what they need.
    pub(crate) fn receive_request(&self, max: i32) -> ReceiveMessageFluentBuilder {
        self.client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10))
    }

    /// Up to `max` (at most ten) messages, waiting up to `wait` (at most 20 s) for the first.
    pub async fn receive(&self, max: i32, wait: Duration) -> Result<Vec<SqsReceived>> {
        let output = self
            .receive_request(max)
            .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(20).min(20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| {
                Error::queue(format!("SQS ReceiveMessage: {}", DisplayErrorContext(&e)))
            })?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse::<u32>().ok())
                    .unwrap_or(1)
                    .max(1);
                Some(SqsReceived {
                    message_id: m.message_id?,
                    receipt_handle: m.receipt_handle?,
                    body: m.body.unwrap_or_default().into_bytes(),
                    receive_count,
                })
            })
            .collect())
    }

    /// Deletes handled messages (at most ten receipts): the worker's, or resent dead letters.
    pub async fn delete(&self, receipts: &[String]) -> Result<()> {
        if receipts.is_empty() {
            return Ok(());
        }
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .map_err(|e| Error::queue(format!("SQS DeleteMessageBatch entry: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                Error::queue(format!(
                    "SQS DeleteMessageBatch: {}",
                    DisplayErrorContext(&e)
                ))
            })?;
        if let Some(failed) = output.failed().first() {
            // Not deleted: SQS delivers it again, where the worker finds it DONE (or a redrive
            // resends it, which the worker's dedup key makes harmless).
            tracing::warn!(code = failed.code(), "SQS did not delete a handled message");
        }
        Ok(())
    }

    /// SQS's ApproximateNumberOfMessages: about how many messages wait; `None` when it cannot
    /// be read.
    pub(crate) async fn approximate_messages(&self) -> Option<u64> {
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .ok()?;
        attributes
            .attributes()?
            .get(&QueueAttributeName::ApproximateNumberOfMessages)?
            .parse()
            .ok()
    }

    /// Makes a message visible again after `delay` (at most 12 hours), for another delivery.
    pub async fn retry_after(&self, receipt: &str, delay: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(i32::try_from(delay.as_secs()).unwrap_or(43_200).min(43_200))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                Error::queue(format!(
                    "SQS ChangeMessageVisibility: {}",
                    DisplayErrorContext(&e)
                ))
            })
    }
}
