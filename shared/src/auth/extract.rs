//! The [`TenantScope`] extractor: the one place requests are authenticated. It lives with the
//! [`Authenticator`] it asks, so that the scope itself stays a plain value that `event` and
//! the handlers use without pulling in authentication (and `auth`'s store) behind it.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use super::Authenticator;
use crate::error::Error;
use crate::tenant::TenantScope;

/// A handler that takes a `TenantScope` gets the caller's scope, or the request is answered
/// 401 before the handler runs. The state of a router must hand out its [`Authenticator`]
/// (`impl FromRef<State> for Authenticator`).
impl<S> FromRequestParts<S> for TenantScope
where
    S: Send + Sync,
    Authenticator: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Authenticator::from_ref(state)
            .authenticate(&parts.headers)
            .await
    }
}
