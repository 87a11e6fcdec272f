//! The `ledger_entries` table.

use sea_orm::entity::prelude::*;

use super::CurrencyCode;
use crate::TenantId;
use crate::ids::{AffiliateId, ConversionId, LedgerEntryId, PayoutId, ProgramId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: LedgerEntryId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub affiliate_id: AffiliateId,
    pub program_id: ProgramId,
    /// None for a manual adjustment.
    pub conversion_id: Option<ConversionId>,
    pub entry_key: String,
    pub kind: Kind,
    pub amount_minor: i64,
    pub currency: CurrencyCode,
    pub explanation: String,
    pub available_at: DateTimeUtc,
    pub payout_id: Option<PayoutId>,
    pub is_test: bool,
    /// Who caused the entry when a person did (`api_key:key_…`).
    pub actor: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::text_enum! {
    /// What an entry books: a commission, the reversal of what was booked,
    /// or a manual adjustment (with its reason and the key that made it).
    pub enum Kind ("ledger entry kind") {
        Commission = "commission",
        Reversal = "reversal",
        Adjustment = "adjustment",
        /// What a payout marked paid paid out: the negative of the entries
        /// it covers, one per program.
        Payout = "payout",
    }
}
