//! Payouts and conversion review.
//!
//! - `payouts` gain the batch that made them, the number of ledger entries
//!   they cover, a failure reason and the time they last changed;
//! - `ledger_entries` gain the actor of an entry a person caused (a review
//!   by an API key), and an index by payout, by which a payout lists and
//!   releases its entries;
//! - `programs` gain the minimum balance an affiliate needs to be paid.
//!
//! Every change adds a nullable column or an index: the release before
//! keeps serving while this runs.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::add_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000007_payouts_and_review"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for col in [
            string_null("batch_id"),
            integer("entry_count").default(0).to_owned(),
            string_null("failure_reason"),
            timestamp_with_time_zone_null("updated_at"),
        ] {
            add_column(m, "payouts", col).await?;
        }
        add_column(m, "ledger_entries", string_null("actor")).await?;
        add_column(m, "programs", big_integer_null("payout_minimum_minor")).await?;
        for (table, name, cols) in [
            (
                "payouts",
                "ix_payouts_batch",
                &["tenant_id", "batch_id"][..],
            ),
            (
                "ledger_entries",
                "ix_ledger_payout",
                &["tenant_id", "payout_id"][..],
            ),
        ] {
            let mut i = Index::create();
            i.name(name).table(table).if_not_exists();
            for c in cols {
                i.col(*c);
            }
            m.create_index(i.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, name) in [
            ("payouts", "ix_payouts_batch"),
            ("ledger_entries", "ix_ledger_payout"),
        ] {
            m.drop_index(Index::drop().name(name).table(table).to_owned())
                .await?;
        }
        for (table, col) in [
            ("payouts", "batch_id"),
            ("payouts", "entry_count"),
            ("payouts", "failure_reason"),
            ("payouts", "updated_at"),
            ("ledger_entries", "actor"),
            ("programs", "payout_minimum_minor"),
        ] {
            m.alter_table(Table::alter().table(table).drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}
