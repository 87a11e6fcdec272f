//! The `integrations` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "integrations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub created_at: DateTimeUtc,
    pub program_id: String,
    pub name: String,
    pub secret_hash: String,
    pub secret_hint: String,
    pub status: String,
    pub param_aliases: Option<String>,
    pub ip_allowlist: Option<String>,
    pub require_signature: bool,
    pub rate_limit_per_minute: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
