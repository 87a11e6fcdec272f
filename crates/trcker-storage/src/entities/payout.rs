//! The `payouts` table.

use sea_orm::entity::prelude::*;

use super::CurrencyCode;
use crate::TenantId;
use crate::ids::{AffiliateId, PayoutBatchId, PayoutId};

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
    pub status: PayoutStatus,
    pub reference: Option<String>,
    pub paid_at: Option<DateTimeUtc>,
    pub batch_id: Option<PayoutBatchId>,
    pub entry_count: i32,
    pub failure_reason: Option<String>,
    pub updated_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::text_enum! {
    /// Where a payout stands: created and owed, paid (with the merchant's
    /// reference), or failed (its entries are owed again).
    pub enum PayoutStatus ("payout status") {
        Pending = "pending",
        Paid = "paid",
        Failed = "failed",
    }
}
