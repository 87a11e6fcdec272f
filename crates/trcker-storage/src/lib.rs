//! Trcker's storage: the database connection (SQLite or PostgreSQL, one pool that
//! serves both sea-orm and the apalis queue), the sea-orm entities, and the
//! tenant-scoped query constructors. SQL lives here and in `migrations/` only.

pub mod entities;
mod scope;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, SqlErr, SqlxPostgresConnector,
    SqlxSqliteConnector, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use scope::{TenantId, TenantOwned, scoped, scoped_by_id};
pub use sea_orm;
pub use sqlx::{PgPool, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("job queue schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
}

/// Which database a process uses.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// The embedded default: one SQLite file in WAL mode.
    Sqlite { path: std::path::PathBuf },
    /// `DATABASE_URL=postgres://...`
    Postgres { url: String, max_connections: u32 },
}

/// The raw pool, for the job queue (apalis) that shares it with sea-orm.
#[derive(Debug, Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open database: the sea-orm connection and the pool under it.
#[derive(Debug, Clone)]
pub struct Store {
    pub conn: DatabaseConnection,
    pub pool: Pool,
}

impl Store {
    /// Opens the database. SQLite connections all get WAL, `synchronous=FULL`
    /// (money data survives power loss), a busy timeout and foreign keys.
    pub async fn open(config: &DatabaseConfig) -> Result<Store, StorageError> {
        match config {
            DatabaseConfig::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StorageError::DataDir(dir.display().to_string(), e))?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .pragma("temp_store", "memory")
                    // Memory per connection (6 of them: each has a thread of
                    // its own, and with 8 the allocator's per-thread arenas
                    // took the loaded process past 150 MB): a 1 MB page cache
                    // (the kernel caches the file besides; 4 MB per connection
                    // made the loaded pipeline's peak ~10 MiB higher and
                    // nothing faster), and a bounded statement cache: a
                    // batch's `IN (…)` lists and multi-row statements have a
                    // text per size (padded or chunked to a handful of sizes;
                    // the inbox's groups of up to 32 have one each), and each
                    // cached one keeps its compiled program (64 measured no
                    // faster than 32, with more memory).
                    .pragma("cache_size", "-1000")
                    .statement_cache_capacity(32);
                let pool = SqlitePoolOptions::new()
                    .max_connections(6)
                    .min_connections(1)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?;
                Ok(Store {
                    conn: SqlxSqliteConnector::from_sqlx_sqlite_pool(pool.clone()),
                    pool: Pool::Sqlite(pool),
                })
            }
            DatabaseConfig::Postgres {
                url,
                max_connections,
            } => {
                // Planner statistics matter here: see refresh_planner_statistics.
                let options = PgConnectOptions::from_str(url)?.application_name("trcker");
                let pool = pg_pool_options(*max_connections)
                    .connect_with(options)
                    .await?;
                Ok(Store::postgres(pool))
            }
        }
    }

    /// The same database for a task that runs on a runtime of its own (the
    /// inbox writer): on PostgreSQL a pool of its own with up to `connections`
    /// connections, each opened by its first user, so that their sockets are
    /// driven by that task's runtime; on SQLite the same pool (its connections
    /// are threads of their own, bound to no runtime).
    pub fn for_own_runtime(&self, connections: u32) -> Store {
        match &self.pool {
            Pool::Sqlite(_) => self.clone(),
            Pool::Postgres(pool) => {
                let options = (*pool.connect_options()).clone();
                Store::postgres(pg_pool_options(connections).connect_lazy_with(options))
            }
        }
    }

    /// A store on a PostgreSQL pool: sea-orm's connection over it.
    fn postgres(pool: PgPool) -> Store {
        Store {
            conn: SqlxPostgresConnector::from_sqlx_postgres_pool(pool.clone()),
            pool: Pool::Postgres(pool),
        }
    }

    /// Opens the embedded SQLite database in `data_dir`.
    pub fn sqlite_in(data_dir: &Path) -> DatabaseConfig {
        DatabaseConfig::Sqlite {
            path: data_dir.join("trcker.db"),
        }
    }

    /// Brings the schema up to date: Trcker's tables, then the job queue's.
    /// Safe to run from several processes at once on PostgreSQL (an advisory
    /// lock serialises them).
    pub async fn migrate(&self) -> Result<(), StorageError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                trcker_migrations::Migrator::up(&self.conn, None).await?;
                apalis_sqlite::SqliteStorage::migrations().run(pool).await?;
            }
            Pool::Postgres(pool) => {
                let mut lock = pool.acquire().await?;
                sqlx::query("SELECT pg_advisory_lock(7411250001)")
                    .execute(&mut *lock)
                    .await?;
                let result = async {
                    trcker_migrations::Migrator::up(&self.conn, None).await?;
                    apalis_postgres::PostgresStorage::migrations()
                        .run(pool)
                        .await?;
                    Ok::<(), StorageError>(())
                }
                .await;
                sqlx::query("SELECT pg_advisory_unlock(7411250001)")
                    .execute(&mut *lock)
                    .await?;
                result?;
            }
        }
        Ok(())
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock
    /// up front (`BEGIN IMMEDIATE`), so a transaction that reads before it
    /// writes waits for the lock instead of failing with "database is locked".
    pub async fn write_txn(&self) -> Result<DatabaseTransaction, DbErr> {
        self.conn
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    /// A write transaction for the pipeline's own writes (attribution,
    /// commissions, deliveries and attempts). On PostgreSQL it commits without
    /// waiting for the disk (`synchronous_commit = off`): a database crash may
    /// lose the last fraction of a second of such commits, never corrupt
    /// anything, and every one of them is made again from what is durable (the
    /// acknowledged postback in the inbox, the queue), because jobs are
    /// at-least-once and their effects keyed. What is acknowledged to a merchant
    /// (the inbox commit) and what the API writes stay synchronous.
    pub async fn pipeline_txn(&self) -> Result<DatabaseTransaction, DbErr> {
        let txn = self.write_txn().await?;
        if self.is_postgres() {
            txn.execute_unprepared("SET LOCAL synchronous_commit TO OFF")
                .await?;
        }
        Ok(txn)
    }

    /// Hands back the queue jobs held by workers of these names: called when a
    /// process starts workers under a fixed name, whose earlier holder (the same
    /// name) can only be a process that died. Without this, a worker restarted
    /// under its old name would keep its predecessor's jobs "running" for good,
    /// since its own heartbeat keeps the name fresh. Returns how many.
    pub async fn release_jobs_of_workers(&self, names: &[String]) -> Result<u64, StorageError> {
        let mut released = 0;
        for name in names {
            released += match &self.pool {
                Pool::Sqlite(pool) => sqlx::query(
                    "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL \
                     WHERE lock_by = ?1 AND status IN ('Running', 'Queued')",
                )
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected(),
                Pool::Postgres(pool) => sqlx::query(
                    "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL \
                     WHERE lock_by = $1 AND status IN ('Running', 'Queued')",
                )
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected(),
            };
        }
        Ok(released)
    }

    /// Which of these workers have not heartbeaten for `secs` seconds.
    pub async fn silent_workers(
        &self,
        names: &[String],
        secs: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut silent = Vec::new();
        for name in names {
            let quiet: Option<bool> = match &self.pool {
                Pool::Sqlite(pool) => {
                    sqlx::query_scalar(
                        "SELECT strftime('%s', 'now') - last_seen >= ?2 FROM Workers WHERE id = ?1",
                    )
                    .bind(name)
                    .bind(secs)
                    .fetch_optional(pool)
                    .await?
                }
                Pool::Postgres(pool) => {
                    sqlx::query_scalar(
                        "SELECT last_seen < NOW() - make_interval(secs => $2) FROM apalis.workers WHERE id = $1",
                    )
                    .bind(name)
                    .bind(secs as f64)
                    .fetch_optional(pool)
                    .await?
                }
            };
            if quiet == Some(true) {
                silent.push(name.clone());
            }
        }
        Ok(silent)
    }

    /// Hands back the queue jobs held by workers whose heartbeat is older than
    /// `stale_secs` (their process died), and jobs locked more than `stuck_secs`
    /// ago whoever holds them: no Trcker job runs that long (a notification call
    /// times out after 10 s), so such a job was lost inside a live process (a
    /// worker whose fetch broke mid-way, when the database restarted, is
    /// restarted under the same name and keeps heartbeating). apalis recovers
    /// dead workers' jobs too; this pass, run by Trcker's sweepers, bounds the
    /// recovery time whatever apalis does. A job handed back runs again and
    /// changes nothing (every job effect is keyed). Returns how many.
    pub async fn release_orphaned_jobs(
        &self,
        stale_secs: i64,
        stuck_secs: i64,
    ) -> Result<u64, StorageError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(
                "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL \
                 WHERE status IN ('Running', 'Queued') AND (lock_by IN \
                 (SELECT id FROM Workers WHERE strftime('%s', 'now') - last_seen >= ?1) \
                 OR strftime('%s', 'now') - lock_at >= ?2)",
            )
            .bind(stale_secs)
            .bind(stuck_secs)
            .execute(pool)
            .await?
            .rows_affected(),
            Pool::Postgres(pool) => sqlx::query(
                "UPDATE apalis.jobs j SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL \
                 WHERE j.status IN ('Running', 'Queued') \
                 AND (j.lock_at < NOW() - make_interval(secs => $2) \
                 OR EXISTS (SELECT 1 FROM apalis.workers w WHERE w.id = j.lock_by \
                 AND w.last_seen < NOW() - make_interval(secs => $1)))",
            )
            .bind(stale_secs as f64)
            .bind(stuck_secs as f64)
            .execute(pool)
            .await?
            .rows_affected(),
        })
    }

    /// Deletes queue jobs that finished well (`Done`) more than `older_than_secs`
    /// ago, at most 10,000 per call. Trcker's own tables are the record of what
    /// happened (postback log, conversions, deliveries and attempts); a job's
    /// effects are keyed, so a job pushed again after its row is gone runs again
    /// and changes nothing. Without this, apalis-sqlite's acknowledgement, which
    /// visits every job a worker ever locked, slows down as the table grows.
    /// Failed jobs are kept for inspection. Returns how many were deleted.
    pub async fn prune_done_jobs(&self, older_than_secs: i64) -> Result<u64, StorageError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(
                "DELETE FROM Jobs WHERE rowid IN (SELECT rowid FROM Jobs WHERE status = 'Done' \
                 AND done_at IS NOT NULL AND done_at < strftime('%s', 'now') - ?1 LIMIT 10000)",
            )
            .bind(older_than_secs)
            .execute(pool)
            .await?
            .rows_affected(),
            Pool::Postgres(pool) => sqlx::query(
                "DELETE FROM apalis.jobs WHERE id IN (SELECT id FROM apalis.jobs WHERE status = 'Done' \
                 AND done_at < NOW() - make_interval(secs => $1) LIMIT 10000)",
            )
            .bind(older_than_secs as f64)
            .execute(pool)
            .await?
            .rows_affected(),
        })
    }

    /// When the oldest job of a queue that has not finished (waiting, fetched
    /// or running) was queued, if there is one. The sweepers use it to tell a
    /// postback or delivery that lost its job from one whose job is simply
    /// still waiting behind others.
    pub async fn oldest_open_job(
        &self,
        queue: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MIN(run_at) FROM Jobs WHERE job_type = ?1 \
                 AND status IN ('Pending', 'Queued', 'Running')",
            )
            .bind(queue)
            .fetch_one(pool)
            .await?
            .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0)),
            Pool::Postgres(pool) => {
                sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
                    "SELECT MIN(run_at) FROM apalis.jobs WHERE job_type = $1 \
                 AND status IN ('Pending', 'Queued', 'Running')",
                )
                .bind(queue)
                .fetch_one(pool)
                .await?
            }
        })
    }

    /// On PostgreSQL, analyzes Trcker's busiest tables (and the job queue's)
    /// whose planner statistics are missing or stale. Autovacuum does this where
    /// it runs; where it is off, or has not come round yet on a fresh database
    /// under its first load, the planner takes one tenant for a rare value and
    /// scans a tenant's whole index to find one row, and matches a queue
    /// acknowledgement through every job its worker ever locked. Stale means
    /// more rows changed since the last analysis than 50 + 10 % of the table
    /// (autovacuum's own rule), and either the table has more than doubled since
    /// or its last analysis is a minute old: a growing table is not analyzed on
    /// every sweep. Returns the tables analyzed.
    pub async fn refresh_planner_statistics(&self) -> Result<Vec<String>, StorageError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables \
             WHERE ((schemaname = current_schema() \
                     AND relname IN ('postbacks', 'conversions', 'ledger_entries', 'clicks', \
                                     'notification_deliveries', 'notification_attempts')) \
                    OR (schemaname = 'apalis' AND relname = 'jobs')) \
             AND n_mod_since_analyze > 50 + 0.1 * GREATEST(n_live_tup, 0) \
             AND (n_mod_since_analyze > GREATEST(n_live_tup, 0) \
                  OR COALESCE(GREATEST(last_analyze, last_autoanalyze), '-infinity') \
                     < now() - interval '1 minute')",
        )
        .fetch_all(pool)
        .await?;
        for table in &stale {
            // Quoted names of the fixed list above.
            sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
                .execute(pool)
                .await?;
        }
        Ok(stale)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        self.conn.execute_unprepared("SELECT 1").await.is_ok()
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// Every PostgreSQL pool of a process: no round trip to test a connection
/// before each use, and a database that does not hand one out within 3 s is
/// reported unavailable (503 to the merchant, who tries again).
fn pg_pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(3))
}

/// A transaction on a PostgreSQL pool whose commit does not wait for the disk
/// (for writes that are made again if a database crash loses them; see
/// [`Store::pipeline_txn`]).
pub async fn pg_async_commit_txn(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit TO OFF")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Whether an error is a unique-key violation (the signal of an idempotent repeat).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Whether an error means the database cannot be reached right now (as opposed
/// to a bad query): callers answer 503 so that clients retry.
pub fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(e) | DbErr::Query(e) => {
            let s = e.to_string();
            s.contains("Io")
                || s.contains("io error")
                || s.contains("connection")
                || s.contains("PoolTimedOut")
                || s.contains("database is locked")
                || s.contains("terminating connection")
        }
        _ => false,
    }
}
