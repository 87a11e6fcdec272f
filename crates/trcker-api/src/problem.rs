//! Every error answer of Trcker's HTTP APIs, the admin API's and the postback
//! receiver's: one table of stable machine codes, each with its HTTP status,
//! what it means and what to do, and one RFC 9457 problem+json builder.
//!
//! `docs/errors.md` is this table rendered (see [`markdown`]); a test checks
//! that the two agree.

use poem::http::{StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::Object;
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use trcker_domain::FieldError;

/// Where a code is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    AdminApi,
    Receiver,
    Both,
}

impl Surface {
    fn as_str(self) -> &'static str {
        match self {
            Surface::AdminApi => "admin API",
            Surface::Receiver => "postback receiver",
            Surface::Both => "both",
        }
    }
}

macro_rules! codes {
    ($(
        $(#[$meta:meta])*
        $variant:ident = $code:literal, $status:literal, $surface:ident,
            $meaning:literal, $remedy:literal;
    )+) => {
        /// A stable machine code of an error answer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($(#[$meta])* $variant),+
        }

        impl Code {
            /// Every code, in the order of `docs/errors.md`.
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            /// The code as answers carry it (`program-slug-taken`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code),+
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(Code::$variant => StatusCode::from_u16($status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)),+
                }
            }

            pub fn surface(self) -> Surface {
                match self {
                    $(Code::$variant => Surface::$surface),+
                }
            }

            /// What went wrong.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Code::$variant => $meaning),+
                }
            }

            /// What the caller can do about it.
            pub fn remedy(self) -> &'static str {
                match self {
                    $(Code::$variant => $remedy),+
                }
            }
        }
    };
}

codes! {
    BadRequest = "bad-request", 400, AdminApi,
        "The request could not be read: malformed JSON, a wrong type, a missing field or parameter.",
        "Fix the request to match the operation's schema in the OpenAPI document.";
    Unauthorized = "unauthorized", 401, AdminApi,
        "No token, or one that is unknown or revoked.",
        "Send `Authorization: Bearer <token>` with the operator token or a valid tenant API key.";
    OperatorOnly = "operator-only", 403, AdminApi,
        "Only the operator token can do this (create tenants).",
        "Call with the operator token.";
    TenantKeyRequired = "tenant-key-required", 403, AdminApi,
        "The operator token manages tenants only; tenant resources need a tenant's API key.",
        "Call with the tenant's API key.";
    ReadOnlyKey = "read-only-key", 403, AdminApi,
        "The API key is read-only and the call changes something.",
        "Use an admin API key for changes.";
    ApiKeyRequired = "api-key-required", 403, AdminApi,
        "An access token is issued for an API key, not for another access token.",
        "Call `POST /auth/token` with the API key itself.";
    NotFound = "not-found", 404, AdminApi,
        "No operation at this path.",
        "Check the path against the OpenAPI document (`/api/v1/openapi.json`).";
    MethodNotAllowed = "method-not-allowed", 405, AdminApi,
        "The path exists, but not with this method.",
        "Check the method against the OpenAPI document.";
    InvalidFields = "invalid-fields", 422, AdminApi,
        "The request is well-formed but some fields are wrong; `errors` names each with the reason. Nothing was changed.",
        "Fix the fields named in `errors` and send the request again.";
    TenantSlugTaken = "tenant-slug-taken", 409, AdminApi,
        "Another tenant has this slug (the `{brand}` of public URLs).",
        "Choose another slug.";
    TenantSuspended = "tenant-suspended", 403, Both,
        "The operator has suspended this tenant: its API keys and postbacks are refused (a postback's detail quotes the reason), its links record nothing, its portal is closed. Nothing of it is deleted.",
        "Ask the operator of this installation to reinstate the tenant (`POST /api/v1/tenants/{id}/reinstate` or `trcker tenant resume <slug>`); postbacks refused meanwhile must be sent again.";
    TenantNotFound = "tenant-not-found", 404, AdminApi,
        "No tenant has this slug or id.",
        "Check the slug; the operator lists tenants with `trcker tenant list`.";
    ApiKeyNotFound = "api-key-not-found", 404, AdminApi,
        "This tenant has no API key with this id.",
        "Check the key's id (`trcker api-key list <tenant>`).";
    ProgramNotFound = "program-not-found", 404, AdminApi,
        "This tenant has no program with this id (another tenant's id answers the same).",
        "Check the id; `GET /api/v1/programs` lists the tenant's programs.";
    ProgramSlugTaken = "program-slug-taken", 409, AdminApi,
        "Another program of this tenant has this slug (the `{offer}` of public URLs).",
        "Choose another slug, or change the existing program.";
    PlanNotFound = "commission-plan-not-found", 404, AdminApi,
        "This tenant has no commission plan with this id.",
        "Check the id; `GET /api/v1/programs/{id}/commission-plans` lists a program's plans in force.";
    PlanNotArchivable = "commission-plan-not-archivable", 409, AdminApi,
        "The plan is the program's own sale plan (its offer needs one), or it is no longer in force.",
        "Change the program's sale plan by adding a new version; read the plan to see whether it is still in force.";
    AffiliateNotFound = "affiliate-not-found", 404, AdminApi,
        "This tenant has no affiliate with this id.",
        "Check the id; `GET /api/v1/affiliates` lists the tenant's affiliates.";
    AffiliateTaken = "affiliate-taken", 409, AdminApi,
        "Another affiliate of this tenant has this slug or email.",
        "Choose another slug, or use the existing affiliate.";
    AffiliateActivated = "affiliate-activated", 409, AdminApi,
        "The affiliate accepted an invitation already and signs in with a password: there is nothing to invite again.",
        "The affiliate signs in at the portal; a forgotten password is reset there.";
    DeliveryNotFound = "delivery-not-found", 404, AdminApi,
        "This tenant has no notification delivery with this id.",
        "Check the id; `GET /api/v1/deliveries` lists the tenant's deliveries.";
    DeliveryPending = "delivery-pending", 409, AdminApi,
        "The delivery is pending: its next attempt is scheduled already, so there is nothing to replay.",
        "Wait for the attempt (`GET /api/v1/deliveries/{id}` shows when it is due), or replay it once it is delivered or dead.";
    EndpointNotFound = "endpoint-not-found", 404, AdminApi,
        "This tenant has no endpoint with this id (or it was deleted).",
        "Check the id; `GET /api/v1/endpoints` lists the tenant's endpoints.";
    IntegrationNotFound = "integration-not-found", 404, AdminApi,
        "This tenant has no integration with this id.",
        "Check the id; `GET /api/v1/integrations` lists the tenant's integrations.";
    IntegrationRevoked = "integration-revoked", 409, AdminApi,
        "The integration is revoked, and revocation is final: it cannot be made active again or given a new secret.",
        "Create a new integration; to replace a secret without stopping postbacks, rotate it before revoking (`POST /api/v1/integrations/{id}/rotate-secret`).";
    LinkNotFound = "link-not-found", 404, AdminApi,
        "This tenant has no tracking link with this id.",
        "Check the id; `GET /api/v1/links` lists the tenant's links.";
    CouponNotFound = "coupon-not-found", 404, AdminApi,
        "This tenant has no coupon with this id.",
        "Check the id; `GET /api/v1/coupons` lists the tenant's coupons.";
    CouponTaken = "coupon-taken", 409, AdminApi,
        "The program has a coupon with this code already.",
        "Choose another code.";
    ConversionNotFound = "conversion-not-found", 404, AdminApi,
        "This tenant has no conversion with this id.",
        "Check the id; `GET /api/v1/conversions` lists and filters conversions.";
    ConversionMoveRefused = "conversion-move-refused", 409, AdminApi,
        "The conversion's status does not allow this review (a rejected, refunded or charged-back conversion is final; an approved one can only be reversed).",
        "Read the conversion's status; the detail names it and the move that was refused.";
    PayoutNotFound = "payout-not-found", 404, AdminApi,
        "This tenant has no payout with this id.",
        "Check the id; `GET /api/v1/payouts` lists payouts.";
    PayoutBatchNotFound = "payout-batch-not-found", 404, AdminApi,
        "This tenant has no payout batch with this id (a batch that paid nobody has nothing to export).",
        "Check the id that `POST /api/v1/payouts` answered.";
    PayoutNotPending = "payout-not-pending", 409, AdminApi,
        "The payout was marked paid or failed already; both are final.",
        "Read the payout; a failed payout's entries go into the next batch.";
    PayoutContended = "payout-contended", 409, AdminApi,
        "Other payout batches created at the same moment kept claiming the same ledger entries.",
        "Retry: the next batch takes whatever the others left.";
    PostbackNotFound = "postback-not-found", 404, AdminApi,
        "This tenant has no postback with this id.",
        "Check the id in the integration's postback log.";
    PostbackNotUnattributed = "postback-not-unattributed", 409, AdminApi,
        "Only an unattributed postback can be attributed again; this one was attributed or is still queued.",
        "Look at the postback's state and reason in the postback log.";
    TooManyAuthFailures = "too-many-auth-failures", 429, Both,
        "This address sent too many wrong API keys or postback secrets within a minute (20); everything it sends is refused until the minute is over. Other addresses are not affected.",
        "Fix the key or secret, then retry after the seconds of the `Retry-After` header.";
    IdempotencyKeyInvalid = "idempotency-key-invalid", 400, AdminApi,
        "The `Idempotency-Key` header is empty, longer than 255 characters, or has characters other than visible ASCII.",
        "Send a unique key per request, such as a UUID.";
    IdempotencyKeyReused = "idempotency-key-reused", 422, AdminApi,
        "This `Idempotency-Key` was used in the last 24 hours for another request (another method, path, query or body). Nothing was changed.",
        "Use a new key for a new request; send a retry exactly as the first request.";
    IdempotencyKeyInUse = "idempotency-key-in-use", 409, AdminApi,
        "A request with this `Idempotency-Key` is still running. Nothing was changed by this one.",
        "Retry in a moment: you get the first request's answer.";
    MissingSecret = "missing-secret", 401, Receiver,
        "The postback carries no secret.",
        "Send the integration's secret as `secret=` or in the `X-Postback-Secret` header (the integration's postback URL has it).";
    InvalidSecret = "invalid-secret", 401, Receiver,
        "The secret is not an active integration's: wrong, or its integration was revoked.",
        "Use the postback URL of an active integration.";
    InvalidTestFireToken = "invalid-test-fire-token", 401, Receiver,
        "The test-fire token is invalid or expired (they last 60 seconds).",
        "Fire again from `POST /api/v1/integrations/{id}/test-fire`.";
    SecretForOtherOffer = "secret-for-other-offer", 401, Receiver,
        "The secret belongs to an integration of another offer than the URL's.",
        "Use the postback URL the integration was created with.";
    UnknownBrand = "unknown-brand", 404, Receiver,
        "No tenant has the `{brand}` of the postback URL.",
        "Use the postback URL the integration was created with.";
    UnknownOffer = "unknown-offer", 404, Receiver,
        "The tenant has no program with the `{offer}` of the postback URL.",
        "Use the postback URL the integration was created with.";
    IpNotAllowed = "ip-not-allowed", 403, Receiver,
        "The request's source address is not on the integration's IP allow-list.",
        "Send from an allowed address, or change the integration's `ip_allowlist`.";
    BadSignature = "bad-signature", 403, Receiver,
        "The integration requires a signature and it is missing, expired (replay window) or wrong.",
        "Sign the request as the postback integration guide shows (`X-Trcker-Timestamp`, `X-Trcker-Signature`).";
    RateLimited = "rate-limited", 429, Receiver,
        "The integration's rate limit is exceeded. Nothing was stored.",
        "Retry after the seconds of the `Retry-After` header.";
    InvalidParameters = "invalid-parameters", 422, Receiver,
        "Some postback parameters are wrong; `errors` names each with the reason. Nothing was stored.",
        "Fix the parameters named in `errors`; the postback log shows what was received.";
    ConflictingDuplicate = "conflicting-duplicate", 409, Receiver,
        "This txn_id and status were accepted already with other values (amount, payout, currency, click or coupon). The first postback counts.",
        "To change a sale, send a refund for it and a new txn_id.";
    InvalidBody = "invalid-body", 400, Receiver,
        "The postback's JSON body is not valid JSON, or not an object.",
        "Send a JSON object, a form body, or query parameters.";
    BodyTooLarge = "body-too-large", 413, Both,
        "The request's body is larger than the route takes: 64 KiB for a postback, 256 KiB for the admin API, none for routes that read no body. The rest was not read and the connection is closed.",
        "Send only the parameters or fields the operation takes; split a bulk change into several requests.";
    BodyTimeout = "body-timeout", 408, Both,
        "The request's body did not arrive within 30 seconds of its headers.",
        "Send the body at once; retry the request.";
    StorageUnavailable = "storage-unavailable", 503, Both,
        "The database cannot be reached. Nothing was stored or changed.",
        "Retry shortly (postbacks: after the `Retry-After` seconds); it is safe to send the same request again.";
    Internal = "internal", 500, Both,
        "Something went wrong in Trcker; the details are in its log. Nothing was acknowledged.",
        "Retry; if it persists, tell the operator the time of the request.";
}

/// The table as `docs/errors.md` has it.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         Every error answer of Trcker's admin API (`/api/v1`) and postback receiver\n\
         (`/api/postback/…`, `/postback`) is an RFC 9457 problem+json document:\n\n\
         ```json\n\
         {\"type\": \"urn:trcker:problem:invalid-fields\", \"title\": \"Unprocessable Entity\", \"status\": 422,\n \
         \"detail\": \"invalid fields: slug\", \"code\": \"invalid-fields\",\n \
         \"errors\": [{\"field\": \"slug\", \"message\": \"may contain only lower-case letters a-z, digits and '-', …\"}],\n \
         \"request_id\": \"req_01m8x4c7tq9v2s5k3h6j8n0wzb\"}\n\
         ```\n\n\
         `code` is stable: program against it, not against `detail` (which says more, for\n\
         people) or the status (several codes share one). `errors` is there when fields\n\
         or parameters are wrong. `request_id` is the request's id, the same as in the\n\
         answer's `X-Request-Id` header and in every log line the request caused: quote\n\
         it when asking the operator about an answer. Another tenant's resource answers\n\
         exactly as a missing one does.\n\n\
         This file is generated from the table in `crates/trcker-api/src/problem.rs`;\n\
         a test fails when they differ (it prints the command that writes this file).\n\n\
         | code | status | where | what it means | what to do |\n\
         | --- | ---: | --- | --- | --- |\n",
    );
    for code in Code::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            code.as_str(),
            code.status().as_u16(),
            code.surface().as_str(),
            code.meaning(),
            code.remedy()
        ));
    }
    out
}

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
    /// Stable machine-readable code (see docs/errors.md).
    pub code: String,
    /// Each bad field, for validation problems.
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<Vec<FieldProblem>>,
    /// The request's id, as in its `X-Request-Id` header and in the logs:
    /// quote it when asking about this answer.
    #[oai(skip_serializing_if_is_none)]
    pub request_id: Option<String>,
}

tokio::task_local! {
    /// The id of the request being answered.
    static REQUEST_ID: String;
}

/// Runs `answer` as the answer to the request `id`: every problem it
/// answers with names that id.
pub async fn with_request_id<F: std::future::Future>(id: String, answer: F) -> F::Output {
    REQUEST_ID.scope(id, answer).await
}

impl Problem {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        let status = code.status();
        Problem {
            kind: format!("urn:trcker:problem:{}", code.as_str()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.as_str().to_owned(),
            errors: None,
            request_id: None,
        }
    }

    /// A problem of bad fields, naming each in `detail` and `errors`.
    pub fn fields(code: Code, what: &str, fields: Vec<FieldError>) -> Self {
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        let detail = format!("{what}: {}", names.join(", "));
        Problem {
            errors: Some(
                fields
                    .into_iter()
                    .map(|f| FieldProblem {
                        field: f.field,
                        message: f.message,
                    })
                    .collect(),
            ),
            ..Problem::new(code, detail)
        }
    }

    /// The problem as an HTTP response (never cached).
    pub fn into_response(self) -> Response {
        ProblemJson(self).into_response()
    }
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
    fn into_response(mut self) -> Response {
        if self.0.request_id.is_none() {
            self.0.request_id = REQUEST_ID.try_with(Clone::clone).ok();
        }
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Response::builder()
            .status(status)
            .content_type(Self::CONTENT_TYPE)
            .header(header::CACHE_CONTROL, "no-store")
            .body(self.0.to_json_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_errors() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{}",
                code.as_str()
            );
        }
    }
}
