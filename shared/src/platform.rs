//! Where this process runs, as the platform tells it through the environment. A leaf module:
//! settings read it for their defaults (a Lambda pool is small), the runtime for its dispatch.

/// Lambda sets this in every function's environment; nothing else does.
pub const LAMBDA_RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";

/// Cloud Run sets `CLOUD_RUN_JOB` (the job's name) in every task of a job.
pub const CLOUD_RUN_JOB_ENV: &str = "CLOUD_RUN_JOB";

/// The three shapes a fluxgate function runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Under the AWS Lambda Runtime API: events in, answers out, one at a time.
    Lambda,
    /// A Cloud Run job task: run once, the exit status tells.
    CloudRunJob,
    /// An HTTP server on `PORT`: Cloud Run services, containers, VMs, a laptop.
    Http,
}

impl Platform {
    pub fn current() -> Self {
        if is_set(LAMBDA_RUNTIME_API_ENV) {
            Self::Lambda
        } else if is_set(CLOUD_RUN_JOB_ENV) {
            Self::CloudRunJob
        } else {
            Self::Http
        }
    }
}

/// Whether this process runs on AWS Lambda.
pub fn on_lambda() -> bool {
    Platform::current() == Platform::Lambda
}

fn is_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}
