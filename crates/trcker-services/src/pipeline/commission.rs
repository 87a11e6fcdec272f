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
//! program's, each in the version that was in force when the conversion
//! happened (a later change of plan never re-prices it); a `payout` sent by
//! the merchant overrides both. Every conversion stores what priced it
//! ([`Pricing`]: plan, version, rule, inputs, result) and every entry the
//! sentence that explains its amount.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trcker_domain::ConversionStatus;
use trcker_domain::commission::Commission;
use trcker_domain::money::Money;
use trcker_domain::tiers::{TierBasis, Tiers, TimeZone};
use trcker_storage::batch::{among, per_row};
use trcker_storage::entities::*;
use trcker_storage::ids::{ConversionId, LedgerEntryId, ProgramId};
use trcker_storage::queue::Job;
use trcker_storage::rollups::Tally;
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{self, ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
use trcker_storage::tiers::{lock_affiliates, priced_volume};
use trcker_storage::{TenantId, lookup, scoped, scoped_update};

use super::{JobError, Pipeline, PipelineJob};
use crate::ledger::{book_entries, format_sum};
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

/// Plans by (offer, event), every version, newest first.
type Plans = HashMap<(ProgramId, String), Vec<commission_plan::Model>>;

/// What priced a conversion's commission that its row does not hold
/// already, stored with it as compact JSON (`commission_detail`): the
/// inputs and the result are the conversion's own columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricingRecord {
    /// `affiliate_plan`, `program_plan`, `postback_payout` or `no_plan`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_version: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<PricedRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<PricedTier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncapped: Option<String>,
}

/// Where a conversion fell among its plan's tiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedTier {
    /// 1 for the plan's own rule, 2 for its first step…
    pub number: usize,
    /// `conversions` or `revenue`.
    pub basis: String,
    /// `month` or `week`, in the tenant's time zone.
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub time_zone: String,
    /// The step's start: a number of conversions, or revenue ("1000.00").
    pub from: String,
    /// The affiliate's volume in the period before this conversion.
    pub volume: String,
}

/// What priced a conversion's commission, as `GET /api/v1/conversions/{id}`
/// shows it: the stored record with the conversion's inputs and result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    /// `affiliate_plan`, `program_plan`, `postback_payout` or `no_plan`.
    pub source: String,
    pub plan_id: Option<String>,
    pub plan_version: Option<i32>,
    pub rule: Option<PricedRule>,
    /// The tier that set the rate (None: the plan has no tiers).
    pub tier: Option<PricedTier>,
    pub inputs: PricingInputs,
    pub result: PricingResult,
    /// The same, for people.
    pub sentence: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedRule {
    /// `flat`, `percent` or `combined`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<String>,
    /// The plan's maximum per conversion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingInputs {
    pub event: String,
    pub amount: String,
    pub currency: String,
    /// The exchange rate applied to the amount (none: the offer's currency).
    pub exchange_rate: Option<String>,
    /// The amount and currency the merchant sent, when converted.
    pub original_amount: Option<String>,
    pub original_currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingResult {
    pub payout: String,
    pub currency: String,
    /// What the rule gave before the plan's maximum cut it.
    pub uncapped: Option<String>,
}

/// What priced a conversion, once it is priced.
pub fn pricing_of(conv: &conversion::Model) -> Option<Pricing> {
    let record: PricingRecord = serde_json::from_str(conv.commission_detail.as_deref()?).ok()?;
    let currency = conv.currency.0;
    Some(Pricing {
        source: record.source,
        plan_id: record.plan_id,
        plan_version: record.plan_version,
        rule: record.rule,
        tier: record.tier,
        inputs: PricingInputs {
            event: conv.event.clone(),
            amount: Money::new(conv.amount_minor, currency).amount_string(),
            currency: currency.code().to_owned(),
            exchange_rate: conv.exchange_rate.clone(),
            original_amount: conv
                .original_amount_minor
                .zip(conv.original_currency)
                .map(|(m, c)| Money::new(m, c.0).amount_string()),
            original_currency: conv.original_currency.map(|c| c.to_string()),
        },
        result: PricingResult {
            payout: Money::new(conv.payout_minor?, currency).amount_string(),
            currency: currency.code().to_owned(),
            uncapped: record.uncapped,
        },
        sentence: conv.commission_explanation.clone().unwrap_or_default(),
    })
}

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

    /// Every plan of these offers, every version.
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
    ///
    /// A conversion of a tiered plan is priced inside the transaction, after
    /// its affiliate's row is locked ([`lock_affiliates`]), by the volume the
    /// affiliate's priced conversions of the period make before it: pricing
    /// one affiliate's tiered conversions is a sequence, and each conversion
    /// keeps the tier it was priced at.
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
        let mut computed: Vec<(&conversion::Model, Priced)> = Vec::with_capacity(convs.len());
        let mut tiered: Vec<(&conversion::Model, &commission_plan::Model)> = Vec::new();
        for conv in convs {
            let plan = plan_in_force(conv, &plans);
            match plan {
                Some(p) if p.tiers.is_some() && conv.payout_override_minor.is_none() => {
                    tiered.push((conv, p));
                    continue;
                }
                _ => {}
            }
            match commission_for(conv, plan, None) {
                Ok(c) => computed.push((conv, c)),
                Err(e) => {
                    tracing::error!(conversion_id = %conv.id, error = %e, "commission cannot be computed");
                    failed = Some(e);
                }
            }
        }
        if computed.is_empty() && tiered.is_empty() {
            return Ok(failed);
        }
        let txn = self.store.pipeline_txn().await?;
        if !tiered.is_empty() {
            let zone = self.time_zone_of(&txn, tenant).await?;
            for (conv, priced) in price_tiered(&txn, tenant, zone, tiered).await? {
                match priced {
                    Ok(c) => computed.push((conv, c)),
                    Err(e) => {
                        tracing::error!(conversion_id = %conv.id, error = %e, "commission cannot be computed");
                        failed = Some(e);
                    }
                }
            }
        }
        let set = set_payouts(&txn, tenant, &computed, t).await?;
        let mut tally = Tally::default();
        for (conv, priced) in &computed {
            if set.contains(&conv.id) {
                tally.commission(conv, priced.commission.payout.minor);
            }
        }
        let entries: Vec<_> = computed
            .into_iter()
            .filter(|(conv, _)| set.contains(&conv.id))
            .map(|(conv, priced)| commission_entry(conv, priced.commission, t))
            .collect();
        book_entries(&txn, entries).await?;
        tally.apply(&txn).await?;
        txn.commit().await?;
        Ok(failed)
    }

    /// The tenant's time zone (UTC if its stored name no longer parses).
    async fn time_zone_of(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        tenant: &TenantId,
    ) -> Result<TimeZone, JobError> {
        let name = lookup::tenant(tenant).one(db).await?.map(|t| t.time_zone);
        Ok(name
            .and_then(|n| TimeZone::parse(&n).ok())
            .unwrap_or(TimeZone::UTC))
    }
}

/// Prices conversions of tiered plans, inside the transaction that books
/// them: locks their affiliates, keeps those still unpriced, and prices each
/// affiliate's conversions of one offer, event and period in the order they
/// happened, from the volume already priced in that period.
async fn price_tiered<'a>(
    txn: &sea_orm::DatabaseTransaction,
    tenant: &TenantId,
    zone: TimeZone,
    tiered: Vec<(&'a conversion::Model, &'a commission_plan::Model)>,
) -> Result<Vec<(&'a conversion::Model, Result<Priced, JobError>)>, JobError> {
    let backend = sea_orm::ConnectionTrait::get_database_backend(txn);
    let mut affiliates: Vec<_> = tiered.iter().map(|(c, _)| c.affiliate_id.clone()).collect();
    affiliates.sort();
    affiliates.dedup();
    lock_affiliates(txn, tenant, affiliates).await?;
    // Another worker may have priced some while this one waited.
    let unpriced: HashSet<ConversionId> = scoped::<conversion::Entity>(tenant)
        .select_only()
        .column(conversion::Column::Id)
        .filter(among(
            backend,
            conversion::Column::Id,
            tiered.iter().map(|(c, _)| c.id.clone()),
        ))
        .filter(conversion::Column::PayoutMinor.is_null())
        .filter(conversion::Column::Status.is_in(earning()))
        .into_tuple::<ConversionId>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    let mut out = Vec::with_capacity(tiered.len());
    let mut groups: HashMap<_, Vec<_>> = HashMap::new();
    for (conv, plan) in tiered {
        if !unpriced.contains(&conv.id) {
            continue;
        }
        let tiers =
            match Tiers::from_stored(plan.tiers.as_deref().unwrap_or_default(), plan.currency.0) {
                Ok(t) => t,
                Err(e) => {
                    out.push((
                        conv,
                        Err(JobError(format!("commission plan {}: {e}", plan.id))),
                    ));
                    continue;
                }
            };
        let period = tiers.period.bounds(conv.created_at, zone);
        groups
            .entry((
                conv.affiliate_id.clone(),
                conv.program_id.clone(),
                conv.event.clone(),
                period,
            ))
            .or_default()
            .push((conv, plan, tiers));
    }
    for ((affiliate, program, event, period), mut convs) in groups {
        convs.sort_by(|a, b| (a.0.created_at, &a.0.id).cmp(&(b.0.created_at, &b.0.id)));
        let (count, revenue) =
            priced_volume(txn, tenant, &affiliate, &program, &event, period).await?;
        let (mut count, mut revenue) = (i128::from(count), revenue);
        for (conv, plan, tiers) in convs {
            let before = match tiers.basis {
                TierBasis::Conversions => count,
                TierBasis::Revenue => revenue,
            };
            let volume = Volume {
                tiers: &tiers,
                before,
                period_start: period.0,
                zone,
            };
            out.push((conv, commission_for(conv, Some(plan), Some(volume))));
            count += 1;
            revenue += i128::from(conv.amount_minor);
        }
    }
    Ok(out)
}

/// The statuses whose conversions earn a commission.
fn earning() -> [conversion::Status; 2] {
    [ConversionStatus::Pending, ConversionStatus::Approved].map(conversion::Status)
}

/// A commission and what priced it.
struct Priced {
    commission: Commission,
    record: PricingRecord,
}

/// The plan in force for a conversion when it happened: the affiliate's
/// own version then, else the program's.
fn plan_in_force<'a>(
    conv: &conversion::Model,
    plans: &'a Plans,
) -> Option<&'a commission_plan::Model> {
    let versions = plans.get(&(conv.program_id.clone(), conv.event.clone()))?;
    let t = conv.created_at;
    let in_force =
        |p: &&commission_plan::Model| p.created_at <= t && p.retired_at.is_none_or(|r| r > t);
    versions
        .iter()
        .filter(in_force)
        .find(|p| p.affiliate_id.as_ref() == Some(&conv.affiliate_id))
        .or_else(|| {
            versions
                .iter()
                .filter(in_force)
                .find(|p| p.affiliate_id.is_none())
        })
}

/// A tiered plan's volume before a conversion, in its period.
struct Volume<'a> {
    tiers: &'a Tiers,
    before: i128,
    period_start: DateTime<Utc>,
    zone: TimeZone,
}

/// The commission a conversion earns by `plan` (the one in force), and why;
/// a tiered plan needs the affiliate's `volume` before it.
fn commission_for(
    conv: &conversion::Model,
    plan: Option<&commission_plan::Model>,
    volume: Option<Volume<'_>>,
) -> Result<Priced, JobError> {
    let currency = conv.currency.0;
    let amount = Money::new(conv.amount_minor, currency);
    let priced = |commission: Commission,
                  source: &str,
                  plan: Option<&commission_plan::Model>,
                  rule: Option<PricedRule>,
                  tier: Option<PricedTier>| Priced {
        record: PricingRecord {
            source: source.to_owned(),
            plan_id: plan.map(|p| p.id.to_string()),
            plan_version: plan.map(|p| p.version),
            rule,
            tier,
            uncapped: commission.uncapped.map(|m| m.amount_string()),
        },
        commission,
    };
    if let Some(minor) = conv.payout_override_minor {
        let payout = Money::new(minor, currency);
        let c = Commission {
            payout,
            explanation: format!("payout {payout} set by the merchant's postback"),
            uncapped: None,
        };
        return Ok(priced(c, "postback_payout", None, None, None));
    }
    let Some(plan) = plan else {
        let c = Commission {
            payout: Money::new(0, currency),
            explanation: format!(
                "no commission plan for event '{}' on this offer",
                conv.event
            ),
            uncapped: None,
        };
        return Ok(priced(c, "no_plan", None, None, None));
    };
    let own = rule_of(plan).map_err(|e| JobError(format!("commission plan {}: {e}", plan.id)))?;
    if plan.tiers.is_some() && volume.is_none() {
        return Err(JobError(format!(
            "commission plan {} is tiered and was priced without its volume",
            plan.id
        )));
    }
    let choice = volume.as_ref().map(|v| (v, v.tiers.choose(v.before)));
    let rule = choice.as_ref().and_then(|(_, c)| c.rule).unwrap_or(&own);
    let max = plan.max_payout_minor.map(|m| Money::new(m, currency));
    let mut c = rule
        .compute_capped(amount, max)
        .map_err(|e| JobError(format!("commission of conversion {}: {e}", conv.id)))?;
    let tier = choice.map(|(v, choice)| {
        let (from, before) = match v.tiers.basis {
            TierBasis::Conversions => (choice.from.to_string(), v.before.to_string()),
            TierBasis::Revenue => (
                Money::new(choice.from, currency).amount_string(),
                format_sum(v.before, currency),
            ),
        };
        let unit = match v.tiers.basis {
            TierBasis::Conversions => "conversions".to_owned(),
            TierBasis::Revenue => currency.code().to_owned(),
        };
        c.explanation = format!(
            "tier {} (from {from} {unit}; {before} {unit} this {} before this one): {}",
            choice.number,
            v.tiers.period.as_str(),
            c.explanation
        );
        PricedTier {
            number: choice.number,
            basis: v.tiers.basis.as_str().to_owned(),
            period: v.tiers.period.as_str().to_owned(),
            period_start: v.period_start,
            time_zone: v.zone.name().to_owned(),
            from,
            volume: before,
        }
    });
    let source = if plan.affiliate_id.is_some() {
        c.explanation = format!("{} (affiliate's own plan)", c.explanation);
        "affiliate_plan"
    } else {
        "program_plan"
    };
    let rule = PricedRule {
        kind: rule.kind().to_owned(),
        flat: rule.flat().map(|m| m.amount_string()),
        percent: rule.percent().map(|p| p.to_string()),
        max: max.map(|m| m.amount_string()),
    };
    Ok(priced(c, source, Some(plan), Some(rule), tier))
}

/// Sets each conversion's payout and explanation, only while it still earns
/// and has none (a refund that got there first leaves nothing to book); the
/// conversions this transaction set (and locked).
async fn set_payouts(
    txn: &sea_orm::DatabaseTransaction,
    tenant: &TenantId,
    computed: &[(&conversion::Model, Priced)],
    t: DateTime<Utc>,
) -> Result<HashSet<ConversionId>, JobError> {
    use conversion::Column as C;
    let backend = sea_orm::ConnectionTrait::get_database_backend(txn);
    Ok(scoped_update::<conversion::Entity>(tenant)
        .col_expr(
            C::PayoutMinor,
            per_row(
                backend,
                C::Id,
                computed
                    .iter()
                    .map(|(c, m)| (&c.id, m.commission.payout.minor)),
            ),
        )
        .col_expr(
            C::CommissionExplanation,
            per_row(
                backend,
                C::Id,
                computed
                    .iter()
                    .map(|(c, m)| (&c.id, m.commission.explanation.clone())),
            ),
        )
        .col_expr(
            C::CommissionDetail,
            per_row(
                backend,
                C::Id,
                computed
                    .iter()
                    .map(|(c, m)| (&c.id, serde_json::to_string(&m.record).unwrap_or_default())),
            ),
        )
        .col_expr(C::UpdatedAt, Expr::value(t))
        .filter(among(
            backend,
            C::Id,
            computed.iter().map(|(c, _)| c.id.clone()),
        ))
        .filter(C::PayoutMinor.is_null())
        .filter(C::Status.is_in(earning()))
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
        conversion_id: Some(conv.id.clone()),
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
