//! `/coupons`: codes that attribute sales to an affiliate without a click.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::links::{LinkService, NewCoupon, Owners};
use trcker_services::storage::entities::coupon;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Created, Text};
use crate::error::ApiError;

pub struct CouponsApi {
    pub links: LinkService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Coupons")]
impl CouponsApi {
    /// One coupon.
    #[oai(path = "/coupons/:id", method = "get", operation_id = "get_coupon")]
    async fn get(&self, auth: BearerAuth, id: Path<String>) -> Result<Json<CouponOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.links.coupon(&caller, &id.0).await?.into()))
    }

    /// Pause a coupon (`paused`: postbacks with its code are no longer
    /// attributed by it; its conversions stand) or make it `active` again.
    #[oai(
        path = "/coupons/:id",
        method = "patch",
        operation_id = "update_coupon"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<UpdateCouponIn>,
    ) -> Result<Json<CouponOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let coupon = self
            .links
            .update_coupon(&caller, &id.0, body.0.status.map(String::from))
            .await?;
        Ok(Json(coupon.into()))
    }

    /// Create a coupon owned by an affiliate.
    #[oai(path = "/coupons", method = "post", operation_id = "create_coupon")]
    async fn create(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<NewCouponIn>,
    ) -> Result<Created<CouponOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let coupon = self.links.create_coupon(&caller, body.0.into()).await?;
        Ok(Created::Created(Json(coupon.into())))
    }

    /// List coupons.
    #[oai(path = "/coupons", method = "get", operation_id = "list_coupons")]
    async fn list(
        &self,
        auth: BearerAuth,
        /// Only the coupons of this program.
        program_id: Query<Option<String>>,
        /// Only the coupons of this affiliate.
        affiliate_id: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<CouponList>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .links
            .list_coupons(
                &caller,
                Owners {
                    program_id: program_id.0,
                    affiliate_id: affiliate_id.0,
                },
                cursor.0,
                limit.0,
            )
            .await?;
        let items = page.items;
        Ok(Json(CouponList {
            items: items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }
}

#[derive(Debug, Object)]
pub struct NewCouponIn {
    pub program_id: Text,
    pub affiliate_id: Text,
    /// The code customers type; postbacks with `coupon_code` and no click are attributed to its affiliate.
    pub code: Text,
}

impl From<NewCouponIn> for NewCoupon {
    fn from(b: NewCouponIn) -> Self {
        NewCoupon {
            program_id: b.program_id.0,
            affiliate_id: b.affiliate_id.0,
            code: b.code.0,
        }
    }
}

#[derive(Debug, Object)]
pub struct UpdateCouponIn {
    /// `active` or `paused`.
    pub status: Option<Text>,
}

#[derive(Debug, Object)]
pub struct CouponOut {
    pub id: String,
    pub program_id: String,
    pub affiliate_id: String,
    pub code: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl From<coupon::Model> for CouponOut {
    fn from(c: coupon::Model) -> Self {
        CouponOut {
            id: c.id.into(),
            program_id: c.program_id.into(),
            affiliate_id: c.affiliate_id.into(),
            code: c.code,
            status: c.status.to_string(),
            created_at: c.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct CouponList {
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
    pub items: Vec<CouponOut>,
}
