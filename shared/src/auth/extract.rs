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

/// A caller with an admin's scope (the admin key, platform IAM, or local mode without
/// authentication). As an extractor it answers 403 for a tenant key before the handler runs,
/// and before any body is read; a handler that takes one cannot run for a tenant.
#[derive(Debug, Clone)]
pub struct Admin(pub TenantScope);

impl TryFrom<TenantScope> for Admin {
    type Error = Error;

    fn try_from(scope: TenantScope) -> Result<Self, Error> {
        scope.require_admin()?;
        Ok(Self(scope))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin
where
    TenantScope: FromRequestParts<S, Rejection = Error>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Self::try_from(TenantScope::from_request_parts(parts, state).await?)
    }
}
