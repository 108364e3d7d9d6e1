//! Cloud Run job mode (`CLOUD_RUN_JOB` set): one run, a JSON summary line, and an exit status
//! that tells Cloud Run (and its retry policy) whether the run worked.

use std::process::ExitCode;

use fluxgate::error::Result;

use crate::{Drain, DrainSummary};

/// Cloud Run sets `CLOUD_RUN_JOB` (the job's name) in every task of a job.
pub const CLOUD_RUN_JOB_ENV: &str = "CLOUD_RUN_JOB";

pub fn is_cloud_run_job() -> bool {
    std::env::var_os(CLOUD_RUN_JOB_ENV).is_some_and(|v| !v.is_empty())
}

/// Whether a finished run counts as a failure: it could not run (database, configuration),
/// or it claimed rows and could publish none of them (the queue is unreachable or refuses
/// everything). Rows that failed alongside published ones are the outbox's business (backoff)
/// and do not fail the job.
pub fn failed(outcome: &Result<DrainSummary>) -> bool {
    match outcome {
        Err(_) => true,
        Ok(summary) => summary.claimed > 0 && summary.published == 0,
    }
}

/// Runs the drain once and turns the outcome into the process's exit status. The drain stops
/// claiming on SIGTERM (see [`Drain::with_stop`]); the round in flight settles first.
pub async fn run_once(drain: &Drain) -> ExitCode {
    let outcome = drain.run_with_budget().await;
    let failed = failed(&outcome);
    match &outcome {
        Ok(summary) => {
            let summary_json = serde_json::to_string(summary).unwrap_or_default();
            if failed {
                tracing::error!(summary = %summary_json, claimed = summary.claimed, published = summary.published,
                    retried = summary.retried, dead = summary.dead, stopped_by = ?summary.stopped_by,
                    "drain job failed: nothing claimed could be published");
            } else {
                tracing::info!(summary = %summary_json, claimed = summary.claimed, published = summary.published,
                    retried = summary.retried, dead = summary.dead, stopped_by = ?summary.stopped_by,
                    "drain job finished");
            }
        }
        Err(e) => tracing::error!(error = %e, "drain job failed"),
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoppedBy;

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
    fn a_run_fails_when_it_errs_or_publishes_nothing_it_claimed() {
        assert!(!failed(&Ok(summary(0, 0))), "nothing due is fine");
        assert!(!failed(&Ok(summary(10, 10))));
        assert!(!failed(&Ok(summary(10, 9))), "one row backs off");
        assert!(failed(&Ok(summary(10, 0))), "queue unreachable");
        assert!(failed(&Err(fluxgate::Error::Queue("down".into()))));
    }
}
