//! Clicks keep only indexes that start with the tenant: the IP retention sweep
//! walks each tenant's clicks by time (`ix_clicks_tenant_time`), so the
//! table-wide `ix_clicks_time` goes. Every click insert maintained it: at tens
//! of thousands of clicks a second, one B-tree fewer to update.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000004_clicks_by_tenant_only"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_clicks_time")
                .table("clicks")
                .if_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("ix_clicks_time")
                .table("clicks")
                .col("created_at")
                .if_not_exists()
                .to_owned(),
        )
        .await
    }
}
