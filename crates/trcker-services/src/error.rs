//! The error pieces every area shares: a database that failed, and input
//! whose fields are wrong. Each area's own error enum wraps them beside the
//! variants that say what went wrong in that area.

use trcker_domain::FieldError;
use trcker_storage::StorageError;
use trcker_storage::queue::QueueError;
use trcker_storage::sea_orm::DbErr;

/// The database (or the queue on it) failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// It cannot be reached right now: the client should retry.
    #[error("storage unavailable")]
    Unavailable,
    /// Anything else: a bug or a broken row, logged where it is answered.
    #[error("storage: {0}")]
    Internal(String),
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        if trcker_storage::is_unavailable(&e) {
            StoreError::Unavailable
        } else {
            StoreError::Internal(e.to_string())
        }
    }
}

impl From<QueueError> for StoreError {
    fn from(e: QueueError) -> Self {
        StoreError::Internal(e.to_string())
    }
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Db(e) => e.into(),
            other => StoreError::Internal(other.to_string()),
        }
    }
}

/// The input is wrong; each bad field is named.
#[derive(Debug, thiserror::Error)]
#[error("invalid {}", .0.iter().map(|f| f.field.as_str()).collect::<Vec<_>>().join(", "))]
pub struct Invalid(pub Vec<FieldError>);

impl Invalid {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<Vec<FieldError>> for Invalid {
    fn from(fields: Vec<FieldError>) -> Self {
        Invalid(fields)
    }
}

/// `From` the database's errors for an area's error enum, through its
/// `Store` variant.
macro_rules! from_store {
    ($error:ty) => {
        impl From<trcker_storage::sea_orm::DbErr> for $error {
            fn from(e: trcker_storage::sea_orm::DbErr) -> Self {
                <$error>::Store(e.into())
            }
        }
    };
}
pub(crate) use from_store;
