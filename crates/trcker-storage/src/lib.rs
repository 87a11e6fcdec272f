//! Trcker's storage: the database connection (SQLite or PostgreSQL, one pool that
//! serves both sea-orm and the apalis queue), the sea-orm entities with their
//! typed columns, the tenant-scoped statement constructors and the named
//! cross-tenant lookups, the batch statements of the hot paths, and the job
//! queue. SQL lives here and in `migrations/` only.

pub mod batch;
pub mod clicks;
pub mod entities;
pub mod idempotency;
pub mod ids;
pub mod lookup;
pub mod queue;
pub mod rollups;
mod scope;
pub mod tiers;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, SqlErr, SqlxPostgresConnector,
    SqlxSqliteConnector, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use scope::{
    TenantId, TenantOwned, scoped, scoped_by_id, scoped_delete, scoped_update, scoped_update_by_id,
};
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
    #[error("backup file {0}: {1}")]
    BackupFile(String, std::io::Error),
    #[error("this is a PostgreSQL database; back it up with pg_dump")]
    NotSqlite,
}

/// Which database a process uses.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// The embedded default: one SQLite file in WAL mode.
    Sqlite { path: std::path::PathBuf },
    /// `DATABASE_URL=postgres://...`
    Postgres { url: String, max_connections: u32 },
}

/// The raw pool of the job queue (apalis): on PostgreSQL the pool under
/// sea-orm's connection, on SQLite the writer's (see [`Store`]), since
/// apalis's fetches, locks, acknowledgements and heartbeats all write.
#[derive(Debug, Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open database: the sea-orm connection and the pool under it.
///
/// On SQLite the process's writes go through one connection of their own,
/// the writer ([`Store::writer`], [`Store::write_txn`], and the queue's pool):
/// SQLite lets one connection write at a time, and connections that meet its
/// write lock wait in its busy handler, which sleeps in growing steps (up to
/// 100 ms each) and serves no one in order, so that under load a writer that
/// had waited once kept losing the lock to newcomers for seconds. With one
/// writing connection, writers wait in order for it instead, and the lock is
/// never idle while one of them sleeps. Reads, and the rare writes of the
/// admin API, take the other connections; SQLite's busy handler stays for
/// them and for other processes on the same file.
#[derive(Debug, Clone)]
pub struct Store {
    pub conn: DatabaseConnection,
    /// The connection writes take (on PostgreSQL, `conn` itself).
    writer: DatabaseConnection,
    pub pool: Pool,
    /// On SQLite, the pool under `conn` (the readers).
    readers: Option<SqlitePool>,
    /// When SQLite's planner statistics last changed.
    statistics: Arc<StatisticsEpoch>,
}

/// When SQLite's planner statistics last changed: a connection loads them
/// once, when it opens (another connection's ANALYZE does not reach it), so
/// the pool retires connections older than the latest statistics.
#[derive(Debug)]
struct StatisticsEpoch {
    base: std::time::Instant,
    /// Milliseconds after `base`; 0 before any change.
    changed_ms: std::sync::atomic::AtomicU64,
}

impl StatisticsEpoch {
    fn new() -> Self {
        StatisticsEpoch {
            base: std::time::Instant::now(),
            changed_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn changed_now(&self) {
        let ms = (self.base.elapsed().as_millis() as u64).max(1);
        self.changed_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a connection of this age opened after the latest change.
    fn is_current(&self, age: Duration) -> bool {
        let changed = self.changed_ms.load(std::sync::atomic::Ordering::Relaxed);
        changed == 0 || self.base.elapsed().saturating_sub(age).as_millis() as u64 >= changed
    }
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
                create_private(path)
                    .map_err(|e| StorageError::DataDir(path.display().to_string(), e))?;
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .pragma("temp_store", "memory")
                    // Memory per connection (each has a thread of its own,
                    // and the allocator's per-thread arenas cost memory): a
                    // small page cache (the kernel caches the file besides),
                    // and a bounded statement cache, since a batch's
                    // statements have a text per size (padded or chunked to a
                    // handful of sizes) and each cached one keeps its
                    // compiled program. Measured: docs/benchmarks.md.
                    .pragma("cache_size", "-1000")
                    .statement_cache_capacity(32);
                let statistics = Arc::new(StatisticsEpoch::new());
                let pool_options = |connections: u32| {
                    let epoch = statistics.clone();
                    SqlitePoolOptions::new()
                        .max_connections(connections)
                        .min_connections(1)
                        .test_before_acquire(false)
                        .before_acquire(move |_, meta| {
                            let current = epoch.is_current(meta.age);
                            Box::pin(async move { Ok(current) })
                        })
                        .acquire_timeout(SQLITE_ACQUIRE_TIMEOUT)
                };
                let readers = pool_options(SQLITE_READERS)
                    .connect_with(options.clone())
                    .await?;
                let writer = pool_options(1).connect_with(options).await?;
                Ok(Store {
                    conn: SqlxSqliteConnector::from_sqlx_sqlite_pool(readers.clone()),
                    writer: SqlxSqliteConnector::from_sqlx_sqlite_pool(writer.clone()),
                    pool: Pool::Sqlite(writer),
                    readers: Some(readers),
                    statistics,
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
        let conn = SqlxPostgresConnector::from_sqlx_postgres_pool(pool.clone());
        Store {
            writer: conn.clone(),
            conn,
            readers: None,
            pool: Pool::Postgres(pool),
            statistics: Arc::new(StatisticsEpoch::new()),
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
    /// lock serialises them). A schema that is up to date is only read, so
    /// that processes whose role may read and write rows but not change the
    /// schema start (docs/operations.md: PostgreSQL roles).
    /// Then builds the report rollups of any tenant from before them.
    pub async fn migrate(&self) -> Result<(), StorageError> {
        if !self.pending_migrations().await?.is_empty() {
            self.run_migrations().await?;
        }
        for tenant in rollups::unbuilt(&self.conn).await? {
            tracing::info!(%tenant, "building the report rollups from the raw rows");
            let txn = self.write_txn().await?;
            rollups::rebuild(&txn, &tenant).await?;
            txn.commit().await?;
        }
        Ok(())
    }

    async fn run_migrations(&self) -> Result<(), StorageError> {
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

    /// The connection for a write outside a transaction on a hot path (one
    /// statement that is its own transaction): on SQLite the writer, so that
    /// it waits its turn with the others (see [`Store`]).
    pub fn writer(&self) -> &DatabaseConnection {
        &self.writer
    }

    /// Begins a transaction that will write, on the writer. On SQLite it takes
    /// the write lock up front (`BEGIN IMMEDIATE`), so a transaction that
    /// reads before it writes waits for the lock instead of failing with
    /// "database is locked".
    pub async fn write_txn(&self) -> Result<DatabaseTransaction, DbErr> {
        self.writer
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
    ///
    /// On SQLite the same need is sharper: without statistics its planner
    /// takes `tenant_id = ?` for a rare value too, so that every lookup of a
    /// batch by id (`tenant_id = ? AND id IN (…)`) walked the tenant's whole
    /// index: 230 ms per batch at 200,000 clicks, 0.5 ms with statistics.
    /// There SQLite's own rule chooses the tables (`PRAGMA optimize`: never
    /// analyzed, or grown 25-fold since), analyzed from a sample.
    pub async fn refresh_planner_statistics(&self) -> Result<Vec<String>, StorageError> {
        let pool = match &self.pool {
            Pool::Sqlite(pool) => {
                let analyzed = refresh_sqlite_statistics(pool).await?;
                if !analyzed.is_empty() {
                    self.statistics.changed_now();
                }
                return Ok(analyzed);
            }
            Pool::Postgres(pool) => pool,
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

    /// Trcker's migrations this database has not run (another process of a
    /// newer version may be serving the schema this one expects, or not yet).
    /// Then the job queue's, named `queue <version>_<description>`.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StorageError> {
        // Read here rather than by the migrator, which refuses a schema that
        // has migrations it does not know: a newer release's, during a
        // rolling upgrade, which this release serves as it is.
        use sea_orm::EntityTrait;
        use sea_orm_migration::seaql_migrations;
        let applied: Vec<String> = match seaql_migrations::Entity::find().all(&self.conn).await {
            Ok(rows) => rows.into_iter().map(|m| m.version).collect(),
            // No table yet (a new database), unless the database is down.
            Err(_) if self.ping().await => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut pending: Vec<String> = trcker_migrations::Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .filter(|name| !applied.contains(name))
            .collect();
        let (queue, applied) = match &self.pool {
            Pool::Sqlite(pool) => {
                let queue = apalis_sqlite::SqliteStorage::migrations();
                let applied = applied_versions(&mut *pool.acquire().await?, &queue).await;
                (queue, applied)
            }
            Pool::Postgres(pool) => {
                let queue = apalis_postgres::PostgresStorage::migrations();
                let applied = applied_versions(&mut *pool.acquire().await?, &queue).await;
                (queue, applied)
            }
        };
        pending.extend(
            queue
                .iter()
                .filter(|m| !m.migration_type.is_down_migration())
                .filter(|m| !applied.contains(&m.version))
                .map(|m| format!("queue {}_{}", m.version, m.description)),
        );
        Ok(pending)
    }

    /// Writes a consistent copy of the SQLite database to `dest` while other
    /// connections and processes keep writing (`VACUUM INTO`): the copy is
    /// the database as of the moment the statement began, compacted, with
    /// nothing of the WAL left out. `dest` is created readable by its owner
    /// only and must not exist yet; on failure nothing is left behind.
    pub async fn backup_sqlite_into(&self, dest: &Path) -> Result<(), StorageError> {
        // A read: on a reader, so that writers go on meanwhile.
        let Some(pool) = &self.readers else {
            return Err(StorageError::NotSqlite);
        };
        let shown = dest.display().to_string();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(dest)
            .map_err(|e| StorageError::BackupFile(shown.clone(), e))?;
        let Some(target) = dest.to_str() else {
            let _ = std::fs::remove_file(dest);
            return Err(StorageError::BackupFile(
                shown,
                std::io::Error::other("the path is not valid UTF-8"),
            ));
        };
        // SQLite writes into an empty existing file, so the owner-only mode
        // set above stays.
        let copied = sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(pool)
            .await;
        if let Err(e) = copied {
            let _ = std::fs::remove_file(dest);
            return Err(e.into());
        }
        Ok(())
    }

    /// The pool's connections: how many are open, and how many of those idle.
    pub fn pool_usage(&self) -> (u32, u32) {
        // sqlx counts idle connections apart from open ones, so a count read
        // while a connection changes hands can be off (even wrapped round):
        // idle never counts more than are open.
        let usage = |size: u32, idle: usize| (size, u32::try_from(idle).unwrap_or(0).min(size));
        let (size, idle) = match &self.pool {
            Pool::Sqlite(p) => usage(p.size(), p.num_idle()),
            Pool::Postgres(p) => usage(p.size(), p.num_idle()),
        };
        match &self.readers {
            Some(r) => {
                let (r_size, r_idle) = usage(r.size(), r.num_idle());
                (size.saturating_add(r_size), idle.saturating_add(r_idle))
            }
            None => (size, idle),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
        if let Some(r) = &self.readers {
            r.close().await;
        }
    }
}

/// Creates the SQLite file, if it does not exist, readable and writable by its
/// owner only: it holds every tenant's data. SQLite gives the WAL and shared
/// memory files it makes beside it the same permissions.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// SQLite connections for reads (besides the one writer): each connection
/// is a thread with its own allocator arena, so they count against the
/// process's memory (docs/benchmarks.md).
const SQLITE_READERS: u32 = 5;
/// How long a SQLite user waits for a connection (the writer's users wait
/// for each other's transactions here) before the database is reported
/// unavailable.
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Rows sampled per index when SQLite analyzes a table: enough for the
/// planner's choices, and milliseconds at any size.
const SQLITE_ANALYSIS_LIMIT: u32 = 1000;

/// Analyzes the SQLite tables that `PRAGMA optimize` says would benefit;
/// the tables analyzed.
async fn refresh_sqlite_statistics(pool: &SqlitePool) -> Result<Vec<String>, StorageError> {
    let mut conn = pool.acquire().await?;
    // 0x10000: every table, not only those this connection queried;
    // 0x2: ANALYZE where it would help; 0x1: list those statements, run none.
    let todo: Vec<String> = sqlx::query_scalar("PRAGMA optimize=0x10003")
        .fetch_all(&mut *conn)
        .await?;
    let mut analyzed = Vec::new();
    for statement in todo {
        let Some(table) = statement.strip_prefix("ANALYZE ") else {
            continue;
        };
        if analyzed.is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "PRAGMA analysis_limit={SQLITE_ANALYSIS_LIMIT}"
            )))
            .execute(&mut *conn)
            .await?;
        }
        let table = table.trim().trim_matches('"').to_owned();
        // A table name as SQLite itself quoted it.
        sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&mut *conn)
            .await?;
        analyzed.push(table);
    }
    Ok(analyzed)
}

/// The versions of a sqlx migrator's migrations this database has applied
/// (none when its table is not there yet), read without creating anything.
async fn applied_versions<C: sqlx::migrate::Migrate>(
    conn: &mut C,
    migrator: &sqlx::migrate::Migrator,
) -> Vec<i64> {
    conn.list_applied_migrations(&migrator.table_name)
        .await
        .map(|applied| applied.iter().map(|m| m.version).collect())
        .unwrap_or_default()
}
