//! The conversion pipeline, one module per job:
//! attribute → commission → notify, plus the sweepers that make the chain
//! survive crashes (re-enqueue what has no job) and carry long schedules
//! (notification retries, hold periods).
//!
//! Jobs are at-least-once; their effects are exactly-once. Each step writes
//! under a unique key (conversion per tenant+program+txn_id, ledger entry per
//! conversion+entry_key, delivery per endpoint+conversion+event, attempt per
//! delivery+attempt number) and pushes the next job with an idempotency key, so a
//! step that runs twice changes nothing the second time.

pub mod attribute;
pub mod commission;
pub mod notify;
pub mod sweep;

/// Why a job failed; apalis retries it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JobError(pub String);

impl From<crate::ServiceError> for JobError {
    fn from(e: crate::ServiceError) -> Self {
        JobError(e.to_string())
    }
}

impl From<trcker_storage::sea_orm::DbErr> for JobError {
    fn from(e: trcker_storage::sea_orm::DbErr) -> Self {
        JobError(e.to_string())
    }
}

impl From<crate::queue::QueueError> for JobError {
    fn from(e: crate::queue::QueueError) -> Self {
        JobError(e.to_string())
    }
}
