//! The job queue: apalis's tables on the same database as everything else
//! (SQLite or PostgreSQL, one pool), and everything Trcker does with them:
//! pushing jobs, the workers' backends and wake-ups ([`wake`]), and the
//! sweepers' maintenance of the job table.
//!
//! Every job carries ids (and its tenant), never data, and an idempotency key:
//! pushing the same job twice (a sweeper catching up after a crash, a job that
//! runs again) leaves one job in the queue.

mod maintenance;
mod wake;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::{BackendExt, TaskBuilder};
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

pub use apalis::prelude::PollWith;
pub use wake::{Pushes, WakeUp};

use crate::Pool;

/// A job type: its payload, the queue it goes to, and the key that makes a
/// second push of the same job a no-op.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// The queue's name (apalis's `job_type`).
    const QUEUE: &'static str;
    /// Equal for two pushes of the same work.
    fn idempotency_key(&self) -> String;
}

/// How often workers prove they are alive; a worker silent for three times
/// this long is presumed dead and its running jobs are handed to others.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often an idle PostgreSQL worker looks for new jobs. It is also woken by
/// LISTEN/NOTIFY (see [`WakeUp`]); the poll covers a notification missed while
/// the LISTEN connection was being opened again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The same on SQLite, whose workers are woken by this process's own pushes:
/// every fetch there takes the one write lock, even one that finds nothing.
pub const SQLITE_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Jobs a worker fetches at once.
const FETCH_BATCH: usize = 32;
/// Jobs fail for good after this many tries; the sweepers and our own
/// per-delivery schedule, not apalis's in-memory retries, carry long retries.
const MAX_ATTEMPTS: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job queue: {0}")]
    Sqlite(#[from] apalis_sqlite::Error),
    #[error("job queue: {0}")]
    Postgres(#[from] apalis_postgres::Error),
    #[error("job queue: {0}")]
    Pool(#[from] sqlx::Error),
    #[error("job payload: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Whether a push failed only because a job with its idempotency key exists.
fn is_duplicate_key(e: &QueueError) -> bool {
    let text = e.to_string();
    text.contains("idx_jobs_idempotency_key") || text.contains("duplicate key value")
}

/// Tells this process's workers that jobs were pushed, per queue: each push
/// bumps its queue's counter once its jobs are committed.
#[derive(Debug, Clone, Default)]
pub struct Pushed(Arc<Mutex<HashMap<&'static str, watch::Sender<u64>>>>);

impl Pushed {
    fn sender(&self, queue: &'static str) -> watch::Sender<u64> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(queue)
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// Changes whenever jobs of `queue` are pushed by this process.
    pub fn subscribe(&self, queue: &'static str) -> watch::Receiver<u64> {
        self.sender(queue).subscribe()
    }

    fn bump(&self, queue: &'static str) {
        self.sender(queue).send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The queue the workers consume: pushing jobs, and the maintenance passes
/// the sweepers make over apalis's tables.
#[derive(Debug, Clone)]
pub struct JobQueue {
    pool: Pool,
    pushed: Pushed,
}

impl JobQueue {
    pub fn new(pool: Pool) -> Self {
        JobQueue {
            pool,
            pushed: Pushed::default(),
        }
    }

    /// Pushes made by this process, for its workers to wake on.
    pub fn pushed(&self) -> &Pushed {
        &self.pushed
    }

    pub async fn push<J: Job>(&self, job: &J) -> Result<(), QueueError> {
        self.push_all(std::slice::from_ref(job)).await
    }

    /// Pushes several jobs of one type in one round trip.
    pub async fn push_all<J: Job>(&self, jobs: &[J]) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut tasks = Vec::with_capacity(jobs.len());
        for job in jobs {
            tasks.push(
                TaskBuilder::new(serde_json::to_vec(job)?)
                    .idempotency_key(job.idempotency_key())
                    .max_attempts(MAX_ATTEMPTS)
                    .build(),
            );
        }
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                apalis_sqlite::queries::push_tasks(&mut *tx, J::QUEUE, &tasks).await?;
                tx.commit().await?;
            }
            Pool::Postgres(pool) => {
                // apalis-postgres 1.0 inserts without ON CONFLICT: a job whose
                // idempotency key exists fails the whole batch. Then push them one
                // by one and take "exists already" as done.
                match push_pg(pool, J::QUEUE, tasks.clone()).await {
                    Ok(()) => {}
                    Err(e) if is_duplicate_key(&e) => {
                        for task in tasks {
                            match push_pg(pool, J::QUEUE, vec![task]).await {
                                Ok(()) => {}
                                Err(e) if is_duplicate_key(&e) => {}
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.pushed.bump(J::QUEUE);
        Ok(())
    }
}

/// Pushes jobs in one transaction that commits without waiting for the disk: a
/// job lost to a database crash is queued again from what is durable (an
/// accepted postback still `received`, by the inbox sweeper; a step's
/// successor by the step's own job, which runs again since its
/// acknowledgement came later).
async fn push_pg(
    pool: &sqlx::PgPool,
    queue: &str,
    tasks: Vec<apalis_postgres::PgTask<Vec<u8>>>,
) -> Result<(), QueueError> {
    let mut tx = crate::pg_async_commit_txn(pool).await?;
    apalis_postgres::queries::push_tasks(&mut *tx, queue, tasks).await?;
    tx.commit().await?;
    Ok(())
}

/// The SQLite backend of a queue's workers: apalis's storage, woken by this
/// process's pushes and polled every [`SQLITE_POLL_INTERVAL`].
pub fn sqlite_backend<J: Job>(
    pool: &sqlx::SqlitePool,
    pushed: &Pushed,
) -> PollWith<SqliteStorage<J>, WakeUp<Pushes>> {
    let config = apalis_sqlite::Config::default()
        .queue(J::QUEUE)
        .heartbeat_interval(HEARTBEAT)
        .batch_size(FETCH_BATCH);
    SqliteStorage::<J>::new(pool)
        .with_config(config)
        .poll_with_strategy(WakeUp::listening(
            Pushes::new(pushed.subscribe(J::QUEUE)),
            SQLITE_POLL_INTERVAL,
        ))
}

/// The PostgreSQL backend of a queue's workers: apalis's storage, woken by
/// LISTEN/NOTIFY and polled every [`POLL_INTERVAL`].
pub fn postgres_backend<J: Job>(
    pool: &sqlx::PgPool,
) -> PollWith<PostgresStorage<J>, WakeUp<apalis_postgres::Pubsub>> {
    let config = apalis_postgres::Config::default()
        .queue(J::QUEUE)
        .heartbeat_interval(HEARTBEAT)
        .batch_size(FETCH_BATCH);
    let pubsub = apalis_postgres::Pubsub::new(pool.clone(), J::QUEUE.to_owned());
    PostgresStorage::<J>::new(pool)
        .with_config(config)
        .poll_with_strategy(WakeUp::listening(pubsub, POLL_INTERVAL))
}
