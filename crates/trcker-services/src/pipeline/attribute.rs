//! Job 1: attribute an accepted postback.
//!
//! A new txn_id becomes a conversion, attributed to the click's (or coupon's)
//! affiliate, once per tenant, program and txn_id. A known txn_id with a new
//! status moves that conversion along the state machine and, when the
//! commission is no longer owed, books a reversing ledger entry. A postback that
//! cannot be attributed is kept with its reason ("unattributed"), never dropped.

use std::collections::BTreeMap;

use chrono::Duration;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use trcker_domain::ConversionStatus;
use trcker_domain::click_id::ClickId;
use trcker_domain::ids::IdKind;
use trcker_domain::money::{Currency, format_minor};
use trcker_domain::postback::PostbackParams;
use trcker_storage::entities::*;
use trcker_storage::{TenantId, is_unique_violation, scoped, scoped_by_id, sea_orm};

use super::JobError;
use crate::Services;
use crate::queue::{AttributeJob, CommissionJob};
use crate::util::{from_json, insert, now};

/// What attribution decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribution {
    Converted {
        conversion_id: String,
    },
    StatusChanged {
        conversion_id: String,
        status: ConversionStatus,
    },
    Unattributed {
        reason: String,
    },
    AlreadyDone,
}

impl Services {
    pub async fn run_attribute(&self, job: &AttributeJob) -> Result<Attribution, JobError> {
        let tenant = TenantId::from_trusted(job.tenant_id.clone());
        let Some(pb) = scoped_by_id::<postback::Entity>(&tenant, &job.postback_id)
            .one(&self.store.conn)
            .await?
        else {
            return Ok(Attribution::AlreadyDone);
        };
        if pb.state != "received" {
            // Done before (this job runs again after a crash): make sure the
            // next step is queued, then stop.
            if let Some(cid) = pb
                .conversion_id
                .as_deref()
                .filter(|_| pb.state == "processed")
            {
                self.push_commission(&tenant, cid).await?;
            }
            return Ok(Attribution::AlreadyDone);
        }
        let program = scoped_by_id::<program::Entity>(&tenant, &pb.program_id)
            .one(&self.store.conn)
            .await?
            .ok_or_else(|| {
                JobError(format!(
                    "program {} of postback {} is gone",
                    pb.program_id, pb.id
                ))
            })?;
        let pairs: Vec<(String, String)> = from_json(&pb.raw_params)?;
        let integration = scoped_by_id::<integration::Entity>(&tenant, &pb.integration_id)
            .one(&self.store.conn)
            .await?;
        let aliases: BTreeMap<String, String> = integration
            .and_then(|i| i.param_aliases)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let currency = Currency::parse(&program.currency).unwrap_or(Currency::USD);
        let params = match trcker_domain::postback::parse(&pairs, &aliases, currency) {
            Ok(p) => p,
            Err(fields) => {
                let reason = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                return self.unattributed(&tenant, &pb, reason).await;
            }
        };

        let existing = scoped::<conversion::Entity>(&tenant)
            .filter(conversion::Column::ProgramId.eq(&program.id))
            .filter(conversion::Column::TxnId.eq(&params.txn_id))
            .one(&self.store.conn)
            .await?;
        match existing {
            Some(conv) => self.change_status(&tenant, &pb, conv, &params).await,
            None => self.convert(&tenant, &pb, &program, &params).await,
        }
    }

    async fn unattributed(
        &self,
        tenant: &TenantId,
        pb: &postback::Model,
        reason: String,
    ) -> Result<Attribution, JobError> {
        postback::Entity::update_many()
            .col_expr(postback::Column::State, Expr::value("unattributed"))
            .col_expr(postback::Column::Reason, Expr::value(reason.clone()))
            .col_expr(postback::Column::ProcessedAt, Expr::value(now()))
            .filter(postback::Column::TenantId.eq(tenant.as_str()))
            .filter(postback::Column::Id.eq(&pb.id))
            .filter(postback::Column::State.eq("received"))
            .exec(&self.store.conn)
            .await?;
        Ok(Attribution::Unattributed { reason })
    }

    /// Finds the affiliate a new conversion belongs to, or says why there is none.
    /// The click, waiting briefly for a very recent one that the click writer
    /// (of this or another process) has not written yet.
    async fn find_click(
        &self,
        tenant: &TenantId,
        click_id: &ClickId,
    ) -> Result<Option<click::Model>, JobError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let click = scoped_by_id::<click::Entity>(tenant, click_id.as_str())
                .one(&self.store.conn)
                .await?;
            let age_ms = now().timestamp_millis() - click_id.unix_millis() as i64;
            let may_be_buffered = (-5_000..15_000).contains(&age_ms);
            if click.is_some() || !may_be_buffered || std::time::Instant::now() >= deadline {
                return Ok(click);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn resolve_affiliate(
        &self,
        tenant: &TenantId,
        program: &program::Model,
        params: &PostbackParams,
        received_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Result<(affiliate::Model, Option<click::Model>), String>, JobError> {
        let (affiliate_id, click) = if let Some(click_id) = &params.click_id {
            let Some(click) = self.find_click(tenant, click_id).await? else {
                return Ok(Err(format!("unknown click id {click_id}")));
            };
            if click.program_id != program.id {
                return Ok(Err(format!("click {click_id} was made on another offer")));
            }
            let window = Duration::days(program.attribution_window_days.into());
            let age = received_at - click.created_at;
            if age.num_seconds() < i64::from(program.min_conversion_seconds) {
                return Ok(Err(format!(
                    "conversion came {} seconds after click {click_id}; the offer's minimum is {} seconds",
                    age.num_seconds().max(0),
                    program.min_conversion_seconds
                )));
            }
            if age > window {
                return Ok(Err(format!(
                    "click {click_id} expired: made {} days ago, the offer's attribution window is {} days",
                    age.num_days(),
                    program.attribution_window_days
                )));
            }
            (click.affiliate_id.clone(), Some(click))
        } else if let Some(code) = &params.coupon_code {
            let coupon = scoped::<coupon::Entity>(tenant)
                .filter(coupon::Column::ProgramId.eq(&program.id))
                .filter(coupon::Column::Code.eq(code))
                .filter(coupon::Column::Status.eq("active"))
                .one(&self.store.conn)
                .await?;
            match coupon {
                Some(c) => (c.affiliate_id, None),
                None => return Ok(Err(format!("unknown coupon code {code}"))),
            }
        } else {
            return Ok(Err("no click id and no coupon code".into()));
        };
        let affiliate = scoped_by_id::<affiliate::Entity>(tenant, &affiliate_id)
            .one(&self.store.conn)
            .await?;
        match affiliate {
            None => Ok(Err(format!("affiliate {affiliate_id} no longer exists"))),
            Some(a) if a.status != "active" => {
                Ok(Err(format!("affiliate {} is {}", a.slug, a.status)))
            }
            Some(a) => Ok(Ok((a, click))),
        }
    }

    async fn convert(
        &self,
        tenant: &TenantId,
        pb: &postback::Model,
        program: &program::Model,
        params: &PostbackParams,
    ) -> Result<Attribution, JobError> {
        if params.currency.code() != program.currency {
            let reason = format!(
                "currency {} differs from the offer's {} and no exchange rate is configured",
                params.currency, program.currency
            );
            return self.unattributed(tenant, pb, reason).await;
        }
        if !matches!(
            params.status,
            ConversionStatus::Approved | ConversionStatus::Pending | ConversionStatus::Rejected
        ) {
            let reason = format!(
                "status {} for txn_id {} that has no conversion",
                params.status, params.txn_id
            );
            return self.unattributed(tenant, pb, reason).await;
        }
        let (affiliate, click) = match self
            .resolve_affiliate(tenant, program, params, pb.created_at)
            .await?
        {
            Ok(found) => found,
            Err(reason) => return self.unattributed(tenant, pb, reason).await,
        };
        let t = now();
        let amount_minor = params
            .amount
            .map(|m| m.minor)
            .or(program.default_revenue_minor)
            .unwrap_or(0);
        // A conversion the merchant approved is held for the offer's hold period.
        let (status, hold_until) = match params.status {
            ConversionStatus::Approved if program.hold_days > 0 => (
                ConversionStatus::Pending,
                Some(t + Duration::days(program.hold_days.into())),
            ),
            s => (s, None),
        };
        let conv = conversion::Model {
            id: IdKind::Conversion.generate(),
            tenant_id: tenant.to_string(),
            created_at: t,
            program_id: program.id.clone(),
            affiliate_id: affiliate.id.clone(),
            click_id: click.as_ref().map(|c| c.id.clone()),
            coupon_code: if click.is_none() {
                params.coupon_code.clone()
            } else {
                None
            },
            postback_id: pb.id.clone(),
            txn_id: params.txn_id.clone(),
            event: params.event.clone(),
            status: status.as_str().into(),
            amount_minor,
            currency: program.currency.clone(),
            payout_minor: None,
            payout_override_minor: params.payout.map(|m| m.minor),
            commission_explanation: None,
            hold_until,
            is_test: pb.is_test || params.test,
            updated_at: t,
        };
        let txn = self.store.write_txn().await?;
        match insert(&txn, conv.clone()).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                // Another postback with this txn_id (other status) won the race:
                // run again and treat this one as a status change.
                txn.rollback().await?;
                return Err(JobError(format!(
                    "txn_id {} was converted concurrently; retrying",
                    params.txn_id
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let reason = format!(
            "attributed to affiliate {} ({} {})",
            affiliate.slug,
            format_minor(
                amount_minor,
                Currency::parse(&program.currency).unwrap_or(Currency::USD)
            ),
            program.currency
        );
        postback::Entity::update_many()
            .col_expr(postback::Column::State, Expr::value("processed"))
            .col_expr(postback::Column::ConversionId, Expr::value(conv.id.clone()))
            .col_expr(postback::Column::Reason, Expr::value(reason))
            .col_expr(postback::Column::ProcessedAt, Expr::value(t))
            .filter(postback::Column::TenantId.eq(tenant.as_str()))
            .filter(postback::Column::Id.eq(&pb.id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.queue
            .push(&CommissionJob {
                tenant_id: tenant.to_string(),
                conversion_id: conv.id.clone(),
                status: conv.status.clone(),
            })
            .await?;
        Ok(Attribution::Converted {
            conversion_id: conv.id,
        })
    }

    async fn change_status(
        &self,
        tenant: &TenantId,
        pb: &postback::Model,
        conv: conversion::Model,
        params: &PostbackParams,
    ) -> Result<Attribution, JobError> {
        let from = ConversionStatus::parse(&conv.status).map_err(|e| JobError(e.to_string()))?;
        let to = params.status;
        if from == to
            || (from == ConversionStatus::Pending
                && to == ConversionStatus::Approved
                && conv.hold_until.is_some())
        {
            // Same status again (e.g. with another amount), or an approval of a
            // conversion that is in its hold period: nothing moves.
            let reason = format!(
                "conversion {} is {} already; nothing changed",
                conv.id, conv.status
            );
            return self
                .processed(tenant, pb, &conv.id, reason)
                .await
                .map(|_| Attribution::AlreadyDone);
        }
        if !from.can_move_to(to) {
            let reason = format!(
                "conversion {} is {}; it cannot become {}",
                conv.id, from, to
            );
            return self.unattributed(tenant, pb, reason).await;
        }
        let t = now();
        let txn = self.store.write_txn().await?;
        // Lock the conversion row first (and guard against a concurrent move).
        let moved = conversion::Entity::update_many()
            .col_expr(conversion::Column::Status, Expr::value(to.as_str()))
            .col_expr(
                conversion::Column::HoldUntil,
                Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
            )
            .col_expr(conversion::Column::UpdatedAt, Expr::value(t))
            .filter(conversion::Column::TenantId.eq(tenant.as_str()))
            .filter(conversion::Column::Id.eq(&conv.id))
            .filter(conversion::Column::Status.eq(from.as_str()))
            .exec(&txn)
            .await?;
        if moved.rows_affected != 1 {
            txn.rollback().await?;
            return Err(JobError(format!(
                "conversion {} moved concurrently; retrying",
                conv.id
            )));
        }
        if from.earns_commission() && !to.earns_commission() {
            let booked: Vec<ledger_entry::Model> = scoped::<ledger_entry::Entity>(tenant)
                .filter(ledger_entry::Column::ConversionId.eq(&conv.id))
                .all(&txn)
                .await?;
            let owed: i64 = booked.iter().map(|e| e.amount_minor).sum();
            if owed != 0 {
                let currency = Currency::parse(&conv.currency).unwrap_or(Currency::USD);
                insert(
                    &txn,
                    ledger_entry::Model {
                        id: IdKind::LedgerEntry.generate(),
                        tenant_id: tenant.to_string(),
                        created_at: t,
                        affiliate_id: conv.affiliate_id.clone(),
                        program_id: conv.program_id.clone(),
                        conversion_id: conv.id.clone(),
                        entry_key: format!("reversal:{}", to.as_str()),
                        kind: "reversal".into(),
                        amount_minor: -owed,
                        currency: conv.currency.clone(),
                        explanation: format!(
                            "reversal of {} {} after the conversion became {} (postback {})",
                            format_minor(owed, currency),
                            conv.currency,
                            to,
                            pb.id
                        ),
                        available_at: t,
                        payout_id: None,
                        is_test: conv.is_test,
                    },
                )
                .await?;
            }
        }
        let reason = format!("conversion {} moved from {} to {}", conv.id, from, to);
        self.mark_processed(&txn, tenant, pb, &conv.id, reason)
            .await?;
        txn.commit().await?;
        self.queue
            .push(&CommissionJob {
                tenant_id: tenant.to_string(),
                conversion_id: conv.id.clone(),
                status: to.as_str().into(),
            })
            .await?;
        Ok(Attribution::StatusChanged {
            conversion_id: conv.id,
            status: to,
        })
    }

    /// Queues the commission step for a conversion's current status.
    pub(crate) async fn push_commission(
        &self,
        tenant: &TenantId,
        conversion_id: &str,
    ) -> Result<(), JobError> {
        if let Some(conv) = scoped_by_id::<conversion::Entity>(tenant, conversion_id)
            .one(&self.store.conn)
            .await?
        {
            self.queue
                .push(&CommissionJob {
                    tenant_id: tenant.to_string(),
                    conversion_id: conv.id,
                    status: conv.status,
                })
                .await?;
        }
        Ok(())
    }

    async fn processed(
        &self,
        tenant: &TenantId,
        pb: &postback::Model,
        conversion_id: &str,
        reason: String,
    ) -> Result<(), JobError> {
        self.mark_processed(&self.store.conn, tenant, pb, conversion_id, reason)
            .await
    }

    async fn mark_processed<C: sea_orm::ConnectionTrait>(
        &self,
        db: &C,
        tenant: &TenantId,
        pb: &postback::Model,
        conversion_id: &str,
        reason: String,
    ) -> Result<(), JobError> {
        postback::Entity::update_many()
            .col_expr(postback::Column::State, Expr::value("processed"))
            .col_expr(postback::Column::ConversionId, Expr::value(conversion_id))
            .col_expr(postback::Column::Reason, Expr::value(reason))
            .col_expr(postback::Column::ProcessedAt, Expr::value(now()))
            .filter(postback::Column::TenantId.eq(tenant.as_str()))
            .filter(postback::Column::Id.eq(&pb.id))
            .exec(db)
            .await?;
        Ok(())
    }
}
