//! A Pub/Sub test server: THE ONE MOCK IN THE SUITE, and why.
//!
//! Every other outside system in these tests is the real thing (PostgreSQL, MariaDB, SQLite,
//! moto, bqemulator). Google's Pub/Sub emulator ships only inside the gcloud SDK, which cannot
//! be installed on this machine, and nothing else that speaks Pub/Sub can. So this module
//! serves the real `google.pubsub.v1.Publisher` gRPC protocol, decoding and encoding the
//! published protobuf messages (`googleapis-tonic-google-pubsub-v1`) with tonic's server
//! plumbing, on 127.0.0.1 over HTTP/2. The code under test uses the real `google-cloud-pubsub`
//! client against it, so what is tested is our use of the real client over the real wire
//! protocol; only the server side is ours.
//!
//! Beside it, one declared fake: [`crate::FlakySink`] wraps a real warehouse and fails the rows
//! of chosen event types (no real warehouse can be told to fail one row on demand); the tests
//! of the worker's failure paths (tests/pipeline.rs, tests/pubsub.rs) use it and say so.
//!
//! It serves `Publish` (the only call the publishing client makes: it does not look the topic
//! up, and makes no REST admin calls), keeps what was published (data, attributes, ids, which
//! request carried it, whether credentials came along), can be told to fail Publish requests
//! that carry chosen messages, and can hold Publish requests until released (to test a
//! shutdown during a publish). It does not deliver: a test posts
//! [`PublishedMessage::push_envelope`] to the worker, as a push subscription would.
//!
//! For the dead-letter redrive it also serves the Subscriber calls replay makes on a pull
//! subscription: `Pull`, `Acknowledge` and `ModifyAckDeadline`, on subscriptions a test creates
//! ([`PubsubTestServer::add_subscription`]) and fills ([`PubsubTestServer::dead_letter`]), as
//! Pub/Sub's dead-lettering would. It keeps Pub/Sub's at-least-once rules: a pulled message is
//! leased under a fresh ack id and not pulled again while leased; `Acknowledge` with the
//! current ack id removes it, any other ack id is ignored; `ModifyAckDeadline` to 0 ends the
//! lease; an unacknowledged message never goes away. Ack deadlines do not run on a clock
//! (tests are not timed): [`PubsubTestServer::expire_leases`] lets them pass. `Pull` answers at
//! once, with what there is (nothing on an empty subscription), where Pub/Sub waits a while
//! first. Every other method answers `UNIMPLEMENTED`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use chrono::TimeDelta;
use fluxgate::queue::{PubsubConfig, QueueConfig, QueueKind, SqsConfig};
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1::{
    AcknowledgeRequest, ModifyAckDeadlineRequest, PublishRequest, PublishResponse, PubsubMessage,
    PullRequest, PullResponse, ReceivedMessage,
};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::NamedService;
use tonic::{Code, Status};

pub const PUBLISH_PATH: &str = "/google.pubsub.v1.Publisher/Publish";
pub const PULL_PATH: &str = "/google.pubsub.v1.Subscriber/Pull";
pub const ACKNOWLEDGE_PATH: &str = "/google.pubsub.v1.Subscriber/Acknowledge";
pub const MODIFY_ACK_DEADLINE_PATH: &str = "/google.pubsub.v1.Subscriber/ModifyAckDeadline";

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct PublishedMessage {
    pub topic: String,
    pub message_id: String,
    pub data: Vec<u8>,
    pub attributes: HashMap<String, String>,
    pub publish_time: chrono::DateTime<chrono::Utc>,
    /// Index into [`PubsubTestServer::requests`] of the request that carried it.
    pub request: usize,
}

impl PublishedMessage {
    /// The message as a push subscription posts it, in the documented JSON format (both
    /// spellings of the id and time, as Pub/Sub sends them). `delivery_attempt` is `None`
    /// for a subscription without a dead-letter policy, where Pub/Sub leaves it out.
    pub fn push_envelope(&self, subscription: &str, delivery_attempt: Option<u32>) -> Value {
        let publish_time = self
            .publish_time
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut envelope = json!({
            "message": {
                "attributes": self.attributes,
                "data": base64::engine::general_purpose::STANDARD.encode(&self.data),
                "messageId": self.message_id,
                "message_id": self.message_id,
                "publishTime": publish_time,
                "publish_time": publish_time,
            },
            "subscription": subscription,
        });
        if let Some(attempt) = delivery_attempt {
            envelope["deliveryAttempt"] = json!(attempt);
        }
        envelope
    }
}

/// One Publish request as it arrived.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub topic: String,
    /// The data of each message it carried, in order.
    pub message_data: Vec<Vec<u8>>,
    /// The ids it answered with, or the status it failed with.
    pub outcome: Result<Vec<String>, Code>,
    /// Whether an `authorization` header came along (a local server gets none).
    pub had_credentials: bool,
}

/// A message on a subscription: not yet acknowledged.
#[derive(Debug, Clone)]
pub struct SubscribedMessage {
    pub message_id: String,
    pub data: Vec<u8>,
    pub attributes: HashMap<String, String>,
    /// The ack id of its current lease, while a puller holds it.
    pub leased_by: Option<String>,
    /// How often it was pulled.
    pub deliveries: i32,
}

/// One Subscriber call as it arrived.
#[derive(Debug, Clone)]
pub struct SubscriberCall {
    /// `Pull`, `Acknowledge` or `ModifyAckDeadline`.
    pub method: &'static str,
    pub subscription: String,
    /// The ack ids it named (`Acknowledge`, `ModifyAckDeadline`).
    pub ack_ids: Vec<String>,
    /// The messages it answered with (`Pull`), or the status it failed with.
    pub outcome: Result<usize, Code>,
    pub had_credentials: bool,
}

type Matcher = Box<dyn Fn(&PubsubMessage) -> bool + Send + Sync>;

struct FailRule {
    matches: Matcher,
    code: Code,
    /// Requests it still fails; `None` for every one.
    remaining: Option<usize>,
}

#[derive(Default)]
struct State {
    topics: Vec<String>,
    published: Vec<PublishedMessage>,
    requests: Vec<RecordedRequest>,
    rules: Vec<FailRule>,
    next_id: u64,
    subscriptions: HashMap<String, Vec<SubscribedMessage>>,
    /// Subscriptions that receive what is published to a topic: (topic, subscription).
    attached: Vec<(String, String)>,
    subscriber_calls: Vec<SubscriberCall>,
    next_ack_id: u64,
}

struct Shared {
    state: Mutex<State>,
    /// While true, requests wait unanswered.
    held: watch::Sender<bool>,
    /// Requests waiting because of `held`.
    waiting: AtomicUsize,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("pubsub test server state lock")
    }
}

/// A running test server on 127.0.0.1 (a free port); stopped when dropped.
pub struct PubsubTestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl PubsubTestServer {
    /// Starts a server that knows `topics` (others answer `NOT_FOUND`, as Pub/Sub does).
    pub async fn start(topics: &[&str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Pub/Sub test server on 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                topics: topics.iter().map(|t| t.to_string()).collect(),
                ..State::default()
            }),
            held: watch::Sender::new(false),
            waiting: AtomicUsize::new(0),
        });
        let (shutdown, stopped) = oneshot::channel::<()>();
        let publisher = GrpcService::<Publisher>::new(shared.clone());
        let subscriber = GrpcService::<Subscriber>::new(shared.clone());
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(publisher)
                .add_service(subscriber)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
            if let Err(e) = served {
                eprintln!("Pub/Sub test server stopped: {e}");
            }
        });
        Self {
            addr,
            shared,
            shutdown: Some(shutdown),
        }
    }

    /// `host:port`, the form of `PUBSUB_EMULATOR_HOST`.
    pub fn emulator_host(&self) -> String {
        self.addr.to_string()
    }

    /// Queue settings of a Cloud Run deployment (`FLUXGATE_QUEUE=pubsub`) pointed at this
    /// server through `PUBSUB_EMULATOR_HOST`: publishing to `topic` in batches of
    /// `batch_messages`, with a 2 s publish timeout.
    pub fn queue_config(&self, topic: &str, batch_messages: u32) -> QueueConfig {
        QueueConfig {
            queue: QueueKind::Pubsub,
            sqs: SqsConfig::default(),
            pubsub: PubsubConfig {
                pubsub_topic: Some(topic.into()),
                pubsub_emulator_host: Some(self.emulator_host()),
                pubsub_batch_messages: batch_messages,
                pubsub_publish_timeout: TimeDelta::seconds(2),
                ..PubsubConfig::default()
            },
        }
    }

    /// `http://host:port`, the form of `FLUXGATE_PUBSUB_ENDPOINT` for a local server.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn published(&self) -> Vec<PublishedMessage> {
        self.shared.state().published.clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state().requests.clone()
    }

    /// Creates a pull subscription (Pull on any other answers `NOT_FOUND`, as Pub/Sub does).
    pub fn add_subscription(&self, subscription: &str) {
        self.shared
            .state()
            .subscriptions
            .entry(subscription.to_owned())
            .or_default();
    }

    /// Creates a pull subscription of `topic`: every message published to the topic from now
    /// on is put on it too, as Pub/Sub does (fluxgate-local's worker pulls such a one).
    pub fn add_subscription_of(&self, topic: &str, subscription: &str) {
        self.add_subscription(subscription);
        self.shared
            .state()
            .attached
            .push((topic.to_owned(), subscription.to_owned()));
    }

    /// Puts a message on `subscription`, as Pub/Sub's dead-lettering publishes it to the
    /// dead-letter topic; returns its message id.
    pub fn dead_letter(
        &self,
        subscription: &str,
        data: impl Into<Vec<u8>>,
        attributes: HashMap<String, String>,
    ) -> String {
        let mut state = self.shared.state();
        state.next_id += 1;
        let message_id = format!("dl-{}", state.next_id);
        state
            .subscriptions
            .get_mut(subscription)
            .unwrap_or_else(|| panic!("no subscription {subscription} on the test server"))
            .push(SubscribedMessage {
                message_id: message_id.clone(),
                data: data.into(),
                attributes,
                leased_by: None,
                deliveries: 0,
            });
        message_id
    }

    /// The messages still on `subscription` (not acknowledged), leased or not.
    pub fn on_subscription(&self, subscription: &str) -> Vec<SubscribedMessage> {
        self.shared
            .state()
            .subscriptions
            .get(subscription)
            .cloned()
            .unwrap_or_default()
    }

    /// A puller that pulls `count` messages from `subscription` and then never answers (it
    /// crashed half-way): they stay leased, unacknowledged, until [`Self::expire_leases`].
    pub fn lease_to_a_vanished_puller(&self, subscription: &str, count: i32) -> usize {
        let request = PullRequest {
            subscription: subscription.to_owned(),
            max_messages: count,
            ..PullRequest::default()
        };
        pull_from(&mut self.shared.state(), &request)
            .expect("pull for a vanished puller")
            .received_messages
            .len()
    }

    /// The ack deadline of every leased message on `subscription` passes: each can be pulled
    /// again (under a new ack id; the old one no longer acknowledges it).
    pub fn expire_leases(&self, subscription: &str) {
        if let Some(messages) = self.shared.state().subscriptions.get_mut(subscription) {
            for message in messages {
                message.leased_by = None;
            }
        }
    }

    pub fn subscriber_calls(&self) -> Vec<SubscriberCall> {
        self.shared.state().subscriber_calls.clone()
    }

    /// Fails the next `times` Publish requests (`None`: every request) that carry a message for
    /// which `matches` is true, with `code`; the whole request fails, as on the real service.
    pub fn fail_requests_with(
        &self,
        matches: impl Fn(&PubsubMessage) -> bool + Send + Sync + 'static,
        code: Code,
        times: Option<usize>,
    ) {
        self.shared.state().rules.push(FailRule {
            matches: Box::new(matches),
            code,
            remaining: times,
        });
    }

    /// Fails every Publish request from now on (the service is down, for the publisher).
    pub fn fail_everything(&self, code: Code) {
        self.fail_requests_with(|_| true, code, None);
    }

    /// Stops failing anything.
    pub fn heal(&self) {
        self.shared.state().rules.clear();
    }

    /// Holds every Publish request from now on (they wait, unanswered) until [`Self::release`].
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    /// Requests that arrived while held and are waiting.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::SeqCst)
    }

    /// Returns once a held Publish request is waiting; panics after `within`.
    pub async fn until_a_request_waits(&self, within: std::time::Duration) {
        let waited = std::time::Instant::now();
        while self.waiting() == 0 {
            assert!(
                waited.elapsed() < within,
                "no Publish request arrived within {within:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl Drop for PubsubTestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

type GrpcRequest = http::Request<tonic::body::Body>;
type GrpcResponse = http::Response<tonic::body::Body>;
/// A call's response, on its way.
type Answer = BoxFuture<GrpcResponse, Infallible>;

/// The methods of one gRPC service of the test server, by their path.
trait Methods: Send + 'static {
    const NAME: &'static str;

    /// The answer to a call of `path`; `None` for a method the test server does not serve.
    fn answer(shared: Arc<Shared>, path: &str, request: GrpcRequest) -> Option<Answer>;
}

/// A gRPC service of the test server: routes each call by its method path, as tonic's
/// generated servers do.
struct GrpcService<M> {
    shared: Arc<Shared>,
    methods: PhantomData<M>,
}

impl<M> GrpcService<M> {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            methods: PhantomData,
        }
    }
}

impl<M> Clone for GrpcService<M> {
    fn clone(&self) -> Self {
        Self::new(self.shared.clone())
    }
}

impl<M: Methods> NamedService for GrpcService<M> {
    const NAME: &'static str = M::NAME;
}

impl<M: Methods> Service<GrpcRequest> for GrpcService<M> {
    type Response = GrpcResponse;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GrpcRequest) -> Self::Future {
        let path = request.uri().path().to_string();
        M::answer(self.shared.clone(), &path, request).unwrap_or_else(|| {
            Box::pin(async move {
                Ok(
                    Status::unimplemented(format!("the Pub/Sub test server does not serve {path}"))
                        .into_http(),
                )
            })
        })
    }
}

/// A unary call through tonic's server plumbing with the prost codec.
fn unary<Req, Resp, S>(service: S, request: GrpcRequest) -> Answer
where
    S: tonic::server::UnaryService<Req, Response = Resp> + Send + 'static,
    S::Future: Send,
    tonic_prost::ProstCodec<Resp, Req>: tonic::codec::Codec<Encode = Resp, Decode = Req> + Default,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
        Ok(grpc.unary(service, request).await)
    })
}

struct Publisher;

impl Methods for Publisher {
    const NAME: &'static str = "google.pubsub.v1.Publisher";

    fn answer(shared: Arc<Shared>, path: &str, request: GrpcRequest) -> Option<Answer> {
        (path == PUBLISH_PATH).then(|| unary(Publish { shared }, request))
    }
}

struct Publish {
    shared: Arc<Shared>,
}

impl tonic::server::UnaryService<PublishRequest> for Publish {
    type Response = PublishResponse;
    type Future = BoxFuture<tonic::Response<PublishResponse>, Status>;

    fn call(&mut self, request: tonic::Request<PublishRequest>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            // Waits here while the test holds requests.
            let mut held = shared.held.subscribe();
            if *held.borrow() {
                shared.waiting.fetch_add(1, Ordering::SeqCst);
                let _ = held.wait_for(|held| !*held).await;
                shared.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            let had_credentials = request.metadata().get("authorization").is_some();
            let request = request.into_inner();
            let mut state = shared.state();
            let outcome = answer(&mut state, &request);
            let index = state.requests.len();
            state.requests.push(RecordedRequest {
                topic: request.topic.clone(),
                message_data: request.messages.iter().map(|m| m.data.clone()).collect(),
                outcome: outcome.clone().map_err(|s| s.code()),
                had_credentials,
            });
            let ids = outcome?;
            let now = chrono::Utc::now();
            let fan_out: Vec<String> = state
                .attached
                .iter()
                .filter(|(topic, _)| *topic == request.topic)
                .map(|(_, subscription)| subscription.clone())
                .collect();
            for (message, id) in request.messages.into_iter().zip(&ids) {
                for subscription in &fan_out {
                    if let Some(messages) = state.subscriptions.get_mut(subscription) {
                        messages.push(SubscribedMessage {
                            message_id: id.clone(),
                            data: message.data.clone(),
                            attributes: message.attributes.clone(),
                            leased_by: None,
                            deliveries: 0,
                        });
                    }
                }
                state.published.push(PublishedMessage {
                    topic: request.topic.clone(),
                    message_id: id.clone(),
                    data: message.data,
                    attributes: message.attributes,
                    publish_time: now,
                    request: index,
                });
            }
            Ok(tonic::Response::new(PublishResponse { message_ids: ids }))
        })
    }
}

/// What the real service would answer: its validation, then the test's failure rules.
fn answer(state: &mut State, request: &PublishRequest) -> Result<Vec<String>, Status> {
    if !state.topics.contains(&request.topic) {
        return Err(Status::not_found(format!(
            "Topic not found: {}",
            request.topic
        )));
    }
    if request.messages.is_empty() || request.messages.len() > 1000 {
        return Err(Status::invalid_argument(
            "a Publish request carries 1 to 1000 messages",
        ));
    }
    if request
        .messages
        .iter()
        .any(|m| m.data.is_empty() && m.attributes.is_empty())
    {
        return Err(Status::invalid_argument(
            "a message needs data or attributes",
        ));
    }
    for rule in &mut state.rules {
        if rule.remaining == Some(0) || !request.messages.iter().any(|m| (rule.matches)(m)) {
            continue;
        }
        if let Some(remaining) = &mut rule.remaining {
            *remaining -= 1;
        }
        return Err(Status::new(rule.code, "failed by the Pub/Sub test server"));
    }
    let ids = request
        .messages
        .iter()
        .map(|_| {
            state.next_id += 1;
            state.next_id.to_string()
        })
        .collect();
    Ok(ids)
}

/// The Subscriber calls of a pull subscriber.
struct Subscriber;

impl Methods for Subscriber {
    const NAME: &'static str = "google.pubsub.v1.Subscriber";

    fn answer(shared: Arc<Shared>, path: &str, request: GrpcRequest) -> Option<Answer> {
        Some(match path {
            PULL_PATH => unary(Handled::new(shared, pull), request),
            ACKNOWLEDGE_PATH => unary(Handled::new(shared, acknowledge), request),
            MODIFY_ACK_DEADLINE_PATH => unary(Handled::new(shared, modify_ack_deadline), request),
            _ => return None,
        })
    }
}

/// A unary call answered at once from the state, and recorded.
struct Handled<Req, Resp> {
    shared: Arc<Shared>,
    handle: fn(&mut State, Req, bool) -> Result<Resp, Status>,
}

impl<Req, Resp> Handled<Req, Resp> {
    fn new(shared: Arc<Shared>, handle: fn(&mut State, Req, bool) -> Result<Resp, Status>) -> Self {
        Self { shared, handle }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> tonic::server::UnaryService<Req>
    for Handled<Req, Resp>
{
    type Response = Resp;
    type Future = BoxFuture<tonic::Response<Resp>, Status>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let had_credentials = request.metadata().get("authorization").is_some();
        let answer = (self.handle)(
            &mut self.shared.state(),
            request.into_inner(),
            had_credentials,
        )
        .map(tonic::Response::new);
        Box::pin(async move { answer })
    }
}

fn record(
    state: &mut State,
    method: &'static str,
    subscription: &str,
    ack_ids: Vec<String>,
    outcome: Result<usize, &Status>,
    had_credentials: bool,
) {
    state.subscriber_calls.push(SubscriberCall {
        method,
        subscription: subscription.to_owned(),
        ack_ids,
        outcome: outcome.map_err(Status::code),
        had_credentials,
    });
}

fn unknown_subscription(subscription: &str) -> Status {
    Status::not_found(format!("Subscription does not exist: {subscription}"))
}

/// Leases up to `max_messages` messages that no one holds, each under a fresh ack id.
fn pull(
    state: &mut State,
    request: PullRequest,
    had_credentials: bool,
) -> Result<PullResponse, Status> {
    let answer = pull_from(state, &request);
    let outcome = answer.as_ref().map(|r| r.received_messages.len());
    record(
        state,
        "Pull",
        &request.subscription,
        Vec::new(),
        outcome,
        had_credentials,
    );
    answer
}

fn pull_from(state: &mut State, request: &PullRequest) -> Result<PullResponse, Status> {
    if request.max_messages <= 0 {
        return Err(Status::invalid_argument("max_messages must be positive"));
    }
    let State {
        subscriptions,
        next_ack_id,
        ..
    } = state;
    let messages = subscriptions
        .get_mut(&request.subscription)
        .ok_or_else(|| unknown_subscription(&request.subscription))?;
    let mut received = Vec::new();
    for message in messages.iter_mut().filter(|m| m.leased_by.is_none()) {
        if received.len() == request.max_messages as usize {
            break;
        }
        *next_ack_id += 1;
        let ack_id = format!("ack-{next_ack_id}");
        message.leased_by = Some(ack_id.clone());
        message.deliveries += 1;
        received.push(ReceivedMessage {
            ack_id,
            message: Some(PubsubMessage {
                data: message.data.clone(),
                attributes: message.attributes.clone(),
                message_id: message.message_id.clone(),
                ..PubsubMessage::default()
            }),
            delivery_attempt: message.deliveries,
        });
    }
    Ok(PullResponse {
        received_messages: received,
    })
}

/// Removes the messages whose current lease the ack ids name; others are ignored.
fn acknowledge(
    state: &mut State,
    request: AcknowledgeRequest,
    had_credentials: bool,
) -> Result<(), Status> {
    let invalid =
        (request.ack_ids.is_empty()).then(|| Status::invalid_argument("ack_ids must not be empty"));
    let call = AckIdCall::new("Acknowledge", request.subscription, request.ack_ids);
    call.apply(state, invalid, had_credentials, |messages, ack_ids| {
        messages.retain(|m| {
            m.leased_by
                .as_ref()
                .is_none_or(|ack_id| !ack_ids.contains(ack_id))
        });
    })
}

/// A deadline of 0 ends the leases (the messages can be pulled again at once); a longer one
/// keeps them (there is no clock to extend).
fn modify_ack_deadline(
    state: &mut State,
    request: ModifyAckDeadlineRequest,
    had_credentials: bool,
) -> Result<(), Status> {
    let invalid = (!(0..=600).contains(&request.ack_deadline_seconds))
        .then(|| Status::invalid_argument("ack_deadline_seconds must be 0 to 600"));
    let ends_leases = request.ack_deadline_seconds == 0;
    let call = AckIdCall::new("ModifyAckDeadline", request.subscription, request.ack_ids);
    call.apply(state, invalid, had_credentials, |messages, ack_ids| {
        for message in messages.iter_mut().filter(|_| ends_leases) {
            if message
                .leased_by
                .as_ref()
                .is_some_and(|ack_id| ack_ids.contains(ack_id))
            {
                message.leased_by = None;
            }
        }
    })
}

/// A Subscriber call that names leases by their ack ids (Acknowledge, ModifyAckDeadline).
struct AckIdCall {
    method: &'static str,
    subscription: String,
    ack_ids: Vec<String>,
}

impl AckIdCall {
    fn new(method: &'static str, subscription: String, ack_ids: Vec<String>) -> Self {
        Self {
            method,
            subscription,
            ack_ids,
        }
    }

    /// Applies `change` to the subscription's messages, unless the request is `invalid` or
    /// the subscription unknown, and records the call.
    fn apply(
        self,
        state: &mut State,
        invalid: Option<Status>,
        had_credentials: bool,
        change: impl FnOnce(&mut Vec<SubscribedMessage>, &[String]),
    ) -> Result<(), Status> {
        let answer = match (invalid, state.subscriptions.get_mut(&self.subscription)) {
            (Some(invalid), _) => Err(invalid),
            (None, Some(messages)) => {
                change(messages, &self.ack_ids);
                Ok(())
            }
            (None, None) => Err(unknown_subscription(&self.subscription)),
        };
        let count = self.ack_ids.len();
        record(
            state,
            self.method,
            &self.subscription,
            self.ack_ids,
            answer.as_ref().map(|()| count),
            had_credentials,
        );
        answer
    }
}
