//! The SQS client side of the queue (cargo feature `sqs`).

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::operation::send_message_batch::{SendMessageBatchError, SendMessageBatchOutput};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use tokio::task::JoinSet;

use super::config::SqsConfig;
use crate::error::Result;
use crate::queue::{PublishResult, Queue, QueueMessage};

/// Entries of one `SendMessageBatch` request, at most (an SQS limit).
pub const MAX_ENTRIES_PER_REQUEST: usize = 10;
/// Bytes of one request, all entries' bodies and attributes together, at most; also the
/// largest single message: 1 MiB since August 2025 (256 KiB before), and the default
/// `MaximumMessageSize` of new queues. `template.yaml` sets it on its queues; a queue made with
/// a smaller one needs `FLUXGATE_PACK_MAX_BYTES` at or below it.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Messages one `publish_batch` call takes: the drain hands over this many at once, and they
/// go out as up to ten concurrent requests.
const MAX_PUBLISH_BATCH: usize = 100;

const STRING: &str = "String";

/// Bytes kept free in a message for its attributes (tenant id, event type, correlation id,
/// each at most 128 characters, with their names and types).
const ATTRIBUTE_ALLOWANCE: usize = 1024;

/// Publishes to one standard SQS queue. Cheap to clone (the SDK client is shared).
#[derive(Clone)]
pub struct SqsQueue {
    pub(super) client: Client,
    pub(super) queue_url: String,
}

impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueue")
            .field("queue_url", &self.queue_url)
            .finish_non_exhaustive()
    }
}

impl SqsQueue {
    /// A queue on a client the caller built (tests give one pointed at moto).
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// The configured queue, on a client from the SDK's standard configuration.
    pub async fn connect(config: &SqsConfig) -> Result<Self> {
        let url = config.queue_url()?;
        tracing::info!(queue_url = url, "publishing to SQS");
        Ok(Self::from_env(url).await)
    }

    /// A queue on a client from the SDK's standard configuration: region, credentials and
    /// `AWS_ENDPOINT_URL` from the environment (Lambda's role, a profile, ...).
    pub async fn from_env(queue_url: impl Into<String>) -> Self {
        let sdk = crate::aws::load_config().await;
        Self::new(Client::new(&sdk), queue_url)
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// One `SendMessageBatch` request of at most ten entries: the drain's publish, and the
    /// dead-letter redrive's resend.
    pub(crate) async fn send_batch(
        &self,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> std::result::Result<SendMessageBatchOutput, SdkError<SendMessageBatchError>> {
        self.client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
    }

    /// Sends one request of at most ten entries and answers for each of them, in order.
    async fn send_group(&self, entries: Vec<SendMessageBatchRequestEntry>) -> Vec<PublishResult> {
        let count = entries.len();
        let output = match self.send_batch(entries).await {
            Ok(output) => output,
            Err(err) => {
                let reason = format!("SQS SendMessageBatch: {}", DisplayErrorContext(&err));
                return vec![Err(reason); count];
            }
        };
        settle(count, &output)
    }
}

/// What became of each of the `count` entries of one request, by SQS's answer. An entry is
/// sent only when SQS lists it as successful; one it names in neither list is retried (a
/// duplicate on the queue is harmless, a row marked PUBLISHED that was never sent is lost).
pub fn settle(count: usize, output: &SendMessageBatchOutput) -> Vec<PublishResult> {
    let mut results: Vec<PublishResult> =
        vec![Err("SQS did not report this entry as sent".to_owned()); count];
    for sent in output.successful() {
        if let Some(slot) = entry_index(sent.id(), count).and_then(|i| results.get_mut(i)) {
            *slot = Ok(());
        }
    }
    for failed in output.failed() {
        if let Some(slot) = entry_index(failed.id(), count).and_then(|i| results.get_mut(i)) {
            let detail = failed
                .message()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            let fault = if failed.sender_fault() {
                " (sender fault)"
            } else {
                ""
            };
            *slot = Err(format!(
                "SQS refused the message: {}{detail}{fault}",
                failed.code()
            ));
        }
    }
    results
}

#[async_trait]
impl Queue for SqsQueue {
    fn max_batch(&self) -> usize {
        MAX_PUBLISH_BATCH
    }

    /// The request limit less room for the attributes, which SQS counts in a message's size.
    fn max_message_bytes(&self) -> usize {
        MAX_REQUEST_BYTES - ATTRIBUTE_ALLOWANCE
    }

    async fn publish_batch(&self, messages: &[QueueMessage]) -> Result<Vec<PublishResult>> {
        // Every message starts as not sent; only what SQS confirms becomes Ok.
        let mut results: Vec<PublishResult> = messages
            .iter()
            .map(|message| {
                let size = message_size(message);
                Err(if size > MAX_REQUEST_BYTES {
                    format!(
                        "the message is {size} bytes, more than SQS takes ({MAX_REQUEST_BYTES})"
                    )
                } else {
                    "not sent".to_owned()
                })
            })
            .collect();
        let mut requests = JoinSet::new();
        for group in plan_requests(messages) {
            let mut entries = Vec::with_capacity(group.len());
            let mut indexes = Vec::with_capacity(group.len());
            for index in group {
                match entry(entries.len(), &messages[index]) {
                    Ok(built) => {
                        entries.push(built);
                        indexes.push(index);
                    }
                    Err(reason) => results[index] = Err(reason),
                }
            }
            if entries.is_empty() {
                continue;
            }
            let queue = self.clone();
            requests.spawn(async move {
                let sent = queue.send_group(entries).await;
                (indexes, sent)
            });
        }
        while let Some(joined) = requests.join_next().await {
            // A request task that panicked leaves its messages unconfirmed, so "not sent".
            let (indexes, sent) = match joined {
                Ok(done) => done,
                Err(err) => {
                    tracing::error!(error = %err, "an SQS request task failed");
                    continue;
                }
            };
            for (index, result) in indexes.into_iter().zip(sent) {
                results[index] = result;
            }
        }
        Ok(results)
    }
}

/// Groups message indexes into requests of at most ten entries and [`MAX_REQUEST_BYTES`],
/// in order. A message too large for SQS on its own is left out (it fails without a request).
pub fn plan_requests(messages: &[QueueMessage]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_bytes = 0;
    for (index, message) in messages.iter().enumerate() {
        let size = message_size(message);
        if size > MAX_REQUEST_BYTES {
            continue;
        }
        if current.len() == MAX_ENTRIES_PER_REQUEST || current_bytes + size > MAX_REQUEST_BYTES {
            groups.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push(index);
        current_bytes += size;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// The message's size as SQS counts it: body, and each attribute's name, type and value.
pub fn message_size(message: &QueueMessage) -> usize {
    message.body.len()
        + attributes(message)
            .map(|(name, value)| name.len() + STRING.len() + value.len())
            .sum::<usize>()
}

/// The String attributes a message carries (an absent correlation id is left out: SQS does
/// not take empty attribute values).
fn attributes(message: &QueueMessage) -> impl Iterator<Item = (&'static str, &str)> {
    let attrs = &message.attributes;
    [
        ("tenantId", Some(attrs.tenant_id.as_str())),
        ("eventType", Some(attrs.event_type.as_str())),
        ("correlationId", attrs.correlation_id.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.filter(|v| !v.is_empty()).map(|v| (name, v)))
}

/// The batch entry of one message. Its id is its position in the request: always a valid
/// batch entry id (alphanumerics, `-`, `_`, at most 80), unique within the request, whatever
/// characters the tenant and event ids hold.
fn entry(
    position: usize,
    message: &QueueMessage,
) -> std::result::Result<SendMessageBatchRequestEntry, String> {
    let body = std::str::from_utf8(&message.body)
        .map_err(|e| format!("the message body is not UTF-8: {e}"))?;
    let mut builder = SendMessageBatchRequestEntry::builder()
        .id(entry_id(position))
        .message_body(body);
    for (name, value) in attributes(message) {
        let value = MessageAttributeValue::builder()
            .data_type(STRING)
            .string_value(value)
            .build()
            .map_err(|e| format!("message attribute {name}: {e}"))?;
        builder = builder.message_attributes(name, value);
    }
    builder.build().map_err(|e| format!("SQS batch entry: {e}"))
}

fn entry_id(position: usize) -> String {
    format!("m{position}")
}

fn entry_index(id: &str, count: usize) -> Option<usize> {
    id.strip_prefix('m')?
        .parse::<usize>()
        .ok()
        .filter(|i| *i < count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKey;
    use crate::queue::MessageAttributes;

    fn message(body_len: usize, correlation: Option<&str>) -> QueueMessage {
        QueueMessage {
            keys: vec![EventKey {
                tenant_id: "acme".into(),
                event_id: "e1".into(),
            }],
            body: vec![b'x'; body_len],
            attributes: MessageAttributes {
                tenant_id: "acme".into(),
                event_type: "order.created".into(),
                correlation_id: correlation.map(str::to_owned),
            },
        }
    }

    #[test]
    fn the_size_counts_body_and_attributes() {
        let attrs = "tenantId".len() + 6 + 4 + "eventType".len() + 6 + "order.created".len();
        assert_eq!(message_size(&message(100, None)), 100 + attrs);
        assert_eq!(
            message_size(&message(100, Some("c-1"))),
            100 + attrs + "correlationId".len() + 6 + 3
        );
        // An empty correlation id is not sent, so it costs nothing.
        assert_eq!(message_size(&message(100, Some(""))), 100 + attrs);
    }

    #[test]
    fn requests_hold_ten_entries_at_most() {
        let messages: Vec<_> = (0..25).map(|_| message(10, None)).collect();
        let plan = plan_requests(&messages);
        let sizes: Vec<usize> = plan.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let flat: Vec<usize> = plan.into_iter().flatten().collect();
        assert_eq!(flat, (0..25).collect::<Vec<_>>(), "in order, each once");
    }

    #[test]
    fn large_messages_split_requests_by_bytes() {
        // 400 KiB bodies: two fit under 1 MiB, a third does not.
        let messages: Vec<_> = (0..5).map(|_| message(400 * 1024, None)).collect();
        let plan = plan_requests(&messages);
        assert_eq!(plan, vec![vec![0, 1], vec![2, 3], vec![4]]);
        for group in &plan {
            let bytes: usize = group.iter().map(|i| message_size(&messages[*i])).sum();
            assert!(bytes <= MAX_REQUEST_BYTES);
        }
    }

    #[test]
    fn a_message_too_large_for_sqs_gets_no_request() {
        let messages = vec![
            message(10, None),
            message(MAX_REQUEST_BYTES, None),
            message(10, None),
        ];
        assert_eq!(plan_requests(&messages), vec![vec![0, 2]]);
    }

    #[test]
    fn entry_ids_are_valid_and_map_back() {
        for position in [0, 9, 99] {
            let id = entry_id(position);
            assert!(id.len() <= 80);
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            );
            assert_eq!(entry_index(&id, 100), Some(position));
        }
        assert_eq!(entry_index("m10", 10), None);
        assert_eq!(entry_index("x1", 10), None);
    }

    #[test]
    fn an_entry_carries_body_and_string_attributes() {
        let built = entry(3, &message(5, Some("corr"))).expect("entry");
        assert_eq!(built.id(), "m3");
        assert_eq!(built.message_body(), "xxxxx");
        let attrs = built.message_attributes().expect("attributes");
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs["tenantId"].string_value(), Some("acme"));
        assert_eq!(attrs["tenantId"].data_type(), "String");
        assert_eq!(attrs["eventType"].string_value(), Some("order.created"));
        assert_eq!(attrs["correlationId"].string_value(), Some("corr"));

        let mut not_utf8 = message(1, None);
        not_utf8.body = vec![0xff];
        assert!(entry(0, &not_utf8).is_err());
    }

    #[test]
    fn each_entry_is_settled_by_its_id() {
        use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};
        let sent = |id: &str| {
            SendMessageBatchResultEntry::builder()
                .id(id)
                .message_id(format!("msg-{id}"))
                .md5_of_message_body("0")
                .build()
                .expect("result entry")
        };
        let output = SendMessageBatchOutput::builder()
            .successful(sent("m0"))
            .successful(sent("m2"))
            .failed(
                BatchResultErrorEntry::builder()
                    .id("m1")
                    .sender_fault(true)
                    .code("InvalidParameterValue")
                    .message("too long")
                    .build()
                    .expect("error entry"),
            )
            // Ids SQS should never answer with are ignored, not trusted.
            .successful(sent("m9"))
            .successful(sent("bogus"))
            .build()
            .expect("output");
        let results = settle(4, &output);
        assert_eq!(results[0], Ok(()));
        assert_eq!(
            results[1],
            Err("SQS refused the message: InvalidParameterValue: too long (sender fault)".into())
        );
        assert_eq!(results[2], Ok(()));
        assert!(results[3].is_err(), "not reported, so not sent");
    }
}
