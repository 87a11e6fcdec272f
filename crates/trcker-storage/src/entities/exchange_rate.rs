//! The `exchange_rates` table.

use sea_orm::entity::prelude::*;

use super::CurrencyCode;
use crate::TenantId;
use crate::ids::ExchangeRateId;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "exchange_rates")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ExchangeRateId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub from_currency: CurrencyCode,
    pub to_currency: CurrencyCode,
    /// One unit of `from_currency` in `to_currency`, an exact decimal.
    pub rate: String,
    /// Sales from this time on are converted with it (until a later one).
    pub valid_from: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
