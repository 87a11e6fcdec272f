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
//! Before the group's transaction, one query per program reads the stored
//! conversions of the group's txn_ids: a postback whose status the conversion
//! cannot move to is refused with its reason instead of stored (the pipeline
//! checks again, for postbacks that race).
//!
//! Once a group is committed, the writer answers its requests and hands the
//! group's postbacks to the job pusher, which queues them in the background
//! (so that the next group's commit does not wait for it) as one attribute job
//! per tenant, merging the groups that committed since its previous push.
//! If a push fails, the inbox sweeper queues its postbacks.
//!
//! One writer serves each process, on both databases: SQLite serialises its
//! writes anyway, and on PostgreSQL several writers taking turns made smaller
//! groups (more statements per postback) without taking more postbacks per
//! second (docs/benchmarks.md).
//!
//! The writer runs on a thread of its own, with a single-threaded runtime and,
//! on PostgreSQL, a pool of its own whose sockets that runtime drives: a
//! group's cycle is a chain of wake-ups (a SQLite connection's thread
//! answering, a PostgreSQL reply arriving), and on the shared runtime each
//! waited its turn behind the requests being parsed, while the writer is the
//! one task every postback waits for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};
use trcker_domain::ConversionStatus;
use trcker_storage::batch::{among, pow2_chunks};
use trcker_storage::entities::{conversion, postback};
use trcker_storage::ids::{ConversionId, PostbackId};
use trcker_storage::queue::JobQueue;
use trcker_storage::sea_orm::{
    self, ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
    TryInsertResult,
};
use trcker_storage::{Store, TenantId, scoped};

use crate::error::StoreError;
use crate::pipeline::attribute::AttributeJob;

const MAX_BATCH: usize = 256;
/// Groups up to this size are inserted in one statement of their own size.
const EXACT: usize = 32;
/// Postbacks one attribute job carries at most.
const MAX_JOB: usize = 512;
const QUEUE: usize = 4096;
/// The least time between two pushes of attribute jobs (see [`push_jobs`]).
const PUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
/// The same on SQLite, where each job's fetch, lock and acknowledgement are
/// write transactions behind the one write lock: fewer, larger jobs.
const PUSH_EVERY_SQLITE: std::time::Duration = std::time::Duration::from_millis(50);

/// What the inbox made of an accepted postback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filed {
    /// Stored durably; its attribute job follows.
    New,
    /// Its dedupe key (program, txn_id, status) was stored already.
    Repeat,
    /// The conversion of its txn_id is in a status it cannot move to.
    Refused {
        conversion_id: ConversionId,
        current: ConversionStatus,
    },
}

type Reply = oneshot::Sender<Result<Filed, StoreError>>;

/// Handle to the writer task(s).
#[derive(Debug, Clone)]
pub struct InboxWriter {
    tx: mpsc::Sender<(postback::Model, Reply)>,
    /// Groups committed whose attribute jobs are not pushed yet.
    unpushed: Arc<AtomicUsize>,
    /// The writer's database (on PostgreSQL, its own pool).
    own: Store,
}

impl InboxWriter {
    /// Starts the job pusher on the current Tokio runtime and the writer on a
    /// thread of its own.
    pub fn start(store: Store, queue: JobQueue) -> Result<InboxWriter, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let unpushed = Arc::new(AtomicUsize::new(0));
        let every = if store.is_postgres() {
            PUSH_EVERY
        } else {
            PUSH_EVERY_SQLITE
        };
        tokio::spawn(push_jobs(queue, jobs_rx, unpushed.clone(), every));
        // Its connections are opened by their first user, the writer's runtime.
        let own = store.for_own_runtime(2);
        let (writer_store, writer_unpushed) = (own.clone(), unpushed.clone());
        std::thread::Builder::new()
            .name("inbox-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run(writer_store, jobs_tx, rx, writer_unpushed)),
                    Err(e) => tracing::error!(error = %e, "the inbox writer could not start"),
                }
            })
            .map_err(|e| StoreError::Internal(format!("inbox writer thread: {e}")))?;
        Ok(InboxWriter { tx, unpushed, own })
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

    /// Closes the writer's own PostgreSQL connections (at shutdown, once no
    /// request can come; on SQLite the writer uses the process's pool, which
    /// its owner closes).
    pub async fn close(&self) {
        if self.own.is_postgres() {
            self.own.close().await;
        }
    }

    /// Stores an accepted postback durably, unless it repeats a stored one or
    /// its conversion cannot move to its status (see [`Filed`]).
    pub async fn insert(&self, row: postback::Model) -> Result<Filed, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((row, reply))
            .await
            .map_err(|_| StoreError::Internal("the inbox writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("the inbox writer dropped a postback".into()))?
    }
}

async fn run(
    store: Store,
    jobs_tx: mpsc::UnboundedSender<AttributeJob>,
    mut rx: mpsc::Receiver<(postback::Model, Reply)>,
    unpushed: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Whatever waits now is the next group.
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        match write(&store, &batch).await {
            Ok(inserted) => {
                // One attribute job per tenant of the group.
                let mut jobs: Vec<AttributeJob> = Vec::new();
                for ((row, reply), filed) in batch.drain(..).zip(inserted) {
                    if filed == Filed::New {
                        match jobs.iter_mut().find(|j| j.tenant_id == row.tenant_id) {
                            Some(job) => job.postback_ids.push(row.id),
                            None => jobs.push(AttributeJob::one(row.tenant_id, row.id)),
                        }
                    }
                    let _ = reply.send(Ok(filed));
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
                        StoreError::Unavailable
                    } else {
                        StoreError::Internal(e.to_string())
                    };
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
}

/// Queues the attribute jobs of committed groups: whatever groups committed
/// since the previous push go in the next, merged per tenant (up to
/// [`MAX_JOB`] postbacks a job), so that under load a job carries several
/// groups and the workers fetch, run and acknowledge fewer, larger jobs. Under
/// load (the previous push carried several groups) a push follows the previous
/// one by `every` ([`PUSH_EVERY`], [`PUSH_EVERY_SQLITE`]) at least, so that
/// each job carries that long's postbacks; a postback arriving alone is queued
/// at once.
async fn push_jobs(
    queue: JobQueue,
    mut rx: mpsc::UnboundedReceiver<AttributeJob>,
    unpushed: Arc<AtomicUsize>,
    every: std::time::Duration,
) {
    let mut waiting = Vec::new();
    // The previous push, when it carried several groups (under load).
    let mut last_busy_push: Option<tokio::time::Instant> = None;
    while rx.recv_many(&mut waiting, 1024).await > 0 {
        if let Some(last) = last_busy_push {
            tokio::time::sleep_until(last + every).await;
            while waiting.len() < 4096
                && let Ok(group) = rx.try_recv()
            {
                waiting.push(group);
            }
        }
        let groups = waiting.len();
        last_busy_push = (groups > 1).then(tokio::time::Instant::now);
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
) -> Result<Vec<Filed>, sea_orm::DbErr> {
    let mut refused = refusals(store, batch).await?;
    let mut order: Vec<usize> = (0..batch.len())
        .filter(|i| !refused.contains_key(i))
        .collect();
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
            Err(e) => return Err(e),
            Ok(new) => {
                return Ok(batch
                    .iter()
                    .enumerate()
                    .map(|(i, (row, _))| match refused.remove(&i) {
                        Some(refusal) => refusal,
                        None if new.contains(&row.id) => Filed::New,
                        None => Filed::Repeat,
                    })
                    .collect());
            }
        }
    }
}

/// The group's postbacks whose conversion cannot move to their status, by
/// position: one query per tenant and program for the
/// conversions the group names.
async fn refusals(
    store: &Store,
    batch: &[(postback::Model, Reply)],
) -> Result<HashMap<usize, Filed>, sea_orm::DbErr> {
    // (tenant, program) → (position, txn_id, event, status)
    type Named<'a> = Vec<(usize, &'a str, &'a str, ConversionStatus)>;
    let mut by_program: BTreeMap<(&TenantId, &str), Named> = BTreeMap::new();
    for (i, (row, _)) in batch.iter().enumerate() {
        let status = row
            .status_param
            .as_deref()
            .and_then(|s| ConversionStatus::parse(s).ok());
        if let (Some(txn_id), Some(status)) = (row.txn_id.as_deref(), status) {
            let event = row
                .dedupe_key
                .as_deref()
                .map_or("sale", super::event_of_dedupe_key);
            by_program
                .entry((&row.tenant_id, row.program_id.as_str()))
                .or_default()
                .push((i, txn_id, event, status));
        }
    }
    let mut refused = HashMap::new();
    for ((tenant, program), rows) in by_program {
        let mut txn_ids: Vec<&str> = rows.iter().map(|(_, t, _, _)| *t).collect();
        txn_ids.sort_unstable();
        txn_ids.dedup();
        let stored: HashMap<(String, String), (ConversionId, conversion::Status)> =
            scoped::<conversion::Entity>(tenant)
                .filter(conversion::Column::ProgramId.eq(program))
                .filter(among(
                    store.conn.get_database_backend(),
                    conversion::Column::TxnId,
                    txn_ids,
                ))
                .select_only()
                .columns([
                    conversion::Column::TxnId,
                    conversion::Column::Event,
                    conversion::Column::Id,
                    conversion::Column::Status,
                ])
                .into_tuple::<(String, String, ConversionId, conversion::Status)>()
                .all(&store.conn)
                .await?
                .into_iter()
                .map(|(t, e, id, s)| ((t, e), (id, s)))
                .collect();
        for (i, txn_id, event, status) in rows {
            if let Some((id, conversion::Status(current))) =
                stored.get(&(txn_id.to_owned(), event.to_owned()))
                && *current != status
                && !current.can_move_to(status)
            {
                refused.insert(
                    i,
                    Filed::Refused {
                        conversion_id: id.clone(),
                        current: *current,
                    },
                );
            }
        }
    }
    Ok(refused)
}

fn is_deadlock(e: &sea_orm::DbErr) -> bool {
    let text = e.to_string();
    text.contains("deadlock detected") || text.contains("could not serialize access")
}

/// Inserts the group's rows in `order`: the ids of the rows that were new.
async fn write_in_order(
    store: &Store,
    batch: &[(postback::Model, Reply)],
    order: &[usize],
) -> Result<HashSet<PostbackId>, sea_orm::DbErr> {
    if order.is_empty() {
        return Ok(HashSet::new());
    }
    // A group of up to `EXACT` postbacks (what a few dozen concurrent
    // merchants make) is one statement of its own size, run on its own: a
    // single statement is its own transaction, as durable at its answer as an
    // explicit one, and it saves the BEGIN and the COMMIT (two round trips to
    // PostgreSQL, two turns on a SQLite connection's thread). Larger groups go
    // in chunks of a few sizes, so that groups share their statements, inside
    // one transaction. (Power-of-two chunks for every group cost two to four
    // statements for most groups.)
    if order.len() <= EXACT {
        return insert_rows(store.writer(), batch, order).await;
    }
    let txn = store.write_txn().await?;
    let mut new: HashSet<PostbackId> = HashSet::new();
    for chunk in pow2_chunks(order, 256) {
        new.extend(insert_rows(&txn, batch, chunk).await?);
    }
    txn.commit().await?;
    Ok(new)
}

/// One multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING id`: the ids of
/// the rows that were new.
async fn insert_rows<C: sea_orm::ConnectionTrait>(
    db: &C,
    batch: &[(postback::Model, Reply)],
    rows: &[usize],
) -> Result<HashSet<PostbackId>, sea_orm::DbErr> {
    let models = rows
        .iter()
        .map(|&i| batch[i].0.clone().into_active_model().reset_all());
    let result = postback::Entity::insert_many(models)
        .on_conflict_do_nothing_on([postback::Column::TenantId, postback::Column::DedupeKey])
        .exec_with_returning_keys(db)
        .await?;
    Ok(match result {
        TryInsertResult::Inserted(ids) => ids.into_iter().collect(),
        _ => HashSet::new(),
    })
}
