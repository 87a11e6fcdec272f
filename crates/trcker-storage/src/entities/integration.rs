//! The `integrations` table.

use sea_orm::entity::prelude::*;

use crate::TenantId;
use crate::ids::{IntegrationId, ProgramId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "integrations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: IntegrationId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub program_id: ProgramId,
    pub name: String,
    pub secret_hash: String,
    pub secret_hint: String,
    pub status: Status,
    pub param_aliases: Option<String>,
    pub ip_allowlist: Option<String>,
    pub require_signature: bool,
    pub rate_limit_per_minute: Option<i32>,
    /// The secret before the last rotation, accepted until `previous_secret_until`.
    pub previous_secret_hash: Option<String>,
    pub previous_secret_until: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::text_enum! {
    /// A revoked integration's secret is refused, for good.
    pub enum Status ("integration status") {
        Active = "active",
        Revoked = "revoked",
    }
}
