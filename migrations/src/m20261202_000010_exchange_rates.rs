//! The tenant's exchange rates, and what a conversion was converted from.
//!
//! - `exchange_rates`: from, to, rate (an exact decimal string) and the time
//!   from which it applies; a sale in another currency than its offer's is
//!   converted with the latest rate valid when the sale happened. Keyed
//!   `(tenant_id, id)` on PostgreSQL from the start;
//! - `conversions` gain the amount and currency the merchant sent and the
//!   rate used.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::add_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000010_exchange_rates"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create();
        table
            .table("exchange_rates")
            .if_not_exists()
            .col(string("id"))
            .col(string("tenant_id"))
            .col(timestamp_with_time_zone("created_at"))
            .col(string("from_currency"))
            .col(string("to_currency"))
            .col(string("rate"))
            .col(timestamp_with_time_zone("valid_from"));
        match m.get_database_backend() {
            DbBackend::Postgres => table.primary_key(Index::create().col("tenant_id").col("id")),
            _ => table.primary_key(Index::create().col("id")),
        };
        m.create_table(table.to_owned()).await?;
        m.create_index(
            Index::create()
                .name("ix_exchange_rates_pair")
                .table("exchange_rates")
                .col("tenant_id")
                .col("from_currency")
                .col("to_currency")
                .col("valid_from")
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        for col in [
            big_integer_null("original_amount_minor"),
            string_null("original_currency"),
            string_null("exchange_rate"),
        ] {
            add_column(m, "conversions", col).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in [
            "original_amount_minor",
            "original_currency",
            "exchange_rate",
        ] {
            m.alter_table(
                Table::alter()
                    .table("conversions")
                    .drop_column(col)
                    .to_owned(),
            )
            .await?;
        }
        m.drop_table(Table::drop().table("exchange_rates").to_owned())
            .await
    }
}
