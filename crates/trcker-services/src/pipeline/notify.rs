//! Job 3: notify the affiliate.
//!
//! Each (endpoint, conversion, event) is one delivery row; each try is one
//! attempt row (status, latency, body excerpt). A failed try stores the time of
//! the next one (30 s, 2 min, 5 min, 15 min, 30 min, 1 h, 2 h, 4 h, 8 h, 8 h: about
//! a day), and the retry sweeper queues it when due, so the schedule survives
//! restarts; after the last try the delivery is dead-lettered.
//!
//! One endpoint cannot hold up the others: a process makes at most
//! [`PER_ENDPOINT_CONCURRENCY`] calls to one endpoint at a time, and a job whose
//! endpoint stays at that limit for [`BUSY_WAIT`] does not wait longer: it puts
//! its attempt off by [`BUSY_DEFER_SECS`] (not counted as a try) and frees its
//! worker slot for other endpoints; the retry sweeper queues it again when due.
//! Every call has a 5 s connect and 10 s overall timeout.
//!
//! Outgoing requests never reach loopback, private or link-local addresses
//! unless the operator allows it: names are resolved through a resolver that
//! drops such addresses, and literal IPs are checked before the request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use trcker_domain::destination::expand;
use trcker_domain::ids::IdKind;
use trcker_domain::money::{Currency, format_minor};
use trcker_domain::target::is_public;
use trcker_storage::entities::*;
use trcker_storage::{TenantId, is_unique_violation, scoped, scoped_by_id, sea_orm};

use super::JobError;
use crate::queue::NotifyJob;
use crate::util::{insert, now};
use crate::{ServiceError, Services};

/// Delay before each retry; the number of entries is the number of retries.
pub const RETRY_SCHEDULE_SECS: [i64; 10] =
    [30, 120, 300, 900, 1800, 3600, 7200, 14400, 28800, 28800];

/// Calls one process makes to one endpoint at the same time.
pub const PER_ENDPOINT_CONCURRENCY: usize = 8;
/// How long a job waits for its endpoint to have room before putting its
/// attempt off.
pub const BUSY_WAIT: Duration = Duration::from_millis(500);
/// How long an attempt is put off when its endpoint is at its limit.
pub const BUSY_DEFER_SECS: i64 = 2;

/// Per-endpoint limits on calls in flight in this process.
#[derive(Default)]
pub struct EndpointGates {
    gates: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl EndpointGates {
    /// A permit to call `endpoint_id`, waiting up to [`BUSY_WAIT`] for one
    /// (a fast endpoint frees its permits within that); `None` when the
    /// endpoint stays at its limit.
    async fn enter(&self, endpoint_id: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            // Forget idle endpoints now and then so the map stays small.
            if gates.len() > 10_000 {
                gates.retain(|_, g| g.available_permits() < PER_ENDPOINT_CONCURRENCY);
            }
            gates
                .entry(endpoint_id.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(PER_ENDPOINT_CONCURRENCY)))
                .clone()
        };
        match gate.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => tokio::time::timeout(BUSY_WAIT, gate.acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        }
    }
}

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
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves to no public address (private targets are not allowed)"
                )
                .into();
                return Err(err);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client for outgoing notifications.
pub fn http_client(allow_private: bool) -> Result<reqwest::Client, ServiceError> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("Trcker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ServiceError::Internal(format!("http client: {e}")))
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
    },
    /// Never worth retrying (a blocked or malformed target).
    Permanent {
        error: String,
    },
}

fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(512)]);
    s.chars().take(512).collect()
}

impl Services {
    /// Creates the deliveries of one event of a conversion (once each) and
    /// queues their first attempt.
    pub async fn schedule_notifications(
        &self,
        tenant: &TenantId,
        conversion_id: &str,
        event_key: &str,
    ) -> Result<(), JobError> {
        let Some(conv) = scoped_by_id::<conversion::Entity>(tenant, conversion_id)
            .one(&self.store.conn)
            .await?
        else {
            return Ok(());
        };
        let endpoints = scoped::<notification_endpoint::Entity>(tenant)
            .filter(notification_endpoint::Column::AffiliateId.eq(&conv.affiliate_id))
            .filter(notification_endpoint::Column::Active.eq(true))
            .all(&self.store.conn)
            .await?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let click = match &conv.click_id {
            Some(id) => {
                scoped_by_id::<click::Entity>(tenant, id)
                    .one(&self.store.conn)
                    .await?
            }
            None => None,
        };
        let currency = Currency::parse(&conv.currency).unwrap_or(Currency::USD);
        let payout = format_minor(conv.payout_minor.unwrap_or(0), currency);
        let amount = format_minor(conv.amount_minor, currency);
        let sub = |i: usize| -> String {
            click
                .as_ref()
                .and_then(|c| [&c.sub1, &c.sub2, &c.sub3, &c.sub4, &c.sub5][i].clone())
                .unwrap_or_default()
        };
        let subs: Vec<String> = (0..5).map(sub).collect();
        let click_id = conv.click_id.clone().unwrap_or_default();
        let t = now();
        let mut jobs = Vec::new();
        for ep in endpoints {
            let url = expand(&ep.url_template, |name| {
                Some(match name {
                    "click_id" => click_id.as_str(),
                    "conversion_id" => conv.id.as_str(),
                    "txn_id" => conv.txn_id.as_str(),
                    "payout" => payout.as_str(),
                    "amount" => amount.as_str(),
                    "currency" => conv.currency.as_str(),
                    "status" => conv.status.as_str(),
                    "event" => conv.event.as_str(),
                    "affiliate_id" => conv.affiliate_id.as_str(),
                    "program_id" => conv.program_id.as_str(),
                    "sub1" => subs[0].as_str(),
                    "sub2" => subs[1].as_str(),
                    "sub3" => subs[2].as_str(),
                    "sub4" => subs[3].as_str(),
                    "sub5" => subs[4].as_str(),
                    _ => return None,
                })
            });
            let delivery = notification_delivery::Model {
                id: IdKind::Delivery.generate(),
                tenant_id: tenant.to_string(),
                created_at: t,
                endpoint_id: ep.id.clone(),
                affiliate_id: conv.affiliate_id.clone(),
                conversion_id: conv.id.clone(),
                event_key: event_key.to_owned(),
                url,
                status: "pending".into(),
                attempts: 0,
                next_attempt_at: t,
                last_status_code: None,
                last_latency_ms: None,
                last_error: None,
                updated_at: t,
            };
            let id = match insert(&self.store.conn, delivery.clone()).await {
                Ok(d) => Some(d.id),
                Err(e) if is_unique_violation(&e) => {
                    scoped::<notification_delivery::Entity>(tenant)
                        .filter(notification_delivery::Column::EndpointId.eq(&ep.id))
                        .filter(notification_delivery::Column::ConversionId.eq(&conv.id))
                        .filter(notification_delivery::Column::EventKey.eq(event_key))
                        .filter(notification_delivery::Column::Status.eq("pending"))
                        .filter(notification_delivery::Column::Attempts.eq(0))
                        .one(&self.store.conn)
                        .await?
                        .map(|d| d.id)
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(delivery_id) = id {
                jobs.push(NotifyJob {
                    tenant_id: tenant.to_string(),
                    delivery_id,
                    attempt: 0,
                    due: None,
                });
            }
        }
        self.queue.push_all(&jobs).await?;
        Ok(())
    }

    pub async fn run_notify(&self, job: &NotifyJob) -> Result<(), JobError> {
        let tenant = TenantId::from_trusted(job.tenant_id.clone());
        let Some(d) = scoped_by_id::<notification_delivery::Entity>(&tenant, &job.delivery_id)
            .one(&self.store.conn)
            .await?
        else {
            return Ok(());
        };
        if d.status != "pending" || d.attempts != job.attempt {
            return Ok(()); // delivered, dead, or this attempt was made already
        }
        let Some(_permit) = self.endpoint_gates.enter(&d.endpoint_id).await else {
            // The endpoint is at its limit: try later, keep this slot for others.
            let later = now() + ChronoDuration::seconds(BUSY_DEFER_SECS);
            notification_delivery::Entity::update_many()
                .col_expr(
                    notification_delivery::Column::NextAttemptAt,
                    Expr::value(later),
                )
                .filter(notification_delivery::Column::TenantId.eq(tenant.as_str()))
                .filter(notification_delivery::Column::Id.eq(&d.id))
                .filter(notification_delivery::Column::Status.eq("pending"))
                .filter(notification_delivery::Column::Attempts.eq(d.attempts))
                .exec(&self.store.conn)
                .await?;
            tracing::debug!(delivery_id = %d.id, endpoint_id = %d.endpoint_id, "endpoint busy; attempt put off");
            return Ok(());
        };
        let started = Instant::now();
        let outcome = self.deliver(&d.url).await;
        let latency_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
        let attempt_no = d.attempts + 1;
        let t = now();
        let (status_code, body, error) = match &outcome {
            Outcome::Delivered { status, excerpt } => (Some(*status), Some(excerpt.clone()), None),
            Outcome::Failed {
                status,
                excerpt,
                error,
            } => (*status, excerpt.clone(), Some(error.clone())),
            Outcome::Permanent { error } => (None, None, Some(error.clone())),
        };
        let (new_status, next_at) = match &outcome {
            Outcome::Delivered { .. } => ("delivered", t),
            Outcome::Permanent { .. } => ("dead", t),
            Outcome::Failed { .. } => match RETRY_SCHEDULE_SECS.get(d.attempts as usize) {
                Some(secs) => ("pending", t + ChronoDuration::seconds(*secs)),
                None => ("dead", t),
            },
        };
        let txn = self.store.write_txn().await?;
        let moved = notification_delivery::Entity::update_many()
            .col_expr(
                notification_delivery::Column::Status,
                Expr::value(new_status),
            )
            .col_expr(
                notification_delivery::Column::Attempts,
                Expr::value(attempt_no),
            )
            .col_expr(
                notification_delivery::Column::NextAttemptAt,
                Expr::value(next_at),
            )
            .col_expr(
                notification_delivery::Column::LastStatusCode,
                Expr::value(status_code.map(i32::from)),
            )
            .col_expr(
                notification_delivery::Column::LastLatencyMs,
                Expr::value(latency_ms),
            )
            .col_expr(
                notification_delivery::Column::LastError,
                Expr::value(error.clone()),
            )
            .col_expr(notification_delivery::Column::UpdatedAt, Expr::value(t))
            .filter(notification_delivery::Column::TenantId.eq(tenant.as_str()))
            .filter(notification_delivery::Column::Id.eq(&d.id))
            .filter(notification_delivery::Column::Attempts.eq(d.attempts))
            .exec(&txn)
            .await?;
        if moved.rows_affected == 1 {
            insert(
                &txn,
                notification_attempt::Model {
                    id: IdKind::Attempt.generate(),
                    tenant_id: tenant.to_string(),
                    created_at: t,
                    delivery_id: d.id.clone(),
                    attempt_no,
                    status_code: status_code.map(i32::from),
                    latency_ms,
                    response_excerpt: body,
                    error,
                },
            )
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    async fn deliver(&self, url: &str) -> Outcome {
        let parsed = match url::Url::parse(url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => u,
            Ok(_) => {
                return Outcome::Permanent {
                    error: "only http and https targets are called".into(),
                };
            }
            Err(e) => {
                return Outcome::Permanent {
                    error: format!("not a valid URL: {e}"),
                };
            }
        };
        let literal: Option<IpAddr> = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && !self.settings.allow_private_targets
            && !is_public(ip)
        {
            return Outcome::Permanent {
                error: format!("{ip} is a private address (private targets are not allowed)"),
            };
        }
        match self.http.get(parsed).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.bytes().await.map(|b| excerpt(&b)).unwrap_or_default();
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
                    }
                }
            }
            Err(e) => {
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    source = s.source();
                }
                Outcome::Failed {
                    status: None,
                    excerpt: None,
                    error: msg,
                }
            }
        }
    }
}
