//! Cloud Run job mode (`CLOUD_RUN_JOB` set): one run, a JSON summary line, and an exit status
//! that tells Cloud Run (and its retry policy) whether the run worked.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A job with its summary type erased to JSON, so [`super::Function`] holds one.
pub(super) type JobRun = Box<dyn FnOnce() -> BoxFuture<Result<Value>> + Send>;

pub(super) fn job_run<R, F, Fut>(job: F) -> JobRun
where
    R: Serialize + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    Box::new(move || {
        Box::pin(async move {
            let summary = job().await?;
            serde_json::to_value(summary).map_err(|e| Error::runtime("summary", e))
        })
    })
}

/// Runs the job once and turns its outcome into the process's exit status.
pub(super) async fn run_once(name: &str, job: JobRun) -> ExitCode {
    match job().await {
        Ok(summary) => {
            tracing::info!(%summary, "{name} job finished");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e.chain(), "{name} job failed");
            ExitCode::FAILURE
        }
    }
}
