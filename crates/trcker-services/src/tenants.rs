//! Tenants and their API keys: the operator creates a tenant (with its first
//! admin key, shown once), and every admin API call is authenticated here.

use chrono::Utc;
use trcker_domain::fields::{Fields, Name};
use trcker_domain::secret::{hash_secret, new_api_key, secrets_equal};
use trcker_domain::slug::Slug;
use trcker_storage::entities::{api_key, tenant};
use trcker_storage::ids::ApiKeyId;
use trcker_storage::sea_orm::{ConnectionTrait, DbErr};
use trcker_storage::{TenantId, batch::insert, is_unique_violation, lookup};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::error::{Invalid, StoreError, from_store};

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("a tenant with slug '{0}' exists already")]
    SlugTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(TenantError);

/// Why a bearer token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown or revoked token")]
    UnknownToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(AuthError);

pub struct NewTenant {
    pub name: String,
    pub slug: String,
}

pub struct CreatedTenant {
    pub tenant: tenant::Model,
    /// The admin API key, shown once.
    pub api_key: String,
}

#[derive(Clone)]
pub struct TenantService {
    area: Area,
}

impl TenantService {
    pub(crate) fn new(area: Area) -> Self {
        TenantService { area }
    }

    /// Authenticates a bearer token: the operator token, or a tenant's API key.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let hash = hash_secret(token);
        if secrets_equal(&hash, &self.area.settings.operator_token_hash) {
            return Ok(Caller::Operator);
        }
        if !token.starts_with("trk_") {
            return Err(AuthError::UnknownToken);
        }
        let key = lookup::active_api_key_by_hash(&hash)
            .one(&self.area.store.conn)
            .await?
            .ok_or(AuthError::UnknownToken)?;
        Ok(Caller::Tenant {
            tenant: key.tenant_id,
            key_id: key.id.to_string(),
            scope: key.scope,
        })
    }

    /// Creates a tenant and its first admin API key (operator only).
    pub async fn create(
        &self,
        caller: &Caller,
        input: NewTenant,
    ) -> Result<CreatedTenant, TenantError> {
        caller.operator()?;
        let mut f = Fields::default();
        let name = f.take("name", Name::parse(&input.name));
        let slug = f.take("slug", Slug::parse(&input.slug));
        let (name, slug) = f.done((name, slug)).map_err(Invalid)?;
        let t = Utc::now();
        let tenant = tenant::Model {
            id: TenantId::generate(),
            name: name.into_string(),
            slug: slug.to_string(),
            status: tenant::Status::Active,
            created_at: t,
        };
        let key = new_api_key();
        let txn = self.area.store.write_txn().await?;
        insert(&txn, tenant.clone()).await.map_err(|e| {
            if is_unique_violation(&e) {
                TenantError::SlugTaken(tenant.slug.clone())
            } else {
                e.into()
            }
        })?;
        insert(&txn, initial_key(&tenant, &key)).await?;
        crate::audit::record(
            &txn,
            &tenant.id,
            caller,
            "tenant.create",
            "tenant",
            tenant.id.as_str(),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        Ok(CreatedTenant {
            tenant,
            api_key: key,
        })
    }
}

/// A new tenant's first key: an admin key.
fn initial_key(tenant: &tenant::Model, key: &str) -> api_key::Model {
    api_key::Model {
        id: ApiKeyId::generate(),
        tenant_id: tenant.id.clone(),
        created_at: tenant.created_at,
        name: "initial admin key".into(),
        key_hash: hash_secret(key),
        key_hint: key[key.len() - 4..].to_owned(),
        scope: api_key::Scope::Admin,
        revoked_at: None,
        last_used_at: None,
    }
}

/// A tenant's slug, the `{brand}` of its public URLs.
pub(crate) async fn slug_of<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
) -> Result<String, DbErr> {
    lookup::tenant(tenant)
        .one(db)
        .await?
        .map(|t| t.slug)
        .ok_or_else(|| DbErr::RecordNotFound(format!("tenant {tenant}")))
}
