//! The admin API's one error type: every area's error enum maps onto it
//! exhaustively, with a code from the table in [`crate::problem`]. Internal
//! details never reach the client; they are logged once, here.

use poem::Response;
use poem::http::StatusCode;
use poem_openapi::ApiResponse;
use trcker_services::access_tokens::TokenError;
use trcker_services::affiliates::AffiliateError;
use trcker_services::audit::AuditError;
use trcker_services::auth::AccessError;
use trcker_services::conversions::ConversionError;
use trcker_services::debugger::DebuggerError;
use trcker_services::deliveries::DeliveryError;
use trcker_services::endpoints::EndpointError;
use trcker_services::exchange_rates::RateError;
use trcker_services::integrations::IntegrationError;
use trcker_services::ledger::LedgerError;
use trcker_services::links::LinkError;
use trcker_services::payouts::PayoutError;
use trcker_services::programs::ProgramError;
use trcker_services::reports::ReportError;
use trcker_services::tenants::{AuthError, TenantError};
use trcker_services::{Invalid, StoreError};

use crate::problem::{Code, Problem, ProblemJson};

#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ApiError {
    /// The request could not be read (malformed JSON, wrong types, missing fields).
    #[oai(status = 400)]
    BadRequest(ProblemJson),
    /// Missing, unknown or revoked token.
    #[oai(status = 401)]
    Unauthorized(ProblemJson),
    /// The token may not do this.
    #[oai(status = 403)]
    Forbidden(ProblemJson),
    /// No such resource for this tenant.
    #[oai(status = 404)]
    NotFound(ProblemJson),
    /// Clashes with an existing resource (e.g. a slug in use).
    #[oai(status = 409)]
    Conflict(ProblemJson),
    /// The body is larger than this operation accepts.
    #[oai(status = 413)]
    TooLarge(ProblemJson),
    /// Well-formed but invalid; each bad field is named.
    #[oai(status = 422)]
    Invalid(ProblemJson),
    /// Too many failed authentications from this address; see `Retry-After`.
    #[oai(status = 429)]
    TooManyRequests(ProblemJson),
    #[oai(status = 500)]
    Internal(ProblemJson),
    /// Storage is unavailable; retry.
    #[oai(status = 503)]
    Unavailable(ProblemJson),
}

impl ApiError {
    /// The answer of `code`, with what went wrong in `detail`.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self::from_problem(Problem::new(code, detail))
    }

    fn from_problem(p: Problem) -> Self {
        let json = ProblemJson(p);
        match StatusCode::from_u16(json.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR) {
            StatusCode::BAD_REQUEST => ApiError::BadRequest(json),
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized(json),
            StatusCode::FORBIDDEN => ApiError::Forbidden(json),
            StatusCode::NOT_FOUND => ApiError::NotFound(json),
            StatusCode::CONFLICT => ApiError::Conflict(json),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(json),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::Invalid(json),
            StatusCode::TOO_MANY_REQUESTS => ApiError::TooManyRequests(json),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(json),
            _ => ApiError::Internal(json),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        let code = match e {
            AccessError::OperatorOnly => Code::OperatorOnly,
            AccessError::TenantKeyRequired => Code::TenantKeyRequired,
            AccessError::ReadOnlyKey => Code::ReadOnlyKey,
            AccessError::ApiKeyRequired => Code::ApiKeyRequired,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::from_problem(Problem::fields(Code::InvalidFields, "invalid fields", e.0))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable => ApiError::new(
                Code::StorageUnavailable,
                "storage is unavailable; nothing was changed; retry shortly",
            ),
            StoreError::Internal(msg) => {
                tracing::error!(error = %msg, "admin API internal error");
                ApiError::new(Code::Internal, "internal error")
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::UnknownToken => ApiError::new(Code::Unauthorized, e.to_string()),
            AuthError::Suspended => ApiError::new(Code::TenantSuspended, e.to_string()),
            AuthError::Store(e) => e.into(),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Access(e) => e.into(),
            TokenError::Invalid(e) => e.into(),
            TokenError::Signing => {
                tracing::error!("access token not signed");
                ApiError::new(Code::Internal, "internal error")
            }
            TokenError::Store(e) => e.into(),
        }
    }
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::Access(e) => e.into(),
            TenantError::Invalid(e) => e.into(),
            TenantError::SlugTaken(_) => ApiError::new(Code::TenantSlugTaken, e.to_string()),
            TenantError::NotFound(_) => ApiError::new(Code::TenantNotFound, e.to_string()),
            TenantError::KeyNotFound(_) => ApiError::new(Code::ApiKeyNotFound, e.to_string()),
            TenantError::Store(e) => e.into(),
        }
    }
}

impl From<ProgramError> for ApiError {
    fn from(e: ProgramError) -> Self {
        match e {
            ProgramError::Access(e) => e.into(),
            ProgramError::Invalid(e) => e.into(),
            ProgramError::NotFound(_) => ApiError::new(Code::ProgramNotFound, e.to_string()),
            ProgramError::SlugTaken(_) => ApiError::new(Code::ProgramSlugTaken, e.to_string()),
            ProgramError::PlanNotFound(_) => ApiError::new(Code::PlanNotFound, e.to_string()),
            ProgramError::PlanNotArchivable(_) => {
                ApiError::new(Code::PlanNotArchivable, e.to_string())
            }
            ProgramError::Store(e) => e.into(),
        }
    }
}

impl From<AffiliateError> for ApiError {
    fn from(e: AffiliateError) -> Self {
        match e {
            AffiliateError::Access(e) => e.into(),
            AffiliateError::Invalid(e) => e.into(),
            AffiliateError::NotFound(_) => ApiError::new(Code::AffiliateNotFound, e.to_string()),
            AffiliateError::Taken => ApiError::new(Code::AffiliateTaken, e.to_string()),
            AffiliateError::AlreadyActivated(_) => {
                ApiError::new(Code::AffiliateActivated, e.to_string())
            }
            AffiliateError::Store(e) => e.into(),
        }
    }
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Access(e) => e.into(),
            LinkError::Invalid(e) => e.into(),
            LinkError::NotFound(_) => ApiError::new(Code::LinkNotFound, e.to_string()),
            LinkError::CouponTaken(_) => ApiError::new(Code::CouponTaken, e.to_string()),
            LinkError::CouponNotFound(_) => ApiError::new(Code::CouponNotFound, e.to_string()),
            LinkError::Store(e) => e.into(),
        }
    }
}

impl From<IntegrationError> for ApiError {
    fn from(e: IntegrationError) -> Self {
        match e {
            IntegrationError::Access(e) => e.into(),
            IntegrationError::Invalid(e) => e.into(),
            IntegrationError::NotFound(_) => {
                ApiError::new(Code::IntegrationNotFound, e.to_string())
            }
            IntegrationError::Revoked(_) => ApiError::new(Code::IntegrationRevoked, e.to_string()),
            IntegrationError::Store(e) => e.into(),
        }
    }
}

impl From<DeliveryError> for ApiError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::Access(e) => e.into(),
            DeliveryError::Invalid(e) => e.into(),
            DeliveryError::NotFound(_) => ApiError::new(Code::DeliveryNotFound, e.to_string()),
            DeliveryError::Pending(_) => ApiError::new(Code::DeliveryPending, e.to_string()),
            DeliveryError::Store(e) => e.into(),
        }
    }
}

impl From<EndpointError> for ApiError {
    fn from(e: EndpointError) -> Self {
        match e {
            EndpointError::Access(e) => e.into(),
            EndpointError::Invalid(e) => e.into(),
            EndpointError::NotFound(_) => ApiError::new(Code::EndpointNotFound, e.to_string()),
            EndpointError::Store(e) => e.into(),
        }
    }
}

impl From<ConversionError> for ApiError {
    fn from(e: ConversionError) -> Self {
        match e {
            ConversionError::Access(e) => e.into(),
            ConversionError::Invalid(e) => e.into(),
            ConversionError::NotFound(_) => ApiError::new(Code::ConversionNotFound, e.to_string()),
            ConversionError::MoveRefused(_) => {
                ApiError::new(Code::ConversionMoveRefused, e.to_string())
            }
            ConversionError::Store(e) => e.into(),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Access(e) => e.into(),
            LedgerError::Invalid(e) => e.into(),
            LedgerError::Store(e) => e.into(),
        }
    }
}

impl From<RateError> for ApiError {
    fn from(e: RateError) -> Self {
        match e {
            RateError::Access(e) => e.into(),
            RateError::Invalid(e) => e.into(),
            RateError::Store(e) => e.into(),
        }
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::ProgramNotFound(_) => ApiError::new(Code::ProgramNotFound, e.to_string()),
            ReportError::AffiliateNotFound(_) => {
                ApiError::new(Code::AffiliateNotFound, e.to_string())
            }
            ReportError::Access(e) => e.into(),
            ReportError::Invalid(e) => e.into(),
            ReportError::Store(e) => e.into(),
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Access(e) => e.into(),
            AuditError::Invalid(e) => e.into(),
            AuditError::Store(e) => e.into(),
        }
    }
}

impl From<PayoutError> for ApiError {
    fn from(e: PayoutError) -> Self {
        let code = match e {
            PayoutError::Access(e) => return e.into(),
            PayoutError::Invalid(e) => return e.into(),
            PayoutError::Store(e) => return e.into(),
            PayoutError::NotFound(_) => Code::PayoutNotFound,
            PayoutError::BatchNotFound(_) => Code::PayoutBatchNotFound,
            PayoutError::NotPending(..) => Code::PayoutNotPending,
            PayoutError::Contended => Code::PayoutContended,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<DebuggerError> for ApiError {
    fn from(e: DebuggerError) -> Self {
        match e {
            DebuggerError::Access(e) => e.into(),
            DebuggerError::Invalid(e) => e.into(),
            DebuggerError::IntegrationNotFound(_) => {
                ApiError::new(Code::IntegrationNotFound, e.to_string())
            }
            DebuggerError::PostbackNotFound(_) => {
                ApiError::new(Code::PostbackNotFound, e.to_string())
            }
            DebuggerError::IntegrationRevoked(_) => {
                ApiError::new(Code::IntegrationRevoked, e.to_string())
            }
            DebuggerError::NotUnattributed { .. } => {
                ApiError::new(Code::PostbackNotUnattributed, e.to_string())
            }
            DebuggerError::Store(e) => e.into(),
        }
    }
}

/// poem-openapi's own request errors (unreadable body, bad parameter, missing
/// auth header) as problems.
fn bad_request(err: poem::Error) -> ApiError {
    if err.status() == StatusCode::UNAUTHORIZED {
        ApiError::new(
            Code::Unauthorized,
            "an Authorization: Bearer <token> header is required",
        )
    } else {
        ApiError::new(Code::BadRequest, err.to_string())
    }
}

/// Any error that escapes the API's routes (unknown path, wrong method) as a problem.
pub async fn catch_all(err: poem::Error) -> Response {
    if err.is_from_response() {
        // Already one of our problem responses (an `ApiError`).
        return err.into_response();
    }
    let code = match err.status() {
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::UNAUTHORIZED => Code::Unauthorized,
        s if s.is_server_error() => Code::Internal,
        _ => Code::BadRequest,
    };
    let detail = if code == Code::Internal {
        "internal error".to_owned()
    } else {
        err.to_string()
    };
    Problem::new(code, detail).into_response()
}
