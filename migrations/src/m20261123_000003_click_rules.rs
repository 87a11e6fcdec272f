//! Click rules: a program's minimum click-to-conversion time, and an index for
//! the IP retention sweep.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000003_click_rules"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("programs")
                .add_column(integer("min_conversion_seconds").default(0))
                .to_owned(),
        )
        .await?;
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

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_clicks_time")
                .table("clicks")
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("programs")
                .drop_column("min_conversion_seconds")
                .to_owned(),
        )
        .await
    }
}
