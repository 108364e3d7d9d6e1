//! Every function in one process: SQLite (or `DATABASE_URL`), the in-process queue, the file
//! warehouse, the drain on a short interval and the worker reading the queue, all behind one
//! port. The same sink and queue settings as the functions turn it into a one-process
//! deployment on any VM or container: `FLUXGATE_SINK=bigquery` with the `FLUXGATE_BIGQUERY_*`
//! settings, and `FLUXGATE_QUEUE=sqs` (the worker long-polls `FLUXGATE_SQS_QUEUE_URL`) or
//! `pubsub` (it pulls `FLUXGATE_PUBSUB_SUBSCRIPTION`, a pull subscription of the topic).
//!
//! Nothing accepted is lost across a stop or a kill: events are in the database before ingest
//! answers, and at start-up rows the previous process had claimed, or handed to its in-memory
//! queue (PUBLISHED or FAILED, no final outcome), are put back to PENDING, as a managed
//! queue's visibility timeout would bring them back (with SQS or Pub/Sub the queue itself
//! keeps them). Such a row counts an attempt, so the worker asks the warehouse whether it
//! holds the event before writing it again: a redelivery makes no second row.
//!
//! Requests need an API key as in a deployment (`FLUXGATE_AUTH=keys` is the default): the
//! first start makes the development tenant and its key (see [`dev_key`]); the `tenants` and
//! `keys` subcommands ([`cli`]) manage more.

pub mod cli;
pub mod dev_key;
pub mod fault;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use fluxgate::api::{self, Api};
use fluxgate::auth::{AdminAuth, AuthConfig, AuthMode, Authenticator};
use fluxgate::config::{DrainConfig, Limits, WorkerConfig, parse_duration};
use fluxgate::dead_letters::DeadLetters;
use fluxgate::error::{Error, Result};
use fluxgate::queue::{
    InMemoryQueue, InMemoryQueueConfig, PubsubSubscription, Queue, QueueConfig, QueueKind, SqsQueue,
};
use fluxgate::sink::{
    self, BigQueryConfig, LocalFilesConfig, RollPolicy, Sink, SinkConfig, SinkKind,
};
use fluxgate::store::{self, DatabaseConfig, Store};
use fluxgate_outbox_drain::{Drain, EagerWriter};
use fluxgate_worker::{Worker, consume};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "fluxgate-local",
    about = "The whole fluxgate pipeline in one process",
    version
)]
pub struct LocalConfig {
    /// Folder for the SQLite database, the warehouse and the development keys.
    #[arg(long, env = "FLUXGATE_DATA_DIR", default_value = "./.fluxgate")]
    pub data_dir: PathBuf,
    /// Folder of the file warehouse; default `<data-dir>/warehouse`.
    #[arg(long, env = "FLUXGATE_WAREHOUSE_DIR")]
    pub warehouse_dir: Option<PathBuf>,
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
    /// Where loaded events go: `local-files` (the folder above) or `bigquery` (the
    /// `FLUXGATE_BIGQUERY_*` settings, as the worker function takes them).
    #[arg(long, env = "FLUXGATE_SINK", value_enum, default_value = "local-files")]
    pub sink: SinkKind,
    #[command(flatten)]
    pub bigquery: BigQueryConfig,
    #[command(flatten)]
    pub queue: QueueConfig,
    /// `FLUXGATE_QUEUE=pubsub`: the pull subscription of `FLUXGATE_PUBSUB_TOPIC` the worker
    /// reads, in full (`projects/P/subscriptions/S`).
    #[arg(long, env = "FLUXGATE_PUBSUB_SUBSCRIPTION")]
    pub pubsub_subscription: Option<String>,
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
        self.warehouse_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("warehouse"))
    }

    /// The warehouse settings as the worker function takes them (the file warehouse in
    /// `<data-dir>/warehouse` unless told otherwise).
    pub fn sink_config(&self) -> SinkConfig {
        SinkConfig {
            sink: self.sink,
            local_files: LocalFilesConfig {
                warehouse_dir: self.warehouse_dir(),
                roll: self.warehouse_roll,
            },
            bigquery: self.bigquery.clone(),
        }
    }

    /// Where the banner says rows go.
    fn warehouse_label(&self) -> String {
        match self.sink {
            SinkKind::LocalFiles => self.warehouse_dir().display().to_string(),
            SinkKind::Bigquery => format!(
                "BigQuery {}.{}.{} ({})",
                self.bigquery.bigquery_project.as_deref().unwrap_or("?"),
                self.bigquery.bigquery_dataset,
                self.bigquery.bigquery_table,
                self.bigquery.bigquery_write_mode.as_str()
            ),
        }
    }
}

/// The queue between drain and worker, and how the worker reads it.
enum LocalQueue {
    Memory(Arc<InMemoryQueue>),
    Sqs(Arc<SqsQueue>),
    Pubsub {
        publisher: Arc<dyn Queue>,
        subscription: Box<PubsubSubscription>,
    },
}

impl LocalQueue {
    /// Builds the queue `config` names, with the builders the functions use.
    async fn connect(config: &LocalConfig) -> Result<Self> {
        Ok(match config.queue.queue {
            QueueKind::Memory => Self::Memory(Arc::new(InMemoryQueue::new(InMemoryQueueConfig {
                max_receive_count: config.worker.max_receive_count,
                ..Default::default()
            }))),
            QueueKind::Sqs => Self::Sqs(Arc::new(SqsQueue::connect(&config.queue.sqs).await?)),
            QueueKind::Pubsub => {
                let name = config
                    .pubsub_subscription
                    .clone()
                    .filter(|s| s.starts_with("projects/") && s.contains("/subscriptions/"))
                    .ok_or_else(|| {
                        fluxgate::Error::setting(
                            "FLUXGATE_PUBSUB_SUBSCRIPTION",
                            "fluxgate-local with FLUXGATE_QUEUE=pubsub reads a pull subscription \
                             of the topic: projects/P/subscriptions/S",
                        )
                    })?;
                Self::Pubsub {
                    publisher: fluxgate::queue::connect(&config.queue).await?,
                    subscription: Box::new(PubsubSubscription::connect(
                        &config.queue.pubsub,
                        name,
                    )?),
                }
            }
        })
    }

    fn publisher(&self) -> Arc<dyn Queue> {
        match self {
            Self::Memory(queue) => queue.clone(),
            Self::Sqs(queue) => queue.clone(),
            Self::Pubsub { publisher, .. } => publisher.clone(),
        }
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
        create_data_dir(&config.data_dir)?;
    }
    let store = store::connect(&url, &config.database).await?;
    cli::run(command, store.as_ref(), &mut std::io::stdout()).await
}

/// Creates the data folder, or says in one sentence which setting to change.
fn create_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::setting(
            "FLUXGATE_DATA_DIR",
            format!(
                "cannot create {}: {e}; set FLUXGATE_DATA_DIR (or --data-dir) to a writable folder",
                dir.display()
            ),
        )
    })
}

/// Connections this one process keeps to a PostgreSQL or MariaDB server when
/// `FLUXGATE_DB_MAX_CONNECTIONS` is not set. Ingest, two pipelined drain rounds, the worker's
/// batches in flight and the admin APIs share this pool; with the functions' default of 10,
/// POSTs waited for a connection behind delivery (`scripts/bench.sh latency`, 500 events/s:
/// POST answered p50 194 ms and received → DONE p50 1,042 ms with 10; 7.0 ms and 20.7 ms with
/// 32). SQLite keeps the default: it has one writer, and more connections only wait for it.
const LOCAL_SERVER_POOL: u32 = 32;

/// The database settings with the one-process pool size where none was chosen.
fn pooled_for_every_role(url: &str, database: &DatabaseConfig) -> DatabaseConfig {
    let mut database = database.clone();
    if !url.starts_with("sqlite:") {
        database.db_max_connections.get_or_insert(LOCAL_SERVER_POOL);
    }
    database
}

/// Runs until `shutdown` resolves, then stops taking requests, lets the drain and the worker
/// finish what they hold, and returns.
pub async fn run(
    config: LocalConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = fluxgate::runtime::listen(config.bind, config.port).await?;
    run_on(listener, config, shutdown).await
}

/// [`run`] on a listener the caller bound (tests bind port 0 and read the address).
pub async fn run_on(
    listener: TcpListener,
    config: LocalConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    create_data_dir(&config.data_dir)?;
    let url = config.database_url();
    let store = store::connect(&url, &pooled_for_every_role(&url, &config.database)).await?;
    let queue = LocalQueue::connect(&config).await?;
    // This process is the one drain of its database, so what its predecessor claimed is due
    // again at once; with the in-memory queue, so is what it had handed to that queue (a
    // real queue still holds those messages).
    let now = fluxgate::now();
    let mut requeued = store.release_leases(now).await?;
    if matches!(queue, LocalQueue::Memory(_)) {
        requeued += store.requeue_undelivered(now).await?;
    }
    if requeued > 0 {
        tracing::info!(
            requeued,
            "events the previous run had not finished are pending again"
        );
    }
    let warehouse: Arc<dyn Sink> = sink::connect(&config.sink_config()).await?;
    let sink: Arc<dyn Sink> = Arc::new(fault::FaultSwitch::new(warehouse, &config.data_dir));
    let drain = Drain::new(store.clone(), queue.publisher(), config.drain.clone());
    let worker = Worker::new(store.clone(), sink.clone(), config.worker.clone());
    let mut auth_config = config.auth.clone();
    let mut key_files = KeyFiles::default();
    if auth_config.mode == AuthMode::Keys {
        key_files.tenant =
            Some(dev_key::ensure(store.as_ref(), &config.data_dir, &config.dev_tenant).await?);
        // Without an admin key of its own, local keeps one in the data folder, so replay and
        // the metrics of every tenant can be tried without a restart.
        if auth_config.admin_auth == AdminAuth::Key
            && auth_config.admin_key.is_none()
            && auth_config.admin_key_secret_id.is_none()
        {
            let (admin_key, path) = dev_key::ensure_admin(&config.data_dir)?;
            auth_config.admin_key = Some(admin_key);
            key_files.admin = Some(path);
        }
    }
    let auth = Authenticator::from_config(&auth_config, store.clone()).await?;

    let dead_letters: Option<Arc<dyn DeadLetters>> = match &queue {
        LocalQueue::Memory(queue) => Some(queue.clone()),
        LocalQueue::Sqs(_) | LocalQueue::Pubsub { .. } => {
            fluxgate::dead_letters::connect(&config.queue).await?
        }
    };
    let app = app(
        store.clone(),
        config.limits.clone(),
        drain.clone(),
        dead_letters,
        auth,
    );
    let address: SocketAddr = listener.local_addr()?;
    tracing::info!(
        %address,
        database = %store::redact(&url),
        warehouse = %config.warehouse_label(),
        "fluxgate local is up: POST http://{address}/v1/events"
    );
    eprintln!("{}", banner(address, &config, &url, &key_files));

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let interval = config
        .drain_interval
        .to_std()
        .unwrap_or(Duration::from_secs(1));
    let stored = config.eager_publish.then(|| drain.wake_on());
    tasks.spawn(drain_loop(drain, interval, stored, stop.clone()));
    let consumers = config.consumers;
    match queue {
        LocalQueue::Memory(queue) => tasks.spawn(consume(worker, queue, consumers, stop.clone())),
        LocalQueue::Sqs(queue) => tasks.spawn(consume(worker, queue, consumers, stop.clone())),
        LocalQueue::Pubsub { subscription, .. } => tasks.spawn(consume(
            worker,
            Arc::new(*subscription),
            consumers,
            stop.clone(),
        )),
    };
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

/// ingest, replay and metrics behind one router, with health checks and the OpenAPI document
/// of them all, authenticated with `auth`. `dead_letters` is the in-process queue's; `drain`
/// is woken by ingest's commits (eager publish).
pub fn app(
    store: Arc<dyn Store>,
    limits: Limits,
    drain: Drain,
    dead_letters: Option<Arc<dyn DeadLetters>>,
    auth: Authenticator,
) -> Router {
    let ingest = Api::into_router(fluxgate_ingest::IngestState {
        store: Arc::new(EagerWriter::waking(store.clone(), drain.wake_on())),
        limits: Arc::new(limits),
        auth: auth.clone(),
    });
    let replay = Api::into_router(fluxgate_replay::ReplayState {
        store: store.clone(),
        dead_letters,
        auth: auth.clone(),
    });
    let metrics = Api::into_router(fluxgate_metrics::MetricsState {
        store: store.clone(),
        auth,
    });
    // No drain trigger: the process drains on its own loop, and an HTTP trigger here would be
    // an endpoint without a key and outside the OpenAPI document.
    let routes = ingest.merge(replay).merge(metrics);
    api::service(routes, store, &openapi())
}

/// The OpenAPI document local serves: ingest, replay and metrics in one. (The drain and
/// worker triggers are for schedules and queues, not clients, and are not described.)
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = fluxgate_ingest::IngestState::openapi();
    document.merge(fluxgate_replay::ReplayState::openapi());
    document.merge(fluxgate_metrics::MetricsState::openapi());
    document.info.title = "fluxgate local".to_owned();
    document
}

/// The files a person needs, printed when the process is up.
#[derive(Default)]
struct KeyFiles {
    tenant: Option<PathBuf>,
    admin: Option<PathBuf>,
}

/// What a person at the terminal needs once the process is up: where it answers, where its
/// data is, and where the keys are.
fn banner(address: SocketAddr, config: &LocalConfig, url: &str, keys: &KeyFiles) -> String {
    let mut lines = vec![
        format!(
            "\nfluxgate local is up on http://{address}  (OpenAPI: http://{address}/openapi.json)"
        ),
        format!("  data dir   {}", config.data_dir.display()),
        format!("  database   {}", store::redact(url)),
        format!("  warehouse  {}", config.warehouse_label()),
    ];
    match &keys.tenant {
        Some(path) => lines.push(format!(
            "  API key    {}  (tenant {})",
            path.display(),
            config.dev_tenant
        )),
        None => {
            lines.push("  API key    none: FLUXGATE_AUTH=off, every request is open".to_owned())
        }
    }
    if let Some(path) = &keys.admin {
        lines.push(format!("  admin key  {}", path.display()));
    }
    lines.push(format!(
        "  fault switch: touch {} makes the warehouse refuse rows (events DEAD); rm it, then replay",
        config.data_dir.join(fault::FILE_NAME).display()
    ));
    lines.push("  stop with Ctrl-C\n".to_owned());
    lines.join("\n")
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
