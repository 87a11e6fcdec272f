//! The `programs` table.

use sea_orm::entity::prelude::*;

use super::{Activity, CurrencyCode};
use crate::TenantId;
use crate::ids::ProgramId;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "programs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ProgramId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub name: String,
    pub slug: String,
    pub destination_url: String,
    pub fallback_url: Option<String>,
    pub currency: CurrencyCode,
    pub click_param: String,
    pub attribution_window_days: i32,
    pub hold_days: i32,
    pub default_revenue_minor: Option<i64>,
    pub status: Activity,
    pub updated_at: DateTimeUtc,
    pub min_conversion_seconds: i32,
    /// The smallest approved balance a payout batch pays (minor units);
    /// below it, the balance is carried to the next batch.
    pub payout_minimum_minor: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
