//! `signing_keys`: the keys that sign the admin API's access tokens (JWTs
//! issued for an API key). A row holds a key's id (`kid`) and a random salt,
//! never the key itself: the key is derived from the salt and the operator
//! token's hash, which the database does not hold, so a copy of the
//! database cannot mint tokens. The newest unretired key signs; a retired
//! key keeps verifying until the tokens it signed have expired.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000017_signing_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("signing_keys")
                .if_not_exists()
                .col(ColumnDef::new("kid").string().not_null().primary_key())
                .col(ColumnDef::new("salt").string().not_null())
                .col(
                    ColumnDef::new("created_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new("retired_at")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("signing_keys").to_owned())
            .await
    }
}
