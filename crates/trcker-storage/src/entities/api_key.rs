//! The `api_keys` table.

use sea_orm::entity::prelude::*;

use crate::TenantId;
use crate::ids::ApiKeyId;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub name: String,
    pub key_hash: String,
    pub key_hint: String,
    pub scope: Scope,
    pub revoked_at: Option<DateTimeUtc>,
    pub last_used_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::text_enum! {
    /// What a key may do: everything, or only read.
    pub enum Scope ("API key scope") {
        Admin = "admin",
        ReadOnly = "read_only",
    }
}
