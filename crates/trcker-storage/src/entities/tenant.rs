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
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::text_enum! {
    /// A suspended tenant keeps its data; what it may still do is the
    /// operator's decision.
    pub enum Status ("tenant status") {
        Active = "active",
        Suspended = "suspended",
    }
}
