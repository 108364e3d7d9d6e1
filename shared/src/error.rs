//! The one error type of fluxgate, rendered once as `application/problem+json` (RFC 9457).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A rule that one field of the input broke. Carried into problem documents and into the
/// per-item answers of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, utoipa::ToSchema)]
#[error("{field} {detail}")]
pub struct FieldError {
    pub field: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

/// The cause an error keeps: the upstream library's error, reachable through
/// [`std::error::Error::source`] and logged with the whole chain, never shown to clients by
/// itself (see [`Error::problem`]).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, by kind. `Display` says what failed here; the upstream error is the
/// `source()` (see [`chain`] for both in one line).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body parsed but a field breaks a rule.
    #[error("invalid field: {0}")]
    InvalidField(FieldError),
    /// The body is not what the endpoint reads: bad JSON, wrong JSON type, bad encoding.
    #[error("malformed request: {0}")]
    Malformed(FieldError),
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unsupported {header}: {value}")]
    UnsupportedMedia { header: &'static str, value: String },
    #[error("event {event_id} of tenant {tenant_id} already exists with a different payload")]
    Conflict { tenant_id: String, event_id: String },
    #[error("{0} not found")]
    NotFound(String),
    /// A route that does not take this method (405; the answer's `Allow` lists the ones it
    /// does).
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The resource exists but is not in a state that allows this (e.g. replaying a DONE event).
    #[error("{0}")]
    WrongState(String),
    /// No credential, or one that is unknown or revoked.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A valid credential that may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A valid credential that may not act on what a field of the input names (a body's
    /// `tenantId` that is not the key's tenant): 403, naming the field.
    #[error("forbidden: {0}")]
    ForbiddenField(FieldError),
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("database migration")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The queue (SQS, Pub/Sub, its dead letters) failed or refused: the caller may retry.
    #[error("queue: {context}")]
    Queue {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// The warehouse sink (BigQuery, local files) failed or refused: the caller may retry.
    #[error("sink: {context}")]
    Sink {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// A setting that is missing or wrong, by its environment variable: start-up stops here.
    #[error("setting {name}: {problem}")]
    Setting {
        name: &'static str,
        problem: String,
        #[source]
        source: Option<Cause>,
    },
    /// A dependency that cannot be set up (credentials, a client, a secret store, the system's
    /// random source): not one setting's fault, and not the caller's.
    #[error("{context}")]
    Dependency {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// A rule fluxgate's own code keeps was broken: a bug, whatever the input.
    #[error("internal: {context}")]
    Internal {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("i/o")]
    Io(#[from] std::io::Error),
    /// The platform's runtime itself failed (the Lambda Runtime API is unreachable).
    #[error("{context}")]
    Runtime {
        context: String,
        #[source]
        source: Option<Cause>,
    },
}

impl Error {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::InvalidField(FieldError::new(field, detail))
    }

    pub fn malformed(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Malformed(FieldError::new(field, detail))
    }

    pub fn setting(name: &'static str, problem: impl Into<String>) -> Self {
        Self::Setting {
            name,
            problem: problem.into(),
            source: None,
        }
    }

    /// A setting that names a client this binary was built without (its cargo feature is off):
    /// `FLUXGATE_QUEUE=pubsub` in a Lambda build, a secret id in a Cloud Run build.
    pub fn not_built(name: &'static str, client: &str, feature: &str) -> Self {
        Self::setting(
            name,
            format!(
                "needs {client}, which this build leaves out to stay small; build the function \
                 with the cargo feature `{feature}` (the AWS build is the default, Cloud Run \
                 images build `--no-default-features --features gcp`)"
            ),
        )
    }

    /// A setting that is wrong, with what the parser or client said about it.
    pub fn setting_caused(
        name: &'static str,
        problem: impl Into<String>,
        cause: impl Into<Cause>,
    ) -> Self {
        Self::Setting {
            name,
            problem: problem.into(),
            source: Some(cause.into()),
        }
    }

    pub fn queue(context: impl Into<String>) -> Self {
        Self::Queue {
            context: context.into(),
            source: None,
        }
    }

    pub fn queue_caused(context: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Queue {
            context: context.into(),
            source: Some(cause.into()),
        }
    }

    pub fn sink(context: impl Into<String>) -> Self {
        Self::Sink {
            context: context.into(),
            source: None,
        }
    }

    pub fn sink_caused(context: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Sink {
            context: context.into(),
            source: Some(cause.into()),
        }
    }

    pub fn dependency(context: impl Into<String>) -> Self {
        Self::Dependency {
            context: context.into(),
            source: None,
        }
    }

    pub fn dependency_caused(context: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Dependency {
            context: context.into(),
            source: Some(cause.into()),
        }
    }

    pub fn internal(context: impl Into<String>) -> Self {
        Self::Internal {
            context: context.into(),
            source: None,
        }
    }

    pub fn internal_caused(context: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Internal {
            context: context.into(),
            source: Some(cause.into()),
        }
    }

    pub fn runtime(context: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Runtime {
            context: context.into(),
            source: Some(cause.into()),
        }
    }

    /// This error and its causes in one line (see [`chain`]).
    pub fn chain(&self) -> String {
        chain(self)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidField(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMedia { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::WrongState(_) => StatusCode::CONFLICT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::ForbiddenField(_) => StatusCode::FORBIDDEN,
            // The caller may retry: nothing was written, and the dependency may come back.
            Self::Database(_) | Self::Queue { .. } | Self::Sink { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Migration(_)
            | Self::Setting { .. }
            | Self::Dependency { .. }
            | Self::Internal { .. }
            | Self::Io(_)
            | Self::Runtime { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidField(_) => ("invalid-field", "A field is invalid"),
            Self::Malformed(_) => ("malformed-request", "The request body cannot be read"),
            Self::TooLarge { .. } => ("body-too-large", "The request body is too large"),
            Self::UnsupportedMedia { .. } => ("unsupported-media-type", "Unsupported media type"),
            Self::Conflict { .. } => (
                "event-conflict",
                "The event id is taken by a different payload",
            ),
            Self::NotFound(_) => ("not-found", "Not found"),
            Self::MethodNotAllowed { .. } => ("method-not-allowed", "Method not allowed"),
            Self::WrongState(_) => ("wrong-state", "Not possible in the current state"),
            Self::Unauthorized(_) => ("unauthorized", "Authentication required"),
            Self::Forbidden(_) | Self::ForbiddenField(_) => ("forbidden", "Not allowed"),
            Self::Database(_) | Self::Queue { .. } | Self::Sink { .. } => {
                ("dependency-unavailable", "A dependency is unavailable")
            }
            Self::Migration(_)
            | Self::Setting { .. }
            | Self::Dependency { .. }
            | Self::Internal { .. }
            | Self::Io(_)
            | Self::Runtime { .. } => ("internal", "Internal error"),
        }
    }

    /// What the client may see. Internal details stay in the log.
    fn public_detail(&self) -> String {
        match self {
            Self::Database(_) => {
                "the database is unavailable; nothing was written, retry later".into()
            }
            Self::Migration(_)
            | Self::Setting { .. }
            | Self::Dependency { .. }
            | Self::Internal { .. }
            | Self::Io(_)
            | Self::Runtime { .. } => "internal error".into(),
            // What the queue or sink said, as clients have always seen it.
            Self::Queue { .. } | Self::Sink { .. } => self.chain(),
            other => other.to_string(),
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidField(f) | Self::Malformed(f) | Self::ForbiddenField(f) => Some(&f.field),
            _ => None,
        }
    }

    pub fn problem(&self) -> Problem {
        let (slug, title) = self.slug_and_title();
        let detail = match self {
            Self::InvalidField(f) | Self::Malformed(f) | Self::ForbiddenField(f) => {
                f.detail.clone()
            }
            other => other.public_detail(),
        };
        Problem {
            kind: format!("urn:fluxgate:problem:{slug}"),
            title,
            status: self.status().as_u16(),
            detail,
            field: self.field().map(str::to_owned),
        }
    }
}

/// An RFC 9457 problem document, with `field` naming the offending input where there is one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// `error` and each of its causes, `": "` between them: what a person reading the log needs.
/// A cause whose text the line already ends with (some libraries repeat their source) is not
/// written twice.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let next_text = next.to_string();
        if !text.ends_with(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        cause = next.source();
    }
    text
}

/// What the log needs of an error answered to a client, attached to the response by
/// [`Error::into_response`] and logged once by the layer of
/// [`crate::http::with_observability`].
#[derive(Debug, Clone)]
pub struct ErrorReport {
    pub status: StatusCode,
    /// The error with its whole `source()` chain (see [`chain`]).
    pub message: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme the client should use.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fluxgate\""),
            );
        }
        response.extensions_mut().insert(ErrorReport {
            status,
            message: self.chain(),
        });
        response
    }
}

/// How a Lambda invocation reports a failure to the Runtime API (`errorType`, `errorMessage`):
/// the same slug as the problem documents, so logs and alarms name it the same way.
impl From<Error> for lambda_http::lambda_runtime::Diagnostic {
    fn from(error: Error) -> Self {
        let (slug, _) = error.slug_and_title();
        Self {
            error_type: format!("fluxgate:{slug}"),
            error_message: error.chain(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_details_do_not_reach_the_client() {
        let err = Error::Database(sqlx::Error::Protocol("secret host 10.0.0.1".into()));
        let problem = err.problem();
        assert_eq!(problem.status, 503);
        assert!(!problem.detail.contains("10.0.0.1"));
    }

    #[test]
    fn field_errors_name_the_field() {
        let problem = Error::invalid("payload", "must be a JSON object").problem();
        assert_eq!(problem.field.as_deref(), Some("payload"));
        assert_eq!(problem.status, 422);
        assert_eq!(problem.kind, "urn:fluxgate:problem:invalid-field");
    }

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
    }

    #[test]
    fn the_upstream_error_is_kept_as_the_source() {
        let err = Error::queue_caused("publish to events", refused());
        let source = std::error::Error::source(&err).expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io error itself");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            err.to_string(),
            "queue: publish to events",
            "Display is this level only"
        );
        assert_eq!(err.chain(), "queue: publish to events: connection refused");

        let setting =
            Error::setting_caused("FLUXGATE_PUBSUB_ENDPOINT", "cannot be used", refused());
        assert!(std::error::Error::source(&setting).is_some());
        assert!(
            std::error::Error::source(&Error::setting("DATABASE_URL", "is required")).is_none()
        );
    }

    #[test]
    fn a_chain_does_not_repeat_a_cause_the_message_already_ends_with() {
        let err = Error::sink_caused("write", std::io::Error::other("disk full"));
        assert_eq!(chain(&err), "sink: write: disk full");
        let database = Error::Database(sqlx::Error::Protocol("bad frame".into()));
        assert_eq!(
            chain(&database),
            "database: encountered unexpected or invalid data: bad frame"
        );
    }

    /// The problem documents clients see, per kind, as they were before causes were kept.
    #[test]
    fn problem_documents_are_unchanged() {
        let document = |err: Error| serde_json::to_value(err.problem()).expect("json");
        assert_eq!(
            document(Error::queue_caused("publish to events", refused())),
            serde_json::json!({
                "type": "urn:fluxgate:problem:dependency-unavailable",
                "title": "A dependency is unavailable",
                "status": 503,
                "detail": "queue: publish to events: connection refused",
            })
        );
        assert_eq!(
            document(Error::sink("BigQuery insertAll into p.d.t: 500")),
            serde_json::json!({
                "type": "urn:fluxgate:problem:dependency-unavailable",
                "title": "A dependency is unavailable",
                "status": 503,
                "detail": "sink: BigQuery insertAll into p.d.t: 500",
            })
        );
        let internal = serde_json::json!({
            "type": "urn:fluxgate:problem:internal",
            "title": "Internal error",
            "status": 500,
            "detail": "internal error",
        });
        for err in [
            Error::setting_caused("DATABASE_URL", "the database URL cannot be read", refused()),
            Error::internal("the store answered no outcome"),
            Error::dependency_caused("BigQuery credentials", refused()),
            Error::runtime("Lambda runtime", refused()),
            Error::Io(refused()),
        ] {
            assert_eq!(document(err), internal);
        }
    }

    #[test]
    fn a_lambda_diagnostic_names_the_slug_and_the_causes() {
        let diagnostic = lambda_http::lambda_runtime::Diagnostic::from(Error::queue_caused(
            "publish to events",
            refused(),
        ));
        assert_eq!(diagnostic.error_type, "fluxgate:dependency-unavailable");
        assert_eq!(
            diagnostic.error_message,
            "queue: publish to events: connection refused"
        );
    }

    /// The log lines a test writes, in memory.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().expect("log buffer");
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    async fn fail() -> Result<&'static str> {
        Err(Error::queue_caused("publish to events", refused()))
    }

    async fn reject() -> Result<&'static str> {
        Err(Error::invalid("payload", "must be a JSON object"))
    }

    async fn get(app: &axum::Router, path: &str) -> StatusCode {
        use tower::ServiceExt;
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("request");
        app.clone().oneshot(request).await.expect("answer").status()
    }

    #[tokio::test]
    async fn an_error_answer_is_logged_once_by_the_observability_layer() {
        let router = axum::Router::new()
            .route("/fail", axum::routing::get(fail))
            .route("/reject", axum::routing::get(reject));
        // Served through the layer twice, as a router merged into another service could be.
        let app = crate::http::with_observability(crate::http::with_observability(router));

        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // A current-thread test runtime: everything the requests log happens on this thread.
        let _guard = tracing::subscriber::set_default(subscriber);

        // Building the response logs nothing by itself.
        let response = Error::queue_caused("publish to events", refused()).into_response();
        assert!(log.lines().is_empty(), "{:?}", log.lines());
        assert_eq!(
            response
                .extensions()
                .get::<ErrorReport>()
                .map(|r| r.message.as_str()),
            Some("queue: publish to events: connection refused")
        );

        assert_eq!(get(&app, "/fail").await, StatusCode::SERVICE_UNAVAILABLE);
        let failed = only_line(&log, "request failed");
        assert!(failed.contains("ERROR"), "{failed}");
        assert!(
            failed.contains("queue: publish to events: connection refused"),
            "the whole chain: {failed}"
        );
        assert!(
            failed.contains("correlation_id"),
            "in the request's span: {failed}"
        );
        let lines = log.lines();
        let errors = lines.iter().filter(|l| l.contains("ERROR")).count();
        assert_eq!(errors, 1, "one ERROR line per failed request: {lines:#?}");

        assert_eq!(get(&app, "/reject").await, StatusCode::UNPROCESSABLE_ENTITY);
        let rejected = only_line(&log, "request rejected");
        assert!(rejected.contains("INFO"), "{rejected}");
        assert!(rejected.contains("must be a JSON object"), "{rejected}");
    }

    /// The one line of the log that holds `marker` (there must be exactly one).
    fn only_line(log: &Captured, marker: &str) -> String {
        let lines = log.lines();
        let found: Vec<&String> = lines.iter().filter(|l| l.contains(marker)).collect();
        assert_eq!(found.len(), 1, "one {marker:?} line: {lines:#?}");
        found[0].clone()
    }
}
