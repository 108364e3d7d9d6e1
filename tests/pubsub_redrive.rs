//! Pub/Sub dead-letter redrive (`POST /v1/dlq/redrive`) through the real replay router: the
//! dead letters built exactly as `fluxgate-replay` builds them from its settings, pulling the
//! dead-letter subscription of the Pub/Sub test server (a mock, the suite's only one; see
//! `fluxgate_tests::pubsub_server` for why) and republishing with the real
//! `google-cloud-pubsub` client.
//!
//! What must hold: a message leaves the dead-letter subscription only once it is on the topic,
//! with its data and attributes; a failed publish leaves it there; `max` is honoured; only an
//! admin may redrive.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use fluxgate::dead_letters::DeadLetters;
use fluxgate::queue::QueueConfig;
use fluxgate_tests::pubsub_server::{PubsubTestServer, SubscribedMessage};
use fluxgate_tests::{ADMIN_KEY, TestDb, authenticator, router, tenant_key};
use serde_json::{Value, json};

const TOPIC: &str = "projects/fluxgate-test/topics/events";
const DEAD_LETTERS: &str = "projects/fluxgate-test/subscriptions/events-dead-letter-replay";

/// The replay settings of a Cloud Run deployment, pointed at the test server.
fn queue_config(server: &PubsubTestServer, batch_messages: u32) -> QueueConfig {
    let mut config = server.queue_config(TOPIC, batch_messages);
    config.pubsub.pubsub_dead_letter_subscription = Some(DEAD_LETTERS.into());
    config
}

/// replay's whole service, with the dead letters as the binary builds them.
async fn replay_app(db: &TestDb, config: &QueueConfig) -> Router {
    let dead_letters: Option<Arc<dyn DeadLetters>> = fluxgate::dead_letters::connect(config)
        .await
        .expect("the replay settings are valid");
    let auth = authenticator(db.store.clone()).await;
    fluxgate_replay::service(db.store.clone(), dead_letters, auth)
}

/// An admin's redrive of up to the default maximum, which must move `moved` dead letters and
/// leave no count of the rest (the test server does not report one).
async fn redrive_moves(app: &Router, moved: u64) {
    let answer = redrive(app, Some(ADMIN_KEY), None).await;
    assert_eq!(
        answer,
        (StatusCode::OK, json!({"moved": moved, "remaining": null}))
    );
}

/// An admin's redrive that must fail as a dependency's problem (503) whose detail says `why`.
async fn redrive_fails(app: &Router, why: &str) {
    let (status, body) = redrive(app, Some(ADMIN_KEY), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(why), "{body}");
}

/// A redrive set up: a SQLite database, the test server with its dead letters, and replay on
/// both (Publish requests of `batch_messages` messages at most).
struct Redrive {
    db: TestDb,
    server: PubsubTestServer,
    app: Router,
}

impl Redrive {
    async fn start(dead_letters: usize, batch_messages: u32) -> Self {
        let db = TestDb::sqlite().await;
        let server = server_with_dead_letters(dead_letters).await;
        let app = replay_app(&db, &queue_config(&server, batch_messages)).await;
        Self { db, server, app }
    }
}

/// `POST /v1/dlq/redrive` with `key` (a bearer key), answering status and JSON body.
async fn redrive(app: &Router, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let request = router::json_request("POST", "/v1/dlq/redrive", key, body.as_ref());
    let answer = router::send(app, request).await;
    let json = answer.json();
    if !answer.status.is_success() {
        assert_eq!(answer.content_type(), "application/problem+json", "{json}");
    }
    (answer.status, json)
}

fn attributes(i: usize) -> HashMap<String, String> {
    HashMap::from([
        ("tenantId".to_string(), "acme".to_string()),
        ("eventType".to_string(), format!("type-{}", i % 3)),
        (
            "CloudPubSubDeadLetterSourceDeliveryCount".to_string(),
            "5".to_string(),
        ),
    ])
}

fn data(i: usize) -> Vec<u8> {
    format!("{{\"eventId\":\"e{i:04}\"}}").into_bytes()
}

/// A server with the topic and a dead-letter subscription holding `count` dead letters.
async fn server_with_dead_letters(count: usize) -> PubsubTestServer {
    let server = PubsubTestServer::start(&[TOPIC]).await;
    server.add_subscription(DEAD_LETTERS);
    for i in 0..count {
        server.dead_letter(DEAD_LETTERS, data(i), attributes(i));
    }
    server
}

/// The data of the messages still on the dead-letter subscription.
fn left(server: &PubsubTestServer) -> HashSet<Vec<u8>> {
    server
        .on_subscription(DEAD_LETTERS)
        .into_iter()
        .map(|m| m.data)
        .collect()
}

/// The data of the messages on the topic (each at most once is not asserted here).
fn on_topic(server: &PubsubTestServer) -> Vec<Vec<u8>> {
    server.published().into_iter().map(|m| m.data).collect()
}

#[tokio::test]
async fn dead_letters_go_back_to_the_topic_intact_and_are_acknowledged_up_to_max() {
    let Redrive { db, server, app } = Redrive::start(250, 100).await;

    // More than one pull's worth (100), fewer than there are.
    let (status, body) = redrive(&app, Some(ADMIN_KEY), Some(json!({"max": 230}))).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"moved": 230, "remaining": null})),
        "Pub/Sub cannot count a subscription's messages, so remaining is unknown"
    );
    let published = server.published();
    assert_eq!(published.len(), 230);
    assert_eq!(server.on_subscription(DEAD_LETTERS).len(), 20);
    let by_data: HashMap<Vec<u8>, HashMap<String, String>> = published
        .iter()
        .map(|m| (m.data.clone(), m.attributes.clone()))
        .collect();
    assert_eq!(by_data.len(), 230, "each dead letter published once");
    for i in 0..250 {
        match by_data.get(&data(i)) {
            Some(published_attributes) => {
                assert_eq!(
                    published_attributes,
                    &attributes(i),
                    "attributes of e{i:04}"
                );
                assert!(
                    !left(&server).contains(&data(i)),
                    "e{i:04} is on the topic and still on the dead-letter subscription"
                );
            }
            None => assert!(left(&server).contains(&data(i)), "e{i:04} was lost"),
        }
    }
    assert!(published.iter().all(|m| m.topic == TOPIC));
    assert!(
        server
            .on_subscription(DEAD_LETTERS)
            .iter()
            .all(|m| m.leased_by.is_none() && m.deliveries == 0),
        "what max left out was not even pulled"
    );

    // The rest, then nothing.
    redrive_moves(&app, 20).await;
    redrive_moves(&app, 0).await;
    assert!(left(&server).is_empty());
    let all: HashSet<Vec<u8>> = on_topic(&server).into_iter().collect();
    assert_eq!(all, (0..250).map(data).collect::<HashSet<_>>());
    assert_eq!(server.published().len(), 250, "nothing published twice");

    let calls = server.subscriber_calls();
    assert!(calls.iter().all(|c| c.subscription == DEAD_LETTERS));
    assert!(
        calls.iter().all(|c| !c.had_credentials),
        "no credentials go to a local server"
    );
    assert!(
        server.requests().iter().all(|r| !r.had_credentials),
        "no credentials go to a local server"
    );
    assert!(
        calls
            .iter()
            .filter(|c| c.method == "Pull")
            .all(|c| matches!(c.outcome, Ok(n) if n <= 100)),
        "pulls of at most 100: {calls:?}"
    );
    let acked: usize = calls
        .iter()
        .filter(|c| c.method == "Acknowledge")
        .map(|c| c.ack_ids.len())
        .sum();
    assert_eq!(acked, 250);
    db.cleanup().await;
}

#[tokio::test]
async fn a_failed_publish_leaves_the_dead_letters_on_the_subscription_and_answers_an_error() {
    let Redrive { db, server, app } = Redrive::start(6, 100).await;
    // PERMISSION_DENIED is not retried by the client: the publish fails at once.
    server.fail_everything(tonic::Code::PermissionDenied);

    redrive_fails(&app, "6 dead letters could not be republished").await;
    assert!(server.published().is_empty());
    let still: Vec<SubscribedMessage> = server.on_subscription(DEAD_LETTERS);
    assert_eq!(still.len(), 6, "a dead letter was acknowledged unpublished");
    assert!(
        still
            .iter()
            .all(|m| m.leased_by.is_none() && m.deliveries == 1),
        "pulled once, then handed back at once: {still:?}"
    );
    assert!(
        server
            .subscriber_calls()
            .iter()
            .all(|c| c.method != "Acknowledge"),
        "nothing acknowledged"
    );

    // Once Pub/Sub takes publishes again, the same dead letters go through.
    server.heal();
    redrive_moves(&app, 6).await;
    assert!(left(&server).is_empty());
    db.cleanup().await;
}

#[tokio::test]
async fn messages_whose_publish_failed_stay_and_the_others_move() {
    // One message per Publish request, so one failing message fails only its own request.
    let Redrive { db, server, app } = Redrive::start(10, 1).await;
    let failing = data(3);
    server.fail_requests_with(
        move |m| m.data == failing,
        tonic::Code::PermissionDenied,
        None,
    );

    let (status, body) = redrive(&app, Some(ADMIN_KEY), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| d
            .contains("1 dead letters could not be republished")
            && d.contains("9 moved")),
        "{body}"
    );
    // Nothing lost, nothing in both places: each dead letter is on the topic or still on the
    // dead-letter subscription, never neither.
    let published: HashSet<Vec<u8>> = on_topic(&server).into_iter().collect();
    let left = left(&server);
    assert_eq!(left, HashSet::from([data(3)]));
    assert_eq!(
        published,
        (0..10)
            .filter(|i| *i != 3)
            .map(data)
            .collect::<HashSet<_>>()
    );
    db.cleanup().await;
}

#[tokio::test]
async fn what_a_vanished_redrive_held_comes_back_after_its_ack_deadline() {
    let Redrive { db, server, app } = Redrive::start(5, 100).await;
    // A redrive that stopped half-way (it crashed after its pull): two messages are leased to
    // it, unacknowledged. They are not lost, only held until their ack deadline passes.
    assert_eq!(server.lease_to_a_vanished_puller(DEAD_LETTERS, 2), 2);

    redrive_moves(&app, 3).await;
    assert_eq!(server.on_subscription(DEAD_LETTERS).len(), 2);

    server.expire_leases(DEAD_LETTERS);
    redrive_moves(&app, 2).await;
    assert!(left(&server).is_empty());
    let published: HashSet<Vec<u8>> = on_topic(&server).into_iter().collect();
    assert_eq!(published, (0..5).map(data).collect::<HashSet<_>>());
    db.cleanup().await;
}

#[tokio::test]
async fn only_an_admin_may_redrive() {
    let Redrive { db, server, app } = Redrive::start(3, 100).await;
    let key = tenant_key(db.store.as_ref(), "acme").await;

    let (status, _) = redrive(&app, Some(&key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = redrive(&app, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = redrive(&app, Some("not-a-key-0123456789abcdefghijklmnop"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        server.subscriber_calls().is_empty(),
        "a refused redrive touched the subscription"
    );
    assert_eq!(server.on_subscription(DEAD_LETTERS).len(), 3);
    assert!(server.published().is_empty());
    db.cleanup().await;
}

#[tokio::test]
async fn replay_without_a_dead_letter_subscription_answers_404_and_bad_settings_fail() {
    let db = TestDb::sqlite().await;
    let server = server_with_dead_letters(1).await;
    let mut config = queue_config(&server, 100);
    config.pubsub.pubsub_dead_letter_subscription = None;
    let app = replay_app(&db, &config).await;
    let (status, _) = redrive(&app, Some(ADMIN_KEY), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A subscription that is not a full name, or no topic to send to, stops the start.
    config.pubsub.pubsub_dead_letter_subscription = Some("events-dead-letter-replay".into());
    assert!(fluxgate::dead_letters::connect(&config).await.is_err());
    let mut config = queue_config(&server, 100);
    config.pubsub.pubsub_topic = None;
    assert!(fluxgate::dead_letters::connect(&config).await.is_err());

    // An unknown subscription is the redrive's error, not a silent "nothing to move".
    let mut config = queue_config(&server, 100);
    config.pubsub.pubsub_dead_letter_subscription =
        Some("projects/fluxgate-test/subscriptions/nope".into());
    let app = replay_app(&db, &config).await;
    redrive_fails(&app, "NotFound").await;
    db.cleanup().await;
}
