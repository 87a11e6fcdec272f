//! `idempotency_keys`: the first answer to each admin API POST that carried
//! an `Idempotency-Key`, kept a day so that a retry gets it again instead
//! of making a second resource.
//!
//! A row belongs to whoever sent the key: a tenant (`owner` is its id) or
//! the operator (`owner` is `operator`), so it is keyed `(owner, key)`.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000016_idempotency_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("idempotency_keys")
                .if_not_exists()
                .col(ColumnDef::new("owner").string().not_null())
                .col(ColumnDef::new("key").string().not_null())
                .col(ColumnDef::new("fingerprint").string().not_null())
                .col(
                    ColumnDef::new("created_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new("status").integer().null())
                .col(ColumnDef::new("content_type").string().null())
                .col(ColumnDef::new("body").text().null())
                .primary_key(Index::create().col("owner").col("key"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_idempotency_keys_created")
                .table("idempotency_keys")
                .col("created_at")
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("idempotency_keys").to_owned())
            .await
    }
}
