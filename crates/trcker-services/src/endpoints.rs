//! Notification endpoints: where an affiliate, or the tenant itself, is told
//! of conversions.
//!
//! Two kinds. A **postback** is a URL template with macros (URL-encoded),
//! called by GET, or by POST with a form or JSON body template; a template
//! without `{status}` hears only of a conversion's creation unless it asks
//! for more (a separate reversal template, or events listed explicitly). A
//! **webhook** gets a JSON event signed per Standard Webhooks with a
//! `whsec_` secret (shown once, rotated with an overlap during which both
//! secrets sign). An endpoint with a `program_id` serves that program's
//! conversions and replaces its owner's program-less endpoints of the same
//! kind for them. Each endpoint lists its events and whether test
//! conversions reach it (marked `test`).

use chrono::{DateTime, SubsecRound, Utc};
use trcker_domain::destination::expand_json;
use trcker_domain::fields::{Fields, TargetUrl};
use trcker_domain::ids::IdKind;
use trcker_domain::secret::random_alnum;
use trcker_domain::target::check_literal_target;
use trcker_domain::webhook::{Events, WebhookSecret};
use trcker_storage::entities::notification_endpoint::{BodyFormat, EndpointKind, Method};
use trcker_storage::entities::{affiliate, notification_endpoint, program};
use trcker_storage::ids::{AffiliateId, EndpointId, ProgramId};
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{ColumnTrait, QueryFilter};
use trcker_storage::{Store, TenantId, batch::insert, scoped, scoped_by_id, scoped_update_by_id};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::conversions::{Page, newest_page};
use crate::error::{Invalid, StoreError, from_store};

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("endpoint not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(EndpointError);

/// A new endpoint as asked for; `None` takes the default.
#[derive(Debug, Default, Clone)]
pub struct NewEndpoint {
    /// `None`: the tenant's own endpoint (webhooks only).
    pub affiliate_id: Option<String>,
    pub program_id: Option<String>,
    pub kind: String,
    pub url: String,
    pub method: Option<String>,
    pub body_format: Option<String>,
    pub body_template: Option<String>,
    pub reversal_url: Option<String>,
    pub events: Option<Vec<String>>,
    pub send_test: Option<bool>,
}

/// Changes to an endpoint; `None` leaves a setting, `Some(None)` clears it.
#[derive(Debug, Default, Clone)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub method: Option<String>,
    pub body_format: Option<Option<String>>,
    pub body_template: Option<Option<String>>,
    pub reversal_url: Option<Option<String>>,
    pub events: Option<Vec<String>>,
    pub send_test: Option<bool>,
}

/// What an endpoint list may be narrowed to.
#[derive(Debug, Default, Clone)]
pub struct EndpointFilter {
    pub affiliate_id: Option<String>,
    pub kind: Option<String>,
}

/// An endpoint and, for a new or rotated webhook, its secret (shown once).
pub struct EndpointWithSecret {
    pub endpoint: notification_endpoint::Model,
    pub secret: Option<String>,
}

/// The longest body template kept.
pub const MAX_BODY_TEMPLATE: usize = 4096;

#[derive(Clone)]
pub struct EndpointService {
    area: Area,
    pipeline: crate::pipeline::Pipeline,
}

/// The settings of an endpoint once checked, as they are stored.
struct Shape {
    url: String,
    method: Method,
    body_format: Option<BodyFormat>,
    body_template: Option<String>,
    reversal_template: Option<String>,
    events: Events,
}

impl EndpointService {
    pub(crate) fn new(area: Area, pipeline: crate::pipeline::Pipeline) -> Self {
        EndpointService { area, pipeline }
    }

    /// Sends a test event to the endpoint now and returns the attempt's
    /// result (disabled endpoints too: a test shows whether one can be
    /// enabled again).
    pub async fn send_test(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<crate::pipeline::notify::TestAttempt, EndpointError> {
        let tenant = caller.tenant_admin()?;
        let ep = find(self.store(), tenant, id).await?;
        let currency = match &ep.program_id {
            Some(p) => scoped_by_id::<program::Entity>(tenant, p.as_str())
                .one(&self.store().conn)
                .await?
                .map(|p| p.currency.0),
            None => None,
        }
        .unwrap_or(trcker_domain::money::Currency::USD);
        Ok(self.pipeline.send_test(&ep, currency).await)
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    /// The secret a webhook endpoint signs with, from its salt.
    pub fn secret(&self, endpoint_id: &str, salt: &str) -> WebhookSecret {
        self.area.settings.webhook_secret(endpoint_id, salt)
    }

    pub async fn create(
        &self,
        caller: &Caller,
        input: NewEndpoint,
    ) -> Result<EndpointWithSecret, EndpointError> {
        let tenant = caller.tenant_admin()?;
        let mut f = Fields::default();
        let kind = f.take(
            "kind",
            input
                .kind
                .parse::<EndpointKind>()
                .map_err(|_| "must be postback or webhook"),
        );
        let affiliate = match &input.affiliate_id {
            Some(id) => {
                let found = scoped_by_id::<affiliate::Entity>(tenant, id)
                    .one(&self.store().conn)
                    .await?;
                if found.is_none() {
                    f.error("affiliate_id", "no affiliate with this id");
                }
                found.map(|a| a.id)
            }
            None => {
                if kind == Some(EndpointKind::Postback) {
                    f.error(
                        "affiliate_id",
                        "a postback endpoint belongs to an affiliate (the tenant's own endpoints are webhooks)",
                    );
                }
                None
            }
        };
        let program = match &input.program_id {
            Some(id) => {
                let found = scoped_by_id::<program::Entity>(tenant, id)
                    .one(&self.store().conn)
                    .await?;
                if found.is_none() {
                    f.error("program_id", "no program with this id");
                }
                found.map(|p| p.id)
            }
            None => None,
        };
        let shape = kind.and_then(|kind| {
            self.shape(
                &mut f,
                kind,
                &input.url,
                input.method.as_deref(),
                input.body_format.as_deref(),
                input.body_template.as_deref(),
                input.reversal_url.as_deref(),
                input.events.as_deref(),
            )
        });
        let (kind, shape) = f.done((kind, shape)).map_err(Invalid)?;
        let t = Utc::now().trunc_subsecs(6);
        let id = EndpointId::generate();
        let salt = (kind == EndpointKind::Webhook).then(|| random_alnum(32));
        let endpoint = notification_endpoint::Model {
            id: id.clone(),
            tenant_id: tenant.clone(),
            created_at: t,
            affiliate_id: affiliate,
            program_id: program,
            kind,
            url_template: shape.url,
            method: shape.method,
            body_format: shape.body_format,
            body_template: shape.body_template,
            reversal_template: shape.reversal_template,
            events: shape.events.to_stored(),
            send_test: input.send_test.unwrap_or(true),
            active: true,
            disabled_at: None,
            disabled_reason: None,
            consecutive_failures: 0,
            secret_salt: salt.clone(),
            previous_secret_salt: None,
            previous_secret_until: None,
            updated_at: t,
        };
        let txn = self.store().write_txn().await?;
        insert(&txn, endpoint.clone()).await?;
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "endpoint.create",
            "endpoint",
            id.as_str(),
            Some(serde_json::json!({"after": audit_view(&endpoint)})),
        )
        .await?;
        txn.commit().await?;
        let secret = salt.map(|s| self.secret(id.as_str(), &s).reveal());
        Ok(EndpointWithSecret { endpoint, secret })
    }

    /// Checks an endpoint's settings (the whole set, as they will be).
    #[allow(clippy::too_many_arguments)]
    fn shape(
        &self,
        f: &mut Fields,
        kind: EndpointKind,
        url: &str,
        method: Option<&str>,
        body_format: Option<&str>,
        body_template: Option<&str>,
        reversal_url: Option<&str>,
        events: Option<&[String]>,
    ) -> Option<Shape> {
        let url = f.take("url", self.call_target(url.trim()));
        let reversal = f.take_opt(
            "reversal_url",
            reversal_url
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| self.call_target(u)),
        );
        let method = match (kind, method) {
            (EndpointKind::Webhook, None | Some("POST")) => Some(Method::Post),
            (EndpointKind::Webhook, Some(_)) => {
                f.error("method", "a webhook is always sent by POST");
                None
            }
            (EndpointKind::Postback, None) => Some(Method::Get),
            (EndpointKind::Postback, Some(m)) => f.take(
                "method",
                m.parse::<Method>().map_err(|_| "must be GET or POST"),
            ),
        };
        let body_format = f.take_opt(
            "body_format",
            body_format.map(|b| b.parse::<BodyFormat>().map_err(|_| "must be form or json")),
        );
        let events = f.take_opt(
            "events",
            events.map(|names| {
                Events::parse_names(names)
                    .map_err(|e| e.to_string())
                    .and_then(|e| {
                        (!e.is_empty())
                            .then_some(e)
                            .ok_or_else(|| "must name at least one event".to_owned())
                    })
            }),
        );
        let body_template = body_template
            .map(str::to_owned)
            .filter(|b| !b.trim().is_empty());
        if kind == EndpointKind::Webhook {
            if reversal.as_ref().is_some_and(Option::is_some) {
                f.error(
                    "reversal_url",
                    "webhooks carry the event type; only postbacks take a reversal URL",
                );
            }
            if body_template.is_some() || body_format.as_ref().is_some_and(Option::is_some) {
                f.error("body_template", "a webhook's body is Trcker's signed event");
            }
        }
        let (Some(url), Some(reversal), Some(method), Some(mut body_format), Some(events)) =
            (url, reversal, method, body_format, events)
        else {
            return None;
        };
        if method == Method::Post && kind == EndpointKind::Postback {
            let Some(template) = &body_template else {
                f.error(
                    "body_template",
                    "a postback sent by POST needs a body template",
                );
                return None;
            };
            if template.chars().count() > MAX_BODY_TEMPLATE {
                f.error(
                    "body_template",
                    format!("must be at most {MAX_BODY_TEMPLATE} characters"),
                );
                return None;
            }
            let format = *body_format.get_or_insert(BodyFormat::Form);
            if format == BodyFormat::Json
                && serde_json::from_str::<serde_json::Value>(&expand_json(template, |_| Some("0")))
                    .is_err()
            {
                f.error(
                    "body_template",
                    "must be JSON once its macros are filled in (quote text macros: \"{click_id}\")",
                );
                return None;
            }
        } else if kind == EndpointKind::Postback
            && (body_template.is_some() || body_format.is_some())
        {
            f.error("body_template", "only a postback sent by POST has a body");
            return None;
        }
        let events = events.unwrap_or_else(|| match kind {
            EndpointKind::Webhook => Events::all(),
            EndpointKind::Postback => Events::default_for_postback(&url, reversal.is_some()),
        });
        Some(Shape {
            url,
            method,
            body_format: body_format.filter(|_| kind == EndpointKind::Postback),
            body_template: body_template.filter(|_| method == Method::Post),
            reversal_template: reversal,
            events,
        })
    }

    /// A URL Trcker will call: a target template whose host, when it is a
    /// literal address, is a public one (unless private targets are allowed).
    pub(crate) fn call_target(&self, url: &str) -> Result<String, String> {
        call_target(url, self.area.settings.allow_private_targets)
    }

    /// The tenant's endpoints, newest first, by cursor (deleted ones are not
    /// listed).
    pub async fn list(
        &self,
        caller: &Caller,
        filter: EndpointFilter,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Page<notification_endpoint::Model>, EndpointError> {
        use notification_endpoint::Column as C;
        let tenant = caller.tenant()?;
        let mut f = Fields::default();
        let kind = f.take_opt(
            "kind",
            filter.kind.as_deref().map(|k| {
                k.parse::<EndpointKind>()
                    .map_err(|_| "must be postback or webhook")
            }),
        );
        let affiliate = f.take_opt(
            "affiliate_id",
            filter
                .affiliate_id
                .as_deref()
                .map(|a| IdKind::Affiliate.parse(a)),
        );
        let (kind, affiliate) = f.done((kind, affiliate)).map_err(Invalid)?;
        let mut q = scoped::<notification_endpoint::Entity>(tenant).filter(C::Active.eq(true));
        if let Some(kind) = kind {
            q = q.filter(C::Kind.eq(kind));
        }
        if let Some(affiliate) = affiliate {
            q = q.filter(C::AffiliateId.eq(affiliate));
        }
        newest_page(
            q,
            IdKind::Endpoint,
            cursor,
            limit,
            &self.store().conn,
            |e| e.id.as_str(),
        )
        .await
    }

    pub async fn get(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<notification_endpoint::Model, EndpointError> {
        find(self.store(), caller.tenant()?, id).await
    }

    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        input: EndpointUpdate,
    ) -> Result<notification_endpoint::Model, EndpointError> {
        use notification_endpoint::Column as C;
        let tenant = caller.tenant_admin()?;
        let existing = find(self.store(), tenant, id).await?;
        let mut f = Fields::default();
        let url = input
            .url
            .clone()
            .unwrap_or_else(|| existing.url_template.clone());
        let method = input
            .method
            .clone()
            .unwrap_or_else(|| existing.method.to_string());
        let body_format = match &input.body_format {
            Some(v) => v.clone(),
            None => existing.body_format.map(|b| b.to_string()),
        };
        let body_template = match &input.body_template {
            Some(v) => v.clone(),
            None => existing.body_template.clone(),
        };
        let reversal = match &input.reversal_url {
            Some(v) => v.clone(),
            None => existing.reversal_template.clone(),
        };
        // A postback's default events follow its template unless they were
        // given; kept events stay as they are.
        let events: Option<Vec<String>> = input.events.clone().or_else(|| {
            let kept = Events::from_stored(&existing.events);
            let was_default = existing.kind == EndpointKind::Postback
                && kept
                    == Events::default_for_postback(
                        &existing.url_template,
                        existing.reversal_template.is_some(),
                    );
            (!was_default).then(|| kept.names().into_iter().map(str::to_owned).collect())
        });
        let shape = self.shape(
            &mut f,
            existing.kind,
            &url,
            Some(&method),
            body_format.as_deref(),
            body_template.as_deref(),
            reversal.as_deref(),
            events.as_deref(),
        );
        let (shape,) = f.done((shape,)).map_err(Invalid)?;
        let t = Utc::now().trunc_subsecs(6);
        let txn = self.store().write_txn().await?;
        scoped_update_by_id::<notification_endpoint::Entity>(tenant, existing.id.as_str())
            .col_expr(C::UrlTemplate, Expr::value(shape.url))
            .col_expr(C::Method, Expr::value(shape.method))
            .col_expr(C::BodyFormat, Expr::value(shape.body_format))
            .col_expr(C::BodyTemplate, Expr::value(shape.body_template))
            .col_expr(C::ReversalTemplate, Expr::value(shape.reversal_template))
            .col_expr(C::Events, Expr::value(shape.events.to_stored()))
            .col_expr(
                C::SendTest,
                Expr::value(input.send_test.unwrap_or(existing.send_test)),
            )
            .col_expr(C::UpdatedAt, Expr::value(t))
            .exec(&txn)
            .await?;
        let after = find_in(&txn, tenant, id).await?;
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "endpoint.update",
            "endpoint",
            existing.id.as_str(),
            Some(serde_json::json!({
                "before": audit_view(&existing),
                "after": audit_view(&after),
            })),
        )
        .await?;
        txn.commit().await?;
        Ok(after)
    }

    /// Deletes an endpoint: it is told of nothing more; its deliveries stay
    /// in the log.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), EndpointError> {
        use notification_endpoint::Column as C;
        let tenant = caller.tenant_admin()?;
        let existing = find(self.store(), tenant, id).await?;
        let txn = self.store().write_txn().await?;
        scoped_update_by_id::<notification_endpoint::Entity>(tenant, existing.id.as_str())
            .col_expr(C::Active, Expr::value(false))
            .col_expr(C::UpdatedAt, Expr::value(Utc::now().trunc_subsecs(6)))
            .exec(&txn)
            .await?;
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "endpoint.delete",
            "endpoint",
            existing.id.as_str(),
            Some(serde_json::json!({"before": audit_view(&existing)})),
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Gives a webhook a new secret (shown once). The previous one keeps
    /// signing beside it for `overlap_hours` (default 24, at most 168, 0 for
    /// none), so the receiver can switch without refusing a delivery.
    pub async fn rotate_secret(
        &self,
        caller: &Caller,
        id: &str,
        overlap_hours: Option<i64>,
    ) -> Result<EndpointWithSecret, EndpointError> {
        use notification_endpoint::Column as C;
        let tenant = caller.tenant_admin()?;
        let now = Utc::now().trunc_subsecs(6);
        let until = crate::input::overlap_until(overlap_hours, now)?;
        let existing = find(self.store(), tenant, id).await?;
        let Some(old_salt) = existing.secret_salt.clone() else {
            return Err(Invalid::field("id", "only a webhook endpoint has a secret").into());
        };
        let salt = random_alnum(32);
        let txn = self.store().write_txn().await?;
        scoped_update_by_id::<notification_endpoint::Entity>(tenant, existing.id.as_str())
            .col_expr(C::SecretSalt, Expr::value(salt.clone()))
            .col_expr(C::PreviousSecretSalt, Expr::value(until.map(|_| old_salt)))
            .col_expr(C::PreviousSecretUntil, Expr::value(until))
            .col_expr(C::UpdatedAt, Expr::value(now))
            .exec(&txn)
            .await?;
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "endpoint.rotate_secret",
            "endpoint",
            existing.id.as_str(),
            Some(serde_json::json!({"previous_secret_until": until})),
        )
        .await?;
        txn.commit().await?;
        let endpoint = find(self.store(), tenant, id).await?;
        Ok(EndpointWithSecret {
            secret: Some(self.secret(endpoint.id.as_str(), &salt).reveal()),
            endpoint,
        })
    }

    /// Enables a disabled endpoint again: its failure count starts over.
    pub async fn enable(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<notification_endpoint::Model, EndpointError> {
        use notification_endpoint::Column as C;
        let tenant = caller.tenant_admin()?;
        let existing = find(self.store(), tenant, id).await?;
        if existing.disabled_at.is_none() {
            return Ok(existing);
        }
        let txn = self.store().write_txn().await?;
        scoped_update_by_id::<notification_endpoint::Entity>(tenant, existing.id.as_str())
            .col_expr(C::DisabledAt, Expr::value(None::<DateTime<Utc>>))
            .col_expr(C::DisabledReason, Expr::value(None::<String>))
            .col_expr(C::ConsecutiveFailures, Expr::value(0))
            .col_expr(C::UpdatedAt, Expr::value(Utc::now().trunc_subsecs(6)))
            .exec(&txn)
            .await?;
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "endpoint.enable",
            "endpoint",
            existing.id.as_str(),
            Some(serde_json::json!({"before": {"disabled_reason": existing.disabled_reason}})),
        )
        .await?;
        txn.commit().await?;
        find(self.store(), tenant, id).await
    }
}

/// A URL Trcker will call: a target template whose host, when it is a
/// literal address, is a public one (unless private targets are allowed).
/// A host name is checked on every call, on the addresses it resolves to.
pub(crate) fn call_target(url: &str, allow_private: bool) -> Result<String, String> {
    let parsed = TargetUrl::parse(url).map_err(|e| e.to_string())?;
    if !allow_private {
        check_literal_target(url).map_err(|f| f.to_string())?;
    }
    Ok(parsed.into_string())
}

/// What the audit log keeps of an endpoint (never its secret).
fn audit_view(e: &notification_endpoint::Model) -> serde_json::Value {
    serde_json::json!({
        "affiliate_id": e.affiliate_id,
        "program_id": e.program_id,
        "kind": e.kind.as_str(),
        "url": e.url_template,
        "method": e.method.as_str(),
        "body_format": e.body_format.map(BodyFormat::as_str),
        "body_template": e.body_template,
        "reversal_url": e.reversal_template,
        "events": e.events,
        "send_test": e.send_test,
    })
}

async fn find(
    store: &Store,
    tenant: &TenantId,
    id: &str,
) -> Result<notification_endpoint::Model, EndpointError> {
    find_in(&store.conn, tenant, id).await
}

async fn find_in<C: trcker_storage::sea_orm::ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    id: &str,
) -> Result<notification_endpoint::Model, EndpointError> {
    scoped_by_id::<notification_endpoint::Entity>(tenant, id)
        .filter(notification_endpoint::Column::Active.eq(true))
        .one(db)
        .await?
        .ok_or_else(|| EndpointError::NotFound(id.to_owned()))
}

/// Keeps the affiliate's own postback endpoint in step with its
/// `postback_url`: the endpoint made from the old URL retires, one is made
/// from the new URL (none when it is removed). Endpoints made through the
/// endpoints API are left as they are.
pub(crate) async fn follow_postback_url<C: trcker_storage::sea_orm::ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    affiliate_id: &AffiliateId,
    old: Option<&str>,
    new: Option<&str>,
    t: DateTime<Utc>,
) -> Result<(), trcker_storage::sea_orm::DbErr> {
    use notification_endpoint::Column as C;
    if let Some(old) = old {
        trcker_storage::scoped_update::<notification_endpoint::Entity>(tenant)
            .col_expr(C::Active, Expr::value(false))
            .col_expr(C::UpdatedAt, Expr::value(t))
            .filter(C::AffiliateId.eq(affiliate_id.as_str()))
            .filter(C::Kind.eq(EndpointKind::Postback))
            .filter(C::ProgramId.is_null())
            .filter(C::UrlTemplate.eq(old))
            .exec(db)
            .await?;
    }
    if let Some(url) = new {
        insert(db, postback_endpoint(tenant, affiliate_id, None, url, t)).await?;
    }
    Ok(())
}

/// A GET postback endpoint with the default events of its template.
pub(crate) fn postback_endpoint(
    tenant: &TenantId,
    affiliate_id: &AffiliateId,
    program_id: Option<ProgramId>,
    url: &str,
    t: DateTime<Utc>,
) -> notification_endpoint::Model {
    notification_endpoint::Model {
        id: EndpointId::generate(),
        tenant_id: tenant.clone(),
        created_at: t,
        affiliate_id: Some(affiliate_id.clone()),
        program_id,
        kind: EndpointKind::Postback,
        url_template: url.to_owned(),
        method: Method::Get,
        body_format: None,
        body_template: None,
        reversal_template: None,
        events: Events::default_for_postback(url, false).to_stored(),
        send_test: true,
        active: true,
        disabled_at: None,
        disabled_reason: None,
        consecutive_failures: 0,
        secret_salt: None,
        previous_secret_salt: None,
        previous_secret_until: None,
        updated_at: t,
    }
}
