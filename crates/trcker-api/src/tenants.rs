//! `/tenants`: the operator creates, lists, suspends and reinstates
//! tenants; `/tenant`: a tenant's own settings.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Object, OpenApi};
use trcker_services::storage::entities::tenant;
use trcker_services::tenants::{CreatedTenant, NewTenant, TenantService, TenantUpdate};

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Created, Text, patch};
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
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<NewTenantIn>,
    ) -> Result<Created<TenantCreatedOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let created = self.tenants.create(&caller, body.0.into()).await?;
        Ok(Created::Created(Json(created.into())))
    }

    /// The tenants of this installation, newest first, by cursor (operator only).
    #[oai(path = "/tenants", method = "get", operation_id = "list_tenants")]
    async fn list(
        &self,
        auth: BearerAuth,
        /// `active` or `suspended`.
        status: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<TenantPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .tenants
            .page(&caller, status.0, cursor.0, limit.0)
            .await?;
        Ok(Json(TenantPage {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// One tenant (operator only).
    #[oai(path = "/tenants/:id", method = "get", operation_id = "get_tenant")]
    async fn get(&self, auth: BearerAuth, id: Path<String>) -> Result<Json<TenantOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.tenants.get(&caller, &id.0).await?.into()))
    }

    /// Suspend a tenant (operator only). Nothing of it is deleted, but
    /// Trcker stops working for it: its API keys answer 403
    /// `tenant-suspended`, its postbacks 403 `tenant-suspended` quoting the
    /// reason, its links record nothing and send shoppers to the tenant's
    /// `fallback_url` (else a not-found page), and its portal is closed.
    /// Suspending again changes only the reason.
    #[oai(
        path = "/tenants/:id/suspend",
        method = "post",
        operation_id = "suspend_tenant"
    )]
    async fn suspend(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
        body: Json<SuspendTenantIn>,
    ) -> Result<Json<TenantOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let t = self
            .tenants
            .set_status_by_id(
                &caller,
                &id.0,
                tenant::Status::Suspended,
                body.0.reason.map(String::from),
            )
            .await?;
        Ok(Json(t.into()))
    }

    /// Reinstate a suspended tenant (operator only): everything works
    /// again as before. Reinstating an active tenant changes nothing.
    #[oai(
        path = "/tenants/:id/reinstate",
        method = "post",
        operation_id = "reinstate_tenant"
    )]
    async fn reinstate(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
    ) -> Result<Json<TenantOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let t = self
            .tenants
            .set_status_by_id(&caller, &id.0, tenant::Status::Active, None)
            .await?;
        Ok(Json(t.into()))
    }

    /// The calling tenant's own settings.
    #[oai(path = "/tenant", method = "get", operation_id = "get_own_tenant")]
    async fn own(&self, auth: BearerAuth) -> Result<Json<TenantOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.tenants.own(&caller).await?.into()))
    }

    /// Change the calling tenant's name, time zone or fallback URL. The time zone sets
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
            name: body.0.name.map(String::from),
            time_zone: body.0.time_zone.map(String::from),
            fallback_url: patch(body.0.fallback_url.map_value(String::from)),
        };
        Ok(Json(self.tenants.update_own(&caller, update).await?.into()))
    }
}

#[derive(Debug, Object)]
pub struct UpdateTenantIn {
    pub name: Option<Text>,
    /// An IANA time zone name (`Europe/Berlin`).
    pub time_zone: Option<Text>,
    /// Where shoppers go when a link cannot send them on (a paused program
    /// without a fallback of its own; the tenant suspended); null removes it.
    pub fallback_url: MaybeUndefined<Text>,
}

#[derive(Debug, Object)]
pub struct SuspendTenantIn {
    /// Why, up to 500 characters: quoted to the tenant's refused postbacks.
    pub reason: Option<Text>,
}

#[derive(Debug, Object)]
pub struct TenantPage {
    pub items: Vec<TenantOut>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
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
    /// Where shoppers go when a link cannot send them on.
    pub fallback_url: Option<String>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub suspended_reason: Option<String>,
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
            fallback_url: t.fallback_url,
            suspended_at: t.suspended_at,
            suspended_reason: t.suspended_reason,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct NewTenantIn {
    /// Display name.
    pub name: Text,
    /// The `{brand}` of public URLs: lower-case letters, digits and '-'.
    pub slug: Text,
    /// An IANA time zone name (`Europe/Berlin`); default `UTC`.
    pub time_zone: Option<Text>,
}

impl From<NewTenantIn> for NewTenant {
    fn from(b: NewTenantIn) -> Self {
        NewTenant {
            name: b.name.0,
            slug: b.slug.0,
            time_zone: b.time_zone.map(String::from),
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
