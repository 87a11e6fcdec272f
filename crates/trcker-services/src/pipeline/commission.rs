//! Job 2: book the commission a conversion earns, once, in the append-only
//! ledger, and notify the affiliate of the conversion's status.
//!
//! A job carries a batch of one tenant's conversions: the conversions and
//! their offers' plans are read with one query each, the commissions are
//! computed by the domain's rules, and every conversion's payout and ledger
//! entry are written in one transaction. The attribute job takes this step
//! itself; a job of this type is queued when that fails, and by the sweeper
//! when a hold period ends.
//!
//! The plan is the affiliate's own plan for the event if there is one, else the
//! program's; a `payout` sent by the merchant overrides both. Every entry carries
//! the sentence that explains its amount.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trcker_domain::ConversionStatus;
use trcker_domain::commission::Commission;
use trcker_domain::money::Money;
use trcker_storage::batch::{among, per_row};
use trcker_storage::entities::*;
use trcker_storage::ids::{ConversionId, LedgerEntryId, ProgramId};
use trcker_storage::queue::Job;
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{self, ColumnTrait, QueryFilter, QueryOrder};
use trcker_storage::{TenantId, scoped, scoped_update};

use super::{JobError, Pipeline, PipelineJob};
use crate::ledger::book_entries;
use crate::programs::rule_of;

/// Book the commissions that conversions of one tenant earn (once each) and
/// notify their affiliates of each conversion's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommissionJob {
    pub tenant_id: TenantId,
    pub items: Vec<CommissionItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionItem {
    pub conversion_id: ConversionId,
    /// The conversion's status when the job was queued: each status gets its
    /// own job (and its own notification).
    pub status: ConversionStatus,
}

impl CommissionJob {
    /// The job of one conversion's status.
    pub fn one(tenant_id: TenantId, conversion_id: ConversionId, status: ConversionStatus) -> Self {
        CommissionJob {
            tenant_id,
            items: vec![CommissionItem {
                conversion_id,
                status,
            }],
        }
    }
}

impl Job for CommissionJob {
    const QUEUE: &'static str = "trcker.commission";
    fn idempotency_key(&self) -> String {
        super::batch_key(&self.items, |i| format!("{}:{}", i.conversion_id, i.status))
    }
}

impl PipelineJob for CommissionJob {
    fn describe(&self) -> String {
        format!(
            "commission of {} conversions from {:?}",
            self.items.len(),
            self.items.first().map(|i| &i.conversion_id)
        )
    }

    async fn run(&self, pipeline: &Pipeline) -> Result<(), JobError> {
        pipeline.commission(self).await
    }
}

/// Plans by (offer, event), newest first.
type Plans = HashMap<(ProgramId, String), Vec<commission_plan::Model>>;

impl Pipeline {
    /// Books what the job's conversions earn, then schedules their
    /// notifications (also when a plan could not be applied: its error is
    /// returned after, so the job runs again for it).
    pub async fn commission(&self, job: &CommissionJob) -> Result<(), JobError> {
        let backend = self.store.conn.get_database_backend();
        let tenant = &job.tenant_id;
        let ids: Vec<ConversionId> = job.items.iter().map(|i| i.conversion_id.clone()).collect();
        let convs = scoped::<conversion::Entity>(tenant)
            .filter(among(backend, conversion::Column::Id, ids))
            .all(&self.store.conn)
            .await?;
        let owed: Vec<&conversion::Model> = convs
            .iter()
            .filter(|c| c.status.earns_commission() && c.payout_minor.is_none())
            .collect();
        let mut failed = None;
        if !owed.is_empty() {
            failed = self.book_commissions(tenant, &owed).await?;
        }
        let events: Vec<(ConversionId, String)> = job
            .items
            .iter()
            .map(|i| (i.conversion_id.clone(), format!("status:{}", i.status)))
            .collect();
        self.schedule_notifications(tenant, &events).await?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every active plan of these offers.
    async fn plans_of(
        &self,
        tenant: &TenantId,
        program_ids: Vec<ProgramId>,
    ) -> Result<Plans, JobError> {
        let backend = self.store.conn.get_database_backend();
        let mut by_event = Plans::new();
        for plan in scoped::<commission_plan::Entity>(tenant)
            .filter(among(
                backend,
                commission_plan::Column::ProgramId,
                program_ids,
            ))
            .filter(commission_plan::Column::Active.eq(true))
            .order_by_desc(commission_plan::Column::Id)
            .all(&self.store.conn)
            .await?
        {
            by_event
                .entry((plan.program_id.clone(), plan.event.clone()))
                .or_default()
                .push(plan);
        }
        Ok(by_event)
    }

    /// Books the commissions of conversions that earn one and have none yet, in
    /// one transaction. A conversion whose plan cannot be applied is left for
    /// the job's next run (its error is returned) without holding up the others.
    async fn book_commissions(
        &self,
        tenant: &TenantId,
        convs: &[&conversion::Model],
    ) -> Result<Option<JobError>, JobError> {
        let plans = self
            .plans_of(tenant, convs.iter().map(|c| c.program_id.clone()).collect())
            .await?;
        let mut failed = None;
        let t = Utc::now();
        let mut computed: Vec<(&conversion::Model, Commission)> = Vec::with_capacity(convs.len());
        for conv in convs {
            match commission_for(conv, &plans) {
                Ok(c) => computed.push((conv, c)),
                Err(e) => {
                    tracing::error!(conversion_id = %conv.id, error = %e, "commission cannot be computed");
                    failed = Some(e);
                }
            }
        }
        if computed.is_empty() {
            return Ok(failed);
        }
        let txn = self.store.pipeline_txn().await?;
        let set = set_payouts(&txn, tenant, &computed, t).await?;
        let entries: Vec<_> = computed
            .into_iter()
            .filter(|(conv, _)| set.contains(&conv.id))
            .map(|(conv, commission)| commission_entry(conv, commission, t))
            .collect();
        book_entries(&txn, entries).await?;
        txn.commit().await?;
        Ok(failed)
    }
}

/// The commission a conversion earns, and why.
fn commission_for(conv: &conversion::Model, plans: &Plans) -> Result<Commission, JobError> {
    let currency = conv.currency.0;
    if let Some(minor) = conv.payout_override_minor {
        let payout = Money::new(minor, currency);
        return Ok(Commission {
            payout,
            explanation: format!("payout {payout} set by the merchant's postback"),
        });
    }
    let none = Vec::new();
    let plans = plans
        .get(&(conv.program_id.clone(), conv.event.clone()))
        .unwrap_or(&none);
    let plan = plans
        .iter()
        .find(|p| p.affiliate_id.as_ref() == Some(&conv.affiliate_id))
        .or_else(|| plans.iter().find(|p| p.affiliate_id.is_none()));
    let Some(plan) = plan else {
        return Ok(Commission {
            payout: Money::new(0, currency),
            explanation: format!(
                "no commission plan for event '{}' on this offer",
                conv.event
            ),
        });
    };
    let rule = rule_of(plan).map_err(|e| JobError(format!("commission plan {}: {e}", plan.id)))?;
    let mut c = rule
        .compute(Money::new(conv.amount_minor, currency))
        .map_err(|e| JobError(format!("commission of conversion {}: {e}", conv.id)))?;
    if plan.affiliate_id.is_some() {
        c.explanation = format!("{} (affiliate's own plan)", c.explanation);
    }
    Ok(c)
}

/// Sets each conversion's payout and explanation, only while it still earns
/// and has none (a refund that got there first leaves nothing to book); the
/// conversions this transaction set (and locked).
async fn set_payouts(
    txn: &sea_orm::DatabaseTransaction,
    tenant: &TenantId,
    computed: &[(&conversion::Model, Commission)],
    t: DateTime<Utc>,
) -> Result<HashSet<ConversionId>, JobError> {
    use conversion::Column as C;
    let backend = sea_orm::ConnectionTrait::get_database_backend(txn);
    let earning = [ConversionStatus::Pending, ConversionStatus::Approved].map(conversion::Status);
    Ok(scoped_update::<conversion::Entity>(tenant)
        .col_expr(
            C::PayoutMinor,
            per_row(
                backend,
                C::Id,
                computed.iter().map(|(c, m)| (&c.id, m.payout.minor)),
            ),
        )
        .col_expr(
            C::CommissionExplanation,
            per_row(
                backend,
                C::Id,
                computed.iter().map(|(c, m)| (&c.id, m.explanation.clone())),
            ),
        )
        .col_expr(C::UpdatedAt, Expr::value(t))
        .filter(among(
            backend,
            C::Id,
            computed.iter().map(|(c, _)| c.id.clone()),
        ))
        .filter(C::PayoutMinor.is_null())
        .filter(C::Status.is_in(earning))
        .exec_with_returning(txn)
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect())
}

fn commission_entry(
    conv: &conversion::Model,
    commission: Commission,
    t: DateTime<Utc>,
) -> ledger_entry::Model {
    ledger_entry::Model {
        id: LedgerEntryId::generate(),
        tenant_id: conv.tenant_id.clone(),
        created_at: t,
        affiliate_id: conv.affiliate_id.clone(),
        program_id: conv.program_id.clone(),
        conversion_id: conv.id.clone(),
        entry_key: "commission".into(),
        kind: ledger_entry::Kind::Commission,
        amount_minor: commission.payout.minor,
        currency: conv.currency,
        explanation: commission.explanation,
        available_at: conv.hold_until.unwrap_or(t),
        payout_id: None,
        is_test: conv.is_test,
        actor: None,
    }
}
