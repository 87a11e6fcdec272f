//! Job 3: notify the affiliate.
//!
//! Each (endpoint, conversion, event) is one delivery row; each try is one
//! attempt row (status, latency, body excerpt). A failed try stores the time of
//! the next one (30 s, 2 min, 5 min, 15 min, 30 min, 1 h, 2 h, 4 h, 8 h, 8 h: about
//! a day, each within 10% either way so that the retries of one outage do
//! not all come back at once), and the retry sweeper queues it when due, so
//! the schedule survives restarts; after the last try the delivery is
//! dead-lettered.
//!
//! One endpoint cannot hold up the others: a process makes at most
//! [`PER_ENDPOINT_CONCURRENCY`] calls to one endpoint at a time, and a job whose
//! endpoint stays at that limit for [`BUSY_WAIT`] does not wait longer: it puts
//! its attempt off by [`BUSY_DEFER_SECS`] (not counted as a try) and frees its
//! worker slot for other endpoints; the retry sweeper queues it again when due.
//! Every call has a 5 s connect and 10 s overall timeout.
//!
//! Outgoing requests never reach an address that
//! [`trcker_domain::target::forbidden`] refuses (loopback, private,
//! link-local, metadata, the IPv6 forms that carry such an IPv4 address…)
//! unless the operator allows private targets: a literal address is checked
//! before the request, and a host name is resolved by a resolver that keeps
//! only allowed addresses, and the connection goes to one of those (so a name
//! that resolves elsewhere on the next lookup, DNS rebinding, gains nothing).
//! Redirects are not followed: a 3xx is a failed attempt, recorded with its
//! status. A response body is read up to [`EXCERPT_BYTES`], the part kept in
//! the attempt's record, and no further.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use trcker_domain::destination::{expand, expand_json};
use trcker_domain::money::format_minor;
use trcker_domain::status::ConversionStatus;
use trcker_domain::target::{forbidden, literal_ip, redact_url};
use trcker_domain::webhook::signature_header;
use trcker_domain::webhook::{Event, Events};
use trcker_storage::batch::{among, insert_new, per_row, pow2_chunks};
use trcker_storage::entities::notification_delivery::Status as DeliveryStatus;
use trcker_storage::entities::notification_endpoint::{BodyFormat, EndpointKind, Method};
use trcker_storage::entities::*;
use trcker_storage::ids::{
    AffiliateId, AttemptId, ConversionId, DeliveryId, EndpointId, ProgramId,
};
use trcker_storage::queue::Job;
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{
    self, ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel,
    QueryFilter, Value,
};
use trcker_storage::{TenantId, scoped, scoped_update};

use super::{JobError, Pipeline, PipelineJob};
use crate::error::StoreError;

/// Make one attempt at each of some notification deliveries of one tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyJob {
    pub tenant_id: TenantId,
    pub items: Vec<NotifyItem>,
    /// When the attempt was due (ms since the epoch), for attempts the sweeper
    /// queues: a retry, or an attempt put off because its endpoint was busy, is
    /// a new job rather than a repeat of the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyItem {
    pub delivery_id: DeliveryId,
    /// The attempt this job makes (0 for the first); a stale one is a no-op.
    pub attempt: i32,
}

impl Job for NotifyJob {
    const QUEUE: &'static str = "trcker.notify";
    fn idempotency_key(&self) -> String {
        let items = super::batch_key(&self.items, |i| format!("{}:{}", i.delivery_id, i.attempt));
        match self.due {
            Some(due) => format!("{items}:{due}"),
            None => items,
        }
    }
}

impl PipelineJob for NotifyJob {
    /// Calls wait on affiliates' servers, not on the database: four times the
    /// workers of the other steps.
    const CONCURRENCY: usize = 4;

    fn describe(&self) -> String {
        format!(
            "notify {} deliveries from {:?}",
            self.items.len(),
            self.items.first().map(|i| &i.delivery_id)
        )
    }

    async fn run(&self, pipeline: &Pipeline) -> Result<(), JobError> {
        pipeline.notify(self).await
    }
}

/// Delay before each retry; the number of entries is the number of retries.
pub const RETRY_SCHEDULE_SECS: [i64; 10] =
    [30, 120, 300, 900, 1800, 3600, 7200, 14400, 28800, 28800];

/// Failed attempts in a row that disable an endpoint, unless the operator
/// says otherwise (`TRCKER_ENDPOINT_FAILURE_LIMIT`): a receiver down for a
/// day under a steady stream of conversions gets there, a brief outage not.
pub const DEFAULT_FAILURE_LIMIT: u32 = 100;

/// Calls one process makes to one endpoint at the same time.
pub const PER_ENDPOINT_CONCURRENCY: usize = 8;
/// How long a job waits for its endpoint to have room, with none of the
/// endpoint's calls finishing meanwhile, before putting its attempt off. An
/// endpoint that answers keeps its queue moving: its waiting calls go on
/// waiting for their turn, however long the queue (a burst of conversions).
pub const BUSY_WAIT: Duration = Duration::from_millis(500);
/// How long an attempt is put off when its endpoint is at its limit.
pub const BUSY_DEFER_SECS: i64 = 2;

/// How long the results of a job's calls are gathered, after the first comes
/// back, to be recorded in one transaction (a slow endpoint's result is
/// recorded on its own, later).
pub const RECORD_WINDOW: Duration = Duration::from_millis(20);

/// Per-endpoint limits on calls in flight in this process.
#[derive(Default)]
pub struct EndpointGates {
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

/// One endpoint's calls in flight, and when the last one finished.
struct Gate {
    permits: Arc<tokio::sync::Semaphore>,
    finished: Mutex<Instant>,
}

/// A call's place at its endpoint; dropping it (the call is over) frees the
/// place and records that the endpoint answered.
struct Entered {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gate: Arc<Gate>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        *self.gate.finished.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

impl EndpointGates {
    /// A place to call `endpoint_id`, waiting for one while the endpoint's
    /// calls keep finishing; `None` once it stays at its limit for
    /// [`BUSY_WAIT`] with none finishing (a slow or hanging endpoint).
    async fn enter(&self, endpoint_id: &str) -> Option<Entered> {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            // Forget idle endpoints now and then so the map stays small.
            if gates.len() > 10_000 {
                gates.retain(|_, g| g.permits.available_permits() < PER_ENDPOINT_CONCURRENCY);
            }
            gates
                .entry(endpoint_id.to_owned())
                .or_insert_with(|| {
                    Arc::new(Gate {
                        permits: Arc::new(tokio::sync::Semaphore::new(PER_ENDPOINT_CONCURRENCY)),
                        finished: Mutex::new(Instant::now()),
                    })
                })
                .clone()
        };
        // One acquisition throughout, so that the call keeps its place in the
        // endpoint's queue while it waits.
        let acquire = gate.permits.clone().acquire_owned();
        tokio::pin!(acquire);
        loop {
            match tokio::time::timeout(BUSY_WAIT, &mut acquire).await {
                Ok(Ok(permit)) => {
                    return Some(Entered {
                        _permit: permit,
                        gate,
                    });
                }
                Ok(Err(_)) => return None,
                Err(_) => {
                    let finished = *gate.finished.lock().unwrap_or_else(|e| e.into_inner());
                    if finished.elapsed() >= BUSY_WAIT {
                        return None;
                    }
                }
            }
        }
    }
}

/// An attempt made: the delivery, its attempt row, its new status and the
/// time of its next attempt.
type Made<'a> = (
    &'a notification_delivery::Model,
    notification_attempt::Model,
    DeliveryStatus,
    DateTime<Utc>,
);

/// A delivery's call: `None` when its endpoint had no room.
type Called = (notification_delivery::Model, Option<(Outcome, i32)>);

/// Resolves names to public addresses only (unless private targets are allowed).
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| {
                    let f = forbidden(a.ip()).filter(|_| !allow_private);
                    refused = refused.or(f);
                    f.is_none()
                })
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(f) => Box::new(Refused(format!("{host} resolves to {f}"))),
                    None => format!("{host} resolves to no address").into(),
                };
                return Err(err);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A call refused by the SSRF guard, told apart from other failures in the
/// attempt's record.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The client for outgoing notifications.
pub fn http_client(allow_private: bool) -> Result<reqwest::Client, StoreError> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("Trcker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StoreError::Internal(format!("http client: {e}")))
}

enum Outcome {
    Delivered {
        status: u16,
        excerpt: String,
    },
    Failed {
        status: Option<u16>,
        excerpt: Option<String>,
        error: String,
        /// `http_status`, `timeout`, `refused`, `tls` or `network`.
        class: &'static str,
    },
    /// Never worth retrying (a refused or malformed target).
    Permanent {
        error: String,
        /// `ssrf` or `invalid_target`.
        class: &'static str,
    },
}

impl Outcome {
    /// A target the SSRF guard refused (the literal address in the URL, or
    /// the one a name resolved to at connect time).
    fn ssrf(refused: impl std::fmt::Display) -> Outcome {
        Outcome::Permanent {
            error: format!("SSRF refused: {refused}"),
            class: "ssrf",
        }
    }
}

/// The class of a call that failed without an answer.
fn error_class(e: &reqwest::Error, chain: &str) -> &'static str {
    let lower = chain.to_ascii_lowercase();
    if e.is_timeout() {
        "timeout"
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("ssl") {
        "tls"
    } else if e.is_connect() {
        "refused"
    } else {
        "network"
    }
}

/// How much of a response body is read and kept as the attempt's excerpt.
pub const EXCERPT_BYTES: usize = 2048;

/// The start of a response body, at most [`EXCERPT_BYTES`]: the rest is
/// never read (the connection is dropped with it).
async fn excerpt(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < EXCERPT_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(EXCERPT_BYTES);
    let text = String::from_utf8_lossy(&body);
    // A multi-byte character cut at the end is not part of the excerpt.
    text.trim_end_matches('\u{FFFD}').to_owned()
}

impl Pipeline {
    /// Creates the deliveries of some events of one tenant's conversions (once
    /// each: `(conversion id, event key)`) and queues their first attempts as
    /// one job.
    pub async fn schedule_notifications(
        &self,
        tenant: &TenantId,
        events: &[(ConversionId, String)],
    ) -> Result<(), JobError> {
        if events.is_empty() {
            return Ok(());
        }
        let deliveries = self.deliveries_for(tenant, events).await?;
        if deliveries.is_empty() {
            return Ok(());
        }
        let txn = self.store.pipeline_txn().await?;
        let inserted = insert_new::<notification_delivery::Entity, _>(
            &txn,
            &deliveries,
            &[
                notification_delivery::Column::TenantId,
                notification_delivery::Column::EndpointId,
                notification_delivery::Column::ConversionId,
                notification_delivery::Column::EventKey,
            ],
        )
        .await?;
        txn.commit().await?;
        let mut items: Vec<NotifyItem> = deliveries
            .iter()
            .filter(|d| inserted.contains(&d.id))
            .map(|d| NotifyItem {
                delivery_id: d.id.clone(),
                attempt: 0,
            })
            .collect();
        if inserted.len() < deliveries.len() {
            let made_before: Vec<&notification_delivery::Model> = deliveries
                .iter()
                .filter(|d| !inserted.contains(&d.id))
                .collect();
            items.extend(self.first_attempts_not_made(tenant, &made_before).await?);
        }
        items.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
        self.queue
            .push(&NotifyJob {
                tenant_id: tenant.clone(),
                items,
                due: None,
            })
            .await?;
        Ok(())
    }

    /// The deliveries of a payout's `paid` event: one per endpoint told of
    /// it, for each conversion whose commission the payout covers. They are
    /// written by the caller in the transaction that marks the payout paid,
    /// and their attempts queued after it (the retry sweeper queues any
    /// whose job was lost).
    pub(crate) async fn paid_deliveries(
        &self,
        tenant: &TenantId,
        payout_id: &str,
        conversions: Vec<ConversionId>,
    ) -> Result<Vec<notification_delivery::Model>, JobError> {
        let key = format!("paid:{payout_id}");
        let events: Vec<(ConversionId, String)> =
            conversions.into_iter().map(|c| (c, key.clone())).collect();
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.deliveries_for(tenant, &events).await
    }

    /// Queues the first attempts of deliveries just written.
    pub(crate) async fn queue_first_attempts(
        &self,
        tenant: &TenantId,
        deliveries: &[notification_delivery::Model],
    ) -> Result<(), JobError> {
        for chunk in deliveries.chunks(100) {
            self.queue
                .push(&NotifyJob {
                    tenant_id: tenant.clone(),
                    items: chunk
                        .iter()
                        .map(|d| NotifyItem {
                            delivery_id: d.id.clone(),
                            attempt: 0,
                        })
                        .collect(),
                    due: None,
                })
                .await?;
        }
        Ok(())
    }

    /// The deliveries the events make: one per active endpoint of each
    /// conversion's affiliate, its URL expanded.
    async fn deliveries_for(
        &self,
        tenant: &TenantId,
        events: &[(ConversionId, String)],
    ) -> Result<Vec<notification_delivery::Model>, JobError> {
        let backend = self.store.conn.get_database_backend();
        let db = &self.store.conn;
        let convs: HashMap<ConversionId, conversion::Model> = scoped::<conversion::Entity>(tenant)
            .filter(among(
                backend,
                conversion::Column::Id,
                events.iter().map(|e| e.0.clone()),
            ))
            .all(db)
            .await?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        if convs.is_empty() {
            return Ok(Vec::new());
        }
        use notification_endpoint::Column as E;
        let affiliates: Vec<AffiliateId> = convs.values().map(|c| c.affiliate_id.clone()).collect();
        let mut endpoints: HashMap<Option<AffiliateId>, Vec<notification_endpoint::Model>> =
            HashMap::new();
        for ep in scoped::<notification_endpoint::Entity>(tenant)
            .filter(
                sea_orm::Condition::any()
                    .add(among(backend, E::AffiliateId, affiliates))
                    .add(E::AffiliateId.is_null()),
            )
            .filter(E::Active.eq(true))
            .filter(E::DisabledAt.is_null())
            .all(db)
            .await?
        {
            endpoints
                .entry(ep.affiliate_id.clone())
                .or_default()
                .push(ep);
        }
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let click_ids: Vec<String> = convs.values().filter_map(|c| c.click_id.clone()).collect();
        let clicks: HashMap<String, click::Model> = if click_ids.is_empty() {
            HashMap::new()
        } else {
            scoped::<click::Entity>(tenant)
                .filter(among(backend, click::Column::Id, click_ids))
                .all(db)
                .await?
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect()
        };
        let t = Utc::now();
        let mut deliveries = Vec::new();
        for (conversion_id, event_key) in events {
            let Some(conv) = convs.get(conversion_id) else {
                continue;
            };
            let Some(event) = event_of(event_key, conv) else {
                tracing::warn!(%conversion_id, event_key, "unknown notification event; not sent");
                continue;
            };
            let click = conv.click_id.as_ref().and_then(|id| clicks.get(id));
            for owner in [Some(conv.affiliate_id.clone()), None] {
                let Some(owned) = endpoints.get(&owner) else {
                    continue;
                };
                for ep in applicable(owned, &conv.program_id).filter(|ep| told(ep, conv, event)) {
                    deliveries.push(delivery(ep, conv, click, event_key, event, t));
                }
            }
        }
        Ok(deliveries)
    }

    /// Deliveries made before (this job runs again) whose first attempt has
    /// not been made: their attempts to queue.
    async fn first_attempts_not_made(
        &self,
        tenant: &TenantId,
        made_before: &[&notification_delivery::Model],
    ) -> Result<Vec<NotifyItem>, JobError> {
        use notification_delivery::Column as D;
        let backend = self.store.conn.get_database_backend();
        let again: HashSet<(&str, &str, &str)> = made_before
            .iter()
            .map(|d| {
                (
                    d.endpoint_id.as_str(),
                    d.conversion_id.as_str(),
                    d.event_key.as_str(),
                )
            })
            .collect();
        Ok(scoped::<notification_delivery::Entity>(tenant)
            .filter(among(
                backend,
                D::ConversionId,
                again.iter().map(|k| k.1.to_owned()),
            ))
            .filter(D::Status.eq(DeliveryStatus::Pending))
            .filter(D::Attempts.eq(0))
            .all(&self.store.conn)
            .await?
            .into_iter()
            .filter(|d| {
                again.contains(&(
                    d.endpoint_id.as_str(),
                    d.conversion_id.as_str(),
                    d.event_key.as_str(),
                ))
            })
            .map(|d| NotifyItem {
                delivery_id: d.id,
                attempt: 0,
            })
            .collect())
    }

    /// Makes one attempt at each delivery of the job. The calls go out side by
    /// side (within each endpoint's limit); their results are recorded as they
    /// come back, whatever has come back in one transaction, so a slow
    /// endpoint does not hold up the record of the others.
    pub async fn notify(&self, job: &NotifyJob) -> Result<(), JobError> {
        use futures::StreamExt;
        let backend = self.store.conn.get_database_backend();
        let tenant = &job.tenant_id;
        let wanted: HashMap<&str, i32> = job
            .items
            .iter()
            .map(|i| (i.delivery_id.as_str(), i.attempt))
            .collect();
        let due: Vec<notification_delivery::Model> =
            scoped::<notification_delivery::Entity>(tenant)
                .filter(among(
                    backend,
                    notification_delivery::Column::Id,
                    job.items.iter().map(|i| i.delivery_id.clone()),
                ))
                .all(&self.store.conn)
                .await?
                .into_iter()
                // Delivered, dead, or this attempt was made already: nothing to do.
                .filter(|d| {
                    d.status == DeliveryStatus::Pending
                        && wanted.get(d.id.as_str()) == Some(&d.attempts)
                })
                .collect();
        let endpoints: HashMap<EndpointId, notification_endpoint::Model> =
            scoped::<notification_endpoint::Entity>(tenant)
                .filter(among(
                    backend,
                    notification_endpoint::Column::Id,
                    due.iter().map(|d| d.endpoint_id.clone()),
                ))
                .all(&self.store.conn)
                .await?
                .into_iter()
                .map(|e| (e.id.clone(), e))
                .collect();
        let failing: HashSet<EndpointId> = endpoints
            .values()
            .filter(|e| e.consecutive_failures > 0)
            .map(|e| e.id.clone())
            .collect();
        let mut calls = futures::stream::iter(due)
            .map(|d| {
                let ep = endpoints.get(&d.endpoint_id);
                self.attempt(d, ep)
            })
            .buffer_unordered(job.items.len().max(1));
        let mut results = Vec::new();
        let mut failed = None;
        // Wait for one result, then take the others that come back within
        // RECORD_WINDOW of it, and record them together.
        while let Some(first) = calls.next().await {
            results.push(first);
            let window = tokio::time::sleep(RECORD_WINDOW);
            tokio::pin!(window);
            loop {
                tokio::select! {
                    biased;
                    more = calls.next() => match more {
                        Some(more) => results.push(more),
                        None => break,
                    },
                    _ = &mut window => break,
                }
            }
            if let Err(e) = self.record_attempts(tenant, &mut results, &failing).await {
                failed = Some(e);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Calls one delivery's endpoint, if it has room.
    async fn attempt(
        &self,
        d: notification_delivery::Model,
        ep: Option<&notification_endpoint::Model>,
    ) -> Called {
        if let Some(reason) = ep.and_then(|e| e.disabled_at.and(e.disabled_reason.clone())) {
            let outcome = Outcome::Permanent {
                error: format!("endpoint disabled: {reason}"),
                class: "disabled",
            };
            return (d, Some((outcome, 0)));
        }
        let Some(_entered) = self.gates.enter(d.endpoint_id.as_str()).await else {
            return (d, None);
        };
        let started = Instant::now();
        let outcome = self.deliver(&d, ep).await;
        let latency_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
        (d, Some((outcome, latency_ms)))
    }

    /// Records attempts in one transaction: each delivery's new state (guarded
    /// by the attempt it made) and one attempt row each. An attempt that found
    /// its endpoint at its limit is put off instead (not counted as a try) and
    /// the retry sweeper queues it again. Drains `results`.
    async fn record_attempts(
        &self,
        tenant: &TenantId,
        results: &mut Vec<Called>,
        failing: &HashSet<EndpointId>,
    ) -> Result<(), JobError> {
        // The retry schedule goes by the settings' clock (a test moves it
        // forward instead of waiting a day).
        let t = self.settings.clock.now();
        let mut put_off: Vec<&notification_delivery::Model> = Vec::new();
        let mut made: Vec<Made> = Vec::new();
        for (d, result) in results.iter() {
            match result {
                Some((outcome, latency_ms)) => made.push(attempt_made(d, outcome, *latency_ms, t)),
                None => {
                    tracing::debug!(delivery_id = %d.id, endpoint_id = %d.endpoint_id, "endpoint busy; attempt put off");
                    put_off.push(d);
                }
            }
        }
        let txn = self.store.pipeline_txn().await?;
        if !put_off.is_empty() {
            put_off_attempts(&txn, tenant, &put_off, t).await?;
        }
        if !made.is_empty() {
            let moved = record_made(&txn, tenant, &made, t).await?;
            let limit = self.settings.endpoint_failure_limit;
            let moved: Vec<&Made> = made.iter().filter(|m| moved.contains(&m.0.id)).collect();
            endpoint_health(&txn, tenant, &moved, failing, limit, t).await?;
        }
        txn.commit().await?;
        count_attempts(&made, put_off.len());
        results.clear();
        Ok(())
    }

    async fn deliver(
        &self,
        d: &notification_delivery::Model,
        ep: Option<&notification_endpoint::Model>,
    ) -> Outcome {
        let parsed = match url::Url::parse(&d.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => u,
            Ok(_) => {
                return Outcome::Permanent {
                    error: "only http and https targets are called".into(),
                    class: "invalid_target",
                };
            }
            Err(e) => {
                return Outcome::Permanent {
                    error: format!("not a valid URL: {e}"),
                    class: "invalid_target",
                };
            }
        };
        if !self.settings.allow_private_targets
            && let Some(refused) = literal_ip(&parsed).and_then(forbidden)
        {
            return Outcome::ssrf(refused);
        }
        let method = match d.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut req = self.http.request(method, parsed);
        if let Some(ct) = &d.content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(body) = &d.body {
            req = req.body(body.clone());
        }
        if let Some(ep) = ep.filter(|e| e.kind == EndpointKind::Webhook) {
            let Some(salt) = &ep.secret_salt else {
                return Outcome::Permanent {
                    error: "the webhook endpoint has no secret".into(),
                    class: "invalid_target",
                };
            };
            let now = self.settings.clock.now();
            let current = self.settings.webhook_secret(ep.id.as_str(), salt);
            let previous = ep
                .previous_secret_salt
                .as_ref()
                .filter(|_| ep.previous_secret_until.is_some_and(|u| u > now))
                .map(|p| self.settings.webhook_secret(ep.id.as_str(), p));
            let mut secrets = vec![&current];
            secrets.extend(previous.as_ref());
            // The receiver holds this against its own clock: the real time.
            let timestamp = Utc::now().timestamp();
            let body = d.body.as_deref().unwrap_or_default();
            req = req
                .header("webhook-id", d.id.as_str())
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    signature_header(&secrets, d.id.as_str(), timestamp, body),
                );
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = excerpt(resp).await;
                if (200..300).contains(&status) {
                    Outcome::Delivered {
                        status,
                        excerpt: body,
                    }
                } else {
                    Outcome::Failed {
                        status: Some(status),
                        excerpt: Some(body),
                        error: format!("HTTP {status}"),
                        class: "http_status",
                    }
                }
            }
            Err(e) => {
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    if let Some(refused) = s.downcast_ref::<Refused>() {
                        return Outcome::ssrf(refused);
                    }
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    source = s.source();
                }
                Outcome::Failed {
                    status: None,
                    excerpt: None,
                    class: error_class(&e, &msg),
                    error: msg,
                }
            }
        }
    }
}

/// The result of a test event sent to one endpoint on demand.
#[derive(Debug, Clone)]
pub struct TestAttempt {
    pub method: String,
    /// The URL called, secrets redacted.
    pub url: String,
    pub status_code: Option<u16>,
    pub latency_ms: i32,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub error_class: Option<&'static str>,
    pub delivered: bool,
}

impl Pipeline {
    /// Sends a test event to one endpoint now, as its deliveries are sent
    /// (the same SSRF guard, signature and limits), and returns the
    /// attempt's result. A test conversion of 10.00 (commission 1.00, in
    /// the currency of its program when the endpoint names one) stands in;
    /// nothing is stored.
    pub async fn send_test(
        &self,
        ep: &notification_endpoint::Model,
        currency: trcker_domain::money::Currency,
    ) -> TestAttempt {
        let t = Utc::now();
        let conv = test_conversion(ep, currency, t);
        let d = delivery(ep, &conv, None, "test", Event::Created, t);
        let started = Instant::now();
        let outcome = self.deliver(&d, Some(ep)).await;
        let latency_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
        let (status_code, response_excerpt, error, error_class, delivered) = match outcome {
            Outcome::Delivered { status, excerpt } => {
                (Some(status), Some(excerpt), None, None, true)
            }
            Outcome::Failed {
                status,
                excerpt,
                error,
                class,
            } => (status, excerpt, Some(error), Some(class), false),
            Outcome::Permanent { error, class } => (None, None, Some(error), Some(class), false),
        };
        TestAttempt {
            method: d.method.to_string(),
            url: redact_url(&d.url),
            status_code,
            latency_ms,
            response_excerpt,
            error,
            error_class,
            delivered,
        }
    }
}

/// The conversion a test event tells of: marked test, `txn_id` `test`.
fn test_conversion(
    ep: &notification_endpoint::Model,
    currency: trcker_domain::money::Currency,
    t: DateTime<Utc>,
) -> conversion::Model {
    use trcker_storage::entities::CurrencyCode;
    let status = conversion::Status(ConversionStatus::Approved);
    conversion::Model {
        id: ConversionId::generate(),
        tenant_id: ep.tenant_id.clone(),
        created_at: t,
        program_id: ep.program_id.clone().unwrap_or_else(ProgramId::generate),
        affiliate_id: ep
            .affiliate_id
            .clone()
            .unwrap_or_else(AffiliateId::generate),
        click_id: Some("test".to_owned()),
        coupon_code: None,
        postback_id: trcker_storage::ids::PostbackId::generate(),
        txn_id: "test".to_owned(),
        event: "sale".to_owned(),
        status,
        created_status: Some(status),
        amount_minor: 1000,
        currency: CurrencyCode(currency),
        payout_minor: Some(100),
        payout_override_minor: None,
        commission_explanation: None,
        commission_detail: None,
        hold_until: None,
        is_test: true,
        updated_at: t,
        original_amount_minor: None,
        original_currency: None,
        exchange_rate: None,
        sub1: None,
        sub2: None,
        sub3: None,
        sub4: None,
        sub5: None,
    }
}

/// The event a delivery's key names for its conversion.
fn event_of(event_key: &str, conv: &conversion::Model) -> Option<Event> {
    if event_key.starts_with("paid:") {
        return Some(Event::Paid);
    }
    let status = ConversionStatus::parse(event_key.strip_prefix("status:")?).ok()?;
    Some(Event::of_status(status, conv.created_status.map(|s| s.0)))
}

/// Whether an endpoint is told of `event` of `conv`: it asked for the event,
/// and for test conversions if this is one.
pub(crate) fn told(
    ep: &notification_endpoint::Model,
    conv: &conversion::Model,
    event: Event,
) -> bool {
    Events::from_stored(&ep.events).contains(event) && (ep.send_test || !conv.is_test)
}

/// The endpoints of one owner that serve a conversion of `program`: of each
/// kind, those made for the program if there are any, else those for every
/// program.
pub(crate) fn applicable<'a>(
    owned: &'a [notification_endpoint::Model],
    program: &'a ProgramId,
) -> impl Iterator<Item = &'a notification_endpoint::Model> + 'a {
    owned.iter().filter(move |ep| {
        let has_override = owned
            .iter()
            .any(|o| o.kind == ep.kind && o.program_id.as_ref() == Some(program));
        match &ep.program_id {
            Some(p) => p == program,
            None => !has_override,
        }
    })
}

fn delivery(
    ep: &notification_endpoint::Model,
    conv: &conversion::Model,
    click: Option<&click::Model>,
    event_key: &str,
    event: Event,
    t: DateTime<Utc>,
) -> notification_delivery::Model {
    let id = DeliveryId::generate();
    let macros = Macros::of(conv, click);
    let (url, method, content_type, body) = match ep.kind {
        EndpointKind::Postback => {
            let template = match (&ep.reversal_template, event) {
                (Some(reversal), Event::Reversed) => reversal,
                _ => &ep.url_template,
            };
            let url = expand(template, |n| macros.get(n));
            match (ep.method, &ep.body_template) {
                (Method::Post, Some(body)) => match ep.body_format {
                    Some(BodyFormat::Json) => (
                        url,
                        Method::Post,
                        Some("application/json".to_owned()),
                        Some(expand_json(body, |n| macros.get(n))),
                    ),
                    _ => (
                        url,
                        Method::Post,
                        Some("application/x-www-form-urlencoded".to_owned()),
                        Some(expand(body, |n| macros.get(n))),
                    ),
                },
                _ => (url, Method::Get, None, None),
            }
        }
        EndpointKind::Webhook => (
            ep.url_template.clone(),
            Method::Post,
            Some("application/json".to_owned()),
            Some(webhook_payload(event, conv, &macros, t)),
        ),
    };
    notification_delivery::Model {
        id,
        tenant_id: conv.tenant_id.clone(),
        created_at: t,
        endpoint_id: ep.id.clone(),
        affiliate_id: conv.affiliate_id.clone(),
        conversion_id: conv.id.clone(),
        event_key: event_key.to_owned(),
        event: Some(event.as_str().to_owned()),
        url,
        method,
        content_type,
        body,
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: t,
        last_status_code: None,
        last_latency_ms: None,
        last_error: None,
        updated_at: t,
    }
}

/// A webhook's JSON event (Standard Webhooks: `type`, `timestamp`, `data`).
fn webhook_payload(event: Event, conv: &conversion::Model, m: &Macros, t: DateTime<Utc>) -> String {
    serde_json::json!({
        "type": event.webhook_type(),
        "timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "conversion_id": conv.id.as_str(),
            "affiliate_id": conv.affiliate_id.as_str(),
            "program_id": conv.program_id.as_str(),
            "click_id": conv.click_id,
            "txn_id": conv.txn_id,
            "event": conv.event,
            "status": m.status,
            "amount": m.amount,
            "payout": m.payout,
            "currency": m.currency,
            "sub1": m.subs[0], "sub2": m.subs[1], "sub3": m.subs[2],
            "sub4": m.subs[3], "sub5": m.subs[4],
            "test": conv.is_test,
            "created_at": conv.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    })
    .to_string()
}

/// An attempt's row, the delivery's new status and the time of its next attempt.
fn attempt_made<'a>(
    d: &'a notification_delivery::Model,
    outcome: &Outcome,
    latency_ms: i32,
    t: DateTime<Utc>,
) -> Made<'a> {
    let (status_code, body, error, class) = match outcome {
        Outcome::Delivered { status, excerpt } => {
            (Some(i32::from(*status)), Some(excerpt.clone()), None, None)
        }
        Outcome::Failed {
            status,
            excerpt,
            error,
            class,
        } => (
            status.map(i32::from),
            excerpt.clone(),
            Some(error.clone()),
            Some(*class),
        ),
        Outcome::Permanent { error, class } => (None, None, Some(error.clone()), Some(*class)),
    };
    let (new_status, next_at) = match outcome {
        Outcome::Delivered { .. } => (DeliveryStatus::Delivered, t),
        Outcome::Permanent { .. } => (DeliveryStatus::Dead, t),
        Outcome::Failed { .. } => match RETRY_SCHEDULE_SECS.get(d.attempts as usize) {
            Some(secs) => (
                DeliveryStatus::Pending,
                t + ChronoDuration::seconds(trcker_domain::webhook::jittered(*secs)),
            ),
            None => (DeliveryStatus::Dead, t),
        },
    };
    let attempt = notification_attempt::Model {
        id: AttemptId::generate(),
        tenant_id: d.tenant_id.clone(),
        created_at: t,
        delivery_id: d.id.clone(),
        attempt_no: d.attempts + 1,
        status_code,
        latency_ms,
        response_excerpt: body,
        error,
        method: Some(d.method.to_string()),
        url: Some(redact_url(&d.url)),
        error_class: class.map(str::to_owned),
    };
    (d, attempt, new_status, next_at)
}

/// Counts recorded attempts by outcome (`put_off`: the endpoint was busy).
fn count_attempts(made: &[Made<'_>], put_off: usize) {
    for (_, attempt, status, _) in made {
        let outcome = match status {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Pending if attempt.error.is_some() => "failed",
            DeliveryStatus::Pending => "pending",
        };
        metrics::counter!("trcker_notification_attempts_total", "outcome" => outcome).increment(1);
    }
    if put_off > 0 {
        metrics::counter!("trcker_notification_attempts_total", "outcome" => "put_off")
            .increment(put_off as u64);
    }
}

/// `attempts = <the attempt each row made>`: a delivery is written only if it
/// is still at the attempt it made.
fn at_attempt(
    backend: sea_orm::DbBackend,
    rows: &[&notification_delivery::Model],
) -> sea_orm::sea_query::SimpleExpr {
    use notification_delivery::Column as D;
    let expected = per_row(backend, D::Id, rows.iter().map(|d| (&d.id, d.attempts)));
    sea_orm::sea_query::ExprTrait::eq(Expr::col(D::Attempts), expected)
}

/// Puts off attempts whose endpoint was busy by [`BUSY_DEFER_SECS`].
async fn put_off_attempts(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    put_off: &[&notification_delivery::Model],
    t: DateTime<Utc>,
) -> Result<(), JobError> {
    use notification_delivery::Column as D;
    let backend = sea_orm::ConnectionTrait::get_database_backend(txn);
    let later = t + ChronoDuration::seconds(BUSY_DEFER_SECS);
    scoped_update::<notification_delivery::Entity>(tenant)
        .col_expr(D::NextAttemptAt, Expr::value(later))
        .filter(among(backend, D::Id, put_off.iter().map(|d| d.id.clone())))
        .filter(D::Status.eq(DeliveryStatus::Pending))
        .filter(at_attempt(backend, put_off))
        .exec(txn)
        .await?;
    Ok(())
}

/// Each delivery's new state (one UPDATE, each row its own values) and the
/// attempt rows of those it moved.
async fn record_made(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    made: &[Made<'_>],
    t: DateTime<Utc>,
) -> Result<HashSet<DeliveryId>, JobError> {
    use notification_delivery::Column as D;
    let backend = sea_orm::ConnectionTrait::get_database_backend(txn);
    let column =
        |f: &dyn Fn(&Made) -> Value| per_row(backend, D::Id, made.iter().map(|m| (&m.0.id, f(m))));
    let rows: Vec<&notification_delivery::Model> = made.iter().map(|m| m.0).collect();
    let moved: HashSet<DeliveryId> = scoped_update::<notification_delivery::Entity>(tenant)
        .col_expr(D::Status, column(&|m| m.2.into()))
        .col_expr(D::Attempts, column(&|m| m.1.attempt_no.into()))
        .col_expr(D::NextAttemptAt, column(&|m| m.3.into()))
        .col_expr(D::LastStatusCode, column(&|m| m.1.status_code.into()))
        .col_expr(D::LastLatencyMs, column(&|m| m.1.latency_ms.into()))
        .col_expr(D::LastError, column(&|m| m.1.error.clone().into()))
        .col_expr(D::UpdatedAt, Expr::value(t))
        .filter(among(backend, D::Id, rows.iter().map(|d| d.id.clone())))
        .filter(at_attempt(backend, &rows))
        .exec_with_returning(txn)
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect();
    let attempts: Vec<&notification_attempt::Model> = made
        .iter()
        .filter(|m| moved.contains(&m.0.id))
        .map(|m| &m.1)
        .collect();
    for chunk in pow2_chunks(&attempts, 256) {
        notification_attempt::Entity::insert_many(
            chunk
                .iter()
                .map(|a| (*a).clone().into_active_model().reset_all()),
        )
        .exec_without_returning(txn)
        .await?;
    }
    Ok(moved)
}

/// Keeps each endpoint's run of failed attempts: a delivered attempt ends
/// it, each failed one adds to it. A 410 (the receiver says the endpoint is
/// gone) or a run of `limit` disables the endpoint, with the reason, until
/// it is enabled again; its next conversions make no deliveries and its
/// pending ones end as `endpoint disabled`.
async fn endpoint_health(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    made: &[&Made<'_>],
    failing: &HashSet<EndpointId>,
    limit: u32,
    t: DateTime<Utc>,
) -> Result<(), JobError> {
    use notification_endpoint::Column as E;
    let backend = sea_orm::ConnectionTrait::get_database_backend(txn);
    let mut ok: HashSet<&EndpointId> = HashSet::new();
    let mut failed: HashMap<&EndpointId, i32> = HashMap::new();
    let mut gone: HashSet<&EndpointId> = HashSet::new();
    for (d, attempt, _, _) in made {
        match attempt.error_class.as_deref() {
            None => {
                ok.insert(&d.endpoint_id);
            }
            Some("disabled") => {}
            Some(_) => {
                *failed.entry(&d.endpoint_id).or_default() += 1;
                if attempt.status_code == Some(410) {
                    gone.insert(&d.endpoint_id);
                }
            }
        }
    }
    failed.retain(|id, _| !ok.contains(id));
    let reset: Vec<EndpointId> = ok
        .into_iter()
        .filter(|id| failing.contains(*id))
        .cloned()
        .collect();
    if !reset.is_empty() {
        scoped_update::<notification_endpoint::Entity>(tenant)
            .col_expr(E::ConsecutiveFailures, Expr::value(0))
            .filter(among(backend, E::Id, reset))
            .exec(txn)
            .await?;
    }
    let mut by_count: std::collections::BTreeMap<i32, Vec<EndpointId>> = Default::default();
    for (id, n) in &failed {
        by_count.entry(*n).or_default().push((*id).clone());
    }
    for (n, ids) in by_count {
        scoped_update::<notification_endpoint::Entity>(tenant)
            .col_expr(
                E::ConsecutiveFailures,
                sea_orm::sea_query::ExprTrait::add(Expr::col(E::ConsecutiveFailures), n),
            )
            .filter(among(backend, E::Id, ids))
            .exec(txn)
            .await?;
    }
    let disable = |ids: Vec<EndpointId>, reason: String| {
        scoped_update::<notification_endpoint::Entity>(tenant)
            .col_expr(E::DisabledAt, Expr::value(t))
            .col_expr(E::DisabledReason, Expr::value(reason))
            .col_expr(E::UpdatedAt, Expr::value(t))
            .filter(among(backend, E::Id, ids))
            .filter(E::DisabledAt.is_null())
    };
    if !gone.is_empty() {
        let ids: Vec<EndpointId> = gone.into_iter().cloned().collect();
        disable(ids, "the endpoint answered 410 Gone".to_owned())
            .exec(txn)
            .await?;
    }
    if !failed.is_empty() {
        let ids: Vec<EndpointId> = failed.keys().map(|id| (*id).clone()).collect();
        disable(ids, format!("{limit} failed attempts in a row"))
            .filter(E::ConsecutiveFailures.gte(limit))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// A conversion's macro values, as templates and webhooks show them.
struct Macros<'a> {
    conv: &'a conversion::Model,
    click_id: String,
    currency: String,
    status: String,
    payout: String,
    amount: String,
    subs: Vec<String>,
}

impl<'a> Macros<'a> {
    fn of(conv: &'a conversion::Model, click: Option<&click::Model>) -> Macros<'a> {
        let currency = conv.currency.0;
        Macros {
            conv,
            click_id: conv.click_id.clone().unwrap_or_default(),
            currency: conv.currency.to_string(),
            status: conv.status.to_string(),
            payout: format_minor(conv.payout_minor.unwrap_or(0), currency),
            amount: format_minor(conv.amount_minor, currency),
            subs: (0..5)
                .map(|i| {
                    click
                        .and_then(|c| [&c.sub1, &c.sub2, &c.sub3, &c.sub4, &c.sub5][i].clone())
                        .unwrap_or_default()
                })
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        let c = self.conv;
        Some(match name {
            "click_id" => self.click_id.as_str(),
            "conversion_id" => c.id.as_str(),
            "txn_id" => c.txn_id.as_str(),
            "payout" => self.payout.as_str(),
            "amount" => self.amount.as_str(),
            "currency" => self.currency.as_str(),
            "status" => self.status.as_str(),
            "event" => c.event.as_str(),
            "affiliate_id" => c.affiliate_id.as_str(),
            "program_id" => c.program_id.as_str(),
            "test" => {
                if c.is_test {
                    "1"
                } else {
                    "0"
                }
            }
            "sub1" => self.subs[0].as_str(),
            "sub2" => self.subs[1].as_str(),
            "sub3" => self.subs[2].as_str(),
            "sub4" => self.subs[3].as_str(),
            "sub5" => self.subs[4].as_str(),
            _ => return None,
        })
    }
}
