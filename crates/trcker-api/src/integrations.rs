//! `/integrations`: merchant integrations, their postback log and test-fire.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::debugger::{DebuggerService, TestFireInput, TestFireTrace};
use trcker_services::integrations::{
    CreatedIntegration, IntegrationFilter, IntegrationOptions, IntegrationService,
    IntegrationUpdate, NewIntegration,
};
use trcker_services::storage::entities::integration;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Created, Text};
use crate::error::ApiError;
use crate::postbacks::PostbackLogPage;

pub struct IntegrationsApi {
    pub integrations: IntegrationService,
    pub debugger: DebuggerService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Integrations")]
impl IntegrationsApi {
    /// Create an integration: a 64-character secret and its unique postback URL, returned once.
    #[oai(
        path = "/integrations",
        method = "post",
        operation_id = "create_integration"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<NewIntegrationIn>,
    ) -> Result<Created<IntegrationOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let created = self.integrations.create(&caller, body.0.into()).await?;
        Ok(Created::Created(Json(created.into())))
    }

    /// The integration's postback log: the newest requests first, with their raw
    /// parameters (secret redacted), source IP, answer and what the pipeline did.
    #[oai(
        path = "/integrations/:id/postbacks",
        method = "get",
        operation_id = "list_integration_postbacks"
    )]
    async fn postbacks(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        cursor: Query<Option<String>>,
        limit: Query<Option<u64>>,
    ) -> Result<Json<PostbackLogPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .debugger
            .postback_log(&caller, &id.0, cursor.0, limit.0)
            .await?;
        Ok(Json(page.into()))
    }

    /// Test-fire: make a test click for an affiliate, fire a real postback at the
    /// public receiver as a merchant would, and return the trace (received,
    /// attributed, commission, affiliate notified). Test data stays out of balances.
    #[oai(
        path = "/integrations/:id/test-fire",
        method = "post",
        operation_id = "test_fire_integration"
    )]
    async fn test_fire(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
        body: Json<TestFireIn>,
    ) -> Result<Json<TestFireOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let trace = self
            .debugger
            .test_fire(&caller, &id.0, body.0.into())
            .await?;
        Ok(Json(trace.into()))
    }

    /// Change an integration: name, status (revoke), IP allow-list, signature, rate limit, aliases.
    #[oai(
        path = "/integrations/:id",
        method = "patch",
        operation_id = "update_integration"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<UpdateIntegrationIn>,
    ) -> Result<Json<IntegrationOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let integration = self
            .integrations
            .update(&caller, &id.0, body.0.into())
            .await?;
        Ok(Json(integration.into()))
    }

    /// The tenant's integrations, newest first, by cursor.
    #[oai(
        path = "/integrations",
        method = "get",
        operation_id = "list_integrations"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        /// Only this program's.
        program_id: Query<Option<String>>,
        /// `active` or `revoked`.
        status: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<IntegrationPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let filter = IntegrationFilter {
            program_id: program_id.0,
            status: status.0,
        };
        let page = self
            .integrations
            .list(&caller, filter, cursor.0, limit.0)
            .await?;
        Ok(Json(IntegrationPage {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Give the integration a new secret, returned once with its postback
    /// URL. The old secret keeps working for `overlap_hours` (default 24,
    /// at most 168; 0 refuses it at once), so the merchant's server can
    /// switch over without a lost postback. Signed postbacks are checked
    /// with whichever secret they came with.
    #[oai(
        path = "/integrations/:id/rotate-secret",
        method = "post",
        operation_id = "rotate_integration_secret"
    )]
    async fn rotate_secret(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
        body: Json<RotateSecretIn>,
    ) -> Result<Json<IntegrationOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let rotated = self
            .integrations
            .rotate_secret(&caller, &id.0, body.0.overlap_hours)
            .await?;
        Ok(Json(rotated.created.into()))
    }

    /// Revoke the integration for good: every postback with its secrets
    /// (an old one still in a rotation's overlap too) answers 401
    /// `invalid-secret` from now on. Revoking a revoked integration changes
    /// nothing.
    #[oai(
        path = "/integrations/:id/revoke",
        method = "post",
        operation_id = "revoke_integration"
    )]
    async fn revoke(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
    ) -> Result<Json<IntegrationOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.integrations.revoke(&caller, &id.0).await?.into()))
    }

    /// Get one integration (the secret is never shown again).
    #[oai(
        path = "/integrations/:id",
        method = "get",
        operation_id = "get_integration"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<IntegrationOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.integrations.get(&caller, &id.0).await?.into()))
    }
}

#[derive(Debug, Object)]
pub struct NewIntegrationIn {
    pub name: Text,
    pub program_id: Text,
    /// CIDR ranges (IPv4 or IPv6) allowed to send postbacks; empty or absent allows any address.
    pub ip_allowlist: Option<Vec<Text>>,
    /// Require an HMAC-SHA256 signature on every postback (see the integration guide).
    pub require_signature: Option<bool>,
    /// Postbacks per minute per receiver node; 0 or absent for no limit.
    pub rate_limit_per_minute: Option<i32>,
    /// Your parameter names mapped to Trcker's, e.g. {"ref": "click_id"}.
    pub param_aliases: Option<BTreeMap<String, Text>>,
}

impl From<NewIntegrationIn> for NewIntegration {
    fn from(b: NewIntegrationIn) -> Self {
        NewIntegration {
            name: b.name.0,
            program_id: b.program_id.0,
            options: options(
                b.ip_allowlist,
                b.require_signature,
                b.rate_limit_per_minute,
                b.param_aliases,
            ),
        }
    }
}

#[derive(Debug, Object)]
pub struct UpdateIntegrationIn {
    pub name: Option<Text>,
    /// `revoked` to stop accepting its secrets for good (a revoked
    /// integration cannot be made `active` again).
    pub status: Option<Text>,
    /// Replaces the allow-list; [] removes it.
    pub ip_allowlist: Option<Vec<Text>>,
    pub require_signature: Option<bool>,
    /// 0 removes the limit.
    pub rate_limit_per_minute: Option<i32>,
    /// Replaces the aliases; {} removes them.
    pub param_aliases: Option<BTreeMap<String, Text>>,
}

impl From<UpdateIntegrationIn> for IntegrationUpdate {
    fn from(b: UpdateIntegrationIn) -> Self {
        IntegrationUpdate {
            name: b.name.map(String::from),
            status: b.status.map(String::from),
            options: options(
                b.ip_allowlist,
                b.require_signature,
                b.rate_limit_per_minute,
                b.param_aliases,
            ),
        }
    }
}

/// The options a create and an update share, as the service takes them.
fn options(
    ip_allowlist: Option<Vec<Text>>,
    require_signature: Option<bool>,
    rate_limit_per_minute: Option<i32>,
    param_aliases: Option<BTreeMap<String, Text>>,
) -> IntegrationOptions {
    IntegrationOptions {
        ip_allowlist: ip_allowlist.map(|v| v.into_iter().map(String::from).collect()),
        require_signature,
        rate_limit_per_minute,
        param_aliases: param_aliases.map(|m| m.into_iter().map(|(k, v)| (k, v.0)).collect()),
    }
}

#[derive(Debug, Object)]
pub struct IntegrationOut {
    pub id: String,
    pub name: String,
    pub program_id: String,
    pub status: String,
    /// The last four characters of the secret.
    pub secret_hint: String,
    pub ip_allowlist: Vec<String>,
    pub require_signature: bool,
    pub rate_limit_per_minute: Option<i32>,
    pub param_aliases: BTreeMap<String, String>,
    /// The 64-character postback secret. Returned once, at creation and at
    /// each rotation.
    #[oai(skip_serializing_if_is_none)]
    pub secret: Option<String>,
    /// This integration's postback URL, secret included. Returned once, at
    /// creation and at each rotation.
    #[oai(skip_serializing_if_is_none)]
    pub postback_url: Option<String>,
    /// After a rotation: until when the previous secret is still accepted.
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct IntegrationPage {
    pub items: Vec<IntegrationOut>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
pub struct RotateSecretIn {
    /// Hours the old secret keeps working, 0 to 168; default 24.
    pub overlap_hours: Option<i64>,
}

impl From<integration::Model> for IntegrationOut {
    fn from(i: integration::Model) -> Self {
        IntegrationOut {
            id: i.id.into(),
            name: i.name,
            program_id: i.program_id.into(),
            status: i.status.to_string(),
            secret_hint: i.secret_hint,
            ip_allowlist: i
                .ip_allowlist
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            require_signature: i.require_signature,
            rate_limit_per_minute: i.rate_limit_per_minute,
            param_aliases: i
                .param_aliases
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            secret: None,
            postback_url: None,
            previous_secret_until: i.previous_secret_until.filter(|until| *until > Utc::now()),
            revoked_at: i.revoked_at,
            created_at: i.created_at,
        }
    }
}

impl From<CreatedIntegration> for IntegrationOut {
    fn from(c: CreatedIntegration) -> Self {
        IntegrationOut {
            secret: Some(c.secret),
            postback_url: Some(c.postback_url),
            ..c.integration.into()
        }
    }
}

#[derive(Debug, Object)]
pub struct TestFireIn {
    /// The affiliate the test click is made for.
    pub affiliate_id: Text,
    /// Sale amount (decimal string); default 10.00.
    pub amount: Option<Text>,
}

impl From<TestFireIn> for TestFireInput {
    fn from(b: TestFireIn) -> Self {
        TestFireInput {
            affiliate_id: b.affiliate_id.0,
            amount: b.amount.map(String::from),
        }
    }
}

#[derive(Debug, Object)]
pub struct NotificationTraceOut {
    pub url: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
}

/// What happened to the test postback, step by step.
#[derive(Debug, Object)]
pub struct TestFireOut {
    pub click_id: String,
    pub txn_id: String,
    /// The receiver's HTTP status and body, exactly as a merchant would get them.
    pub http_status: u16,
    pub response: String,
    pub received: bool,
    pub postback_id: Option<String>,
    pub attributed: bool,
    pub conversion_id: Option<String>,
    pub reason: Option<String>,
    /// The commission, e.g. "1.00 USD".
    pub payout: Option<String>,
    pub commission_explanation: Option<String>,
    pub notifications: Vec<NotificationTraceOut>,
    /// Every step finished within the wait (notified, or nothing to notify).
    pub complete: bool,
}

impl From<TestFireTrace> for TestFireOut {
    fn from(t: TestFireTrace) -> Self {
        TestFireOut {
            click_id: t.click_id,
            txn_id: t.txn_id,
            http_status: t.http_status,
            response: t.response,
            received: t.received,
            postback_id: t.postback_id,
            attributed: t.attributed,
            conversion_id: t.conversion_id,
            reason: t.reason,
            payout: t.payout,
            commission_explanation: t.commission_explanation,
            notifications: t
                .notifications
                .into_iter()
                .map(|n| NotificationTraceOut {
                    url: n.url,
                    status: n.status.to_string(),
                    attempts: n.attempts,
                    last_status_code: n.last_status_code,
                    last_error: n.last_error,
                })
                .collect(),
            complete: t.complete,
        }
    }
}
