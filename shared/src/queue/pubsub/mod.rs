//! Google Cloud Pub/Sub through the official `google-cloud-pubsub` client. The client batches
//! messages into `Publish` requests (gRPC) and answers each message on its own future, so one
//! failed request fails only the messages it carried; the drain gives those back to the outbox
//! with backoff and settles the rest as PUBLISHED.
//!
//! Publishing needs no admin call (the client does not look the topic up), so the topic must
//! exist; `cloudrun/` creates it. Where it points:
//! - `PUBSUB_EMULATOR_HOST=host:port` (the emulator convention): plain gRPC, no credentials;
//! - `FLUXGATE_PUBSUB_ENDPOINT=http://…`: the same for any local server;
//! - `FLUXGATE_PUBSUB_ENDPOINT=https://…` (a regional endpoint) or nothing (the global one):
//!   Application Default Credentials (the metadata server on Cloud Run,
//!   `GOOGLE_APPLICATION_CREDENTIALS` elsewhere).

#[cfg(feature = "pubsub")]
mod client;
pub mod config;
#[cfg(feature = "pubsub")]
mod subscription;

#[cfg(feature = "pubsub")]
pub use client::PubsubQueue;
#[cfg(feature = "pubsub")]
pub(crate) use client::{Target, target};
#[cfg(feature = "pubsub")]
pub use subscription::PubsubSubscription;

/// Attribute names on every message, for subscription filters and for people reading it.
pub const ATTRIBUTE_TENANT_ID: &str = "tenantId";
pub const ATTRIBUTE_EVENT_TYPE: &str = "eventType";
pub const ATTRIBUTE_CORRELATION_ID: &str = "correlationId";
