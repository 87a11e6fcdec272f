//! The job queue: apalis storage on the same database (SQLite or PostgreSQL).
//!
//! Every job carries ids (and its tenant), never data, and an idempotency key:
//! pushing the same job twice (a sweeper catching up after a crash, a job that
//! runs again) leaves one job in the queue. A job carries a batch of ids of one
//! tenant (an inbox group's postbacks, the conversions they made, the
//! deliveries those made), so that each step reads, writes and commits once
//! per batch rather than once per conversion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apalis::prelude::TaskBuilder;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use trcker_storage::Pool;

pub const ATTRIBUTE_QUEUE: &str = "trcker.attribute";
pub const COMMISSION_QUEUE: &str = "trcker.commission";
pub const NOTIFY_QUEUE: &str = "trcker.notify";

/// Attribute accepted postbacks of one tenant: an inbox group's, or one that a
/// sweeper or a tenant queues again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttributeJob {
    pub tenant_id: String,
    pub postback_ids: Vec<String>,
    /// Set when a tenant asks for attribution again: a new job, not a repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i64>,
}

impl AttributeJob {
    /// The job of one postback.
    pub fn one(tenant_id: impl Into<String>, postback_id: impl Into<String>) -> Self {
        AttributeJob {
            tenant_id: tenant_id.into(),
            postback_ids: vec![postback_id.into()],
            retry: None,
        }
    }
}

/// Book the commissions that conversions of one tenant earn (once each) and
/// notify their affiliates of each conversion's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommissionJob {
    pub tenant_id: String,
    pub items: Vec<CommissionItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionItem {
    pub conversion_id: String,
    /// The conversion's status when the job was queued: each status gets its
    /// own job (and its own notification).
    pub status: String,
}

impl CommissionJob {
    /// The job of one conversion's status.
    pub fn one(
        tenant_id: impl Into<String>,
        conversion_id: impl Into<String>,
        status: impl Into<String>,
    ) -> Self {
        CommissionJob {
            tenant_id: tenant_id.into(),
            items: vec![CommissionItem {
                conversion_id: conversion_id.into(),
                status: status.into(),
            }],
        }
    }
}

/// Make one attempt at each of some notification deliveries of one tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyJob {
    pub tenant_id: String,
    pub items: Vec<NotifyItem>,
    /// When the attempt was due (ms since the epoch), for attempts the sweeper
    /// queues: a retry, or an attempt put off because its endpoint was busy, is
    /// a new job rather than a repeat of the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyItem {
    pub delivery_id: String,
    /// The attempt this job makes (0 for the first); a stale one is a no-op.
    pub attempt: i32,
}

pub trait Job: Serialize {
    const QUEUE: &'static str;
    fn idempotency_key(&self) -> String;
}

/// A batch's key: a lone item keeps its own key (so that a sweeper pushing it
/// again finds it); a batch is named by its first and last items and its size.
fn batch_key<T>(items: &[T], key: impl Fn(&T) -> String) -> String {
    match items {
        [] => String::new(),
        [one] => key(one),
        [first, .., last] => format!("{}..{}+{}", key(first), key(last), items.len()),
    }
}

impl Job for AttributeJob {
    const QUEUE: &'static str = ATTRIBUTE_QUEUE;
    fn idempotency_key(&self) -> String {
        let ids = batch_key(&self.postback_ids, String::clone);
        match self.retry {
            Some(r) => format!("{ids}:{r}"),
            None => ids,
        }
    }
}

impl Job for CommissionJob {
    const QUEUE: &'static str = COMMISSION_QUEUE;
    fn idempotency_key(&self) -> String {
        batch_key(&self.items, |i| format!("{}:{}", i.conversion_id, i.status))
    }
}

impl Job for NotifyJob {
    const QUEUE: &'static str = NOTIFY_QUEUE;
    fn idempotency_key(&self) -> String {
        let items = batch_key(&self.items, |i| format!("{}:{}", i.delivery_id, i.attempt));
        match self.due {
            Some(due) => format!("{items}:{due}"),
            None => items,
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
fn is_duplicate_key(e: &QueueError) -> bool {
    let text = e.to_string();
    text.contains("idx_jobs_idempotency_key") || text.contains("duplicate key value")
}

/// Pushes jobs in one transaction that commits without waiting for the disk: a
/// job lost to a database crash is queued again from what is durable (an
/// accepted postback still `received` by the inbox sweeper; a step's successor
/// by the step's own job, which runs again since its acknowledgement came
/// later).
async fn push_pg(
    pool: &apalis_postgres::PgPool,
    queue: &str,
    tasks: Vec<apalis_postgres::PgTask<Vec<u8>>>,
) -> Result<(), QueueError> {
    let mut tx = trcker_storage::pg_async_commit_txn(pool).await?;
    apalis_postgres::queries::push_tasks(&mut *tx, queue, tasks).await?;
    tx.commit().await?;
    Ok(())
}

/// Pushes jobs onto the apalis queue that the workers consume.
#[derive(Debug, Clone)]
pub struct JobQueue {
    pool: Pool,
    pushed: Pushed,
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

/// Jobs fail permanently after this many tries; the sweepers and our own
/// per-delivery schedule, not apalis's in-memory retries, carry long retries.
const MAX_ATTEMPTS: usize = 25;

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
