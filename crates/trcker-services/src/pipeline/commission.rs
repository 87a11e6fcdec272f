//! Job 2: book the commission a conversion earns, once, in the append-only
//! ledger, and notify the affiliate of the conversion's status.
//!
//! A job carries a batch of one tenant's conversions: the conversions and
//! their offers' plans are read with one query each, the commissions are
//! computed by the domain's rules, and every conversion's payout and ledger
//! entry are written in one transaction.
//!
//! The plan is the affiliate's own plan for the event if there is one, else the
//! program's; a `payout` sent by the merchant overrides both. Every entry carries
//! the sentence that explains its amount.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
};
use trcker_domain::ConversionStatus;
use trcker_domain::commission::{Commission, CommissionRule, RuleError};
use trcker_domain::ids::IdKind;
use trcker_domain::money::{Currency, Money};
use trcker_storage::entities::*;
use trcker_storage::{TenantId, scoped, sea_orm};

use super::JobError;
use crate::Services;
use crate::queue::CommissionJob;
use crate::util::{among, now, per_row, pow2_chunks};

/// The rule a stored plan describes.
pub fn rule_of(plan: &commission_plan::Model) -> Result<CommissionRule, RuleError> {
    let currency = Currency::parse(&plan.currency).unwrap_or(Currency::USD);
    CommissionRule::parse(&plan.kind, &plan.value, currency)
}

impl Services {
    pub async fn run_commission(&self, job: &CommissionJob) -> Result<(), JobError> {
        let backend = self.store.conn.get_database_backend();
        let tenant = TenantId::from_trusted(job.tenant_id.clone());
        let ids: Vec<String> = job.items.iter().map(|i| i.conversion_id.clone()).collect();
        let convs = scoped::<conversion::Entity>(&tenant)
            .filter(among(backend, conversion::Column::Id, ids))
            .all(&self.store.conn)
            .await?;
        let mut owed = Vec::new();
        for conv in &convs {
            let status =
                ConversionStatus::parse(&conv.status).map_err(|e| JobError(e.to_string()))?;
            if status.earns_commission() && conv.payout_minor.is_none() {
                owed.push(conv);
            }
        }
        let mut failed = None;
        if !owed.is_empty() {
            failed = self.book_commissions(&tenant, &owed).await?;
        }
        let events: Vec<(String, String)> = job
            .items
            .iter()
            .map(|i| (i.conversion_id.clone(), format!("status:{}", i.status)))
            .collect();
        self.schedule_notifications(&tenant, &events).await?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every plan of these offers, newest first, by (offer, event).
    async fn plans_of(
        &self,
        tenant: &TenantId,
        program_ids: Vec<String>,
    ) -> Result<HashMap<(String, String), Vec<commission_plan::Model>>, JobError> {
        let backend = self.store.conn.get_database_backend();
        let mut by_event: HashMap<(String, String), Vec<commission_plan::Model>> = HashMap::new();
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

    fn commission_for(
        conv: &conversion::Model,
        plans: &HashMap<(String, String), Vec<commission_plan::Model>>,
    ) -> Result<Commission, JobError> {
        let currency = Currency::parse(&conv.currency).unwrap_or(Currency::USD);
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
            .find(|p| p.affiliate_id.as_deref() == Some(conv.affiliate_id.as_str()))
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
        let rule =
            rule_of(plan).map_err(|e| JobError(format!("commission plan {}: {e}", plan.id)))?;
        let mut c = rule
            .compute(Money::new(conv.amount_minor, currency))
            .map_err(|e| JobError(format!("commission of conversion {}: {e}", conv.id)))?;
        if plan.affiliate_id.is_some() {
            c.explanation = format!("{} (affiliate's own plan)", c.explanation);
        }
        Ok(c)
    }

    /// Books the commissions of conversions that earn one and have none yet, in
    /// one transaction. A conversion whose plan cannot be applied is left for
    /// the job's next run (its error is returned) without holding up the others.
    async fn book_commissions(
        &self,
        tenant: &TenantId,
        convs: &[&conversion::Model],
    ) -> Result<Option<JobError>, JobError> {
        let backend = self.store.conn.get_database_backend();
        let plans = self
            .plans_of(tenant, convs.iter().map(|c| c.program_id.clone()).collect())
            .await?;
        let mut failed = None;
        let t = now();
        let mut computed: Vec<(&conversion::Model, Commission)> = Vec::with_capacity(convs.len());
        for conv in convs {
            match Self::commission_for(conv, &plans) {
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
        // Only conversions that still earn and have no payout: a refund that
        // got there first leaves nothing to book. The rows returned are those
        // this transaction set (and locked).
        let set: HashSet<String> = conversion::Entity::update_many()
            .col_expr(
                conversion::Column::PayoutMinor,
                per_row(
                    backend,
                    conversion::Column::Id,
                    computed.iter().map(|(c, m)| (&c.id, m.payout.minor)),
                ),
            )
            .col_expr(
                conversion::Column::CommissionExplanation,
                per_row(
                    backend,
                    conversion::Column::Id,
                    computed.iter().map(|(c, m)| (&c.id, m.explanation.clone())),
                ),
            )
            .col_expr(conversion::Column::UpdatedAt, Expr::value(t))
            .filter(conversion::Column::TenantId.eq(tenant.as_str()))
            .filter(among(
                backend,
                conversion::Column::Id,
                computed.iter().map(|(c, _)| c.id.clone()),
            ))
            .filter(conversion::Column::PayoutMinor.is_null())
            .filter(conversion::Column::Status.is_in(["pending", "approved"]))
            .exec_with_returning(&txn)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let entries: Vec<_> = computed
            .into_iter()
            .filter(|(conv, _)| set.contains(&conv.id))
            .map(|(conv, commission)| ledger_entry::Model {
                id: IdKind::LedgerEntry.generate(),
                tenant_id: tenant.to_string(),
                created_at: t,
                affiliate_id: conv.affiliate_id.clone(),
                program_id: conv.program_id.clone(),
                conversion_id: conv.id.clone(),
                entry_key: "commission".into(),
                kind: "commission".into(),
                amount_minor: commission.payout.minor,
                currency: conv.currency.clone(),
                explanation: commission.explanation,
                available_at: conv.hold_until.unwrap_or(t),
                payout_id: None,
                is_test: conv.is_test,
            })
            .collect();
        book_entries(&txn, entries).await?;
        txn.commit().await?;
        Ok(failed)
    }
}

/// Inserts ledger entries in `txn`: one per conversion and entry key, whoever
/// gets there first (a repeat is left out, not an error).
pub(super) async fn book_entries(
    txn: &sea_orm::DatabaseTransaction,
    entries: Vec<ledger_entry::Model>,
) -> Result<(), sea_orm::DbErr> {
    if entries.is_empty() {
        return Ok(());
    }
    for chunk in pow2_chunks(&entries, 256) {
        ledger_entry::Entity::insert_many(
            chunk
                .iter()
                .map(|e| e.clone().into_active_model().reset_all()),
        )
        .on_conflict_do_nothing_on([
            ledger_entry::Column::TenantId,
            ledger_entry::Column::ConversionId,
            ledger_entry::Column::EntryKey,
        ])
        .exec_without_returning(txn)
        .await?;
    }
    Ok(())
}
