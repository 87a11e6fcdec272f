//! The `payouts` table.

use sea_orm::entity::prelude::*;

use super::CurrencyCode;
use crate::TenantId;
use crate::ids::{AffiliateId, PayoutId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "payouts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: PayoutId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub affiliate_id: AffiliateId,
    pub amount_minor: i64,
    pub currency: CurrencyCode,
    pub status: String,
    pub reference: Option<String>,
    pub paid_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
