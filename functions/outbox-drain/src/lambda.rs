//! The drain as a Lambda function on the EventBridge schedule: one run per invocation, with the
//! time budget the invocation has left (its deadline minus `FLUXGATE_DRAIN_DEADLINE_MARGIN`),
//! a CloudWatch metric line (EMF) of what it did and of the outbox lag, and a failed invocation
//! (the Lambda `Errors` metric, the drain-errors alarm) when it published nothing it claimed.

use std::time::{Duration, Instant, SystemTime};

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

use fluxgate::emf::{self, Figure};
use fluxgate::error::{Error, Result};

use crate::{Drain, DrainSummary, job};

/// Takes scheduled events from the Lambda Runtime API until the process ends.
pub async fn run(drain: Drain) -> Result<()> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let drain = drain.clone();
        async move {
            let budget = budget_until(deadline_of(event.context.deadline), &drain);
            handle(&drain, &event.payload, budget).await
        }
    }))
    .await
    .map_err(fluxgate::runtime::lambda_failed)
}

/// Any epoch time before this (September 2001) is not one: Lambda sends the deadline in epoch
/// milliseconds, but local Runtime API emulators (cargo-lambda) send the timeout itself
/// (`600000` for ten minutes). Such a value is read as milliseconds from now, so a run under
/// the emulator is not handed a deadline in 1970 and a zero budget.
const SMALLEST_EPOCH_DEADLINE_MS: u64 = 1_000_000_000_000;

/// The invocation's deadline from the Runtime API's `Lambda-Runtime-Deadline-Ms`.
pub fn deadline_of(deadline_ms: u64) -> SystemTime {
    if deadline_ms < SMALLEST_EPOCH_DEADLINE_MS {
        SystemTime::now() + Duration::from_millis(deadline_ms)
    } else {
        SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms)
    }
}

/// How long a run may claim: the configured budget, cut to what the invocation has left before
/// its deadline, less the margin that lets the last round settle.
pub fn budget_until(deadline: SystemTime, drain: &Drain) -> Duration {
    let margin = drain
        .config()
        .drain_deadline_margin
        .to_std()
        .unwrap_or(Duration::from_secs(5));
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(margin);
    drain.time_budget().min(left)
}

/// One run. The event is any JSON (the EventBridge scheduled event, or `{}` from a person's
/// `aws lambda invoke`); only its source is logged.
pub async fn handle(drain: &Drain, event: &Value, budget: Duration) -> Result<DrainSummary> {
    let source = event
        .get("source")
        .and_then(|source| source.as_str())
        .unwrap_or("manual");
    tracing::debug!(
        source,
        budget_ms = budget.as_millis() as u64,
        "drain invoked"
    );
    let outcome = drain.run(Instant::now() + budget).await;
    let lag = outbox_lag_seconds(drain).await;
    if let Ok(summary) = &outcome {
        emf::emit(&figures(summary, lag));
    } else if let Some(lag) = lag {
        emf::emit(&[Figure::new("OutboxLag", "Seconds", lag)]);
    }
    if let Ok(summary) = &outcome
        && job::failed(&outcome)
    {
        return Err(Error::Queue(format!(
            "claimed {} rows and published none; they are back to PENDING with backoff",
            summary.claimed
        )));
    }
    outcome
}

/// The age of the oldest PENDING event, for the outbox-lag alarm; `None` when the database
/// cannot say (the run's own error is what gets reported then).
async fn outbox_lag_seconds(drain: &Drain) -> Option<f64> {
    match drain.store.oldest_pending(None).await {
        Ok(oldest) => Some(
            oldest
                .map(|at| (fluxgate::now() - at).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox lag");
            None
        }
    }
}

/// The metric figures of one run.
pub fn figures(summary: &DrainSummary, lag_seconds: Option<f64>) -> Vec<Figure> {
    let mut figures = vec![
        Figure::new("DrainClaimed", "Count", summary.claimed as f64),
        Figure::new("DrainPublished", "Count", summary.published as f64),
        Figure::new("DrainRetried", "Count", summary.retried as f64),
        Figure::new("DrainDead", "Count", summary.dead as f64),
        Figure::new("DrainDuration", "Milliseconds", summary.duration_ms as f64),
    ];
    if let Some(lag) = lag_seconds {
        figures.push(Figure::new("OutboxLag", "Seconds", lag));
    }
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_deadline_is_taken_as_it_is() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_328_905_179);
        assert_eq!(deadline_of(1_795_328_905_179), at);
    }

    #[test]
    fn an_emulators_timeout_is_read_as_time_from_now() {
        let before = SystemTime::now();
        let deadline = deadline_of(600_000);
        let left = deadline.duration_since(before).expect("in the future");
        assert!(
            left >= Duration::from_secs(599) && left <= Duration::from_secs(601),
            "{left:?}"
        );
    }
}
