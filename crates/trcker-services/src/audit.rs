//! The audit log: who changed what, when, written in the same transaction as
//! the change.

use chrono::Utc;
use trcker_storage::TenantId;
use trcker_storage::batch::insert;
use trcker_storage::entities::audit;
use trcker_storage::ids::AuditId;
use trcker_storage::sea_orm::{ConnectionTrait, DbErr};

use crate::auth::Caller;

/// Records that `caller` did `action` (`program.create`...) to a resource.
pub async fn record<C: ConnectionTrait>(
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
pub async fn record_with<C: ConnectionTrait>(
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
