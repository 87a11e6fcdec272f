//! `/postbacks`: postbacks as received (the log lines of integrations), and
//! attribution again once a cause is fixed.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::conversions::Page;
use trcker_services::debugger::{DebuggerService, PostbackLogEntry};
use trcker_services::storage::entities::postback;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::error::ApiError;

pub struct PostbacksApi {
    pub debugger: DebuggerService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Integrations")]
impl PostbacksApi {
    /// Attribute an unattributed postback again, once its cause is fixed.
    #[oai(
        path = "/postbacks/:id/reattribute",
        method = "post",
        operation_id = "reattribute_postback"
    )]
    async fn reattribute(
        &self,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<PostbackLogOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(
            self.debugger.reattribute(&caller, &id.0).await?.into(),
        ))
    }
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
