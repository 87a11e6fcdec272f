//! The `coupons` table.

use sea_orm::entity::prelude::*;

use super::Activity;
use crate::TenantId;
use crate::ids::{AffiliateId, CouponId, ProgramId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "coupons")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: CouponId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub program_id: ProgramId,
    pub affiliate_id: AffiliateId,
    pub code: String,
    pub status: Activity,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
