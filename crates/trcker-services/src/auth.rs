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
        /// The key itself, or an access token issued for it.
        by: Credential,
    },
}

/// What a tenant caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey,
    /// A short-lived JWT issued for the key (`crate::access_tokens`).
    AccessToken,
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
    #[error("access tokens are issued for an API key: authenticate with the key itself")]
    ApiKeyRequired,
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

    /// The tenant and key of a caller that presented an API key itself (not
    /// an access token).
    pub fn api_key(&self) -> Result<(&TenantId, &str), AccessError> {
        match self {
            Caller::Tenant {
                tenant,
                key_id,
                by: Credential::ApiKey,
                ..
            } => Ok((tenant, key_id)),
            Caller::Tenant { .. } => Err(AccessError::ApiKeyRequired),
            Caller::Operator => Err(AccessError::TenantKeyRequired),
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
