//! The `conversions` table.

use sea_orm::entity::prelude::*;

use trcker_domain::ConversionStatus;

use super::CurrencyCode;
use crate::TenantId;
use crate::ids::{AffiliateId, ConversionId, PostbackId, ProgramId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ConversionId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub program_id: ProgramId,
    pub affiliate_id: AffiliateId,
    pub click_id: Option<String>,
    pub coupon_code: Option<String>,
    pub postback_id: PostbackId,
    pub txn_id: String,
    pub event: String,
    pub status: Status,
    /// The status it was made with: its notification of that status is the
    /// `created` event.
    pub created_status: Option<Status>,
    pub amount_minor: i64,
    pub currency: CurrencyCode,
    pub payout_minor: Option<i64>,
    pub payout_override_minor: Option<i64>,
    pub commission_explanation: Option<String>,
    /// What priced the commission, as JSON (plan, version, rule, inputs, result).
    pub commission_detail: Option<String>,
    pub hold_until: Option<DateTimeUtc>,
    pub is_test: bool,
    pub updated_at: DateTimeUtc,
    /// The amount the merchant sent, when it was in another currency.
    pub original_amount_minor: Option<i64>,
    pub original_currency: Option<CurrencyCode>,
    /// The rate that converted it (one original unit in the offer's currency).
    pub exchange_rate: Option<String>,
    /// The sub-IDs of the click that made it (none for a coupon's).
    pub sub1: Option<String>,
    pub sub2: Option<String>,
    pub sub3: Option<String>,
    pub sub4: Option<String>,
    pub sub5: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A conversion's status as stored (the state machine is the domain's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, DeriveValueType)]
#[sea_orm(value_type = "String")]
pub struct Status(pub ConversionStatus);

impl std::ops::Deref for Status {
    type Target = ConversionStatus;
    fn deref(&self) -> &ConversionStatus {
        &self.0
    }
}

impl From<ConversionStatus> for Status {
    fn from(s: ConversionStatus) -> Self {
        Status(s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl std::str::FromStr for Status {
    type Err = trcker_domain::status::StatusError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConversionStatus::parse(s).map(Status)
    }
}
