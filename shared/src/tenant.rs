//! Which tenant a request acts for, resolved in one place.
//!
//! Today the body names the tenant. API-key authentication replaces [`TenantScope::FromBody`]
//! with a scope bound to the key's tenant, without touching the handlers.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::{Error, FieldError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    /// No credential binds the tenant: the request must name it.
    FromBody,
    /// The caller is bound to this tenant; a body that names another is refused.
    Tenant(String),
}

impl TenantScope {
    /// The tenant an event belongs to, given the `tenantId` its body carries (if any).
    pub fn resolve(&self, body_tenant: Option<&str>) -> Result<String, FieldError> {
        match (self, body_tenant) {
            (Self::FromBody, Some(tenant)) => Ok(tenant.to_owned()),
            (Self::FromBody, None) => Err(FieldError::new("tenantId", "is required")),
            (Self::Tenant(bound), None) => Ok(bound.clone()),
            (Self::Tenant(bound), Some(tenant)) if tenant == bound => Ok(bound.clone()),
            (Self::Tenant(_), Some(_)) => Err(FieldError::new(
                "tenantId",
                "does not match the tenant of the credential",
            )),
        }
    }

    /// Whether this caller may see resources of `tenant` (used for path tenants, where a
    /// mismatch answers 404 so tenants cannot probe each other).
    pub fn may_read(&self, tenant: &str) -> bool {
        match self {
            Self::FromBody => true,
            Self::Tenant(bound) => bound == tenant,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TenantScope {
    type Rejection = Error;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::FromBody)
    }
}
