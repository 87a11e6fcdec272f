//! `/audit-log`: every change to a tenant's resources, who made it, when,
//! and (for most) the resource before and after.

use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::audit::{AuditFilter, AuditService};
use trcker_services::storage::entities::audit;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::error::ApiError;

pub struct AuditApi {
    pub audit: AuditService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Audit")]
impl AuditApi {
    /// The audit log, newest first, with filters and cursor pagination.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/audit-log", method = "get", operation_id = "list_audit_log")]
    async fn list(
        &self,
        auth: BearerAuth,
        /// `operator` or `api_key:<key id>`.
        actor: Query<Option<String>>,
        /// `program.create`, `conversion.approve`, `payout.paid`…
        action: Query<Option<String>>,
        /// `program`, `conversion`, `payout`, `api_key`…
        resource_type: Query<Option<String>>,
        resource_id: Query<Option<String>>,
        /// Records at or after this time (RFC 3339).
        since: Query<Option<DateTime<Utc>>>,
        /// Records before this time (RFC 3339).
        until: Query<Option<DateTime<Utc>>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<AuditPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .audit
            .list(
                &caller,
                AuditFilter {
                    actor: actor.0,
                    action: action.0,
                    resource_type: resource_type.0,
                    resource_id: resource_id.0,
                    since: since.0,
                    until: until.0,
                    cursor: cursor.0,
                    limit: limit.0,
                },
            )
            .await?;
        Ok(Json(AuditPage {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }
}

#[derive(Debug, Object)]
pub struct AuditRecordOut {
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// Who: `operator` or `api_key:<key id>`.
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    /// What changed: `before` and `after`, a `reason`… (null: none kept).
    pub details: Option<serde_json::Value>,
}

impl From<audit::Model> for AuditRecordOut {
    fn from(r: audit::Model) -> Self {
        AuditRecordOut {
            id: r.id.into(),
            created_at: r.created_at,
            details: r
                .details
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok()),
            actor: r.actor,
            action: r.action,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
        }
    }
}

#[derive(Debug, Object)]
pub struct AuditPage {
    pub items: Vec<AuditRecordOut>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}
