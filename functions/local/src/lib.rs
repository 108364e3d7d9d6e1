//! Every function in one process on embedded defaults: SQLite (or `DATABASE_URL`), the
//! in-process queue, the file warehouse, the drain on a short interval and the worker reading
//! the queue, all behind one port.
//!
//! Nothing accepted is lost across a stop or a kill: events are in the database before ingest
//! answers, and at start-up rows the previous process had handed to its in-memory queue
//! (PUBLISHED or FAILED, no final outcome) are put back to PENDING, as a managed queue's
//! visibility timeout would bring them back. The warehouse skips rows it already holds, so a
//! redelivery makes no second row.
//!
//! Requests need an API key as in a deployment (`FLUXGATE_AUTH=keys` is the default): the
//! first start makes the development tenant and its key (see [`dev_key`]); the `tenants` and
//! `keys` subcommands ([`cli`]) manage more.

pub mod cli;
pub mod dev_key;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use fluxgate::api;
use fluxgate::auth::{AuthConfig, AuthMode, Authenticator};
use fluxgate::config::{DrainConfig, Limits, WorkerConfig, parse_duration};
use fluxgate::dead_letters::DeadLetters;
use fluxgate::error::Result;
use fluxgate::queue::{InMemoryQueue, InMemoryQueueConfig};
use fluxgate::sink::{LocalFileSink, RollPolicy, Sink};
use fluxgate::store::{self, DatabaseConfig, Store};
use fluxgate_outbox_drain::{Drain, EagerWriter};
use fluxgate_worker::Worker;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "fluxgate-local",
    about = "The whole fluxgate pipeline in one process",
    version
)]
pub struct LocalConfig {
    /// Folder for the SQLite database and the warehouse.
    #[arg(long, env = "FLUXGATE_DATA_DIR", default_value = "./.fluxgate")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "FLUXGATE_BIND", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Port of the HTTP API (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Run the drain as soon as ingest has stored new events (eager publish), besides every
    /// `FLUXGATE_DRAIN_INTERVAL`.
    #[arg(long, env = "FLUXGATE_EAGER_PUBLISH", default_value_t = true, action = clap::ArgAction::Set)]
    pub eager_publish: bool,
    /// Worker batches in flight at once.
    #[arg(long, env = "FLUXGATE_LOCAL_CONSUMERS", default_value_t = 4)]
    pub consumers: usize,
    /// How often the drain runs.
    #[arg(long, env = "FLUXGATE_DRAIN_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub drain_interval: chrono::TimeDelta,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub drain: DrainConfig,
    #[command(flatten)]
    pub warehouse_roll: RollPolicy,
    #[command(flatten)]
    pub worker: WorkerConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    /// The tenant made (with an API key) on the first start.
    #[arg(long, env = "FLUXGATE_DEV_TENANT", default_value = "dev")]
    pub dev_tenant: String,
    /// What to do; serving the pipeline when none is given.
    #[command(subcommand)]
    pub command: Option<cli::Command>,
}

impl LocalConfig {
    pub fn database_url(&self) -> String {
        self.database
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("fluxgate.db").display()))
    }

    pub fn warehouse_dir(&self) -> PathBuf {
        self.data_dir.join("warehouse")
    }
}

/// The whole binary: a subcommand manages tenants and keys (its error printed for a person);
/// without one, the pipeline runs until SIGTERM or Ctrl-C.
pub async fn main(config: LocalConfig) -> std::process::ExitCode {
    let outcome = match &config.command {
        None | Some(cli::Command::Serve) => {
            fluxgate::telemetry::init();
            run(config, fluxgate::runtime::shutdown_signal()).await
        }
        Some(command) => manage(&config, command).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A person reads this: the message, not the enum.
            eprintln!("error: {}", e.chain());
            std::process::ExitCode::FAILURE
        }
    }
}

async fn manage(config: &LocalConfig, command: &cli::Command) -> Result<()> {
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir)?;
    }
    let store = store::connect(&url, &config.database).await?;
    cli::run(command, store.as_ref(), &mut std::io::stdout()).await
}

/// Runs until `shutdown` resolves, then stops taking requests, lets the drain and the worker
/// finish what they hold, and returns.
pub async fn run(
    config: LocalConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = TcpListener::bind((config.bind, config.port)).await?;
    run_on(listener, config, shutdown).await
}

/// [`run`] on a listener the caller bound (tests bind port 0 and read the address).
pub async fn run_on(
    listener: TcpListener,
    config: LocalConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    tokio::fs::create_dir_all(&config.data_dir).await?;
    let url = config.database_url();
    let store = store::connect(&url, &config.database).await?;
    // This process is the one drain of its database (its queue lives in its memory), so
    // what its predecessor claimed or handed to that queue is due again at once.
    let now = fluxgate::now();
    let requeued = store.requeue_undelivered(now).await? + store.release_leases(now).await?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "events the previous run had not finished are pending again"
        );
    }
    let queue = Arc::new(InMemoryQueue::new(InMemoryQueueConfig {
        max_receive_count: config.worker.max_receive_count,
        ..Default::default()
    }));
    let sink: Arc<dyn Sink> =
        Arc::new(LocalFileSink::open_with(config.warehouse_dir(), config.warehouse_roll).await?);
    let drain = Drain::new(store.clone(), queue.clone(), config.drain.clone());
    let worker = Worker::new(store.clone(), sink.clone(), config.worker.clone());
    if config.auth.mode == AuthMode::Keys {
        dev_key::ensure(store.as_ref(), &config.data_dir, &config.dev_tenant).await?;
    }
    let auth = Authenticator::from_config(&config.auth, store.clone()).await?;

    let app = app(
        store.clone(),
        config.limits.clone(),
        drain.clone(),
        Some(queue.clone()),
        auth,
    );
    let address: SocketAddr = listener.local_addr()?;
    tracing::info!(
        %address,
        database = %redact(&url),
        warehouse = %config.warehouse_dir().display(),
        "fluxgate local is up: POST http://{address}/v1/events"
    );

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let interval = config
        .drain_interval
        .to_std()
        .unwrap_or(Duration::from_secs(1));
    let stored = config.eager_publish.then(|| drain.wake_on());
    tasks.spawn(drain_loop(drain, interval, stored, stop.clone()));
    tasks.spawn(fluxgate_worker::memory_trigger::consume(
        worker,
        queue,
        config.consumers,
        stop.clone(),
    ));
    tasks.close();

    let server_stop = stop.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = server_stop.cancelled() => {}
            }
        })
        .await?;
    stop.cancel();
    tasks.wait().await;
    // What the worker wrote is durable already; this makes it visible to readers now rather
    // than at the next start.
    sink.flush().await?;
    tracing::info!("fluxgate local stopped");
    Ok(())
}

/// ingest, replay, metrics and the drain trigger behind one router, with health checks and
/// the OpenAPI document of them all. `dead_letters` is the in-process queue's. ingest, replay
/// and metrics authenticate with `auth`; the drain trigger, as in the cloud, is for the
/// scheduler (here the process's own loop) and takes no API key.
pub fn app(
    store: Arc<dyn Store>,
    limits: Limits,
    drain: Drain,
    dead_letters: Option<Arc<dyn DeadLetters>>,
    auth: Authenticator,
) -> Router {
    let ingest = fluxgate_ingest::router(fluxgate_ingest::IngestState {
        store: Arc::new(EagerWriter::waking(store.clone(), drain.wake_on())),
        limits: Arc::new(limits),
        auth: auth.clone(),
    });
    let replay = fluxgate_replay::router(fluxgate_replay::ReplayState {
        store: store.clone(),
        dead_letters,
        auth: auth.clone(),
    });
    let metrics = fluxgate_metrics::router(fluxgate_metrics::MetricsState {
        store: store.clone(),
        auth,
    });
    let routes = ingest
        .merge(replay)
        .merge(metrics)
        .merge(fluxgate_outbox_drain::router(drain));
    api::service(routes, store, &openapi())
}

/// The OpenAPI document local serves: ingest, replay and metrics in one. (The drain and
/// worker triggers are for schedules and queues, not clients, and are not described.)
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = fluxgate_ingest::openapi();
    document.merge(fluxgate_replay::openapi());
    document.merge(fluxgate_metrics::openapi());
    document.info.title = "fluxgate local".to_owned();
    document
}

/// What a schedule does in the cloud: one drain run per tick.
/// With eager publish, also as soon as ingest has stored new events (`stored`).
async fn drain_loop(
    drain: Drain,
    interval: Duration,
    stored: Option<Arc<Notify>>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let woken = async |stored: &Option<Arc<Notify>>| match stored {
        Some(stored) => stored.notified().await,
        None => std::future::pending().await,
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
            _ = woken(&stored) => {}
        }
        // A run is not interrupted: what it claimed it also settles.
        match drain.run_with_budget().await {
            Ok(summary) if summary.claimed > 0 => {
                tracing::debug!(published = summary.published, "drain tick");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e.chain(), "drain run failed"),
        }
    }
}

/// A database URL without its password, for the start-up line.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            redact("sqlite://./.fluxgate/fluxgate.db"),
            "sqlite://./.fluxgate/fluxgate.db"
        );
    }
}
