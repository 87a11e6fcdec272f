//! The `tenants` table.

use sea_orm::entity::prelude::*;

use crate::TenantId;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub status: Status,
    pub created_at: DateTimeUtc,
    /// An IANA name: the tenant's calendar (months, weeks, days).
    pub time_zone: String,
    pub suspended_at: Option<DateTimeUtc>,
    /// The operator's reason, quoted to the tenant's refused postbacks.
    pub suspended_reason: Option<String>,
    /// Where a shopper goes when one of the tenant's links cannot send
    /// them on (suspended tenant, paused program without a fallback).
    pub fallback_url: Option<String>,
    /// When the report rollups were last built from the raw rows; unset
    /// until they are (a tenant from before the rollups).
    pub rollups_built_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::text_enum! {
    /// A suspended tenant keeps all its data, but Trcker stops working for
    /// it: its API keys and postbacks are refused, its links record nothing
    /// and send shoppers to its fallback URL, its portal is closed.
    pub enum Status ("tenant status") {
        Active = "active",
        Suspended = "suspended",
    }
}
