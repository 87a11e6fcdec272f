//! Group commit for the postback inbox.
//!
//! Accepted postbacks must be durable before we answer, and a durable commit
//! costs a disk sync. The inbox writer commits postbacks in groups: it takes
//! whatever requests are waiting (up to `MAX_BATCH`), writes them in one
//! transaction, and answers each once that transaction commits. A lone postback
//! is written at once (no timer); under load, the requests that arrive while one
//! group commits form the next group, so one sync serves many requests.
//!
//! Each row is inserted with `ON CONFLICT (tenant_id, dedupe_key) DO NOTHING`, so
//! a repeat inside a group, or of an earlier postback, is reported as such.
//!
//! Once a group is committed, the writer answers its requests and hands the
//! group's postbacks to the job pusher, which queues them in the background
//! (so that the next group's commit does not wait for it) as one attribute job
//! per tenant, merging the groups that committed while its previous push ran.
//! If a push fails, the inbox sweeper queues its postbacks.
//!
//! On PostgreSQL several writers take turns at the channel, so that groups
//! commit side by side (the server syncs concurrent commits together); SQLite
//! has one writer, since its writes are serialised by its lock anyway.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, TryInsertResult};
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use trcker_storage::entities::postback;
use trcker_storage::{Store, sea_orm};

use crate::ServiceError;
use crate::queue::{AttributeJob, JobQueue};

const MAX_BATCH: usize = 256;
/// Postbacks one attribute job carries at most.
const MAX_JOB: usize = 512;
const QUEUE: usize = 4096;
/// Groups committing at the same time on PostgreSQL.
const POSTGRES_WRITERS: usize = 4;

type Reply = oneshot::Sender<Result<bool, ServiceError>>;

/// Handle to the writer task(s).
#[derive(Debug, Clone)]
pub struct InboxWriter {
    tx: mpsc::Sender<(postback::Model, Reply)>,
    /// Groups committed whose attribute jobs are not pushed yet.
    unpushed: Arc<AtomicUsize>,
}

impl InboxWriter {
    /// Starts the writer(s) on the current Tokio runtime.
    pub fn start(store: Store, queue: JobQueue) -> InboxWriter {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let writers = if store.is_postgres() {
            POSTGRES_WRITERS
        } else {
            1
        };
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let unpushed = Arc::new(AtomicUsize::new(0));
        tokio::spawn(push_jobs(queue, jobs_rx, unpushed.clone()));
        for _ in 0..writers {
            tokio::spawn(run(
                store.clone(),
                jobs_tx.clone(),
                rx.clone(),
                unpushed.clone(),
            ));
        }
        InboxWriter { tx, unpushed }
    }

    /// Waits (up to `bound`) until the attribute jobs of every committed group
    /// are pushed: at shutdown, before the pool closes. Whatever is left is
    /// queued by the inbox sweeper.
    pub async fn drain(&self, bound: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        while self.unpushed.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    /// Stores an accepted postback durably; `Ok(false)` when its dedupe key
    /// exists already (a repeat).
    pub async fn insert(&self, row: postback::Model) -> Result<bool, ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((row, reply))
            .await
            .map_err(|_| ServiceError::Internal("the inbox writer stopped".into()))?;
        answer
            .await
            .map_err(|_| ServiceError::Internal("the inbox writer dropped a postback".into()))?
    }
}

async fn run(
    store: Store,
    jobs_tx: mpsc::UnboundedSender<AttributeJob>,
    rx: Arc<Mutex<mpsc::Receiver<(postback::Model, Reply)>>>,
    unpushed: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Whatever waits now is this writer's group; the others take the next.
        if rx.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        match write(&store, &batch).await {
            Ok(inserted) => {
                // One attribute job per tenant of the group.
                let mut jobs: Vec<AttributeJob> = Vec::new();
                for ((row, reply), ok) in batch.drain(..).zip(inserted) {
                    if ok {
                        match jobs.iter_mut().find(|j| j.tenant_id == row.tenant_id) {
                            Some(job) => job.postback_ids.push(row.id),
                            None => jobs.push(AttributeJob::one(row.tenant_id, row.id)),
                        }
                    }
                    let _ = reply.send(Ok(ok));
                }
                for job in jobs {
                    unpushed.fetch_add(1, Ordering::AcqRel);
                    if jobs_tx.send(job).is_err() {
                        unpushed.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
            Err(e) => {
                let unavailable = trcker_storage::is_unavailable(&e);
                if !unavailable {
                    tracing::error!(error = %e, rows = batch.len(), "inbox group commit failed");
                }
                for (_, reply) in batch.drain(..) {
                    let err = if unavailable {
                        ServiceError::Unavailable
                    } else {
                        ServiceError::Internal(e.to_string())
                    };
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
}

/// Queues the attribute jobs of committed groups: whatever groups committed
/// while the previous push ran go in the next, merged per tenant (up to
/// [`MAX_JOB`] postbacks a job), so that under load a job carries several
/// groups and the workers fetch, run and acknowledge fewer, larger jobs.
async fn push_jobs(
    queue: JobQueue,
    mut rx: mpsc::UnboundedReceiver<AttributeJob>,
    unpushed: Arc<AtomicUsize>,
) {
    let mut waiting = Vec::new();
    while rx.recv_many(&mut waiting, 1024).await > 0 {
        let groups = waiting.len();
        let mut jobs: Vec<AttributeJob> = Vec::new();
        for group in waiting.drain(..) {
            match jobs
                .iter_mut()
                .find(|j| j.tenant_id == group.tenant_id && j.postback_ids.len() < MAX_JOB)
            {
                Some(job) => job.postback_ids.extend(group.postback_ids),
                None => jobs.push(group),
            }
        }
        if let Err(e) = queue.push_all(&jobs).await {
            tracing::warn!(error = %e, jobs = jobs.len(), "enqueue failed; the inbox sweeper will queue them");
        }
        unpushed.fetch_sub(groups, Ordering::AcqRel);
    }
}

/// Writes one group in one transaction. Rows go in in dedupe-key order, so
/// that two receivers committing groups that share keys (a merchant sending the
/// same postback to both at once) take their locks in the same order instead of
/// deadlocking; a group that still meets a deadlock is written again.
async fn write(
    store: &Store,
    batch: &[(postback::Model, Reply)],
) -> Result<Vec<bool>, sea_orm::DbErr> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&batch[a].0, &batch[b].0);
        (&a.tenant_id, &a.dedupe_key).cmp(&(&b.tenant_id, &b.dedupe_key))
    });
    let mut tries = 0;
    loop {
        tries += 1;
        match write_in_order(store, batch, &order).await {
            Err(e) if tries < 3 && is_deadlock(&e) => {
                tracing::warn!(error = %e, "inbox group met a deadlock; writing it again");
            }
            other => return other,
        }
    }
}

fn is_deadlock(e: &sea_orm::DbErr) -> bool {
    let text = e.to_string();
    text.contains("deadlock detected") || text.contains("could not serialize access")
}

/// Multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING id`s (a few round trips
/// for the whole group); the ids returned are the rows that were new.
async fn write_in_order(
    store: &Store,
    batch: &[(postback::Model, Reply)],
    order: &[usize],
) -> Result<Vec<bool>, sea_orm::DbErr> {
    let txn = store.write_txn().await?;
    let mut new: HashSet<String> = HashSet::new();
    // In chunks of a few sizes, so that groups share their statements.
    for chunk in crate::util::pow2_chunks(order, 256) {
        let rows = chunk
            .iter()
            .map(|&i| batch[i].0.clone().into_active_model().reset_all());
        let result = postback::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([postback::Column::TenantId, postback::Column::DedupeKey])
            .exec_with_returning_keys(&txn)
            .await?;
        if let TryInsertResult::Inserted(ids) = result {
            new.extend(ids);
        }
    }
    txn.commit().await?;
    Ok(batch.iter().map(|(row, _)| new.contains(&row.id)).collect())
}
