//! `/links`: tracking links (`/c/{code}`).

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Object, OpenApi};
use trcker_services::links::{LinkService, LinkUpdate, NewLink, Owners};
use trcker_services::storage::entities::tracking_link;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Created, Text, patch};
use crate::error::ApiError;

pub struct LinksApi {
    pub links: LinkService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Links")]
impl LinksApi {
    /// Create a tracking link (`/c/{code}`) for an affiliate and a program.
    #[oai(path = "/links", method = "post", operation_id = "create_link")]
    async fn create(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<NewLinkIn>,
    ) -> Result<Created<LinkOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let link = self.links.create(&caller, body.0.into()).await?;
        Ok(Created::Created(Json(self.out(link))))
    }

    /// List tracking links.
    #[oai(path = "/links", method = "get", operation_id = "list_links")]
    async fn list(
        &self,
        auth: BearerAuth,
        /// Only the links of this program.
        program_id: Query<Option<String>>,
        /// Only the links of this affiliate.
        affiliate_id: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<LinkList>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .links
            .list(
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
        Ok(Json(LinkList {
            items: items.into_iter().map(|l| self.out(l)).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// One tracking link.
    #[oai(path = "/links/:id", method = "get", operation_id = "get_link")]
    async fn get(&self, auth: BearerAuth, id: Path<String>) -> Result<Json<LinkOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let link = self.links.get(&caller, &id.0).await?;
        Ok(Json(self.out(link)))
    }

    /// Change a link's destination or status; the next click uses it.
    #[oai(path = "/links/:id", method = "patch", operation_id = "update_link")]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<UpdateLinkIn>,
    ) -> Result<Json<LinkOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let link = self.links.update(&caller, &id.0, body.0.into()).await?;
        Ok(Json(self.out(link)))
    }
}

impl LinksApi {
    fn out(&self, l: tracking_link::Model) -> LinkOut {
        LinkOut {
            url: self.links.url(&l.code),
            id: l.id.into(),
            code: l.code,
            program_id: l.program_id.into(),
            affiliate_id: l.affiliate_id.into(),
            destination_url: l.destination_url,
            status: l.status.to_string(),
            sub1: l.sub1,
            sub2: l.sub2,
            sub3: l.sub3,
            sub4: l.sub4,
            sub5: l.sub5,
            created_at: l.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct NewLinkIn {
    pub program_id: Text,
    pub affiliate_id: Text,
    /// Overrides the program's destination for this link (macros allowed).
    pub destination_url: Option<Text>,
    /// Default sub-IDs; `sub1`..`sub5` in the click URL win over them.
    pub sub1: Option<Text>,
    pub sub2: Option<Text>,
    pub sub3: Option<Text>,
    pub sub4: Option<Text>,
    pub sub5: Option<Text>,
}

impl From<NewLinkIn> for NewLink {
    fn from(b: NewLinkIn) -> Self {
        NewLink {
            program_id: b.program_id.0,
            affiliate_id: b.affiliate_id.0,
            destination_url: b.destination_url.map(String::from),
            subs: [b.sub1, b.sub2, b.sub3, b.sub4, b.sub5].map(|s| s.map(String::from)),
        }
    }
}

#[derive(Debug, Object)]
pub struct UpdateLinkIn {
    /// null removes the override.
    pub destination_url: MaybeUndefined<Text>,
    /// `active` or `paused` (paused links send clicks to the program's fallback URL).
    pub status: Option<Text>,
}

impl From<UpdateLinkIn> for LinkUpdate {
    fn from(b: UpdateLinkIn) -> Self {
        LinkUpdate {
            destination_url: patch(b.destination_url.map_value(String::from)),
            status: b.status.map(String::from),
        }
    }
}

#[derive(Debug, Object)]
pub struct LinkOut {
    pub id: String,
    pub code: String,
    /// The tracking URL to share: `<public url>/c/<code>`.
    pub url: String,
    pub program_id: String,
    pub affiliate_id: String,
    pub destination_url: Option<String>,
    pub status: String,
    pub sub1: Option<String>,
    pub sub2: Option<String>,
    pub sub3: Option<String>,
    pub sub4: Option<String>,
    pub sub5: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct LinkList {
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
    pub items: Vec<LinkOut>,
}
