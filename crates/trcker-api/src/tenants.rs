//! `/tenants`: the operator creates tenants.

use chrono::{DateTime, Utc};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::tenants::{CreatedTenant, NewTenant, TenantService};

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::Created;
use crate::error::ApiError;

pub struct TenantsApi {
    pub tenants: TenantService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Tenants")]
impl TenantsApi {
    /// Create a tenant (operator only). Returns its admin API key, once.
    #[oai(path = "/tenants", method = "post", operation_id = "create_tenant")]
    async fn create(
        &self,
        auth: BearerAuth,
        body: Json<NewTenantIn>,
    ) -> Result<Created<TenantCreatedOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let created = self.tenants.create(&caller, body.0.into()).await?;
        Ok(Created::Created(Json(created.into())))
    }
}

#[derive(Debug, Object)]
pub struct NewTenantIn {
    /// Display name.
    pub name: String,
    /// The `{brand}` of public URLs: lower-case letters, digits and '-'.
    pub slug: String,
}

impl From<NewTenantIn> for NewTenant {
    fn from(b: NewTenantIn) -> Self {
        NewTenant {
            name: b.name,
            slug: b.slug,
        }
    }
}

#[derive(Debug, Object)]
pub struct TenantCreatedOut {
    pub id: String,
    pub name: String,
    pub slug: String,
    /// The tenant's admin API key. Shown once: store it now.
    pub api_key: String,
    pub created_at: DateTime<Utc>,
}

impl From<CreatedTenant> for TenantCreatedOut {
    fn from(c: CreatedTenant) -> Self {
        TenantCreatedOut {
            id: c.tenant.id.to_string(),
            name: c.tenant.name,
            slug: c.tenant.slug,
            api_key: c.api_key,
            created_at: c.tenant.created_at,
        }
    }
}
