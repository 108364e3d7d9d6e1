//! AWS clients pointed at the moto server (`FLUXGATE_TEST_MOTO_URL`, default
//! `http://127.0.0.1:4566`, started by `scripts/test.sh`), and a fresh queue or secret per test.
//!
//! The SDK configuration is built here, not read from the process environment, so tests in
//! parallel never touch each other's settings: moto's endpoint, region `us-east-1` and a static
//! test key pair. [`moto_env`] gives the same settings as environment variables for a function
//! started as a child process. A moto that does not answer makes the test panic, naming what to
//! start.

use std::time::{Duration, Instant};

use aws_config::{Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

/// Where the moto server answers.
pub const MOTO_URL_ENV: &str = "FLUXGATE_TEST_MOTO_URL";
const DEFAULT_MOTO_URL: &str = "http://127.0.0.1:4566";
/// The region every test client uses (moto keeps each region's resources apart).
pub const REGION: &str = "us-east-1";
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The moto server's URL.
pub fn moto_url() -> String {
    std::env::var(MOTO_URL_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_MOTO_URL.to_owned())
}

/// The environment a function started as a child process needs to reach moto with the AWS SDK's
/// standard configuration.
pub fn moto_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto_url()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ]
}

/// SDK configuration for moto; panics, naming what to start, when moto does not answer.
pub async fn moto_config() -> SdkConfig {
    let url = moto_url();
    // The functions' own loader: the same HTTPS client (rustls on ring) as in production.
    let config = fluxgate::aws::config_loader()
        .endpoint_url(&url)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "fluxgate-tests",
        ))
        .load()
        .await;
    let probe = aws_sdk_sqs::Client::new(&config)
        .list_queues()
        .max_results(1)
        .send();
    let failure = match tokio::time::timeout(ANSWER_TIMEOUT, probe).await {
        Ok(Ok(_)) => return config,
        Ok(Err(err)) => DisplayErrorContext(&err).to_string(),
        Err(_) => format!("no answer within {ANSWER_TIMEOUT:?}"),
    };
    panic!(
        "cannot reach the moto server at {url} ({MOTO_URL_ENV}): {failure}\n\
         Tests that need SQS or Secrets Manager never skip. `bash scripts/test.sh` installs and \
         starts moto; or start it by hand:\n\
         \x20   ~/.cache/fluxgate/venv/bin/moto_server -H 127.0.0.1 -p 4566\n\
         (or point {MOTO_URL_ENV} at a running moto server)"
    );
}

/// A name no other test (or earlier run against the same moto) uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A standard SQS queue of its own on moto, for one test.
pub struct TestQueue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
    pub name: String,
}

impl TestQueue {
    pub async fn create() -> Self {
        let client = aws_sdk_sqs::Client::new(&moto_config().await);
        let name = unique_name("fluxgate-test");
        let created = client
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .unwrap_or_else(|err| {
                panic!("create queue {name} on moto: {}", DisplayErrorContext(&err))
            });
        let url = created
            .queue_url()
            .unwrap_or_else(|| panic!("moto created {name} without a URL"))
            .to_owned();
        Self { client, url, name }
    }

    /// Receives (and deletes) messages until they carry `expected` events (a pack counts its
    /// events, any other message one) or `within` has passed; the messages carry all their
    /// attributes and their receive count.
    pub async fn receive(&self, expected: usize, within: Duration) -> Vec<Message> {
        let deadline = Instant::now() + within;
        let mut received = Vec::new();
        let mut carried = 0;
        while carried < expected && Instant::now() < deadline {
            let batch = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap_or_else(|err| {
                    panic!("receive from {}: {}", self.name, DisplayErrorContext(&err))
                });
            for message in batch.messages() {
                if let Some(receipt) = message.receipt_handle() {
                    self.client
                        .delete_message()
                        .queue_url(&self.url)
                        .receipt_handle(receipt)
                        .send()
                        .await
                        .unwrap_or_else(|err| {
                            panic!("delete from {}: {}", self.name, DisplayErrorContext(&err))
                        });
                }
                carried += crate::events::carried_by(message.body().unwrap_or_default().as_bytes())
                    .map_or(1, |events| events.len());
                received.push(message.clone());
            }
        }
        received
    }

    /// Everything left on the queue, waiting briefly: for asserting that nothing else came.
    pub async fn leftovers(&self) -> Vec<Message> {
        self.receive(usize::MAX, Duration::from_secs(1)).await
    }

    /// Deletes the queue (best effort: moto forgets everything when it stops anyway).
    pub async fn delete(self) {
        if let Err(err) = self.client.delete_queue().queue_url(&self.url).send().await {
            eprintln!(
                "fluxgate-tests: could not delete queue {}: {}",
                self.name,
                DisplayErrorContext(&err)
            );
        }
    }
}

/// The String message attribute `name` of a received message.
pub fn string_attribute<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message
        .message_attributes()?
        .get(name)
        .and_then(|value| value.string_value())
}

/// Creates a secret with a unique name on moto and answers its name.
pub async fn create_secret(value: &str) -> String {
    let client = aws_sdk_secretsmanager::Client::new(&moto_config().await);
    let name = unique_name("fluxgate-test/db");
    client
        .create_secret()
        .name(&name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|err| {
            panic!(
                "create secret {name} on moto: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&err)
            )
        });
    name
}
