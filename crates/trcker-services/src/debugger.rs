//! Postback debugging: the postback log (per integration or tenant-wide,
//! with filters), test-fire (a real HTTP
//! postback fired at our public receiver exactly as a merchant would, then
//! followed through the pipeline), and attribution again for a postback (or
//! every unattributed one a filter names) whose cause was fixed.
//!
//! Test-fire cannot use the integration's secret (only its hash is kept): it
//! authenticates with a short-lived test-fire token instead (see
//! `trcker_domain::secret::test_fire`), and everything it makes is flagged as
//! test data, kept out of balances and reports.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use trcker_domain::click_id::ClickId;
use trcker_domain::fields::Fields;
use trcker_domain::ids::IdKind;
use trcker_domain::money::{Money, format_minor};
use trcker_domain::secret::{random_alnum, test_fire};
use trcker_storage::entities::notification_delivery::Status as DeliveryStatus;
use trcker_storage::entities::*;
use trcker_storage::ids::{ConversionId, PostbackId};
use trcker_storage::queue::JobQueue;
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect, Select};
use trcker_storage::{Store, TenantId, batch::insert, scoped, scoped_by_id, scoped_update_by_id};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::conversions::{Page, page_limit, page_of};
use crate::error::{Invalid, StoreError, from_store};
use crate::integrations::IntegrationError;
use crate::pipeline::attribute::AttributeJob;

#[derive(Debug, thiserror::Error)]
pub enum DebuggerError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("integration not found")]
    IntegrationNotFound(String),
    #[error("postback not found")]
    PostbackNotFound(String),
    #[error("integration {0} is revoked")]
    IntegrationRevoked(String),
    #[error("postback {id} is {state}; only unattributed postbacks can be attributed again")]
    NotUnattributed {
        id: PostbackId,
        state: postback::State,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(DebuggerError);

impl From<IntegrationError> for DebuggerError {
    fn from(e: IntegrationError) -> Self {
        match e {
            IntegrationError::Access(e) => e.into(),
            IntegrationError::Invalid(e) => e.into(),
            IntegrationError::NotFound(id) => DebuggerError::IntegrationNotFound(id),
            IntegrationError::Revoked(id) => DebuggerError::IntegrationRevoked(id),
            IntegrationError::Store(e) => e.into(),
        }
    }
}

/// What a postback list may be narrowed to; every field is optional.
#[derive(Debug, Default, Clone)]
pub struct PostbackFilter {
    pub integration_id: Option<String>,
    /// `accepted`, `duplicate` or `rejected`.
    pub outcome: Option<String>,
    /// `received`, `processed`, `unattributed` or `done`.
    pub state: Option<String>,
    /// Postbacks whose reason contains this text.
    pub reason: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub test: Option<bool>,
}

/// The unattributed postbacks one bulk re-attribution queues at most.
pub const REATTRIBUTE_AT_ONCE: u64 = 1_000;

/// What a bulk re-attribution did.
#[derive(Debug, Clone)]
pub struct Reattributed {
    /// The postbacks queued again.
    pub requeued: Vec<String>,
    /// More matched than one call queues: call again.
    pub more: bool,
}

/// The tenant's postbacks that match a filter, every bad field named.
fn filtered(tenant: &TenantId, f: &PostbackFilter) -> Result<Select<postback::Entity>, Invalid> {
    use postback::Column as C;
    let mut fields = Fields::default();
    let outcome = fields.take_opt(
        "outcome",
        f.outcome.as_deref().map(|o| {
            o.parse::<postback::Outcome>()
                .map_err(|_| "must be accepted, duplicate or rejected")
        }),
    );
    let state = fields.take_opt(
        "state",
        f.state.as_deref().map(|o| {
            o.parse::<postback::State>()
                .map_err(|_| "must be received, processed, unattributed or done")
        }),
    );
    let integration = fields.take_opt(
        "integration_id",
        f.integration_id
            .as_deref()
            .map(|i| IdKind::Integration.parse(i)),
    );
    if let (Some(since), Some(until)) = (f.since, f.until)
        && since >= until
    {
        fields.error("until", "must be after since");
    }
    if f.reason.as_deref().is_some_and(|r| r.chars().count() > 200) {
        fields.error("reason", "must be at most 200 characters");
    }
    let (outcome, state, integration) = fields
        .done((outcome, state, integration))
        .map_err(Invalid)?;
    let mut q = scoped::<postback::Entity>(tenant);
    if let Some(i) = integration {
        q = q.filter(C::IntegrationId.eq(i));
    }
    if let Some(o) = outcome {
        q = q.filter(C::Outcome.eq(o));
    }
    if let Some(s) = state {
        q = q.filter(C::State.eq(s));
    }
    if let Some(r) = f.reason.as_deref().filter(|r| !r.is_empty()) {
        q = q.filter(C::Reason.contains(r));
    }
    if let Some(t) = f.since {
        q = q.filter(C::CreatedAt.gte(t));
    }
    if let Some(t) = f.until {
        q = q.filter(C::CreatedAt.lt(t));
    }
    if let Some(test) = f.test {
        q = q.filter(C::IsTest.eq(test));
    }
    Ok(q)
}

/// The header that carries a test-fire token.
pub const TEST_FIRE_HEADER: &str = "x-trcker-test-fire";

/// How long test-fire follows its postback through the pipeline.
const FOLLOW_FOR: Duration = Duration::from_secs(10);

/// A postback log line: the postback and, once booked, its commission.
#[derive(Debug, Clone)]
pub struct PostbackLogEntry {
    pub postback: postback::Model,
    pub commission: Option<String>,
}

pub struct TestFireInput {
    pub affiliate_id: String,
    pub amount: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NotificationTrace {
    pub url: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
}

/// What happened to a test postback, step by step.
#[derive(Debug, Clone, Default)]
pub struct TestFireTrace {
    pub click_id: String,
    pub txn_id: String,
    /// The receiver's HTTP answer.
    pub http_status: u16,
    pub response: String,
    pub received: bool,
    pub postback_id: Option<String>,
    pub attributed: bool,
    pub conversion_id: Option<String>,
    /// The pipeline's reason (attributed to whom, or why not).
    pub reason: Option<String>,
    pub payout: Option<String>,
    pub commission_explanation: Option<String>,
    pub notifications: Vec<NotificationTrace>,
    /// True when every step finished (notified, or nothing to notify) in time.
    pub complete: bool,
}

#[derive(Clone)]
pub struct DebuggerService {
    area: Area,
    queue: JobQueue,
    /// For calls to our own public receiver.
    http: reqwest::Client,
}

impl DebuggerService {
    pub(crate) fn new(area: Area, queue: JobQueue) -> Result<Self, StoreError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| StoreError::Internal(format!("http client: {e}")))?;
        Ok(DebuggerService { area, queue, http })
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    /// The newest postbacks of an integration, before `cursor`.
    pub async fn postback_log(
        &self,
        caller: &Caller,
        integration_id: &str,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Page<PostbackLogEntry>, DebuggerError> {
        let tenant = caller.tenant()?;
        crate::integrations::find(self.store(), tenant, integration_id).await?;
        let filter = PostbackFilter {
            integration_id: Some(integration_id.to_owned()),
            ..PostbackFilter::default()
        };
        self.postbacks(caller, filter, cursor, limit).await
    }

    /// The tenant's postbacks, newest first, by cursor, with filters: the
    /// log of every integration at once (`state=unattributed` lists what
    /// could not be attributed, with why).
    pub async fn postbacks(
        &self,
        caller: &Caller,
        filter: PostbackFilter,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Page<PostbackLogEntry>, DebuggerError> {
        let tenant = caller.tenant()?;
        let limit = page_limit(limit)?;
        let mut q = filtered(tenant, &filter)?;
        if let Some(c) = cursor {
            if !IdKind::Postback.matches(&c) {
                return Err(Invalid::field("cursor", "is not a cursor this API returned").into());
            }
            q = q.filter(postback::Column::Id.lt(c));
        }
        let rows = q
            .order_by_desc(postback::Column::Id)
            .limit(limit + 1)
            .all(&self.store().conn)
            .await?;
        let page = page_of(rows, limit, |r| r.id.as_str());
        let ids: Vec<ConversionId> = page
            .items
            .iter()
            .filter_map(|r| r.conversion_id.clone())
            .collect();
        let conversions = if ids.is_empty() {
            Vec::new()
        } else {
            scoped::<conversion::Entity>(tenant)
                .filter(conversion::Column::Id.is_in(ids))
                .all(&self.store().conn)
                .await?
        };
        let items = page
            .items
            .into_iter()
            .map(|postback| PostbackLogEntry {
                commission: postback
                    .conversion_id
                    .as_ref()
                    .and_then(|id| conversions.iter().find(|c| &c.id == id))
                    .and_then(commission_line),
                postback,
            })
            .collect();
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }

    /// Attributes again every unattributed postback that matches the
    /// filter (its `state` is unattributed whatever the filter says), at
    /// most [`REATTRIBUTE_AT_ONCE`] oldest first; `more` when others are
    /// left for the next call.
    pub async fn reattribute_all(
        &self,
        caller: &Caller,
        filter: PostbackFilter,
    ) -> Result<Reattributed, DebuggerError> {
        let tenant = caller.tenant_admin()?;
        let filter = PostbackFilter {
            state: Some("unattributed".to_owned()),
            ..filter
        };
        let rows = filtered(tenant, &filter)?
            .order_by_asc(postback::Column::Id)
            .limit(REATTRIBUTE_AT_ONCE + 1)
            .all(&self.store().conn)
            .await?;
        let more = rows.len() as u64 > REATTRIBUTE_AT_ONCE;
        let mut requeued = Vec::new();
        for pb in rows.iter().take(REATTRIBUTE_AT_ONCE as usize) {
            if self.requeue(caller, tenant, pb).await? {
                requeued.push(pb.id.to_string());
            }
        }
        Ok(Reattributed { requeued, more })
    }

    /// Makes a test click for an affiliate, fires a real postback at the public
    /// receiver, and follows it through the pipeline for up to 10 seconds.
    pub async fn test_fire(
        &self,
        caller: &Caller,
        integration_id: &str,
        input: TestFireInput,
    ) -> Result<TestFireTrace, DebuggerError> {
        let tenant = caller.tenant_admin()?.clone();
        let integration = crate::integrations::find(self.store(), &tenant, integration_id).await?;
        let program = scoped_by_id::<program::Entity>(&tenant, &integration.program_id)
            .one(&self.store().conn)
            .await?
            .ok_or_else(|| StoreError::Internal(format!("program of {}", integration.id)))?;
        let affiliate = scoped_by_id::<affiliate::Entity>(&tenant, &input.affiliate_id)
            .one(&self.store().conn)
            .await?
            .ok_or_else(|| Invalid::field("affiliate_id", "no affiliate with this id"))?;
        let amount = match input.amount.as_deref() {
            None => "10.00".to_owned(),
            Some(a) => Money::parse(a, program.currency.0)
                .map(|m| m.amount_string())
                .map_err(|e| Invalid::field("amount", e.to_string()))?,
        };
        let click_id = self.test_click(&tenant, &program, &affiliate).await?;
        let mut trace = TestFireTrace {
            click_id: click_id.to_string(),
            txn_id: format!("test-{}", random_alnum(12).to_ascii_lowercase()),
            ..TestFireTrace::default()
        };
        let brand = crate::tenants::slug_of(&self.store().conn, &tenant).await?;
        self.fire(&integration, &brand, &program.slug, &amount, &mut trace)
            .await;
        let Some(postback_id) = trace.postback_id.clone().filter(|_| trace.received) else {
            return Ok(trace);
        };
        let deadline = Instant::now() + FOLLOW_FOR;
        loop {
            self.follow(&tenant, &postback_id, &mut trace).await?;
            if trace.complete || Instant::now() >= deadline {
                return Ok(trace);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs attribution again for an unattributed postback (after its cause was
    /// fixed: an affiliate resumed, a coupon created...).
    pub async fn reattribute(
        &self,
        caller: &Caller,
        postback_id: &str,
    ) -> Result<postback::Model, DebuggerError> {
        use postback::State;
        let tenant = caller.tenant_admin()?;
        let pb = self.postback(tenant, postback_id).await?;
        if pb.state != State::Unattributed {
            return Err(DebuggerError::NotUnattributed {
                id: pb.id,
                state: pb.state,
            });
        }
        self.requeue(caller, tenant, &pb).await?;
        self.postback(tenant, postback_id).await
    }

    /// Moves an unattributed postback back to `received` and queues its
    /// attribute job; false if it was not unattributed any more.
    async fn requeue(
        &self,
        caller: &Caller,
        tenant: &TenantId,
        pb: &postback::Model,
    ) -> Result<bool, DebuggerError> {
        use postback::{Column as C, State};
        let moved = scoped_update_by_id::<postback::Entity>(tenant, &pb.id)
            .col_expr(C::State, Expr::value(State::Received))
            .col_expr(
                C::Reason,
                Expr::value(format!("re-attribution requested by {}", caller.actor())),
            )
            .filter(C::State.eq(State::Unattributed))
            .exec(self.store().writer())
            .await?;
        if moved.rows_affected != 1 {
            return Ok(false);
        }
        // If this push fails, the inbox sweeper pushes the same job.
        let job = AttributeJob::again(tenant.clone(), pb);
        if let Err(e) = self.queue.push(&job).await {
            tracing::warn!(error = %e, postback_id = %pb.id, "enqueue failed; the sweeper will pick it up");
        }
        Ok(true)
    }

    async fn postback(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<postback::Model, DebuggerError> {
        scoped_by_id::<postback::Entity>(tenant, id)
            .one(&self.store().conn)
            .await?
            .ok_or_else(|| DebuggerError::PostbackNotFound(id.to_owned()))
    }

    /// A test click for the affiliate, written at once (not through the click
    /// writer's buffer, so that the postback finds it).
    async fn test_click(
        &self,
        tenant: &TenantId,
        program: &program::Model,
        affiliate: &affiliate::Model,
    ) -> Result<ClickId, DebuggerError> {
        let click_id = ClickId::now();
        insert(
            &self.store().conn,
            click::Model {
                id: click_id.as_str().to_owned(),
                tenant_id: tenant.clone(),
                created_at: Utc::now(),
                program_id: program.id.clone(),
                affiliate_id: affiliate.id.clone(),
                link_id: None,
                ip: None,
                user_agent: Some("Trcker test-fire".into()),
                referrer: None,
                is_unique: false,
                is_bot: false,
                is_test: true,
                outcome: click::Outcome::Test,
                sub1: Some("test-fire".into()),
                sub2: None,
                sub3: None,
                sub4: None,
                sub5: None,
            },
        )
        .await?;
        Ok(click_id)
    }

    /// Fires the test postback at the public receiver, as a merchant would, and
    /// notes its answer.
    async fn fire(
        &self,
        integration: &integration::Model,
        brand: &str,
        offer: &str,
        amount: &str,
        trace: &mut TestFireTrace,
    ) {
        let url = format!(
            "{}/api/postback/{brand}/{offer}",
            self.area.settings.public_base()
        );
        let token = test_fire::token(
            &self.area.settings.test_fire_key(),
            integration.id.as_str(),
            Utc::now().timestamp() + 60,
        );
        let sent = self
            .http
            .get(&url)
            .header(TEST_FIRE_HEADER, token)
            .query(&[
                ("click_id", trace.click_id.as_str()),
                ("amount", amount),
                ("txn_id", &trace.txn_id),
                ("test", "1"),
            ])
            .send()
            .await;
        match sent {
            Ok(resp) => {
                trace.http_status = resp.status().as_u16();
                trace.response = resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(2000)
                    .collect();
            }
            Err(e) => {
                trace.response = format!("the public receiver at {url} could not be reached: {e}");
                return;
            }
        }
        let body: serde_json::Value = serde_json::from_str(&trace.response).unwrap_or_default();
        trace.postback_id = body["postback_id"].as_str().map(str::to_owned);
        trace.received = body["status"] == "accepted";
    }

    /// Fills the trace with what the pipeline has done so far.
    async fn follow(
        &self,
        tenant: &TenantId,
        postback_id: &str,
        trace: &mut TestFireTrace,
    ) -> Result<(), DebuggerError> {
        let db = &self.store().conn;
        let Some(pb) = scoped_by_id::<postback::Entity>(tenant, postback_id)
            .one(db)
            .await?
        else {
            return Ok(());
        };
        trace.reason = pb.reason.clone();
        if pb.state == postback::State::Unattributed {
            trace.complete = true;
            return Ok(());
        }
        let Some(conversion_id) = pb.conversion_id.clone() else {
            return Ok(());
        };
        trace.attributed = true;
        trace.conversion_id = Some(conversion_id.to_string());
        let Some(conv) = scoped_by_id::<conversion::Entity>(tenant, &conversion_id)
            .one(db)
            .await?
        else {
            return Ok(());
        };
        trace.payout = conv
            .payout_minor
            .map(|m| format!("{} {}", format_minor(m, conv.currency.0), conv.currency));
        trace.commission_explanation = conv.commission_explanation.clone();
        use notification_endpoint::Column as E;
        let endpoints = scoped::<notification_endpoint::Entity>(tenant)
            .filter(
                trcker_storage::sea_orm::Condition::any()
                    .add(E::AffiliateId.eq(&conv.affiliate_id))
                    .add(E::AffiliateId.is_null()),
            )
            .filter(E::Active.eq(true))
            .filter(E::DisabledAt.is_null())
            .all(db)
            .await?;
        let (mine, tenants): (Vec<_>, Vec<_>) = endpoints
            .into_iter()
            .partition(|e| e.affiliate_id.is_some());
        let event = trcker_domain::webhook::Event::Created;
        let expected = [mine, tenants]
            .iter()
            .flat_map(|owned| crate::pipeline::notify::applicable(owned, &conv.program_id))
            .filter(|ep| crate::pipeline::notify::told(ep, &conv, event))
            .count();
        let deliveries = scoped::<notification_delivery::Entity>(tenant)
            .filter(notification_delivery::Column::ConversionId.eq(&conversion_id))
            .all(db)
            .await?;
        trace.notifications = deliveries
            .iter()
            .map(|d| NotificationTrace {
                url: d.url.clone(),
                status: d.status,
                attempts: d.attempts,
                last_status_code: d.last_status_code,
                last_error: d.last_error.clone(),
            })
            .collect();
        let notified = deliveries.len() >= expected && deliveries.iter().all(|d| d.attempts > 0);
        trace.complete = trace.payout.is_some() && notified;
        Ok(())
    }
}

/// A postback log line's commission: "7.90 USD (10% of 79.00 USD); conversion is approved".
fn commission_line(c: &conversion::Model) -> Option<String> {
    c.payout_minor.map(|m| {
        let why = c.commission_explanation.as_deref().unwrap_or("");
        format!(
            "{} {} ({why}); conversion is {}",
            format_minor(m, c.currency.0),
            c.currency,
            c.status
        )
    })
}
