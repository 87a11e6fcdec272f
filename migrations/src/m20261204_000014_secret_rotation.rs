//! Rotating an integration's postback secret, and revocation that is final.
//!
//! `integrations` gain:
//! - `previous_secret_hash` and `previous_secret_until`: after a rotation the
//!   old secret keeps working until then, so a merchant can switch their
//!   server over without losing a postback;
//! - `revoked_at`: when the integration was revoked (its secret is refused
//!   from then on, and no rotation brings it back).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::add_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000014_secret_rotation"
    }
}

const COLUMNS: [&str; 3] = [
    "previous_secret_hash",
    "previous_secret_until",
    "revoked_at",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(m, "integrations", text_null(COLUMNS[0])).await?;
        add_column(m, "integrations", timestamp_with_time_zone_null(COLUMNS[1])).await?;
        add_column(m, "integrations", timestamp_with_time_zone_null(COLUMNS[2])).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in COLUMNS {
            m.alter_table(
                Table::alter()
                    .table("integrations")
                    .drop_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
