//! Amazon SQS as the queue between the drain and the worker: `SendMessageBatch`, with each
//! entry's outcome mapped back to its message so only the failed ones are retried.
//!
//! Standard queues only: FIFO queues need a `MessageGroupId` (and a deduplication id) on every
//! entry, which fluxgate does not set; the worker's dedup key makes redelivery harmless anyway.

#[cfg(feature = "sqs")]
mod client;
pub mod config;
#[cfg(feature = "sqs")]
mod receive;

#[cfg(feature = "sqs")]
pub use client::{MAX_ENTRIES_PER_REQUEST, MAX_REQUEST_BYTES, SqsQueue};
#[cfg(feature = "sqs")]
pub use receive::SqsReceived;
