//! `/affiliates`: partners, invited to the portal.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Object, OpenApi};
use trcker_services::affiliates::{
    AffiliateService, AffiliateUpdate, CreatedAffiliate, NewAffiliate,
};
use trcker_services::storage::entities::affiliate;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Created, Text, patch};
use crate::error::ApiError;

pub struct AffiliatesApi {
    pub affiliates: AffiliateService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Affiliates")]
impl AffiliatesApi {
    /// Create (invite) an affiliate. Returns the portal invitation link, once.
    #[oai(
        path = "/affiliates",
        method = "post",
        operation_id = "create_affiliate"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<NewAffiliateIn>,
    ) -> Result<Created<AffiliateOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let created = self.affiliates.create(&caller, body.0.into()).await?;
        Ok(Created::Created(Json(created.into())))
    }

    /// List affiliates.
    #[oai(path = "/affiliates", method = "get", operation_id = "list_affiliates")]
    async fn list(
        &self,
        auth: BearerAuth,
        /// `active` or `paused`.
        status: Query<Option<String>>,
        /// The affiliate with this email.
        email: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<AffiliateList>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .affiliates
            .list(&caller, status.0, email.0, cursor.0, limit.0)
            .await?;
        let items = page.items;
        Ok(Json(AffiliateList {
            items: items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Change an affiliate: name, status (pause), postback URL.
    #[oai(
        path = "/affiliates/:id",
        method = "patch",
        operation_id = "update_affiliate"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<UpdateAffiliateIn>,
    ) -> Result<Json<AffiliateOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let affiliate = self
            .affiliates
            .update(&caller, &id.0, body.0.into())
            .await?;
        Ok(Json(affiliate.into()))
    }

    /// Invite the affiliate again: a new portal invitation link, returned
    /// once; the link sent before stops working. For an affiliate who has
    /// not accepted an invitation yet (else 409 `affiliate-activated`).
    #[oai(
        path = "/affiliates/:id/invite",
        method = "post",
        operation_id = "reinvite_affiliate"
    )]
    async fn reinvite(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
    ) -> Result<Json<AffiliateOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.affiliates.reinvite(&caller, &id.0).await?.into()))
    }

    /// Get one affiliate.
    #[oai(
        path = "/affiliates/:id",
        method = "get",
        operation_id = "get_affiliate"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<AffiliateOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.affiliates.get(&caller, &id.0).await?.into()))
    }
}

#[derive(Debug, Object)]
pub struct NewAffiliateIn {
    pub name: Text,
    pub email: Text,
    /// The `{partner}` of tracking links (`?via=`).
    pub slug: Text,
    /// Called on each conversion; macros `{click_id}`, `{conversion_id}`, `{txn_id}`, `{payout}`,
    /// `{amount}`, `{currency}`, `{status}`, `{event}`, `{sub1}`..`{sub5}` are URL-encoded.
    pub postback_url: Option<Text>,
}

impl From<NewAffiliateIn> for NewAffiliate {
    fn from(b: NewAffiliateIn) -> Self {
        NewAffiliate {
            name: b.name.0,
            email: b.email.0,
            slug: b.slug.0,
            postback_url: b.postback_url.map(String::from),
        }
    }
}

#[derive(Debug, Object)]
pub struct UpdateAffiliateIn {
    pub name: Option<Text>,
    /// `active` or `paused` (a paused affiliate's clicks go to the fallback URL and
    /// its conversions are kept unattributed).
    pub status: Option<Text>,
    /// null removes it.
    pub postback_url: MaybeUndefined<Text>,
}

impl From<UpdateAffiliateIn> for AffiliateUpdate {
    fn from(b: UpdateAffiliateIn) -> Self {
        AffiliateUpdate {
            name: b.name.map(String::from),
            status: b.status.map(String::from),
            postback_url: patch(b.postback_url.map_value(String::from)),
        }
    }
}

#[derive(Debug, Object)]
pub struct AffiliateOut {
    pub id: String,
    pub name: String,
    pub email: String,
    pub slug: String,
    pub status: String,
    pub postback_url: Option<String>,
    /// Portal invitation link for the affiliate; returned once, at creation.
    #[oai(skip_serializing_if_is_none)]
    pub invite_url: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<affiliate::Model> for AffiliateOut {
    fn from(a: affiliate::Model) -> Self {
        AffiliateOut {
            id: a.id.into(),
            name: a.name,
            email: a.email,
            slug: a.slug,
            status: a.status.to_string(),
            postback_url: a.postback_url,
            invite_url: None,
            created_at: a.created_at,
        }
    }
}

impl From<CreatedAffiliate> for AffiliateOut {
    fn from(c: CreatedAffiliate) -> Self {
        AffiliateOut {
            invite_url: Some(c.invite_url),
            ..c.affiliate.into()
        }
    }
}

#[derive(Debug, Object)]
pub struct AffiliateList {
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
    pub items: Vec<AffiliateOut>,
}
