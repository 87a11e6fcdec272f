//! `/endpoints`: where affiliates and the tenant are told of conversions.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{ApiResponse, Object, OpenApi};
use trcker_domain::webhook::Events;
use trcker_services::endpoints::{
    EndpointFilter, EndpointService, EndpointUpdate, EndpointWithSecret, NewEndpoint,
};
use trcker_services::pipeline::notify::TestAttempt;
use trcker_services::storage::entities::notification_endpoint;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Created, Text, patch};
use crate::error::ApiError;
use crate::integrations::RotateSecretIn;

pub struct EndpointsApi {
    pub endpoints: EndpointService,
    pub auth: Authenticator,
}

/// `204 No Content`.
#[derive(ApiResponse)]
pub enum Deleted {
    #[oai(status = 204)]
    Deleted,
}

#[OpenApi(tag = "ApiTags::Endpoints")]
impl EndpointsApi {
    /// Create an endpoint: an affiliate's postback URL template (GET, or POST
    /// with a form or JSON body) or webhook, or the tenant's own webhook
    /// (no `affiliate_id`). A webhook's `whsec_` secret is returned once.
    #[oai(path = "/endpoints", method = "post", operation_id = "create_endpoint")]
    async fn create(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<NewEndpointIn>,
    ) -> Result<Created<EndpointOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let created = self.endpoints.create(&caller, body.0.into()).await?;
        Ok(Created::Created(Json(created.into())))
    }

    /// The tenant's endpoints, newest first, by cursor; optionally one
    /// affiliate's or one kind's.
    #[oai(path = "/endpoints", method = "get", operation_id = "list_endpoints")]
    async fn list(
        &self,
        auth: BearerAuth,
        affiliate_id: Query<Option<String>>,
        /// `postback` or `webhook`.
        kind: Query<Option<String>>,
        cursor: Query<Option<String>>,
        limit: Query<Option<u64>>,
    ) -> Result<Json<EndpointPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .endpoints
            .list(
                &caller,
                EndpointFilter {
                    affiliate_id: affiliate_id.0,
                    kind: kind.0,
                },
                cursor.0,
                limit.0,
            )
            .await?;
        Ok(Json(EndpointPage {
            items: page.items.into_iter().map(EndpointOut::from).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Get one endpoint (a webhook's secret is never shown again).
    #[oai(path = "/endpoints/:id", method = "get", operation_id = "get_endpoint")]
    async fn get(&self, auth: BearerAuth, id: Path<String>) -> Result<Json<EndpointOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.endpoints.get(&caller, &id.0).await?.into()))
    }

    /// Change an endpoint's URL, method, body, events or test setting.
    #[oai(
        path = "/endpoints/:id",
        method = "patch",
        operation_id = "update_endpoint"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<UpdateEndpointIn>,
    ) -> Result<Json<EndpointOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(
            self.endpoints
                .update(&caller, &id.0, body.0.into())
                .await?
                .into(),
        ))
    }

    /// Delete an endpoint: it is told of nothing more; its deliveries stay
    /// in the log.
    #[oai(
        path = "/endpoints/:id",
        method = "delete",
        operation_id = "delete_endpoint"
    )]
    async fn delete(&self, auth: BearerAuth, id: Path<String>) -> Result<Deleted, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        self.endpoints.delete(&caller, &id.0).await?;
        Ok(Deleted::Deleted)
    }

    /// Give a webhook a new secret, returned once; the previous one keeps
    /// signing beside it for `overlap_hours` (default 24).
    #[oai(
        path = "/endpoints/:id/rotate-secret",
        method = "post",
        operation_id = "rotate_endpoint_secret"
    )]
    async fn rotate_secret(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<RotateSecretIn>,
    ) -> Result<Json<EndpointOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let rotated = self
            .endpoints
            .rotate_secret(&caller, &id.0, body.0.overlap_hours)
            .await?;
        Ok(Json(rotated.into()))
    }

    /// Send a test event to the endpoint now and answer with the attempt's
    /// result (status code, latency, response excerpt, error). The event is
    /// a test conversion of 10.00 with a 1.00 commission; nothing is stored.
    #[oai(
        path = "/endpoints/:id/test",
        method = "post",
        operation_id = "test_endpoint"
    )]
    async fn send_test(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
    ) -> Result<Json<TestAttemptOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let attempt = self.endpoints.send_test(&caller, &id.0).await?;
        Ok(Json(attempt.into()))
    }

    /// Enable a disabled endpoint again (its failure count starts over).
    #[oai(
        path = "/endpoints/:id/enable",
        method = "post",
        operation_id = "enable_endpoint"
    )]
    async fn enable(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
    ) -> Result<Json<EndpointOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.endpoints.enable(&caller, &id.0).await?.into()))
    }
}

#[derive(Debug, Object)]
pub struct NewEndpointIn {
    /// The affiliate told; absent for the tenant's own webhook (told of
    /// every conversion).
    pub affiliate_id: Option<Text>,
    /// Only this program's conversions; replaces the owner's endpoints of
    /// the same kind for every program, for this one.
    pub program_id: Option<Text>,
    /// `postback` (a URL template with macros) or `webhook` (a signed JSON event).
    pub kind: Text,
    /// A postback's URL template (macros such as `{click_id}`, `{payout}`,
    /// `{status}`, `{test}`, URL-encoded), or a webhook's URL.
    pub url: Text,
    /// A postback's method: `GET` (default) or `POST`.
    pub method: Option<Text>,
    /// A POST postback's body: `form` (default) or `json`.
    pub body_format: Option<Text>,
    /// A POST postback's body template, with the same macros (in `json`,
    /// inside JSON strings: `{"cid": "{click_id}"}`).
    pub body_template: Option<Text>,
    /// A postback's URL for reversals, when `url` has no `{status}`.
    pub reversal_url: Option<Text>,
    /// Events told: `created`, `approved`, `rejected`, `reversed`, `paid`.
    /// Default: all for a webhook or a template with `{status}` or a
    /// reversal URL; else `created` only.
    pub events: Option<Vec<Text>>,
    /// Whether test conversions are sent (marked `test`); default true.
    pub send_test: Option<bool>,
}

impl From<NewEndpointIn> for NewEndpoint {
    fn from(b: NewEndpointIn) -> Self {
        NewEndpoint {
            affiliate_id: b.affiliate_id.map(String::from),
            program_id: b.program_id.map(String::from),
            kind: b.kind.0,
            url: b.url.0,
            method: b.method.map(String::from),
            body_format: b.body_format.map(String::from),
            body_template: b.body_template.map(String::from),
            reversal_url: b.reversal_url.map(String::from),
            events: b.events.map(|v| v.into_iter().map(String::from).collect()),
            send_test: b.send_test,
        }
    }
}

#[derive(Debug, Object)]
pub struct UpdateEndpointIn {
    pub url: Option<Text>,
    pub method: Option<Text>,
    /// null removes the body (with `method` `GET`).
    pub body_format: MaybeUndefined<Text>,
    pub body_template: MaybeUndefined<Text>,
    /// null removes the reversal URL.
    pub reversal_url: MaybeUndefined<Text>,
    pub events: Option<Vec<Text>>,
    pub send_test: Option<bool>,
}

impl From<UpdateEndpointIn> for EndpointUpdate {
    fn from(b: UpdateEndpointIn) -> Self {
        EndpointUpdate {
            url: b.url.map(String::from),
            method: b.method.map(String::from),
            body_format: patch(b.body_format.map_value(String::from)),
            body_template: patch(b.body_template.map_value(String::from)),
            reversal_url: patch(b.reversal_url.map_value(String::from)),
            events: b.events.map(|v| v.into_iter().map(String::from).collect()),
            send_test: b.send_test,
        }
    }
}

#[derive(Debug, Object)]
pub struct EndpointOut {
    pub id: String,
    /// Absent for the tenant's own endpoint.
    pub affiliate_id: Option<String>,
    pub program_id: Option<String>,
    pub kind: String,
    pub url: String,
    pub method: String,
    pub body_format: Option<String>,
    pub body_template: Option<String>,
    pub reversal_url: Option<String>,
    pub events: Vec<String>,
    pub send_test: bool,
    /// Set when Trcker stopped calling the endpoint (a 410, or too many
    /// failures in a row); `POST /endpoints/{id}/enable` resumes it.
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i32,
    /// A webhook's `whsec_` signing secret: returned once, at creation and
    /// at each rotation.
    #[oai(skip_serializing_if_is_none)]
    pub secret: Option<String>,
    /// After a rotation: until when the previous secret also signs.
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a test event's attempt did.
#[derive(Debug, Object)]
pub struct TestAttemptOut {
    /// A 2xx answer came back.
    pub delivered: bool,
    pub method: String,
    /// Secret-looking query values redacted.
    pub url: String,
    pub status_code: Option<u16>,
    pub latency_ms: i32,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    /// As in the delivery log; absent when delivered.
    pub error_class: Option<String>,
}

impl From<TestAttempt> for TestAttemptOut {
    fn from(a: TestAttempt) -> Self {
        TestAttemptOut {
            delivered: a.delivered,
            method: a.method,
            url: a.url,
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            response_excerpt: a.response_excerpt,
            error: a.error,
            error_class: a.error_class.map(str::to_owned),
        }
    }
}

#[derive(Debug, Object)]
pub struct EndpointPage {
    pub items: Vec<EndpointOut>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

impl From<notification_endpoint::Model> for EndpointOut {
    fn from(e: notification_endpoint::Model) -> Self {
        EndpointOut {
            id: e.id.to_string(),
            affiliate_id: e.affiliate_id.map(|a| a.to_string()),
            program_id: e.program_id.map(|p| p.to_string()),
            kind: e.kind.to_string(),
            url: e.url_template,
            method: e.method.to_string(),
            body_format: e.body_format.map(|b| b.to_string()),
            body_template: e.body_template,
            reversal_url: e.reversal_template,
            events: Events::from_stored(&e.events)
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            send_test: e.send_test,
            disabled_at: e.disabled_at,
            disabled_reason: e.disabled_reason,
            consecutive_failures: e.consecutive_failures,
            secret: None,
            previous_secret_until: e
                .previous_secret_until
                .filter(|_| e.previous_secret_salt.is_some()),
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

impl From<EndpointWithSecret> for EndpointOut {
    fn from(e: EndpointWithSecret) -> Self {
        EndpointOut {
            secret: e.secret,
            ..e.endpoint.into()
        }
    }
}
