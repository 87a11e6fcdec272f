//! The `commission_plans` table.

use sea_orm::entity::prelude::*;

use super::CurrencyCode;
use crate::TenantId;
use crate::ids::{AffiliateId, PlanId, ProgramId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "commission_plans")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: PlanId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub program_id: ProgramId,
    pub affiliate_id: Option<AffiliateId>,
    pub event: String,
    pub kind: String,
    pub value: String,
    pub currency: CurrencyCode,
    pub active: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
