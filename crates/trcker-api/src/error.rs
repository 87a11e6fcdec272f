//! One error type for the whole API, rendered as problem+json (RFC 9457) with a
//! stable machine-readable `code`. Internal details never reach the client;
//! they are logged once, here.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object};
use trcker_services::ServiceError;

/// A bad field of the request.
#[derive(Debug, Clone, Object)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Object)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:trcker:problem:<code>`).
    #[oai(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// Each bad field, for validation problems.
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<Vec<FieldProblem>>,
}

/// `application/problem+json`.
#[derive(Debug, Clone)]
pub struct ProblemJson(pub Problem);

impl Payload for ProblemJson {
    const CONTENT_TYPE: &'static str = "application/problem+json";

    fn schema_ref() -> MetaSchemaRef {
        Problem::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl IntoResponse for ProblemJson {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Response::builder()
            .status(status)
            .content_type(Self::CONTENT_TYPE)
            .body(self.0.to_json_string())
    }
}

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
    /// Well-formed but invalid; each bad field is named.
    #[oai(status = 422)]
    Invalid(ProblemJson),
    #[oai(status = 500)]
    Internal(ProblemJson),
    /// Storage is unavailable; retry.
    #[oai(status = 503)]
    Unavailable(ProblemJson),
}

fn problem(
    status: StatusCode,
    code: &str,
    detail: impl Into<String>,
    errors: Option<Vec<FieldProblem>>,
) -> ProblemJson {
    ProblemJson(Problem {
        kind: format!("urn:trcker:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: detail.into(),
        code: code.to_owned(),
        errors,
    })
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(what) => ApiError::NotFound(problem(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("{what} not found"),
                None,
            )),
            ServiceError::Invalid(fields) => {
                let names: Vec<String> = fields.iter().map(|f| f.field.clone()).collect();
                let errors = fields
                    .into_iter()
                    .map(|f| FieldProblem {
                        field: f.field,
                        message: f.message,
                    })
                    .collect();
                ApiError::Invalid(problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-fields",
                    format!("invalid fields: {}", names.join(", ")),
                    Some(errors),
                ))
            }
            ServiceError::Conflict(msg) => {
                ApiError::Conflict(problem(StatusCode::CONFLICT, "conflict", msg, None))
            }
            ServiceError::Unauthorized(msg) => {
                ApiError::Unauthorized(problem(StatusCode::UNAUTHORIZED, "unauthorized", msg, None))
            }
            ServiceError::Forbidden(msg) => {
                ApiError::Forbidden(problem(StatusCode::FORBIDDEN, "forbidden", msg, None))
            }
            ServiceError::Unavailable => ApiError::Unavailable(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage-unavailable",
                "storage is unavailable; nothing was changed; retry shortly",
                None,
            )),
            ServiceError::Internal(msg) => {
                tracing::error!(error = %msg, "admin API internal error");
                ApiError::Internal(problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                    None,
                ))
            }
        }
    }
}

/// poem-openapi's own request errors (unreadable body, bad parameter, missing
/// auth header) as problems.
fn bad_request(err: poem::Error) -> ApiError {
    let status = err.status();
    let msg = err.to_string();
    if status == StatusCode::UNAUTHORIZED {
        ApiError::Unauthorized(problem(
            status,
            "unauthorized",
            "an Authorization: Bearer <token> header is required",
            None,
        ))
    } else {
        ApiError::BadRequest(problem(StatusCode::BAD_REQUEST, "bad-request", msg, None))
    }
}

/// Any error that escapes the API's routes (unknown path, wrong method) as a problem.
pub async fn catch_all(err: poem::Error) -> Response {
    if err.is_from_response() {
        // Already one of our problem responses (an `ApiError`).
        return err.into_response();
    }
    let status = err.status();
    let code = match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::UNAUTHORIZED => "unauthorized",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    };
    let detail = if status.is_server_error() {
        "internal error".to_owned()
    } else {
        err.to_string()
    };
    problem(status, code, detail, None).into_response()
}
