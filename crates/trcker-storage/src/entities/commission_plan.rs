//! The `commission_plans` table.

use sea_orm::entity::prelude::*;

use super::CurrencyCode;
use crate::TenantId;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "commission_plans")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub program_id: String,
    pub affiliate_id: Option<String>,
    pub event: String,
    pub kind: String,
    pub value: String,
    pub currency: CurrencyCode,
    pub active: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
