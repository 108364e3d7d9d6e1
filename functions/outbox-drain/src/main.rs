//! outbox-drain: on Lambda, one run per EventBridge scheduled event (`lambda.rs`); on Cloud Run
//! as a service (`POST /v1/drain` for Cloud Scheduler), or as a Cloud Run job (`CLOUD_RUN_JOB`
//! set) that runs once and exits with its verdict.

use std::process::ExitCode;

use clap::Parser;
use fluxgate::config::{DatabaseConfig, DrainConfig, QueueConfig, QueueKind, ServerConfig};
use fluxgate::{Error, queue, runtime, secrets, store, telemetry};
use fluxgate_outbox_drain::{Drain, job};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "fluxgate-outbox-drain",
    about = "Publishes pending outbox rows, once per trigger",
    version
)]
struct Config {
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    queue: QueueConfig,
    #[command(flatten)]
    drain: DrainConfig,
    #[command(flatten)]
    server: ServerConfig,
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let config = Config::parse();
    let drain = match build(config.database, config.queue, config.drain).await {
        Ok(drain) => drain,
        Err(e) => {
            tracing::error!(error = %e, "outbox-drain cannot start");
            return ExitCode::FAILURE;
        }
    };
    // SIGTERM stops new rounds; the round in flight settles (see Drain::with_stop).
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            runtime::shutdown_signal().await;
            stop.cancel();
        }
    });
    let drain = drain.with_stop(stop);
    if runtime::on_lambda() {
        return match fluxgate_outbox_drain::lambda::run(drain).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "outbox-drain stopped");
                ExitCode::FAILURE
            }
        };
    }
    if job::is_cloud_run_job() {
        return job::run_once(&drain).await;
    }
    match runtime::serve(fluxgate_outbox_drain::service(drain), config.server.port).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "outbox-drain stopped");
            ExitCode::FAILURE
        }
    }
}

async fn build(
    database: DatabaseConfig,
    queue: QueueConfig,
    drain: DrainConfig,
) -> fluxgate::Result<Drain> {
    // Publishing into this process's memory would strand every row as PUBLISHED with no
    // worker to take it; refuse rather than pretend.
    if queue.queue == QueueKind::Memory {
        return Err(Error::Config(
            "FLUXGATE_QUEUE=memory works only inside fluxgate-local, where the worker shares the process; \
             a stand-alone drain needs a managed queue"
                .into(),
        ));
    }
    let queue = queue::connect(&queue).await?;
    let database_url = secrets::database_url(&database).await?;
    let store = store::connect(database_url.expose(), &database).await?;
    Ok(Drain::new(store, queue, drain))
}
