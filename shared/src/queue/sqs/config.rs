//! The SQS queue's settings (`FLUXGATE_QUEUE=sqs`). Region, credentials and an endpoint
//! override (`AWS_ENDPOINT_URL`) come from the AWS SDK's usual environment.

use clap::Args;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Args)]
pub struct SqsConfig {
    /// The SQS queue's URL (`FLUXGATE_QUEUE=sqs`), e.g.
    /// `https://sqs.eu-west-1.amazonaws.com/123456789012/fluxgate-events`.
    #[arg(long, env = "FLUXGATE_SQS_QUEUE_URL")]
    pub sqs_queue_url: Option<String>,
    /// The SQS dead-letter queue's URL, for `POST /v1/dlq/redrive` (replay).
    #[arg(long, env = "FLUXGATE_SQS_DEAD_LETTER_QUEUE_URL")]
    pub sqs_dead_letter_queue_url: Option<String>,
}

impl SqsConfig {
    /// The queue's URL; an SQS queue needs one.
    pub fn queue_url(&self) -> Result<&str> {
        present(&self.sqs_queue_url)
            .ok_or_else(|| Error::setting("FLUXGATE_SQS_QUEUE_URL", "FLUXGATE_QUEUE=sqs needs it"))
    }

    /// The dead-letter queue and the queue its messages go back to, when both are set.
    pub fn dead_letter_route(&self) -> Option<(&str, &str)> {
        Some((
            present(&self.sqs_dead_letter_queue_url)?,
            present(&self.sqs_queue_url)?,
        ))
    }
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}
