//! `report_rollups`: the reports' counters, kept as clicks and conversions
//! are written, so that a report reads a few rows per day instead of every
//! click.
//!
//! A row counts what happened on one day of the tenant's calendar (its time
//! zone), for one program and affiliate, under one dimension: `dim` is ''
//! (everything), `sub1`..`sub5` (with the sub-ID in `value`) or `event`
//! (with the conversion's event in `value`). Click counters sit on rows
//! whose `currency` is ''; conversion counters and money (minor units) on
//! rows of their currency. The key leads with the tenant and the dimension,
//! so a report is one range of the primary key.
//!
//! Also:
//! - `conversions` gain the sub-IDs of the click that made them
//!   (`sub1`..`sub5`, backfilled from the clicks), so that a conversion's
//!   sub-ID rows can be corrected when it is reversed;
//! - `tenants` gain `rollups_built_at`: the rollups of a tenant whose value is
//!   unset (every tenant from before this migration) are built from its raw
//!   rows when Trcker next starts.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::add_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000018_report_rollups"
    }
}

const SUBS: [&str; 5] = ["sub1", "sub2", "sub3", "sub4", "sub5"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("report_rollups")
                .if_not_exists()
                .col(ColumnDef::new("tenant_id").string().not_null())
                .col(ColumnDef::new("dim").string().not_null())
                .col(ColumnDef::new("day").string().not_null())
                .col(ColumnDef::new("program_id").string().not_null())
                .col(ColumnDef::new("affiliate_id").string().not_null())
                .col(ColumnDef::new("value").string().not_null())
                .col(ColumnDef::new("currency").string().not_null())
                .col(big_integer("clicks").default(0))
                .col(big_integer("unique_clicks").default(0))
                .col(big_integer("conversions").default(0))
                .col(big_integer("revenue_minor").default(0))
                .col(big_integer("commission_minor").default(0))
                .primary_key(
                    Index::create()
                        .col("tenant_id")
                        .col("dim")
                        .col("day")
                        .col("program_id")
                        .col("affiliate_id")
                        .col("value")
                        .col("currency"),
                )
                .to_owned(),
        )
        .await?;
        for sub in SUBS {
            add_column(m, "conversions", text_null(sub)).await?;
        }
        m.get_connection()
            .execute_unprepared(
                "UPDATE conversions SET sub1 = c.sub1, sub2 = c.sub2, sub3 = c.sub3, \
                 sub4 = c.sub4, sub5 = c.sub5 FROM clicks c \
                 WHERE c.tenant_id = conversions.tenant_id AND c.id = conversions.click_id",
            )
            .await?;
        add_column(
            m,
            "tenants",
            timestamp_with_time_zone_null("rollups_built_at"),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("tenants")
                .drop_column("rollups_built_at")
                .to_owned(),
        )
        .await?;
        for sub in SUBS {
            m.alter_table(
                Table::alter()
                    .table("conversions")
                    .drop_column(sub)
                    .to_owned(),
            )
            .await?;
        }
        m.drop_table(Table::drop().table("report_rollups").to_owned())
            .await
    }
}
