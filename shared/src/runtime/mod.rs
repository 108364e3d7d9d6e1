//! One boot path for every function: `main` parses its settings, builds its [`Function`] (an
//! HTTP router, and where it has them a Lambda event handler and a run-once job), and
//! [`run`] picks what the platform asks for ([`Platform::current`]):
//!
//! | platform | runs |
//! |---|---|
//! | Lambda with an event handler | the handler on the trigger's events (SQS, EventBridge) |
//! | Lambda without one | the router on API Gateway / ALB / Function URL events |
//! | Cloud Run job with a job | the job once; the exit status tells |
//! | anything else | the router on `0.0.0.0:PORT`, until SIGTERM |
//!
//! No other module branches on the platform. `boot` holds the start-up the functions share
//! (database URL from a secret, the store, the authenticator).

mod boot;
mod http;
mod job;
mod lambda;
mod signal;

use std::future::Future;
use std::process::ExitCode;

use axum::Router;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::platform::Platform;

pub use boot::{ApiConfig, open_store};
pub use http::{listen, serve};
pub use lambda::{Invocation, deadline_of};
pub use signal::{shutdown, shutdown_signal};

/// What a function is: the ways it can be triggered. Built once per process (cold start).
pub struct Function {
    router: Router,
    port: u16,
    events: Option<lambda::EventHandler>,
    job: Option<job::JobRun>,
}

impl Function {
    /// A function that serves `router`: on `port`, or on Lambda's HTTP events.
    pub fn http(router: Router, port: u16) -> Self {
        Self {
            router,
            port,
            events: None,
            job: None,
        }
    }

    /// On Lambda, take the trigger's events (an `SqsEvent`, an EventBridge event, …) with
    /// `handler` instead of HTTP events; its answer is the invocation's result.
    pub fn on_lambda_events<E, R, F, Fut>(mut self, handler: F) -> Self
    where
        E: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(E, Invocation) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        self.events = Some(lambda::event_handler(handler));
        self
    }

    /// As a Cloud Run job, run `job` once: its summary is logged, and an error fails the task.
    pub fn as_job<R, F, Fut>(mut self, job: F) -> Self
    where
        R: Serialize + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        self.job = Some(job::job_run(job));
        self
    }

    /// Runs the function the way the platform asks for, until it ends.
    pub async fn serve(self, name: &str) -> ExitCode {
        let outcome = match (Platform::current(), self.events, self.job) {
            (Platform::Lambda, Some(events), _) => lambda::serve_events(events).await,
            (Platform::Lambda, None, _) => http::serve_lambda(self.router).await,
            (Platform::CloudRunJob, _, Some(job)) => return job::run_once(name, job).await,
            _ => http::serve(self.router, self.port).await,
        };
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e.chain(), "{name} stopped");
                tell_a_person(&format!("{name} stopped: {}", e.chain()));
                ExitCode::FAILURE
            }
        }
    }
}

/// The whole `main` of a function: JSON logs, settings from the environment (and flags),
/// `build` for the function, then [`Function::serve`]. The log lines name the function as
/// `--help` does: clap's derive takes the command name from the package (`fluxgate-ingest`, …),
/// so a function's `Config` states only its description. A setting or dependency that fails at
/// start ends the process with a log line that names it, and a failing exit status.
pub async fn run<C, F, Fut>(build: F) -> ExitCode
where
    C: clap::Parser,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<Function>>,
{
    crate::telemetry::init();
    // Before any client is built: the Google clients look the process's provider up.
    crate::tls::install_crypto_provider();
    let config = C::parse();
    let name = C::command().get_name().to_owned();
    match build(config).await {
        Ok(function) => function.serve(&name).await,
        Err(e) => {
            tracing::error!(error = %e.chain(), "{name} cannot start");
            tell_a_person(&format!("{name} cannot start: {}", e.chain()));
            ExitCode::FAILURE
        }
    }
}

/// The log line says it for machines; a person at a terminal also gets one plain sentence on
/// stderr (in the cloud stderr is logged too, so it is written only to a terminal).
fn tell_a_person(sentence: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!("error: {sentence}");
    }
}

/// Writes a CloudWatch metric line (EMF, see [`crate::emf`]) where CloudWatch reads it: on
/// Lambda, stdout beside (not through) the tracing logs, since CloudWatch takes a line as EMF
/// only when the whole line is the document. Elsewhere nothing: Cloud Run and containers read
/// the Prometheus text and the log lines instead.
pub fn emit_metrics(line: &serde_json::Value) {
    if Platform::current() == Platform::Lambda {
        println!("{line}");
    }
}
