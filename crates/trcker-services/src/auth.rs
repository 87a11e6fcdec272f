//! Who is calling: the operator (creates tenants) or a tenant's API key.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use trcker_domain::secret::{hash_secret, secrets_equal};
use trcker_storage::entities::api_key;
use trcker_storage::{TenantId, sea_orm};

use crate::{ServiceError, ServiceResult, Services};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    ReadOnly,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "admin" => Some(Scope::Admin),
            "read_only" => Some(Scope::ReadOnly),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::ReadOnly => "read_only",
        }
    }
}

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

impl Caller {
    /// The tenant this caller acts for, or 401/403 for the operator.
    pub fn tenant(&self) -> ServiceResult<&TenantId> {
        match self {
            Caller::Tenant { tenant, .. } => Ok(tenant),
            Caller::Operator => Err(ServiceError::Forbidden(
                "the operator token manages tenants; use a tenant API key for tenant resources"
                    .into(),
            )),
        }
    }

    /// The tenant, for a call that changes something.
    pub fn tenant_admin(&self) -> ServiceResult<&TenantId> {
        match self {
            Caller::Tenant {
                scope: Scope::ReadOnly,
                ..
            } => Err(ServiceError::Forbidden("this API key is read-only".into())),
            other => other.tenant(),
        }
    }

    pub fn actor(&self) -> String {
        match self {
            Caller::Operator => "operator".into(),
            Caller::Tenant { key_id, .. } => format!("api_key:{key_id}"),
        }
    }
}

impl Services {
    /// Authenticates a bearer token.
    pub async fn authenticate(&self, token: &str) -> ServiceResult<Caller> {
        let hash = hash_secret(token);
        if secrets_equal(&hash, &self.settings.operator_token_hash) {
            return Ok(Caller::Operator);
        }
        if !token.starts_with("trk_") {
            return Err(ServiceError::Unauthorized(
                "unknown or revoked token".into(),
            ));
        }
        let key = api_key::Entity::find()
            .filter(api_key::Column::KeyHash.eq(hash))
            .filter(api_key::Column::RevokedAt.is_null())
            .one(&self.store.conn)
            .await?
            .ok_or_else(|| ServiceError::Unauthorized("unknown or revoked token".into()))?;
        let scope = Scope::parse(&key.scope).unwrap_or(Scope::ReadOnly);
        Ok(Caller::Tenant {
            tenant: TenantId::from_trusted(key.tenant_id),
            key_id: key.id,
            scope,
        })
    }
}
