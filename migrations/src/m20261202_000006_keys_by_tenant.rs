//! Ready to distribute by tenant: on PostgreSQL every primary key and
//! unique index of a tenant-owned table includes `tenant_id`, as Citus
//! requires of distributed tables (ids stay globally unique and keep their
//! prefixes; the key becomes `(tenant_id, id)`). The three lookups that
//! cross tenants (an API key or a postback secret by its hash, a tracking
//! link by its code) go through `global_keys`, a small table that names the
//! tenant and the row, and whose key keeps those values unique across every
//! tenant (a reference table under Citus; docs/operations.md).
//!
//! Online on a serving database: each new index is built `CONCURRENTLY`
//! (writes carry on), then swapped in by a catalog-only `ALTER TABLE` under
//! a lock timeout, so the migration runs outside a transaction and every
//! step is safe to run again after an interruption. Rows the previous
//! release writes while this runs have no `global_keys` row yet; the
//! lookups fall back to the tables themselves and add it.
//!
//! SQLite keeps its keys (a new key means rebuilding the table, which is
//! not online, and an SQLite database is never distributed) and gets
//! `global_keys` with the same backfill.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000006_keys_by_tenant"
    }
}

/// Every tenant-owned table there was when this migration was written.
pub const REKEYED_TABLES: [&str; 16] = [
    "api_keys",
    "programs",
    "affiliates",
    "commission_plans",
    "tracking_links",
    "coupons",
    "clicks",
    "integrations",
    "postbacks",
    "conversions",
    "ledger_entries",
    "payouts",
    "notification_endpoints",
    "notification_deliveries",
    "notification_attempts",
    "audit_log",
];

/// The values unique across tenants: (kind in `global_keys`, table, column,
/// the unique constraint PostgreSQL named at creation).
const GLOBAL: [(&str, &str, &str, &str); 3] = [
    ("api_key", "api_keys", "key_hash", "api_keys_key_hash_key"),
    (
        "integration",
        "integrations",
        "secret_hash",
        "integrations_secret_hash_key",
    ),
    ("link", "tracking_links", "code", "tracking_links_code_key"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        // CREATE INDEX CONCURRENTLY cannot run inside a transaction.
        Some(false)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("global_keys")
                .if_not_exists()
                .col(ColumnDef::new("kind").string().not_null())
                .col(ColumnDef::new("key").string().not_null())
                .col(ColumnDef::new("tenant_id").string().not_null())
                .col(ColumnDef::new("object_id").string().not_null())
                .primary_key(Index::create().col("kind").col("key"))
                .to_owned(),
        )
        .await?;
        let backend = m.get_database_backend();
        for (kind, table, column, _) in GLOBAL {
            let insert = match backend {
                DbBackend::Sqlite => "INSERT OR IGNORE INTO",
                _ => "INSERT INTO",
            };
            let conflict = match backend {
                DbBackend::Sqlite => "",
                _ => " ON CONFLICT DO NOTHING",
            };
            exec(
                m,
                &format!(
                    "{insert} global_keys (kind, key, tenant_id, object_id) \
                     SELECT '{kind}', {column}, tenant_id, id FROM {table}{conflict}"
                ),
            )
            .await?;
        }
        if backend != DbBackend::Postgres {
            return Ok(());
        }
        for table in REKEYED_TABLES {
            tenant_primary_key(m, table).await?;
        }
        for (_, table, column, constraint) in GLOBAL {
            // Unique within the tenant (global_keys holds it unique across
            // tenants), and a plain index for the fallback lookup.
            exec(
                m,
                &format!(
                    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ux_{table}_tenant_{column} \
                     ON {table} (tenant_id, {column})"
                ),
            )
            .await?;
            exec(
                m,
                &format!(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_{table}_{column} ON {table} ({column})"
                ),
            )
            .await?;
            exec(
                m,
                &format!("ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {constraint}"),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DbBackend::Postgres {
            for (_, table, column, constraint) in GLOBAL {
                exec(
                    m,
                    &format!("ALTER TABLE {table} ADD CONSTRAINT {constraint} UNIQUE ({column})"),
                )
                .await?;
                exec(
                    m,
                    &format!("DROP INDEX IF EXISTS ux_{table}_tenant_{column}"),
                )
                .await?;
                exec(m, &format!("DROP INDEX IF EXISTS ix_{table}_{column}")).await?;
            }
            for table in REKEYED_TABLES {
                exec(
                    m,
                    &format!(
                        "ALTER TABLE {table} DROP CONSTRAINT {table}_pkey, ADD PRIMARY KEY (id)"
                    ),
                )
                .await?;
            }
        }
        m.drop_table(Table::drop().table("global_keys").if_exists().to_owned())
            .await
    }
}

/// Makes `(tenant_id, id)` the table's primary key unless it is already:
/// the index is built concurrently (a leftover of an interrupted build is
/// dropped first), then swapped in by a catalog-only change that waits at
/// most 10 s for its lock (an error then; the next start tries again).
async fn tenant_primary_key(m: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    let current = m
        .get_connection()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint \
                 WHERE conrelid = '{table}'::regclass AND contype = 'p'"
            ),
        ))
        .await?
        .map(|row| row.try_get::<String>("", "def"))
        .transpose()?;
    if current.as_deref() == Some("PRIMARY KEY (tenant_id, id)") {
        return Ok(());
    }
    let index = format!("{table}_tenant_pkey");
    let invalid = m
        .get_connection()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT 1 AS invalid FROM pg_index WHERE indexrelid = to_regclass('{index}') \
                 AND NOT indisvalid"
            ),
        ))
        .await?
        .is_some();
    if invalid {
        exec(m, &format!("DROP INDEX CONCURRENTLY IF EXISTS {index}")).await?;
    }
    exec(
        m,
        &format!(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {table} (tenant_id, id)"
        ),
    )
    .await?;
    let txn = m.begin().await?;
    exec(&txn, "SET LOCAL lock_timeout = '10s'").await?;
    exec(
        &txn,
        &format!(
            "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_pkey, \
             ADD CONSTRAINT {table}_pkey PRIMARY KEY USING INDEX {index}"
        ),
    )
    .await?;
    txn.commit().await
}

async fn exec(m: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    m.get_connection().execute_unprepared(sql).await.map(drop)
}
