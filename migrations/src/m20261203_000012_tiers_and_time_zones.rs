//! Tiered plans and the tenant's time zone.
//!
//! - `tenants` gain `time_zone`, an IANA name (`UTC` for every existing
//!   tenant): calendar periods (a tiered plan's month or week) are the
//!   tenant's own;
//! - `commission_plans` gain `tiers`, the JSON of a tiered plan's basis,
//!   period and steps (null: not tiered).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::add_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000012_tiers_and_time_zones"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(m, "tenants", text("time_zone").default("UTC").to_owned()).await?;
        add_column(m, "commission_plans", text_null("tiers")).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, col) in [("tenants", "time_zone"), ("commission_plans", "tiers")] {
            m.alter_table(Table::alter().table(table).drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}
