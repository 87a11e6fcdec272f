//! The job queue: apalis storage on the same database (SQLite or PostgreSQL).
//!
//! Every job carries ids (and its tenant), never data, and an idempotency key:
//! pushing the same job twice (a sweeper catching up after a crash, a job that
//! runs again) leaves one job in the queue.

use apalis::prelude::TaskBuilder;
use serde::{Deserialize, Serialize};
use trcker_storage::Pool;

pub const ATTRIBUTE_QUEUE: &str = "trcker.attribute";
pub const COMMISSION_QUEUE: &str = "trcker.commission";
pub const NOTIFY_QUEUE: &str = "trcker.notify";

/// Attribute one accepted postback to a click (or coupon) and its affiliate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttributeJob {
    pub tenant_id: String,
    pub postback_id: String,
    /// Set when a tenant asks for attribution again: a new job, not a repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i64>,
}

/// Book the commission a conversion earns (once) and notify its affiliate of
/// the conversion's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommissionJob {
    pub tenant_id: String,
    pub conversion_id: String,
    /// The conversion's status when the job was queued: each status gets its
    /// own job (and its own notification).
    pub status: String,
}

/// Make one attempt at one notification delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyJob {
    pub tenant_id: String,
    pub delivery_id: String,
    /// The attempt this job makes (0 for the first); a stale job is a no-op.
    pub attempt: i32,
    /// When the attempt was due (ms since the epoch), for attempts the sweeper
    /// queues: a retry, or an attempt put off because its endpoint was busy, is
    /// a new job rather than a repeat of the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<i64>,
}

pub trait Job: Serialize {
    const QUEUE: &'static str;
    fn idempotency_key(&self) -> String;
}

impl Job for AttributeJob {
    const QUEUE: &'static str = ATTRIBUTE_QUEUE;
    fn idempotency_key(&self) -> String {
        match self.retry {
            Some(r) => format!("{}:{r}", self.postback_id),
            None => self.postback_id.clone(),
        }
    }
}

impl Job for CommissionJob {
    const QUEUE: &'static str = COMMISSION_QUEUE;
    fn idempotency_key(&self) -> String {
        format!("{}:{}", self.conversion_id, self.status)
    }
}

impl Job for NotifyJob {
    const QUEUE: &'static str = NOTIFY_QUEUE;
    fn idempotency_key(&self) -> String {
        match self.due {
            Some(due) => format!("{}:{}:{due}", self.delivery_id, self.attempt),
            None => format!("{}:{}", self.delivery_id, self.attempt),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job queue: {0}")]
    Sqlite(#[from] apalis_sqlite::Error),
    #[error("job queue: {0}")]
    Postgres(#[from] apalis_postgres::Error),
    #[error("job queue: {0}")]
    Pool(#[from] sqlx_error::Error),
    #[error("job payload: {0}")]
    Encode(#[from] serde_json::Error),
}

mod sqlx_error {
    pub use apalis_sqlite::SqlxError as Error;
}

/// Whether a push failed only because a job with its idempotency key exists.
fn is_duplicate_key(e: &apalis_postgres::Error) -> bool {
    let text = e.to_string();
    text.contains("idx_jobs_idempotency_key") || text.contains("duplicate key value")
}

/// Pushes jobs onto the apalis queue that the workers consume.
#[derive(Debug, Clone)]
pub struct JobQueue {
    pool: Pool,
}

/// Jobs fail permanently after this many tries; the sweepers and our own
/// per-delivery schedule, not apalis's in-memory retries, carry long retries.
const MAX_ATTEMPTS: usize = 25;

impl JobQueue {
    pub fn new(pool: Pool) -> Self {
        JobQueue { pool }
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
                let mut conn = pool.acquire().await?;
                match apalis_postgres::queries::push_tasks(&mut *conn, J::QUEUE, tasks.clone())
                    .await
                {
                    Ok(()) => {}
                    Err(e) if is_duplicate_key(&e) => {
                        for task in tasks {
                            match apalis_postgres::queries::push_tasks(
                                &mut *conn,
                                J::QUEUE,
                                vec![task],
                            )
                            .await
                            {
                                Ok(()) => {}
                                Err(e) if is_duplicate_key(&e) => {}
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}
