//! The conversion pipeline, one file per job: [`attribute`] → [`commission`]
//! → [`notify`], each file holding its job's payload, queue, idempotency key
//! and handler; and [`sweep`], the passes that make the chain survive crashes
//! (re-enqueue what has no job) and carry long schedules (notification
//! retries, hold periods).
//!
//! Jobs are at-least-once; their effects are exactly-once. Each step writes
//! under a unique key (conversion per tenant+program+txn_id, ledger entry per
//! conversion+entry_key, delivery per endpoint+conversion+event, attempt per
//! delivery+attempt number) and pushes the next job with an idempotency key, so a
//! step that runs twice changes nothing the second time.
//!
//! Every job carries a batch of one tenant's ids (an inbox group's postbacks,
//! the conversions they made, the deliveries those made), so that each step
//! reads, writes and commits once per batch rather than once per conversion.

pub mod attribute;
pub mod commission;
pub mod notify;
pub mod retention;
pub mod sweep;

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use trcker_domain::status::ConversionStatus;
use trcker_storage::entities::{conversion, postback};
use trcker_storage::queue::{Job, JobQueue, QueueError};
use trcker_storage::sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter};
use trcker_storage::{Store, TenantId, scoped};

use crate::Settings;
use crate::error::StoreError;

/// What of a tenant's pipeline is still to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Accepted postbacks not yet attributed.
    pub postbacks: u64,
    /// Conversions that earn a commission not yet priced.
    pub unpriced: u64,
    /// Pending conversions whose hold is over, not yet approved.
    pub due: u64,
}

impl Backlog {
    pub fn is_empty(&self) -> bool {
        self.postbacks == 0 && self.unpriced == 0 && self.due == 0
    }
}

/// A tenant's backlog, for commands that wait for the pipeline (`trcker seed`).
pub async fn backlog(store: &Store, tenant: &TenantId) -> Result<Backlog, StoreError> {
    let db = &store.conn;
    let postbacks = scoped::<postback::Entity>(tenant)
        .filter(postback::Column::State.eq(postback::State::Received))
        .count(db)
        .await?;
    let unpriced = scoped::<conversion::Entity>(tenant)
        .filter(conversion::Column::PayoutMinor.is_null())
        .filter(conversion::Column::Status.is_in([
            conversion::Status(ConversionStatus::Pending),
            conversion::Status(ConversionStatus::Approved),
        ]))
        .count(db)
        .await?;
    let due = scoped::<conversion::Entity>(tenant)
        .filter(conversion::Column::Status.eq(conversion::Status(ConversionStatus::Pending)))
        .filter(conversion::Column::HoldUntil.lte(chrono::Utc::now()))
        .count(db)
        .await?;
    Ok(Backlog {
        postbacks,
        unpriced,
        due,
    })
}

/// Why a job failed; it runs again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JobError(pub String);

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        JobError(e.to_string())
    }
}

impl From<trcker_storage::sea_orm::DbErr> for JobError {
    fn from(e: trcker_storage::sea_orm::DbErr) -> Self {
        JobError(e.to_string())
    }
}

impl From<QueueError> for JobError {
    fn from(e: QueueError) -> Self {
        JobError(e.to_string())
    }
}

impl From<trcker_storage::StorageError> for JobError {
    fn from(e: trcker_storage::StorageError) -> Self {
        JobError(e.to_string())
    }
}

/// A job type of the pipeline: what its workers run.
pub trait PipelineJob: Job {
    /// Workers of this type per unit of the process's worker concurrency.
    const CONCURRENCY: usize = 1;
    /// What the job's log lines name it by.
    fn describe(&self) -> String;
    /// Runs the job; an error has it run again.
    fn run(&self, pipeline: &Pipeline) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// What registers workers: the workers crate, for each job type of [`register_all`].
pub trait JobRegistry: Sized {
    fn register<J: PipelineJob>(self) -> Self;
}

/// Every job type of the pipeline, registered with the workers: the one list.
pub fn register_all<R: JobRegistry>(registry: R) -> R {
    registry
        .register::<attribute::AttributeJob>()
        .register::<commission::CommissionJob>()
        .register::<notify::NotifyJob>()
}

/// A batch's idempotency key: a lone item keeps its own key (so that a
/// sweeper pushing it again finds it); a batch is named by its first and last
/// items and its size.
fn batch_key<T>(items: &[T], key: impl Fn(&T) -> String) -> String {
    match items {
        [] => String::new(),
        [one] => key(one),
        [first, .., last] => format!("{}..{}+{}", key(first), key(last), items.len()),
    }
}

/// The pipeline's handle: what its jobs and sweepers need.
#[derive(Clone)]
pub struct Pipeline {
    pub(crate) store: Store,
    pub(crate) queue: JobQueue,
    pub(crate) settings: Arc<Settings>,
    /// For outgoing notifications (private targets refused unless allowed).
    pub(crate) http: reqwest::Client,
    pub(crate) gates: Arc<notify::EndpointGates>,
    /// When the IP retention sweep last completed (Unix seconds; 0: not yet
    /// in this process).
    pub(crate) last_ip_sweep: Arc<AtomicI64>,
    /// When the last retention pass ran (the same).
    pub(crate) last_retention: Arc<AtomicI64>,
}

impl Pipeline {
    pub(crate) fn new(
        store: Store,
        queue: JobQueue,
        settings: Arc<Settings>,
    ) -> Result<Self, StoreError> {
        Ok(Pipeline {
            http: notify::http_client(settings.allow_private_targets)?,
            store,
            queue,
            settings,
            gates: Arc::default(),
            last_ip_sweep: Arc::new(AtomicI64::new(0)),
            last_retention: Arc::new(AtomicI64::new(0)),
        })
    }

    /// The database, for the workers' maintenance of the queue.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The queue the jobs run from.
    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }
}
