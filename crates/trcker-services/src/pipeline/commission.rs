//! Job 2: book the commission a conversion earns, once, in the append-only
//! ledger, and notify the affiliate of the conversion's status.
//!
//! The plan is the affiliate's own plan for the event if there is one, else the
//! program's; a `payout` sent by the merchant overrides both. Every entry carries
//! the sentence that explains its amount.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use trcker_domain::ConversionStatus;
use trcker_domain::commission::{Commission, CommissionRule, RuleError};
use trcker_domain::ids::IdKind;
use trcker_domain::money::{Currency, Money};
use trcker_storage::entities::*;
use trcker_storage::{TenantId, is_unique_violation, scoped, scoped_by_id, sea_orm};

use super::JobError;
use crate::Services;
use crate::queue::CommissionJob;
use crate::util::{insert, now};

/// The rule a stored plan describes.
pub fn rule_of(plan: &commission_plan::Model) -> Result<CommissionRule, RuleError> {
    let currency = Currency::parse(&plan.currency).unwrap_or(Currency::USD);
    CommissionRule::parse(&plan.kind, &plan.value, currency)
}

impl Services {
    pub async fn run_commission(&self, job: &CommissionJob) -> Result<(), JobError> {
        let tenant = TenantId::from_trusted(job.tenant_id.clone());
        let Some(conv) = scoped_by_id::<conversion::Entity>(&tenant, &job.conversion_id)
            .one(&self.store.conn)
            .await?
        else {
            return Ok(());
        };
        let status = ConversionStatus::parse(&conv.status).map_err(|e| JobError(e.to_string()))?;
        if status.earns_commission() && conv.payout_minor.is_none() {
            self.book_commission(&tenant, &conv).await?;
        }
        self.schedule_notifications(&tenant, &conv.id, &format!("status:{}", job.status))
            .await
    }

    async fn commission_for(
        &self,
        tenant: &TenantId,
        conv: &conversion::Model,
    ) -> Result<Commission, JobError> {
        let currency = Currency::parse(&conv.currency).unwrap_or(Currency::USD);
        if let Some(minor) = conv.payout_override_minor {
            let payout = Money::new(minor, currency);
            return Ok(Commission {
                payout,
                explanation: format!("payout {payout} set by the merchant's postback"),
            });
        }
        let plans = scoped::<commission_plan::Entity>(tenant)
            .filter(commission_plan::Column::ProgramId.eq(&conv.program_id))
            .filter(commission_plan::Column::Event.eq(&conv.event))
            .filter(commission_plan::Column::Active.eq(true))
            .order_by_desc(commission_plan::Column::Id)
            .all(&self.store.conn)
            .await?;
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

    async fn book_commission(
        &self,
        tenant: &TenantId,
        conv: &conversion::Model,
    ) -> Result<(), JobError> {
        let commission = self.commission_for(tenant, conv).await?;
        let t = now();
        let txn = self.store.write_txn().await?;
        // Lock the conversion, and only while it still earns a commission: a
        // refund that got there first leaves nothing to book.
        let locked = conversion::Entity::update_many()
            .col_expr(
                conversion::Column::PayoutMinor,
                Expr::value(commission.payout.minor),
            )
            .col_expr(
                conversion::Column::CommissionExplanation,
                Expr::value(commission.explanation.clone()),
            )
            .col_expr(conversion::Column::UpdatedAt, Expr::value(t))
            .filter(conversion::Column::TenantId.eq(tenant.as_str()))
            .filter(conversion::Column::Id.eq(&conv.id))
            .filter(conversion::Column::PayoutMinor.is_null())
            .filter(conversion::Column::Status.is_in(["pending", "approved"]))
            .exec(&txn)
            .await?;
        if locked.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(());
        }
        let entry = ledger_entry::Model {
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
        };
        match insert(&txn, entry).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                txn.rollback().await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        txn.commit().await?;
        Ok(())
    }
}
