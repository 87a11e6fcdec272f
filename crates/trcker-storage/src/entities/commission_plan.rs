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
    /// 1, 2… per program, event and affiliate (or none).
    pub version: i32,
    /// When the next version took over (None: in force).
    pub retired_at: Option<DateTimeUtc>,
    /// The most one conversion earns (minor units).
    pub max_payout_minor: Option<i64>,
    /// A tiered plan's basis, period and steps, as JSON (None: not tiered).
    pub tiers: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
