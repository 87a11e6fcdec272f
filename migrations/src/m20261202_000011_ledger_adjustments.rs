//! Ledger entries that belong to no conversion: a manual adjustment (a
//! bonus, a correction) is booked for an affiliate and a program with its
//! reason and the key that made it. `ledger_entries.conversion_id` becomes
//! nullable.
//!
//! PostgreSQL drops the constraint in the catalog. SQLite cannot alter a
//! column: the table is rebuilt from its own stored definition (rows
//! copied, indexes made again) in the migration's transaction, SQLite's
//! documented procedure (https://www.sqlite.org/lang_altertable.html,
//! "Making other kinds of table schema changes"); it takes about a second
//! per million entries.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000011_ledger_adjustments"
    }
}

const NOT_NULL: &str = "\"conversion_id\" varchar NOT NULL";
const NULLABLE: &str = "\"conversion_id\" varchar NULL";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        // SQLite's rebuild is four statements that must see each other and
        // land together: one connection, one transaction.
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        match m.get_database_backend() {
            DbBackend::Sqlite => rewrite_sqlite(m, NOT_NULL, NULLABLE).await,
            _ => {
                m.get_connection()
                    .execute_unprepared(
                        "ALTER TABLE ledger_entries ALTER COLUMN conversion_id DROP NOT NULL",
                    )
                    .await?;
                Ok(())
            }
        }
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let conn = m.get_connection();
        conn.execute_unprepared("DELETE FROM ledger_entries WHERE conversion_id IS NULL")
            .await?;
        match m.get_database_backend() {
            DbBackend::Sqlite => rewrite_sqlite(m, NULLABLE, NOT_NULL).await,
            _ => {
                conn.execute_unprepared(
                    "ALTER TABLE ledger_entries ALTER COLUMN conversion_id SET NOT NULL",
                )
                .await?;
                Ok(())
            }
        }
    }
}

/// Rebuilds `ledger_entries` with `from` replaced by `to` in its
/// definition, keeping its rows and indexes (SQLite's procedure for
/// changes ALTER TABLE cannot make), inside the migration's transaction.
async fn rewrite_sqlite(m: &SchemaManager<'_>, from: &str, to: &str) -> Result<(), DbErr> {
    let conn = m.get_connection();
    let definitions = |kind: &'static str| async move {
        conn.query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE type = ? AND tbl_name = 'ledger_entries' \
             AND sql IS NOT NULL",
            [kind.into()],
        ))
        .await?
        .iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect::<Result<Vec<String>, DbErr>>()
    };
    let table = definitions("table").await?;
    let indexes = definitions("index").await?;
    let Some(table) = table.first() else {
        return Err(DbErr::Migration("ledger_entries has no definition".into()));
    };
    if !table.contains(from) {
        // Rewritten already (a run that stopped after its commit).
        return Ok(());
    }
    let rebuilt =
        table
            .replace(from, to)
            .replacen("\"ledger_entries\"", "\"ledger_entries_rebuilt\"", 1);
    conn.execute_unprepared(&rebuilt).await?;
    conn.execute_unprepared("INSERT INTO ledger_entries_rebuilt SELECT * FROM ledger_entries")
        .await?;
    conn.execute_unprepared("DROP TABLE ledger_entries").await?;
    conn.execute_unprepared("ALTER TABLE ledger_entries_rebuilt RENAME TO ledger_entries")
        .await?;
    for index in indexes {
        conn.execute_unprepared(&index).await?;
    }
    Ok(())
}
