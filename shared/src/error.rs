//! The one error type of fluxgate, rendered once as `application/problem+json` (RFC 9457).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A rule that one field of the input broke. Carried into problem documents and into the
/// per-item answers of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
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
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("queue: {0}")]
    Queue(String),
    #[error("sink: {0}")]
    Sink(String),
    #[error("configuration: {0}")]
    Config(String),
    /// A setting that is missing or wrong, by its environment variable: start-up stops here.
    #[error("setting {name}: {problem}")]
    Setting { name: &'static str, problem: String },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The platform's runtime itself failed (the Lambda Runtime API is unreachable).
    #[error("{0}")]
    Runtime(String),
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
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidField(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMedia { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::WrongState(_) => StatusCode::CONFLICT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::ForbiddenField(_) => StatusCode::FORBIDDEN,
            // The caller may retry: nothing was written, and the dependency may come back.
            Self::Database(_) | Self::Queue(_) | Self::Sink(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Migration(_)
            | Self::Config(_)
            | Self::Setting { .. }
            | Self::Io(_)
            | Self::Runtime(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::WrongState(_) => ("wrong-state", "Not possible in the current state"),
            Self::Unauthorized(_) => ("unauthorized", "Authentication required"),
            Self::Forbidden(_) | Self::ForbiddenField(_) => ("forbidden", "Not allowed"),
            Self::Database(_) | Self::Queue(_) | Self::Sink(_) => {
                ("dependency-unavailable", "A dependency is unavailable")
            }
            Self::Migration(_)
            | Self::Config(_)
            | Self::Setting { .. }
            | Self::Io(_)
            | Self::Runtime(_) => ("internal", "Internal error"),
        }
    }

    /// What the client may see. Internal details stay in the log.
    fn public_detail(&self) -> String {
        match self {
            Self::Database(_) => {
                "the database is unavailable; nothing was written, retry later".into()
            }
            Self::Migration(_)
            | Self::Config(_)
            | Self::Setting { .. }
            | Self::Io(_)
            | Self::Runtime(_) => "internal error".into(),
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
#[derive(Debug, Serialize)]
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

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::info!(error = %self, "request rejected");
        }
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
            error_message: error.to_string(),
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
}
