//! Who a request acts for: the [`TenantScope`], a plain value.
//!
//! Handlers never look at credentials; they ask the scope. Authentication (API keys, admin
//! keys, platform IAM) decides which scope a request gets, in one place: the extractor in
//! `auth` (`crate::auth::extract`), next to the authenticator it asks.

use crate::error::{Error, FieldError};

/// The 403 a tenant key gets on an admin endpoint: where the admin key comes from, since the
/// caller holding a tenant key is usually a person who has not met it yet.
pub const ADMIN_ONLY: &str = "this endpoint needs the admin key, not a tenant's API key: \
     send the FLUXGATE_ADMIN_KEY the function runs with (scripts/dev.sh keeps its own in \
     .fluxgate/admin-key), or, with FLUXGATE_ADMIN_AUTH=platform, call it through the \
     platform's IAM; see \"Tenants, API keys and admin access\" in docs/API.md";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    /// Authentication is off (local development): the body names the tenant, and every
    /// endpoint is open.
    Open,
    /// A tenant's key: that tenant's events only; a body that names another is refused.
    Tenant(String),
    /// An admin key or the platform's IAM: any tenant, and the admin endpoints.
    Admin,
}

impl TenantScope {
    /// The tenant an event belongs to, given the `tenantId` its body carries (if any):
    /// missing where no key names it is a 422, another tenant than the key's a 403.
    pub fn resolve(&self, body_tenant: Option<&str>) -> Result<String, Error> {
        match (self, body_tenant) {
            (Self::Open | Self::Admin, Some(tenant)) => Ok(tenant.to_owned()),
            (Self::Open | Self::Admin, None) => Err(Error::invalid("tenantId", "is required")),
            (Self::Tenant(bound), None) => Ok(bound.clone()),
            (Self::Tenant(bound), Some(tenant)) if tenant == bound => Ok(bound.clone()),
            (Self::Tenant(_), Some(_)) => Err(Error::ForbiddenField(FieldError::new(
                "tenantId",
                "does not match the tenant of the API key",
            ))),
        }
    }

    /// Whether this caller may see resources of `tenant`. Where it may not, answer 404 as for
    /// a missing resource, so tenants cannot probe each other.
    pub fn may_read(&self, tenant: &str) -> bool {
        match self {
            Self::Open | Self::Admin => true,
            Self::Tenant(bound) => bound == tenant,
        }
    }

    /// For read endpoints that filter by an optional `tenantId`: a tenant key is held to its
    /// own tenant (naming another is a 404), admins may name any tenant or none.
    pub fn tenant_filter(&self, requested: Option<&str>) -> Result<Option<String>, Error> {
        match (self, requested) {
            (Self::Open | Self::Admin, requested) => Ok(requested.map(str::to_owned)),
            (Self::Tenant(bound), None) => Ok(Some(bound.clone())),
            (Self::Tenant(bound), Some(tenant)) if tenant == bound => Ok(Some(bound.clone())),
            (Self::Tenant(_), Some(tenant)) => Err(Error::NotFound(format!("tenant {tenant}"))),
        }
    }

    /// Admin-only endpoints (replay, dead-letter redrive, metrics across tenants).
    pub fn require_admin(&self) -> Result<(), Error> {
        match self {
            Self::Open | Self::Admin => Ok(()),
            Self::Tenant(_) => Err(Error::Forbidden(ADMIN_ONLY.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_key_is_held_to_its_tenant() {
        let scope = TenantScope::Tenant("acme".into());
        assert_eq!(scope.resolve(None).expect("own tenant"), "acme");
        assert_eq!(scope.resolve(Some("acme")).expect("own tenant"), "acme");
        let other = scope.resolve(Some("other")).expect_err("other tenant");
        assert!(matches!(other, Error::ForbiddenField(_)), "{other:?}");
        assert_eq!(other.status().as_u16(), 403);
        assert_eq!(other.field(), Some("tenantId"));
        assert!(!scope.may_read("other"));
        assert!(matches!(
            scope.tenant_filter(Some("other")),
            Err(Error::NotFound(_))
        ));
        assert_eq!(scope.tenant_filter(None).expect("own"), Some("acme".into()));
        assert!(matches!(scope.require_admin(), Err(Error::Forbidden(_))));
    }

    #[test]
    fn admins_may_act_for_any_tenant_but_must_name_it_on_ingest() {
        let scope = TenantScope::Admin;
        assert_eq!(scope.resolve(Some("acme")).expect("named"), "acme");
        assert!(scope.resolve(None).is_err());
        assert_eq!(scope.tenant_filter(None).expect("all"), None);
        assert!(scope.require_admin().is_ok());
    }
}
