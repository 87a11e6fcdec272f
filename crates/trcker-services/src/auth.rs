//! Who is calling the admin API: the operator (creates tenants) or one of a
//! tenant's API keys, and what each may do. A caller is made only by
//! [`crate::tenants::TenantService::authenticate`].

use trcker_storage::TenantId;
use trcker_storage::entities::api_key::Scope;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub enum Caller {
    Operator,
    Tenant {
        tenant: TenantId,
        key_id: String,
        scope: Scope,
    },
}

/// The caller may not do this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("only the operator token can do this")]
    OperatorOnly,
    #[error("the operator token manages tenants; use a tenant API key for tenant resources")]
    TenantKeyRequired,
    #[error("this API key is read-only")]
    ReadOnlyKey,
}

impl Caller {
    /// The tenant this caller acts for.
    pub fn tenant(&self) -> Result<&TenantId, AccessError> {
        match self {
            Caller::Tenant { tenant, .. } => Ok(tenant),
            Caller::Operator => Err(AccessError::TenantKeyRequired),
        }
    }

    /// The tenant, for a call that changes something.
    pub fn tenant_admin(&self) -> Result<&TenantId, AccessError> {
        match self {
            Caller::Tenant {
                scope: Scope::ReadOnly,
                ..
            } => Err(AccessError::ReadOnlyKey),
            other => other.tenant(),
        }
    }

    /// Succeeds for the operator only.
    pub fn operator(&self) -> Result<(), AccessError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Tenant { .. } => Err(AccessError::OperatorOnly),
        }
    }

    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        match self {
            Caller::Operator => "operator".into(),
            Caller::Tenant { key_id, .. } => format!("api_key:{key_id}"),
        }
    }
}
