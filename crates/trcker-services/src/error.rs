use trcker_domain::postback::FieldError;
use trcker_storage::sea_orm::DbErr;

/// What can go wrong in a use case, in terms the edges can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The thing does not exist for this tenant (another tenant's counts as missing).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The input is wrong; each bad field is named.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// The input is well-formed but clashes with what exists.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The database cannot be reached: the client should retry.
    #[error("storage unavailable")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ServiceError::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<DbErr> for ServiceError {
    fn from(e: DbErr) -> Self {
        if trcker_storage::is_unavailable(&e) {
            ServiceError::Unavailable
        } else {
            ServiceError::Internal(e.to_string())
        }
    }
}

impl From<crate::queue::QueueError> for ServiceError {
    fn from(e: crate::queue::QueueError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}
