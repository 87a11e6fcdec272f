//! `/tenants`: the operator creates tenants; `/tenant`: a tenant's own
//! settings.

use chrono::{DateTime, Utc};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::storage::entities::tenant;
use trcker_services::tenants::{CreatedTenant, NewTenant, TenantService, TenantUpdate};

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

    /// The calling tenant's own settings.
    #[oai(path = "/tenant", method = "get", operation_id = "get_own_tenant")]
    async fn own(&self, auth: BearerAuth) -> Result<Json<TenantOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.tenants.own(&caller).await?.into()))
    }

    /// Change the calling tenant's name or time zone. The time zone sets
    /// the calendar of tiered plans' periods from now on; conversions
    /// already priced keep their tier.
    #[oai(path = "/tenant", method = "patch", operation_id = "update_own_tenant")]
    async fn update_own(
        &self,
        auth: BearerAuth,
        body: Json<UpdateTenantIn>,
    ) -> Result<Json<TenantOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let update = TenantUpdate {
            name: body.0.name,
            time_zone: body.0.time_zone,
        };
        Ok(Json(self.tenants.update_own(&caller, update).await?.into()))
    }
}

#[derive(Debug, Object)]
pub struct UpdateTenantIn {
    pub name: Option<String>,
    /// An IANA time zone name (`Europe/Berlin`).
    pub time_zone: Option<String>,
}

#[derive(Debug, Object)]
pub struct TenantOut {
    pub id: String,
    pub name: String,
    pub slug: String,
    /// `active` or `suspended`.
    pub status: String,
    /// The IANA time zone of the tenant's calendar: tiered plans' months
    /// and weeks.
    pub time_zone: String,
    pub created_at: DateTime<Utc>,
}

impl From<tenant::Model> for TenantOut {
    fn from(t: tenant::Model) -> Self {
        TenantOut {
            id: t.id.to_string(),
            name: t.name,
            slug: t.slug,
            status: t.status.to_string(),
            time_zone: t.time_zone,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct NewTenantIn {
    /// Display name.
    pub name: String,
    /// The `{brand}` of public URLs: lower-case letters, digits and '-'.
    pub slug: String,
    /// An IANA time zone name (`Europe/Berlin`); default `UTC`.
    pub time_zone: Option<String>,
}

impl From<NewTenantIn> for NewTenant {
    fn from(b: NewTenantIn) -> Self {
        NewTenant {
            name: b.name,
            slug: b.slug,
            time_zone: b.time_zone,
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
    pub time_zone: String,
    pub created_at: DateTime<Utc>,
}

impl From<CreatedTenant> for TenantCreatedOut {
    fn from(c: CreatedTenant) -> Self {
        TenantCreatedOut {
            id: c.tenant.id.to_string(),
            name: c.tenant.name,
            slug: c.tenant.slug,
            api_key: c.api_key,
            time_zone: c.tenant.time_zone,
            created_at: c.tenant.created_at,
        }
    }
}
