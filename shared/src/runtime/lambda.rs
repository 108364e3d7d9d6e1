//! Lambda functions triggered by events other than HTTP (SQS, EventBridge): the Runtime API's
//! event is read as the function's own type, its answer written back, a failure reported as
//! the invocation's error (`errorType` `fluxgate:<slug>`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// What the function learns of one invocation besides its event.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// When Lambda stops the invocation.
    pub deadline: SystemTime,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A handler with its event and answer types erased to JSON, so [`super::Function`] holds one.
pub(super) type EventHandler =
    Arc<dyn Fn(Value, Invocation) -> BoxFuture<Result<Value>> + Send + Sync>;

pub(super) fn event_handler<E, R, F, Fut>(handler: F) -> EventHandler
where
    E: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(E, Invocation) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    Arc::new(move |payload, invocation| {
        let answer = serde_json::from_value::<E>(payload)
            .map(|event| handler(event, invocation))
            .map_err(|e| Error::malformed("event", e.to_string()));
        Box::pin(async move {
            let answer = answer?.await?;
            serde_json::to_value(answer).map_err(|e| Error::runtime("answer", e))
        })
    })
}

/// Takes events from the Lambda Runtime API until the process ends.
pub(super) async fn serve_events(handler: EventHandler) -> Result<()> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let handler = handler.clone();
        let invocation = Invocation {
            deadline: deadline_of(event.context.deadline),
        };
        async move { handler(event.payload, invocation).await }
    }))
    .await
    .map_err(runtime_failed)
}

/// The runtime's own failure (it cannot reach the Runtime API): the process ends and Lambda
/// starts a new one.
pub(super) fn runtime_failed(error: lambda_runtime::Error) -> Error {
    Error::runtime("Lambda runtime", error)
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

    #[tokio::test]
    async fn an_event_of_the_wrong_shape_is_refused_by_name() {
        let handler = event_handler(|n: u32, _| async move { Ok(n + 1) });
        let invocation = Invocation {
            deadline: SystemTime::now(),
        };
        let answer = handler(Value::from(41), invocation.clone()).await;
        assert_eq!(answer.expect("answer"), Value::from(42));
        let refused = handler(Value::from("forty-one"), invocation).await;
        assert_eq!(refused.expect_err("refused").field(), Some("event"));
    }
}
