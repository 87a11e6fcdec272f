//! The `conversions` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub created_at: DateTimeUtc,
    pub program_id: String,
    pub affiliate_id: String,
    pub click_id: Option<String>,
    pub coupon_code: Option<String>,
    pub postback_id: String,
    pub txn_id: String,
    pub event: String,
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
    pub payout_minor: Option<i64>,
    pub payout_override_minor: Option<i64>,
    pub commission_explanation: Option<String>,
    pub hold_until: Option<DateTimeUtc>,
    pub is_test: bool,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
