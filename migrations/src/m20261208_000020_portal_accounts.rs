//! Portal accounts: sessions the server can end, invitations that expire.
//!
//! `affiliates` gain:
//! - `session_epoch`: a session cookie names the epoch it was made in and is
//!   refused once the affiliate's epoch moved on; signing out and changing
//!   the password move it, which ends every session of the affiliate;
//! - `invite_expires_at`: when the invitation link stops working (null for
//!   links made before invitations expired: they keep working until used or
//!   replaced).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::add_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261208_000020_portal_accounts"
    }
}

const COLUMNS: [&str; 2] = ["session_epoch", "invite_expires_at"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            m,
            "affiliates",
            big_integer(COLUMNS[0]).default(0).to_owned(),
        )
        .await?;
        add_column(m, "affiliates", timestamp_with_time_zone_null(COLUMNS[1])).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in COLUMNS {
            m.alter_table(
                Table::alter()
                    .table("affiliates")
                    .drop_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
