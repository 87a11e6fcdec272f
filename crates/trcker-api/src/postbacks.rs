//! `/postbacks`: postbacks as received (the log lines of integrations), and
//! attribution again once a cause is fixed.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::conversions::Page;
use trcker_services::debugger::{DebuggerService, PostbackFilter, PostbackLogEntry};
use trcker_services::storage::entities::postback;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::Text;
use crate::error::ApiError;

pub struct PostbacksApi {
    pub debugger: DebuggerService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Integrations")]
impl PostbacksApi {
    /// Every postback the tenant's integrations received, newest first, by
    /// cursor, with filters; `state=unattributed` lists those that could
    /// not be attributed, each with why.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/postbacks", method = "get", operation_id = "list_postbacks")]
    async fn list(
        &self,
        auth: BearerAuth,
        integration_id: Query<Option<String>>,
        /// `accepted`, `duplicate` or `rejected`.
        outcome: Query<Option<String>>,
        /// `received`, `processed`, `unattributed` or `done`.
        state: Query<Option<String>>,
        /// Postbacks whose reason contains this text (`unknown click`).
        reason: Query<Option<String>>,
        /// Received at or after this time (RFC 3339).
        since: Query<Option<DateTime<Utc>>>,
        /// Received before this time (RFC 3339).
        until: Query<Option<DateTime<Utc>>>,
        /// Only test postbacks (`true`) or only real ones (`false`).
        test: Query<Option<bool>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<PostbackLogPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let filter = PostbackFilter {
            integration_id: integration_id.0,
            outcome: outcome.0,
            state: state.0,
            reason: reason.0,
            since: since.0,
            until: until.0,
            test: test.0,
        };
        let page = self
            .debugger
            .postbacks(&caller, filter, cursor.0, limit.0)
            .await?;
        Ok(Json(page.into()))
    }

    /// Attribute again every unattributed postback the filter names (up to
    /// 1,000 a call, oldest first; `more` says to call again), once their
    /// cause is fixed: a click window widened, an affiliate reactivated, an
    /// exchange rate added. Each one's conversion is made at most once.
    #[oai(
        path = "/postbacks/reattribute",
        method = "post",
        operation_id = "reattribute_postbacks"
    )]
    async fn reattribute_all(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<ReattributeIn>,
    ) -> Result<Json<ReattributedOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let b = body.0;
        let filter = PostbackFilter {
            integration_id: b.integration_id.map(String::from),
            reason: b.reason.map(String::from),
            since: b.since,
            until: b.until,
            test: b.test,
            ..PostbackFilter::default()
        };
        let done = self.debugger.reattribute_all(&caller, filter).await?;
        Ok(Json(ReattributedOut {
            requeued: done.requeued,
            more: done.more,
        }))
    }

    /// Attribute an unattributed postback again, once its cause is fixed.
    #[oai(
        path = "/postbacks/:id/reattribute",
        method = "post",
        operation_id = "reattribute_postback"
    )]
    async fn reattribute(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
    ) -> Result<Json<PostbackLogOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(
            self.debugger.reattribute(&caller, &id.0).await?.into(),
        ))
    }
}

/// Which unattributed postbacks to attribute again; absent fields match all.
#[derive(Debug, Object)]
pub struct ReattributeIn {
    pub integration_id: Option<Text>,
    /// Those whose reason contains this text.
    pub reason: Option<Text>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub test: Option<bool>,
}

#[derive(Debug, Object)]
pub struct ReattributedOut {
    /// The postbacks queued for attribution again.
    pub requeued: Vec<String>,
    /// More matched than one call takes: call again.
    pub more: bool,
}

#[derive(Debug, Object)]
pub struct ParamOut {
    pub name: String,
    pub value: String,
}

/// One postback as it was received, and what became of it.
#[derive(Debug, Object)]
pub struct PostbackLogOut {
    pub id: String,
    pub received_at: DateTime<Utc>,
    pub method: String,
    pub source_ip: Option<String>,
    /// Every parameter as received; the secret is redacted.
    pub params: Vec<ParamOut>,
    /// The HTTP status Trcker answered.
    pub http_status: i32,
    /// `accepted`, `duplicate` or `rejected`.
    pub outcome: String,
    /// For accepted postbacks: `received` (queued), `processed` or `unattributed`.
    pub state: String,
    /// Why: the bad fields, the original of a duplicate, whom it was attributed to, or why not.
    pub reason: Option<String>,
    pub txn_id: Option<String>,
    pub conversion_id: Option<String>,
    pub duplicate_of: Option<String>,
    pub is_test: bool,
    /// The commission booked for it, with its explanation, once computed.
    pub commission: Option<String>,
}

impl From<postback::Model> for PostbackLogOut {
    fn from(p: postback::Model) -> Self {
        let params: Vec<(String, String)> = serde_json::from_str(&p.raw_params).unwrap_or_default();
        PostbackLogOut {
            id: p.id.into(),
            received_at: p.created_at,
            method: p.method,
            source_ip: p.source_ip,
            params: params
                .into_iter()
                .map(|(name, value)| ParamOut { name, value })
                .collect(),
            http_status: p.http_status,
            outcome: p.outcome.to_string(),
            state: p.state.to_string(),
            reason: p.reason,
            txn_id: p.txn_id,
            conversion_id: p.conversion_id.map(Into::into),
            duplicate_of: p.duplicate_of.map(Into::into),
            is_test: p.is_test,
            commission: None,
        }
    }
}

impl From<PostbackLogEntry> for PostbackLogOut {
    fn from(e: PostbackLogEntry) -> Self {
        PostbackLogOut {
            commission: e.commission,
            ..e.postback.into()
        }
    }
}

#[derive(Debug, Object)]
pub struct PostbackLogPage {
    pub items: Vec<PostbackLogOut>,
    pub next_cursor: Option<String>,
}

impl From<Page<PostbackLogEntry>> for PostbackLogPage {
    fn from(p: Page<PostbackLogEntry>) -> Self {
        PostbackLogPage {
            items: p.items.into_iter().map(Into::into).collect(),
            next_cursor: p.next_cursor,
        }
    }
}
