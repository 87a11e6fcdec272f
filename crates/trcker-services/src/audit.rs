//! The audit log: who changed what, when, written in the same transaction as
//! the change, and read back through the admin API.

use chrono::{DateTime, Utc};
use trcker_domain::ids::IdKind;
use trcker_storage::batch::insert;
use trcker_storage::entities::audit;
use trcker_storage::ids::AuditId;
use trcker_storage::sea_orm::{ColumnTrait, ConnectionTrait, DbErr, QueryFilter};
use trcker_storage::{TenantId, scoped};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::conversions::{Page, newest_page};
use crate::error::{Invalid, StoreError, from_store};

/// Records that `caller` did `action` (`program.create`...) to a resource.
pub(crate) async fn record<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    caller: &Caller,
    action: &str,
    resource_type: &str,
    resource_id: &str,
) -> Result<(), DbErr> {
    record_with(db, tenant, caller, action, resource_type, resource_id, None).await
}

/// Records a change with its details (a JSON object: before and after,
/// reason...).
pub(crate) async fn record_with<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    caller: &Caller,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    details: Option<serde_json::Value>,
) -> Result<(), DbErr> {
    insert(
        db,
        audit::Model {
            id: AuditId::generate(),
            tenant_id: tenant.clone(),
            created_at: Utc::now(),
            actor: caller.actor(),
            action: action.to_owned(),
            resource_type: resource_type.to_owned(),
            resource_id: resource_id.to_owned(),
            details: details.map(|d| d.to_string()),
        },
    )
    .await
    .map(|_| ())
}

/// Why the audit log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(AuditError);

/// Which records to list; every filter is optional.
#[derive(Debug, Default)]
pub struct AuditFilter {
    /// `api_key:key_…` or `operator`.
    pub actor: Option<String>,
    /// `program.create`, `conversion.approve`…
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// Records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Records before this time.
    pub until: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    pub limit: Option<u64>,
}

/// A tenant's audit log: every change through the admin API and the
/// operator's commands, with who made it and, for most, before and after.
#[derive(Clone)]
pub struct AuditService {
    area: Area,
}

impl AuditService {
    pub(crate) fn new(area: Area) -> Self {
        AuditService { area }
    }

    /// The calling tenant's records, newest first, by cursor.
    pub async fn list(
        &self,
        caller: &Caller,
        f: AuditFilter,
    ) -> Result<Page<audit::Model>, AuditError> {
        use audit::Column as C;
        let tenant = caller.tenant()?;
        if let (Some(since), Some(until)) = (f.since, f.until)
            && since >= until
        {
            return Err(Invalid::field("until", "must be after since").into());
        }
        let mut q = scoped::<audit::Entity>(tenant);
        for (col, value) in [
            (C::Actor, f.actor),
            (C::Action, f.action),
            (C::ResourceType, f.resource_type),
            (C::ResourceId, f.resource_id),
        ] {
            if let Some(v) = value {
                q = q.filter(col.eq(v));
            }
        }
        if let Some(t) = f.since {
            q = q.filter(C::CreatedAt.gte(t));
        }
        if let Some(t) = f.until {
            q = q.filter(C::CreatedAt.lt(t));
        }
        newest_page(
            q,
            IdKind::Audit,
            f.cursor,
            f.limit,
            &self.area.store.conn,
            |r| r.id.as_str(),
        )
        .await
    }
}
