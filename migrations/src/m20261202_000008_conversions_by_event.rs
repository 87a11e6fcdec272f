//! One conversion per program, transaction id and event: a `lead` and a
//! later `sale` of one order are two conversions, a repeat of one event
//! stays one.
//!
//! The new unique index is built first (`CONCURRENTLY` on PostgreSQL, so
//! conversions keep being written), then the old one, on program and
//! transaction id, is dropped. Workers of the release before name the old
//! index in their conversion insert: stop them before this migration runs
//! (docs/operations.md, "Upgrades"); the receivers may keep serving.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000008_conversions_by_event"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        // CREATE INDEX CONCURRENTLY cannot run inside a transaction.
        Some(false)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let concurrently = match m.get_database_backend() {
            DbBackend::Postgres => " CONCURRENTLY",
            _ => "",
        };
        let conn = m.get_connection();
        if m.get_database_backend() == DbBackend::Postgres {
            // An interrupted build leaves an invalid index behind: rebuild it.
            conn.execute_unprepared(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index \
                 WHERE indexrelid = to_regclass('ux_conversions_txn_event') AND NOT indisvalid) \
                 THEN DROP INDEX ux_conversions_txn_event; END IF; END $$",
            )
            .await?;
        }
        conn.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX{concurrently} IF NOT EXISTS ux_conversions_txn_event \
             ON conversions (tenant_id, program_id, txn_id, event)"
        ))
        .await?;
        conn.execute_unprepared(&format!(
            "DROP INDEX{concurrently} IF EXISTS ux_conversions_txn"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let conn = m.get_connection();
        conn.execute_unprepared(
            "CREATE UNIQUE INDEX IF NOT EXISTS ux_conversions_txn \
             ON conversions (tenant_id, program_id, txn_id)",
        )
        .await?;
        conn.execute_unprepared("DROP INDEX IF EXISTS ux_conversions_txn_event")
            .await?;
        Ok(())
    }
}
