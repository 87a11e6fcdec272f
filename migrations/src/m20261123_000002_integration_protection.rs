//! Per-integration postback protection: a required HMAC signature and a rate
//! limit (the IP allow-list column exists since the first migration).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000002_integration_protection"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("integrations")
                .add_column(boolean("require_signature").default(false))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("integrations")
                .add_column(integer_null("rate_limit_per_minute"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("integrations")
                .drop_column("rate_limit_per_minute")
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("integrations")
                .drop_column("require_signature")
                .to_owned(),
        )
        .await
    }
}
