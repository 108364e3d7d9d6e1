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
//! It serves `Publish` (the only call the publishing client makes: it does not look the topic
//! up, and makes no REST admin calls), answers every other method `UNIMPLEMENTED`, keeps what
//! was published (data, attributes, ids, which request carried it, whether credentials came
//! along), can be told to fail requests that carry chosen messages, and can hold requests
//! until released (to test a shutdown during a publish). It does not deliver: a test posts
//! [`PublishedMessage::push_envelope`] to the worker, as a push subscription would.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1::{
    PublishRequest, PublishResponse, PubsubMessage,
};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::NamedService;
use tonic::{Code, Status};

pub const PUBLISH_PATH: &str = "/google.pubsub.v1.Publisher/Publish";

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
        let service = PublisherService {
            shared: shared.clone(),
        };
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
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

    /// Fails the next `times` requests (`None`: every request) that carry a message for
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

    /// Fails every request from now on (the service is down, for the client's purposes).
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
}

impl Drop for PubsubTestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Routes by the gRPC method path, as tonic's generated servers do.
#[derive(Clone)]
struct PublisherService {
    shared: Arc<Shared>,
}

impl NamedService for PublisherService {
    const NAME: &'static str = "google.pubsub.v1.Publisher";
}

impl Service<http::Request<tonic::body::Body>> for PublisherService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let shared = self.shared.clone();
        if request.uri().path() == PUBLISH_PATH {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                    PublishResponse,
                    PublishRequest,
                >::default());
                Ok(grpc.unary(Publish { shared }, request).await)
            })
        } else {
            let path = request.uri().path().to_string();
            Box::pin(async move {
                Ok(
                    Status::unimplemented(format!("the Pub/Sub test server does not serve {path}"))
                        .into_http(),
                )
            })
        }
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
            for (message, id) in request.messages.into_iter().zip(&ids) {
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
