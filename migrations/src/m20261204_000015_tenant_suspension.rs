//! What a suspension says, and where a tenant's shoppers go when a link
//! cannot take them.
//!
//! `tenants` gain:
//! - `suspended_at` and `suspended_reason`: when and why the operator
//!   suspended the tenant (its postbacks' refusals quote the reason);
//! - `fallback_url`: where a shopper is sent when the tenant's link cannot
//!   send them on (the tenant is suspended, or a paused program has no
//!   fallback of its own), instead of a not-found page.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::add_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000015_tenant_suspension"
    }
}

const COLUMNS: [&str; 3] = ["suspended_at", "suspended_reason", "fallback_url"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(m, "tenants", timestamp_with_time_zone_null(COLUMNS[0])).await?;
        add_column(m, "tenants", text_null(COLUMNS[1])).await?;
        add_column(m, "tenants", text_null(COLUMNS[2])).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in COLUMNS {
            m.alter_table(Table::alter().table("tenants").drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}
