//! outbox-drain: run by a schedule, not a loop. Each run claims due PENDING rows under a
//! lease, publishes them in batches, and settles each row: PUBLISHED, or back to PENDING
//! with backoff, or DEAD once its attempts are used up. It stops when nothing is due or its
//! time budget is spent, and answers with a summary.

pub mod job;
pub mod lambda;
mod publish;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use fluxgate::config::DrainConfig;
use fluxgate::error::Result;
use fluxgate::http as fhttp;
use fluxgate::queue::Queue;
use fluxgate::store::{ClaimRequest, OutboxClaims};

pub use publish::retry_for;

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoppedBy {
    /// Nothing due was left.
    Empty,
    /// The time budget ran out; what is left waits for the next run.
    TimeBudget,
    /// The process was asked to stop (SIGTERM); the round in flight was settled first.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainSummary {
    pub claimed: u64,
    pub published: u64,
    /// Publish failed; back to PENDING for a later attempt.
    pub retried: u64,
    /// Publish failed for the last allowed time.
    pub dead: u64,
    pub rounds: u64,
    pub duration_ms: u64,
    pub stopped_by: StoppedBy,
}

#[derive(Clone)]
pub struct Drain {
    /// Claims and settles outbox rows, and reads the lag for the run's metrics.
    store: Arc<dyn OutboxClaims>,
    queue: Arc<dyn Queue>,
    config: Arc<DrainConfig>,
    /// Cancelled on SIGTERM: no new round starts, the one in flight settles what it published.
    stop: CancellationToken,
}

impl Drain {
    pub fn new(store: Arc<dyn OutboxClaims>, queue: Arc<dyn Queue>, config: DrainConfig) -> Self {
        Self {
            store,
            queue,
            config: Arc::new(config),
            stop: CancellationToken::new(),
        }
    }

    /// Stops claiming new rounds once `stop` is cancelled. A round already claimed is still
    /// published and settled; anything left unsettled (a kill before that) stays claimable
    /// once its lease runs out.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    pub fn config(&self) -> &DrainConfig {
        &self.config
    }

    /// The configured time budget of one run (`FLUXGATE_DRAIN_TIME_BUDGET`).
    pub fn time_budget(&self) -> Duration {
        self.config
            .drain_time_budget
            .to_std()
            .unwrap_or(Duration::from_secs(50))
    }

    /// One run, with the configured time budget.
    pub async fn run_with_budget(&self) -> Result<DrainSummary> {
        self.run(Instant::now() + self.time_budget()).await
    }

    /// One run that claims no new rows after `deadline`.
    pub async fn run(&self, deadline: Instant) -> Result<DrainSummary> {
        let started = Instant::now();
        // One owner per run: a run only settles its own claims, and a crashed run's claims
        // come back to others when their lease expires.
        let owner = format!("drain-{}", uuid::Uuid::now_v7());
        let mut summary = DrainSummary {
            claimed: 0,
            published: 0,
            retried: 0,
            dead: 0,
            rounds: 0,
            duration_ms: 0,
            stopped_by: StoppedBy::Empty,
        };
        loop {
            if self.stop.is_cancelled() {
                summary.stopped_by = StoppedBy::Shutdown;
                break;
            }
            if Instant::now() >= deadline {
                summary.stopped_by = StoppedBy::TimeBudget;
                break;
            }
            let now = fluxgate::now();
            let claimed = self
                .store
                .claim_batch(&ClaimRequest {
                    owner: owner.clone(),
                    limit: self.config.drain_batch_size.max(1),
                    lease_ttl: self.config.drain_lease_ttl,
                    now,
                })
                .await?;
            if claimed.is_empty() {
                break;
            }
            summary.rounds += 1;
            summary.claimed += claimed.len() as u64;
            let settled =
                publish::publish_claimed(self.queue.as_ref(), &self.config, &claimed, now).await;
            let settled_at = fluxgate::now();
            self.store
                .mark_published(&owner, &settled.published, settled_at)
                .await?;
            self.store
                .reschedule(&owner, &settled.retries, settled_at)
                .await?;
            summary.published += settled.published.len() as u64;
            for retry in &settled.retries {
                if retry.status == fluxgate::store::OutboxStatus::Dead {
                    summary.dead += 1;
                } else {
                    summary.retried += 1;
                }
            }
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        if summary.claimed == 0 {
            // A scheduled run that finds nothing is the common case; keep it out of the logs.
            tracing::debug!(
                duration_ms = summary.duration_ms,
                "drain run found nothing due"
            );
            return Ok(summary);
        }
        tracing::info!(
            claimed = summary.claimed,
            published = summary.published,
            retried = summary.retried,
            dead = summary.dead,
            rounds = summary.rounds,
            duration_ms = summary.duration_ms,
            stopped_by = ?summary.stopped_by,
            "drain run finished"
        );
        Ok(summary)
    }
}

/// `POST /v1/drain`: one run, for Cloud Scheduler or a person.
pub fn router(drain: Drain) -> Router {
    Router::new()
        .route("/v1/drain", post(run_drain))
        .with_state(drain)
}

/// outbox-drain as a whole HTTP service.
pub fn service(drain: Drain) -> Router {
    let store = drain.store.clone();
    fhttp::with_observability(
        router(drain)
            .merge(fhttp::health_routes(store))
            .fallback(fhttp::not_found),
    )
}

async fn run_drain(State(drain): State<Drain>) -> Result<Json<DrainSummary>> {
    Ok(Json(drain.run_with_budget().await?))
}
