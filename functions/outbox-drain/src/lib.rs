//! outbox-drain: run by a schedule, not a loop. Each run claims due PENDING rows under a
//! lease, publishes them in batches, and settles each row: PUBLISHED, or back to PENDING
//! with backoff, or DEAD once its attempts are used up. It stops when nothing is due or its
//! time budget is spent, and answers with a summary.

mod coalesce;
mod eager;
mod publish;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use fluxgate::config::{DrainConfig, ServerConfig};
use fluxgate::emf::{self, Figure};
use fluxgate::error::{Error, Result};
use fluxgate::event::EventKey;
use fluxgate::http as fhttp;
use fluxgate::queue::{self, Queue, QueueConfig, QueueKind};
use fluxgate::runtime::{self, Function, Invocation, open_store};
use fluxgate::store::{ClaimRequest, ClaimedEvent, DatabaseConfig, OutboxClaims};

pub use eager::{EagerConfig, EagerWriter};
use publish::Settled;
pub use publish::retry_for;

/// The drain's settings, from the environment (each also a flag; `--help` lists them).
#[derive(clap::Parser)]
#[command(about = "Publishes pending outbox rows, once per trigger", version)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub queue: QueueConfig,
    #[command(flatten)]
    pub drain: DrainConfig,
    #[command(flatten)]
    pub server: ServerConfig,
}

/// The drain as a function: one run per EventBridge event on Lambda, one run per Cloud Run job
/// task, `POST /v1/drain` elsewhere. SIGTERM stops new rounds; the rounds in flight settle.
pub async fn function(config: Config) -> Result<Function> {
    let drain = Drain::connect(&config.database, &config.queue, config.drain)
        .await?
        .with_stop(runtime::shutdown());
    let on_schedule = drain.clone();
    let job = drain.clone();
    Ok(Function::http(service(drain), config.server.port)
        .on_lambda_events(move |event: serde_json::Value, invocation: Invocation| {
            let drain = on_schedule.clone();
            async move { drain.scheduled_run(&event, invocation.deadline).await }
        })
        .as_job(move || async move { job.run_with_budget().await?.verdict() }))
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoppedBy {
    /// Nothing due was left.
    #[default]
    Empty,
    /// The time budget ran out; what is left waits for the next run.
    TimeBudget,
    /// The process was asked to stop (SIGTERM); the rounds in flight were settled first.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
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

impl DrainSummary {
    /// Whether the run did its job, for the triggers that report a verdict (a Cloud Run job's
    /// exit status, a Lambda invocation's error). It fails when it claimed rows and could
    /// publish none of them (the queue is unreachable or refuses everything). Rows that failed
    /// alongside published ones are the outbox's business (backoff) and do not fail it.
    pub fn verdict(self) -> Result<Self> {
        if self.claimed > 0 && self.published == 0 {
            return Err(Error::queue(format!(
                "claimed {} rows and published none; they are back to PENDING with backoff",
                self.claimed
            )));
        }
        Ok(self)
    }

    /// The run's figures as CloudWatch metrics, with the outbox lag when known.
    pub fn figures(&self, lag_seconds: Option<f64>) -> Vec<Figure> {
        let mut figures = vec![
            Figure::new("DrainClaimed", "Count", self.claimed as f64),
            Figure::new("DrainPublished", "Count", self.published as f64),
            Figure::new("DrainRetried", "Count", self.retried as f64),
            Figure::new("DrainDead", "Count", self.dead as f64),
            Figure::new("DrainDuration", "Milliseconds", self.duration_ms as f64),
        ];
        figures.extend(lag_figure(lag_seconds));
        figures
    }
}

fn lag_figure(lag_seconds: Option<f64>) -> Option<Figure> {
    lag_seconds.map(|lag| Figure::new("OutboxLag", "Seconds", lag))
}

#[derive(Clone)]
pub struct Drain {
    /// Claims and settles outbox rows, and reads the lag for the run's metrics.
    store: Arc<dyn OutboxClaims>,
    queue: Arc<dyn Queue>,
    config: Arc<DrainConfig>,
    /// Cancelled on SIGTERM: no new round starts, the ones in flight settle what they published.
    stop: CancellationToken,
    /// Woken when there is something to publish now (see [`Drain::wake_on`]).
    wake: Arc<tokio::sync::Notify>,
}

impl Drain {
    /// The drain of a deployment: its store and its managed queue.
    pub async fn connect(
        database: &DatabaseConfig,
        queue: &QueueConfig,
        config: DrainConfig,
    ) -> Result<Self> {
        // Publishing into this process's memory would strand every row as PUBLISHED with no
        // worker to take it; refuse rather than pretend.
        if queue.queue == QueueKind::Memory {
            return Err(Error::setting(
                "FLUXGATE_QUEUE",
                "memory works only inside fluxgate-local, where the worker shares the process; \
                 a stand-alone drain needs a managed queue (sqs or pubsub)",
            ));
        }
        let queue = queue::connect(queue).await?;
        Ok(Self::new(open_store(database).await?, queue, config))
    }

    pub fn new(store: Arc<dyn OutboxClaims>, queue: Arc<dyn Queue>, config: DrainConfig) -> Self {
        Self {
            store,
            queue,
            config: Arc::new(config),
            stop: CancellationToken::new(),
            wake: Arc::default(),
        }
    }

    /// Stops claiming new rounds once `stop` is cancelled. Rounds already claimed (two at most)
    /// are still published and settled; anything left unsettled (a kill before that) stays claimable
    /// once its lease runs out.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// What wakes the process's drain loop early: ingest in the same process notifies it once
    /// it has stored new events (eager publish), so they need not wait for the next tick.
    pub fn wake_on(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
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

    /// How long a run may claim before `deadline` (a Lambda invocation's): the configured
    /// budget, cut to what is left before the deadline less the margin that lets the last
    /// round settle.
    pub fn budget_until(&self, deadline: SystemTime) -> Duration {
        let margin = self
            .config
            .drain_deadline_margin
            .to_std()
            .unwrap_or(Duration::from_secs(5));
        let left = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .saturating_sub(margin);
        self.time_budget().min(left)
    }

    /// One run on a schedule's tick (the EventBridge event, or `{}` from a person's
    /// `aws lambda invoke`; only its source is logged) that must end before `deadline`. Writes
    /// the run's figures and the outbox lag as a metric line, and fails by [`DrainSummary::verdict`]
    /// (the drain-errors alarm counts failed invocations).
    pub async fn scheduled_run(
        &self,
        event: &serde_json::Value,
        deadline: SystemTime,
    ) -> Result<DrainSummary> {
        let budget = self.budget_until(deadline);
        let source = event
            .get("source")
            .and_then(|source| source.as_str())
            .unwrap_or("manual");
        tracing::debug!(
            source,
            budget_ms = budget.as_millis() as u64,
            "drain invoked"
        );
        let outcome = self.run(Instant::now() + budget).await;
        let lag = self.outbox_lag_seconds().await;
        let figures = match &outcome {
            Ok(summary) => summary.figures(lag),
            Err(_) => lag_figure(lag).into_iter().collect(),
        };
        if !figures.is_empty() {
            runtime::emit_metrics(&emf::line_now(&figures));
        }
        outcome?.verdict()
    }

    /// The age of the oldest PENDING event, for the outbox-lag alarm; `None` when the database
    /// cannot say (the run's own error is what gets reported then).
    pub async fn outbox_lag_seconds(&self) -> Option<f64> {
        match self.store.oldest_pending(None).await {
            Ok(oldest) => Some(
                oldest
                    .map(|at| (fluxgate::now() - at).num_milliseconds().max(0) as f64 / 1000.0)
                    .unwrap_or(0.0),
            ),
            Err(e) => {
                tracing::warn!(error = %e.chain(), "cannot read the outbox lag");
                None
            }
        }
    }

    /// One run, with the configured time budget.
    pub async fn run_with_budget(&self) -> Result<DrainSummary> {
        self.run(Instant::now() + self.time_budget()).await
    }

    /// One run that claims no new rows after `deadline`.
    ///
    /// With a backlog the rounds overlap: the next round is claimed while the current one is
    /// published and settled, so the database and the queue are both busy instead of taking
    /// turns. Two rounds at most are open at once; each settles only the rows it claimed.
    pub async fn run(&self, deadline: Instant) -> Result<DrainSummary> {
        let started = Instant::now();
        let mut summary = DrainSummary::default();
        let mut claimed = self.claim_round(deadline).await;
        loop {
            let round = match claimed? {
                Round::Claimed(round) => round,
                Round::Empty => break,
                Round::Stopped(reason) => {
                    summary.stopped_by = reason;
                    break;
                }
            };
            summary.rounds += 1;
            summary.claimed += round.rows.len() as u64;
            let (next, settled) =
                tokio::join!(self.claim_round(deadline), self.settle_round(&round));
            let settled = settled?;
            summary.count(&settled);
            claimed = match next {
                // The next claim ran before this round put its failures back; with a zero
                // backoff they are due already, so look once more before calling it a day.
                Ok(Round::Empty) if !settled.retries.is_empty() => self.claim_round(deadline).await,
                next => next,
            };
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

    /// Eager publish: leases those of `keys` still due (just stored by ingest) and publishes
    /// them now, as a run publishes a round. A row a drain run holds is left to it; whatever
    /// this cannot publish stays PENDING, with backoff, for the next run.
    pub async fn publish_now(&self, keys: &[EventKey]) -> Result<DrainSummary> {
        let started = Instant::now();
        let owner = format!("eager-{}", uuid::Uuid::now_v7());
        let claim = ClaimRequest {
            owner: owner.clone(),
            limit: u32::try_from(keys.len()).unwrap_or(u32::MAX),
            lease_ttl: self.config.drain_lease_ttl,
            now: fluxgate::now(),
        };
        let rows = self.store.claim_keys(&claim, keys).await?;
        let mut summary = DrainSummary::default();
        if !rows.is_empty() {
            summary.rounds = 1;
            summary.claimed = rows.len() as u64;
            summary.count(&self.settle_round(&Claimed { owner, rows }).await?);
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }

    /// Claims the next round, unless the run is to stop first.
    async fn claim_round(&self, deadline: Instant) -> Result<Round> {
        if self.stop.is_cancelled() {
            return Ok(Round::Stopped(StoppedBy::Shutdown));
        }
        if Instant::now() >= deadline {
            return Ok(Round::Stopped(StoppedBy::TimeBudget));
        }
        // One owner per round: a round settles only its own claims (two rounds are open at
        // once), and a crashed run's claims come back to others when their lease expires.
        let owner = format!("drain-{}", uuid::Uuid::now_v7());
        let rows = self
            .store
            .claim_batch(&ClaimRequest {
                owner: owner.clone(),
                limit: self.config.drain_batch_size.max(1),
                lease_ttl: self.config.drain_lease_ttl,
                now: fluxgate::now(),
            })
            .await?;
        Ok(if rows.is_empty() {
            Round::Empty
        } else {
            Round::Claimed(Claimed { owner, rows })
        })
    }

    /// Publishes one claimed round and records each row's fate.
    async fn settle_round(&self, round: &Claimed) -> Result<Settled> {
        let (owner, now) = (&round.owner, fluxgate::now());
        let settled =
            publish::publish_claimed(self.queue.as_ref(), &self.config, &round.rows, now).await;
        let settled_at = fluxgate::now();
        self.store
            .mark_published(owner, &settled.published, settled_at)
            .await?;
        self.store
            .reschedule(owner, &settled.retries, settled_at)
            .await?;
        Ok(settled)
    }
}

/// One round's rows, leased to the round's own owner.
struct Claimed {
    owner: String,
    rows: Vec<ClaimedEvent>,
}

/// What one claim found.
enum Round {
    Claimed(Claimed),
    /// Nothing is due.
    Empty,
    /// The run stops before claiming more.
    Stopped(StoppedBy),
}

impl DrainSummary {
    /// Adds one settled round's outcome.
    fn count(&mut self, settled: &Settled) {
        self.published += settled.published.len() as u64;
        for retry in &settled.retries {
            if retry.status == fluxgate::store::OutboxStatus::Dead {
                self.dead += 1;
            } else {
                self.retried += 1;
            }
        }
    }
}

/// outbox-drain as a whole HTTP service.
pub fn service(drain: Drain) -> Router {
    fhttp::service(router(drain.clone()), drain.store)
}

/// `POST /v1/drain`: one run, for Cloud Scheduler or a person.
pub fn router(drain: Drain) -> Router {
    Router::new()
        .route("/v1/drain", post(run_drain))
        .with_state(drain)
}

async fn run_drain(State(drain): State<Drain>) -> Result<Json<DrainSummary>> {
    Ok(Json(drain.run_with_budget().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(claimed: u64, published: u64) -> DrainSummary {
        DrainSummary {
            claimed,
            published,
            retried: claimed - published,
            dead: 0,
            rounds: 1,
            duration_ms: 1,
            stopped_by: StoppedBy::Empty,
        }
    }

    #[test]
    fn a_run_fails_when_it_publishes_nothing_it_claimed() {
        assert!(summary(0, 0).verdict().is_ok(), "nothing due is fine");
        assert!(summary(10, 10).verdict().is_ok());
        assert!(summary(10, 9).verdict().is_ok(), "one row backs off");
        assert!(summary(10, 0).verdict().is_err(), "queue unreachable");
    }

    #[test]
    fn the_lag_is_a_figure_only_when_known() {
        let names = |figures: Vec<Figure>| figures.iter().map(|f| f.name).collect::<Vec<_>>();
        assert!(!names(summary(1, 1).figures(None)).contains(&"OutboxLag"));
        assert!(names(summary(1, 1).figures(Some(2.5))).contains(&"OutboxLag"));
    }
}
