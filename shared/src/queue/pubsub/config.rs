//! Pub/Sub's settings (`FLUXGATE_QUEUE=pubsub`): where the drain publishes, and where replay
//! finds the dead letters it redrives.

use chrono::TimeDelta;
use clap::Args;

use crate::config::parse_duration;

/// Where and how the drain publishes to Pub/Sub (`FLUXGATE_QUEUE=pubsub`), and where replay
/// finds the dead letters it redrives.
#[derive(Debug, Clone, Args)]
pub struct PubsubConfig {
    /// The topic, in full: `projects/PROJECT/topics/TOPIC`.
    #[arg(long, env = "FLUXGATE_PUBSUB_TOPIC")]
    pub pubsub_topic: Option<String>,
    /// `host:port` of a local Pub/Sub server (the emulator's own setting): plain gRPC, no
    /// credentials.
    #[arg(long, env = "PUBSUB_EMULATOR_HOST")]
    pub pubsub_emulator_host: Option<String>,
    /// Endpoint URL, e.g. a regional `https://europe-west1-pubsub.googleapis.com` (with
    /// Application Default Credentials) or a local `http://127.0.0.1:8085` (no credentials).
    #[arg(long, env = "FLUXGATE_PUBSUB_ENDPOINT")]
    pub pubsub_endpoint: Option<String>,
    /// Most messages the client puts in one Publish request (Pub/Sub allows 1000).
    #[arg(long, env = "FLUXGATE_PUBSUB_BATCH_MESSAGES", default_value_t = 100)]
    pub pubsub_batch_messages: u32,
    /// How long the client keeps retrying a failed Publish request (transient errors) before
    /// the drain gives its messages back to the outbox with backoff.
    #[arg(long, env = "FLUXGATE_PUBSUB_PUBLISH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub pubsub_publish_timeout: TimeDelta,
    /// The dead-letter topic's pull subscription, in full
    /// (`projects/PROJECT/subscriptions/SUBSCRIPTION`), for `POST /v1/dlq/redrive` (replay):
    /// its messages are pulled, republished to the topic and then acknowledged.
    #[arg(long, env = "FLUXGATE_PUBSUB_DEAD_LETTER_SUBSCRIPTION")]
    pub pubsub_dead_letter_subscription: Option<String>,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        Self {
            pubsub_topic: None,
            pubsub_emulator_host: None,
            pubsub_endpoint: None,
            pubsub_batch_messages: 100,
            pubsub_publish_timeout: TimeDelta::seconds(30),
            pubsub_dead_letter_subscription: None,
        }
    }
}
