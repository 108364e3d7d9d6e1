//! Pub/Sub's settings (`FLUXGATE_QUEUE=pubsub`): where the drain publishes, and where replay
//! finds the dead letters it redrives.

use chrono::TimeDelta;
use clap::Args;

use crate::config::parse_duration;
use crate::error::{Error, Result};

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

impl PubsubConfig {
    /// The drain's topic (`FLUXGATE_PUBSUB_TOPIC`), checked.
    pub fn topic(&self) -> Result<String> {
        resource_name(
            "FLUXGATE_PUBSUB_TOPIC",
            self.pubsub_topic.as_deref(),
            "topic",
            "FLUXGATE_QUEUE=pubsub",
        )
    }

    /// The subscription replay's redrive pulls (`FLUXGATE_PUBSUB_DEAD_LETTER_SUBSCRIPTION`),
    /// checked.
    pub fn dead_letter_subscription(&self) -> Result<String> {
        resource_name(
            "FLUXGATE_PUBSUB_DEAD_LETTER_SUBSCRIPTION",
            self.pubsub_dead_letter_subscription.as_deref(),
            "subscription",
            "Pub/Sub redrive",
        )
    }
}

/// The setting `name` (`value`) as a full resource name, `projects/PROJECT/<kind>s/<KIND>`;
/// `needed_by` says what asks for it when it is absent.
fn resource_name(
    name: &'static str,
    value: Option<&str>,
    kind: &str,
    needed_by: &str,
) -> Result<String> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        let short = kind[..1].to_uppercase();
        return Err(Error::setting(
            name,
            format!("{needed_by} needs it (projects/P/{kind}s/{short})"),
        ));
    };
    let collection = format!("{kind}s");
    match value.split('/').collect::<Vec<_>>().as_slice() {
        ["projects", project, c, id]
            if *c == collection && !project.is_empty() && !id.is_empty() =>
        {
            Ok(value.to_owned())
        }
        _ => Err(Error::setting(
            name,
            format!(
                "must be projects/PROJECT/{collection}/{}, not {value:?}",
                kind.to_uppercase()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_subscriptions_must_be_full_names() {
        let name = |value, kind| resource_name("FLUXGATE_X", Some(value), kind, "x");
        assert_eq!(
            name("projects/p/topics/t", "topic").expect("topic"),
            "projects/p/topics/t"
        );
        assert!(name("projects/p/subscriptions/s", "subscription").is_ok());
        for (bad, kind) in [
            ("t", "topic"),
            ("projects/p/topics/", "topic"),
            ("projects//topics/t", "topic"),
            ("p/topics/t", "topic"),
            ("s", "subscription"),
            ("projects/p/topics/s", "subscription"),
            ("projects//subscriptions/s", "subscription"),
            ("projects/p/subscriptions/", "subscription"),
        ] {
            assert!(name(bad, kind).is_err(), "{bad} as a {kind}");
        }
    }

    #[test]
    fn a_missing_or_wrong_name_says_what_it_should_be() {
        let missing = resource_name(
            "FLUXGATE_PUBSUB_TOPIC",
            Some(""),
            "topic",
            "FLUXGATE_QUEUE=pubsub",
        )
        .expect_err("missing");
        assert!(
            missing
                .to_string()
                .contains("FLUXGATE_QUEUE=pubsub needs it (projects/P/topics/T)"),
            "{missing}"
        );
        let wrong = resource_name(
            "FLUXGATE_PUBSUB_DEAD_LETTER_SUBSCRIPTION",
            Some("s"),
            "subscription",
            "x",
        )
        .expect_err("wrong");
        assert!(
            wrong
                .to_string()
                .contains("must be projects/PROJECT/subscriptions/SUBSCRIPTION, not \"s\""),
            "{wrong}"
        );
    }
}
