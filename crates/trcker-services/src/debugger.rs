//! Postback debugging: each integration's postback log, and test-fire, which
//! fires a real HTTP postback at our public receiver exactly as a merchant would
//! and reports what the pipeline did with it.
//!
//! Test-fire cannot use the integration's secret (only its hash is kept): it
//! authenticates with a short-lived test-fire token instead (see
//! `trcker_domain::secret::test_fire`), and everything it makes is flagged as
//! test data, kept out of balances and reports.

use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
use trcker_domain::click_id::ClickId;
use trcker_domain::money::{Currency, Money, format_minor};
use trcker_domain::secret::{hash_secret, random_alnum, test_fire};
use trcker_storage::entities::*;
use trcker_storage::{TenantId, scoped, scoped_by_id, sea_orm};

use crate::auth::Caller;
use crate::util::{insert, now};
use crate::{ServiceError, ServiceResult, Services};

/// A postback log line: the postback and, once booked, its commission.
#[derive(Debug, Clone)]
pub struct PostbackLogEntry {
    pub postback: postback::Model,
    pub commission: Option<String>,
}

/// The header that carries a test-fire token.
pub const TEST_FIRE_HEADER: &str = "x-trcker-test-fire";

pub struct TestFireInput {
    pub affiliate_id: String,
    pub amount: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NotificationTrace {
    pub url: String,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
}

/// What happened to a test postback, step by step.
#[derive(Debug, Clone)]
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

impl Services {
    /// Key of test-fire tokens: derived from the operator token's hash, so every
    /// node of an installation shares it.
    pub(crate) fn test_fire_key(&self) -> Vec<u8> {
        hash_secret(&format!(
            "trcker test-fire\0{}",
            self.settings.operator_token_hash
        ))
        .into_bytes()
    }

    /// The newest postbacks of an integration (at most `limit`), before `cursor`.
    pub async fn postback_log(
        &self,
        caller: &Caller,
        integration_id: &str,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> ServiceResult<(Vec<PostbackLogEntry>, Option<String>)> {
        let tenant = caller.tenant()?;
        let integration = self.get_integration(caller, integration_id).await?;
        let limit = limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ServiceError::field("limit", "must be from 1 to 200"));
        }
        let mut q = scoped::<postback::Entity>(tenant)
            .filter(postback::Column::IntegrationId.eq(&integration.id));
        if let Some(c) = cursor {
            q = q.filter(postback::Column::Id.lt(c));
        }
        let mut rows = q
            .order_by_desc(postback::Column::Id)
            .limit(limit + 1)
            .all(&self.store.conn)
            .await?;
        let next = if rows.len() as u64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.id.clone())
        } else {
            None
        };
        let ids: Vec<String> = rows
            .iter()
            .filter_map(|r| r.conversion_id.clone())
            .collect();
        let conversions = if ids.is_empty() {
            Vec::new()
        } else {
            scoped::<conversion::Entity>(tenant)
                .filter(conversion::Column::Id.is_in(ids))
                .all(&self.store.conn)
                .await?
        };
        let entries = rows
            .into_iter()
            .map(|postback| {
                let commission = postback
                    .conversion_id
                    .as_deref()
                    .and_then(|id| conversions.iter().find(|c| c.id == id))
                    .and_then(|c| {
                        let currency = Currency::parse(&c.currency).unwrap_or(Currency::USD);
                        c.payout_minor.map(|m| {
                            let why = c.commission_explanation.as_deref().unwrap_or("");
                            format!(
                                "{} {} ({why}); conversion is {}",
                                format_minor(m, currency),
                                c.currency,
                                c.status
                            )
                        })
                    });
                PostbackLogEntry {
                    postback,
                    commission,
                }
            })
            .collect();
        Ok((entries, next))
    }

    /// Makes a test click for an affiliate, fires a real postback at the public
    /// receiver, and follows it through the pipeline for up to 10 seconds.
    pub async fn test_fire(
        &self,
        caller: &Caller,
        integration_id: &str,
        input: TestFireInput,
    ) -> ServiceResult<TestFireTrace> {
        let tenant = caller.tenant_admin()?.clone();
        let integration = self.get_integration(caller, integration_id).await?;
        let program = scoped_by_id::<program::Entity>(&tenant, &integration.program_id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("program"))?;
        let affiliate = scoped_by_id::<affiliate::Entity>(&tenant, &input.affiliate_id)
            .one(&self.store.conn)
            .await?;
        let Some(affiliate) = affiliate else {
            return Err(ServiceError::field(
                "affiliate_id",
                "no affiliate with this id",
            ));
        };
        let currency = Currency::parse(&program.currency).unwrap_or(Currency::USD);
        let amount = match input.amount.as_deref() {
            None => "10.00".to_owned(),
            Some(a) => Money::parse(a, currency)
                .map(|m| m.amount_string())
                .map_err(|e| ServiceError::field("amount", e.to_string()))?,
        };
        let click_id = ClickId::now();
        insert(
            &self.store.conn,
            click::Model {
                id: click_id.as_str().to_owned(),
                tenant_id: tenant.to_string(),
                created_at: now(),
                program_id: program.id.clone(),
                affiliate_id: affiliate.id.clone(),
                link_id: None,
                ip: None,
                user_agent: Some("Trcker test-fire".into()),
                referrer: None,
                is_unique: false,
                is_bot: false,
                is_test: true,
                outcome: "test".into(),
                sub1: Some("test-fire".into()),
                sub2: None,
                sub3: None,
                sub4: None,
                sub5: None,
            },
        )
        .await?;
        let txn_id = format!("test-{}", random_alnum(12).to_ascii_lowercase());
        let tenant_slug = self.tenant_slug(&tenant).await?;
        let url = format!(
            "{}/api/postback/{}/{}",
            self.public_base(),
            tenant_slug,
            program.slug
        );
        let token = test_fire::token(
            &self.test_fire_key(),
            &integration.id,
            now().timestamp() + 60,
        );
        let sent = self
            .self_http
            .get(&url)
            .header(TEST_FIRE_HEADER, token)
            .query(&[
                ("click_id", click_id.as_str()),
                ("amount", &amount),
                ("txn_id", &txn_id),
                ("test", "1"),
            ])
            .send()
            .await;
        let mut trace = TestFireTrace {
            click_id: click_id.to_string(),
            txn_id: txn_id.clone(),
            http_status: 0,
            response: String::new(),
            received: false,
            postback_id: None,
            attributed: false,
            conversion_id: None,
            reason: None,
            payout: None,
            commission_explanation: None,
            notifications: Vec::new(),
            complete: false,
        };
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
                return Ok(trace);
            }
        }
        let body: serde_json::Value = serde_json::from_str(&trace.response).unwrap_or_default();
        trace.postback_id = body["postback_id"].as_str().map(str::to_owned);
        trace.received = body["status"] == "accepted";
        let Some(postback_id) = trace.postback_id.clone().filter(|_| trace.received) else {
            return Ok(trace);
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.follow(&tenant, &postback_id, &mut trace).await?;
            if trace.complete || Instant::now() >= deadline {
                return Ok(trace);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fills the trace with what the pipeline has done so far.
    async fn follow(
        &self,
        tenant: &TenantId,
        postback_id: &str,
        trace: &mut TestFireTrace,
    ) -> ServiceResult<()> {
        let Some(pb) = scoped_by_id::<postback::Entity>(tenant, postback_id)
            .one(&self.store.conn)
            .await?
        else {
            return Ok(());
        };
        trace.reason = pb.reason.clone();
        if pb.state == "unattributed" {
            trace.complete = true;
            return Ok(());
        }
        let Some(conversion_id) = pb.conversion_id.clone() else {
            return Ok(());
        };
        trace.attributed = true;
        trace.conversion_id = Some(conversion_id.clone());
        let Some(conv) = scoped_by_id::<conversion::Entity>(tenant, &conversion_id)
            .one(&self.store.conn)
            .await?
        else {
            return Ok(());
        };
        let currency = Currency::parse(&conv.currency).unwrap_or(Currency::USD);
        trace.payout = conv
            .payout_minor
            .map(|m| format!("{} {}", format_minor(m, currency), conv.currency));
        trace.commission_explanation = conv.commission_explanation.clone();
        let endpoints = scoped::<notification_endpoint::Entity>(tenant)
            .filter(notification_endpoint::Column::AffiliateId.eq(&conv.affiliate_id))
            .filter(notification_endpoint::Column::Active.eq(true))
            .all(&self.store.conn)
            .await?;
        let deliveries = scoped::<notification_delivery::Entity>(tenant)
            .filter(notification_delivery::Column::ConversionId.eq(&conversion_id))
            .all(&self.store.conn)
            .await?;
        trace.notifications = deliveries
            .iter()
            .map(|d| NotificationTrace {
                url: d.url.clone(),
                status: d.status.clone(),
                attempts: d.attempts,
                last_status_code: d.last_status_code,
                last_error: d.last_error.clone(),
            })
            .collect();
        let notified =
            deliveries.len() >= endpoints.len() && deliveries.iter().all(|d| d.attempts > 0);
        trace.complete = trace.payout.is_some() && notified;
        Ok(())
    }
}
