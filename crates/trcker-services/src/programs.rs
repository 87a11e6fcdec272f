//! Programs (offers) and their commission plans.
//!
//! A program is created with its default plan (the `sale` event, for every
//! affiliate). More plans can be added per event (goal) and per affiliate; a
//! new plan for the same program, event and affiliate replaces the previous
//! one, which is kept, inactive, so that past commissions stay explainable.

use chrono::Utc;
use trcker_domain::commission::{CommissionRule, RuleError};
use trcker_domain::fields::{
    AttributionWindowDays, EventKey, Fields, HoldDays, MinConversionSeconds, Name, ParamName,
    TargetUrl,
};
use trcker_domain::money::{Currency, Money};
use trcker_domain::slug::Slug;
use trcker_domain::tiers::{Tier, TierBasis, TierPeriod, Tiers};
use trcker_storage::entities::{Activity, affiliate, commission_plan, program, tenant};
use trcker_storage::ids::{PlanId, ProgramId};
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{ColumnTrait, DbErr, PaginatorTrait, QueryFilter, QueryOrder};
use trcker_storage::{
    Store, TenantId, batch::insert, is_unique_violation, lookup, scoped, scoped_by_id,
    scoped_update, scoped_update_by_id,
};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::conversions::Page;
use crate::error::{Invalid, StoreError, from_store};
use crate::input::activity;

#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("program not found")]
    NotFound(String),
    #[error("a program with slug '{0}' exists already")]
    SlugTaken(String),
    #[error("commission plan not found")]
    PlanNotFound(String),
    #[error("{0}")]
    PlanNotArchivable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(ProgramError);

#[derive(Default)]
pub struct NewProgram {
    pub name: String,
    pub slug: String,
    pub destination_url: String,
    pub fallback_url: Option<String>,
    pub currency: Option<String>,
    pub commission: CommissionInput,
    pub hold_days: Option<i32>,
    pub attribution_window_days: Option<i32>,
    pub click_param: Option<String>,
    pub default_revenue: Option<String>,
    /// Conversions sooner than this after their click are refused (0: no minimum).
    pub min_conversion_seconds: Option<i32>,
    /// The smallest approved balance a payout batch pays, in the program's
    /// currency (none: any positive balance).
    pub payout_minimum: Option<String>,
}

#[derive(Default)]
pub struct ProgramUpdate {
    pub name: Option<String>,
    pub destination_url: Option<String>,
    /// `Some(None)` removes the fallback.
    pub fallback_url: Option<Option<String>>,
    /// `active` or `paused`.
    pub status: Option<String>,
    pub attribution_window_days: Option<i32>,
    pub min_conversion_seconds: Option<i32>,
    pub hold_days: Option<i32>,
    /// `Some(None)` removes the minimum.
    pub payout_minimum: Option<Option<String>>,
}

pub struct NewPlan {
    pub program_id: String,
    /// Goal key; default `sale`.
    pub event: Option<String>,
    /// An affiliate's own plan, overriding the program's for this event.
    pub affiliate_id: Option<String>,
    pub commission: CommissionInput,
}

/// A commission as the API sends it.
#[derive(Debug, Default, Clone)]
pub struct CommissionInput {
    /// `flat`, `percent` or `combined`.
    pub kind: String,
    /// The flat amount ("5.00") or the percentage ("10").
    pub value: String,
    /// The percentage of a combined rule (its `value` is the flat part).
    pub percent: Option<String>,
    /// The most one conversion earns.
    pub max: Option<String>,
    /// Steps that raise (or lower) the rate with the affiliate's volume in
    /// the period.
    pub tiers: Option<TiersInput>,
}

/// A tiered plan as the API sends it.
#[derive(Debug, Default, Clone)]
pub struct TiersInput {
    /// `conversions` or `revenue`.
    pub basis: String,
    /// `month` (default) or `week`.
    pub period: Option<String>,
    pub steps: Vec<TierStepInput>,
}

/// One step: from which volume, and its rule.
#[derive(Debug, Default, Clone)]
pub struct TierStepInput {
    /// A number of conversions ("10"), or revenue in the program's
    /// currency ("1000.00").
    pub from: String,
    pub kind: String,
    pub value: String,
    pub percent: Option<String>,
}

/// A plan's rule, its maximum per conversion and its tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRule {
    /// The program's currency, the rule's and the tiers'.
    pub currency: Currency,
    pub rule: CommissionRule,
    pub max: Option<Money>,
    pub tiers: Option<Tiers>,
}

/// A program and the rule of its default plan.
pub struct ProgramView {
    pub program: program::Model,
    pub commission: Option<PlanRule>,
}

#[derive(Clone)]
pub struct ProgramService {
    area: Area,
}

impl ProgramService {
    pub(crate) fn new(area: Area) -> Self {
        ProgramService { area }
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    /// Creates a program with its default commission plan.
    pub async fn create(
        &self,
        caller: &Caller,
        input: NewProgram,
    ) -> Result<ProgramView, ProgramError> {
        let tenant = caller.tenant_admin()?;
        let (program, rule) = parse_new(tenant, input)?;
        let plan = plan_row(
            tenant,
            &program.id,
            None,
            EventKey::sale(),
            &rule,
            program.currency.0,
        );
        let txn = self.store().write_txn().await?;
        insert(&txn, program.clone()).await.map_err(|e| {
            if is_unique_violation(&e) {
                ProgramError::SlugTaken(program.slug.clone())
            } else {
                e.into()
            }
        })?;
        insert(&txn, plan).await?;
        crate::audit::record(
            &txn,
            tenant,
            caller,
            "program.create",
            "program",
            program.id.as_str(),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        Ok(ProgramView {
            program,
            commission: Some(rule),
        })
    }

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<ProgramView, ProgramError> {
        let tenant = caller.tenant()?;
        let program = self.find(tenant, id).await?;
        self.view(tenant, program).await
    }

    /// The tenant's programs, oldest first, by cursor.
    pub async fn list(
        &self,
        caller: &Caller,
        status: Option<String>,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Page<ProgramView>, ProgramError> {
        let tenant = caller.tenant()?;
        let mut f = Fields::default();
        let status = f.take_opt("status", status.as_deref().map(crate::input::activity));
        let (status,) = f.done((status,)).map_err(Invalid)?;
        let mut q = scoped::<program::Entity>(tenant);
        if let Some(status) = status {
            q = q.filter(program::Column::Status.eq(status));
        }
        let page = crate::conversions::oldest_page::<_, ProgramError>(
            q,
            trcker_domain::ids::IdKind::Program,
            cursor,
            limit,
            &self.store().conn,
            |p| p.id.as_str(),
        )
        .await?;
        let mut items = Vec::with_capacity(page.items.len());
        for program in page.items {
            items.push(self.view(tenant, program).await?);
        }
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }

    /// Changes a program: destination, fallback, status (pause), windows, hold.
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        input: ProgramUpdate,
    ) -> Result<ProgramView, ProgramError> {
        let tenant = caller.tenant_admin()?;
        let existing = self.find(tenant, id).await?;
        let mut q = parse_update(tenant, &existing, input)?;
        q = q.col_expr(program::Column::UpdatedAt, Expr::value(Utc::now()));
        let txn = self.store().write_txn().await?;
        q.exec(&txn).await?;
        let program = scoped_by_id::<program::Entity>(tenant, &existing.id)
            .one(&txn)
            .await?
            .ok_or_else(|| ProgramError::NotFound(id.to_owned()))?;
        let settings = |p: &program::Model| {
            serde_json::json!({
                "name": p.name,
                "status": p.status.to_string(),
                "destination_url": p.destination_url,
                "fallback_url": p.fallback_url,
                "attribution_window_days": p.attribution_window_days,
                "hold_days": p.hold_days,
            })
        };
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "program.update",
            "program",
            existing.id.as_str(),
            Some(serde_json::json!({"before": settings(&existing), "after": settings(&program)})),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        self.view(tenant, program).await
    }

    /// Adds a commission plan, retiring the one it replaces.
    pub async fn create_plan(
        &self,
        caller: &Caller,
        input: NewPlan,
    ) -> Result<commission_plan::Model, ProgramError> {
        let tenant = caller.tenant_admin()?;
        let db = &self.store().conn;
        // The program is the path's: an unknown one is a 404, as on every
        // other operation under `/programs/{id}`.
        let program = scoped_by_id::<program::Entity>(tenant, &input.program_id)
            .one(db)
            .await?
            .ok_or_else(|| ProgramError::NotFound(input.program_id.clone()))?;
        let mut f = Fields::default();
        if let Some(a) = &input.affiliate_id
            && scoped_by_id::<affiliate::Entity>(tenant, a)
                .one(db)
                .await?
                .is_none()
        {
            f.error("affiliate_id", "no affiliate with this id");
        }
        let event = f.take(
            "event",
            EventKey::parse(input.event.as_deref().unwrap_or("sale")),
        );
        let currency = program.currency.0;
        let rule = parse_commission(&mut f, &input.commission, currency);
        let (event, rule) = f.done((event, rule)).map_err(Invalid)?;
        let mut plan = plan_row(
            tenant,
            &program.id,
            input.affiliate_id,
            event,
            &rule,
            currency,
        );
        let txn = self.store().write_txn().await?;
        let same = |q: trcker_storage::sea_orm::Select<commission_plan::Entity>| {
            let q = q
                .filter(commission_plan::Column::ProgramId.eq(&program.id))
                .filter(commission_plan::Column::Event.eq(&plan.event));
            match &plan.affiliate_id {
                Some(a) => q.filter(commission_plan::Column::AffiliateId.eq(a)),
                None => q.filter(commission_plan::Column::AffiliateId.is_null()),
            }
        };
        let before = same(scoped::<commission_plan::Entity>(tenant))
            .count(&txn)
            .await?;
        plan.version = i32::try_from(before + 1).unwrap_or(i32::MAX);
        // The version in force until now is retired as this one starts.
        let retire = scoped_update::<commission_plan::Entity>(tenant)
            .col_expr(commission_plan::Column::Active, Expr::value(false))
            .col_expr(
                commission_plan::Column::RetiredAt,
                Expr::value(Some(plan.created_at)),
            )
            .filter(commission_plan::Column::ProgramId.eq(&program.id))
            .filter(commission_plan::Column::Event.eq(&plan.event))
            .filter(commission_plan::Column::Active.eq(true));
        match &plan.affiliate_id {
            Some(a) => retire.filter(commission_plan::Column::AffiliateId.eq(a)),
            None => retire.filter(commission_plan::Column::AffiliateId.is_null()),
        }
        .exec(&txn)
        .await?;
        insert(&txn, plan.clone()).await?;
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "commission_plan.create",
            "commission_plan",
            plan.id.as_str(),
            Some(serde_json::json!({
                "program_id": program.id.as_str(),
                "event": plan.event,
                "affiliate_id": plan.affiliate_id.as_ref().map(|a| a.as_str()),
                "version": plan.version,
                "rule": {"type": plan.kind, "value": plan.value},
                "max": rule.max.map(|m| m.amount_string()),
                "tiers": plan.tiers.as_deref().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()),
            })),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        Ok(plan)
    }

    /// The active plans of a program.
    pub async fn list_plans(
        &self,
        caller: &Caller,
        program_id: &str,
    ) -> Result<Vec<commission_plan::Model>, ProgramError> {
        let tenant = caller.tenant()?;
        self.find(tenant, program_id).await?;
        Ok(scoped::<commission_plan::Entity>(tenant)
            .filter(commission_plan::Column::ProgramId.eq(program_id))
            .filter(commission_plan::Column::Active.eq(true))
            .order_by_asc(commission_plan::Column::Id)
            .all(&self.store().conn)
            .await?)
    }

    /// One commission plan, any version, in force or not.
    pub async fn get_plan(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<commission_plan::Model, ProgramError> {
        let tenant = caller.tenant()?;
        scoped_by_id::<commission_plan::Entity>(tenant, id)
            .one(&self.store().conn)
            .await?
            .ok_or_else(|| ProgramError::PlanNotFound(id.to_owned()))
    }

    /// Ends a plan in force: from now on the conversions it priced are
    /// priced by what it overrode (an affiliate's plan falls back to the
    /// program's), and an event without a plan is no longer a goal. The
    /// program's own sale plan is how its offer pays: it is changed by a new
    /// version, never archived. Conversions already priced keep their price.
    pub async fn archive_plan(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<commission_plan::Model, ProgramError> {
        let tenant = caller.tenant_admin()?;
        let plan = self.get_plan(caller, id).await?;
        if plan.affiliate_id.is_none() && plan.event == "sale" {
            return Err(ProgramError::PlanNotArchivable(format!(
                "plan {} is the program's own sale plan: its offer needs one; add a new version instead",
                plan.id
            )));
        }
        let t = Utc::now();
        let txn = self.store().write_txn().await?;
        let ended = scoped_update_by_id::<commission_plan::Entity>(tenant, &plan.id)
            .col_expr(commission_plan::Column::Active, Expr::value(false))
            .col_expr(commission_plan::Column::RetiredAt, Expr::value(Some(t)))
            .filter(commission_plan::Column::Active.eq(true))
            .exec(&txn)
            .await?;
        if ended.rows_affected != 1 {
            return Err(ProgramError::PlanNotArchivable(format!(
                "plan {} is no longer in force (archived, or replaced by a newer version)",
                plan.id
            )));
        }
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "commission_plan.archive",
            "commission_plan",
            plan.id.as_str(),
            Some(serde_json::json!({
                "before": {"active": true, "retired_at": null},
                "after": {"active": false, "retired_at": t},
            })),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        Ok(commission_plan::Model {
            active: false,
            retired_at: Some(t),
            ..plan
        })
    }

    async fn find(&self, tenant: &TenantId, id: &str) -> Result<program::Model, ProgramError> {
        scoped_by_id::<program::Entity>(tenant, id)
            .one(&self.store().conn)
            .await?
            .ok_or_else(|| ProgramError::NotFound(id.to_owned()))
    }

    /// The program with the rule of its default plan.
    async fn view(
        &self,
        tenant: &TenantId,
        program: program::Model,
    ) -> Result<ProgramView, ProgramError> {
        let plan = scoped::<commission_plan::Entity>(tenant)
            .filter(commission_plan::Column::ProgramId.eq(&program.id))
            .filter(commission_plan::Column::AffiliateId.is_null())
            .filter(commission_plan::Column::Event.eq("sale"))
            .filter(commission_plan::Column::Active.eq(true))
            .one(&self.store().conn)
            .await?;
        Ok(ProgramView {
            commission: plan.and_then(|p| plan_rule(&p).ok()),
            program,
        })
    }
}

/// A new program's fields, parsed.
struct ProgramFields {
    name: Name,
    slug: Slug,
    destination: TargetUrl,
    fallback: Option<TargetUrl>,
    currency: Currency,
    rule: PlanRule,
    hold: HoldDays,
    window: AttributionWindowDays,
    min_seconds: MinConversionSeconds,
    click_param: ParamName,
    revenue: Option<Money>,
    payout_minimum: Option<Money>,
}

/// Parses a new program's fields, every bad one named, in the documented order.
fn parse_fields(input: NewProgram) -> Result<ProgramFields, Invalid> {
    let mut f = Fields::default();
    let name = f.take("name", Name::parse(&input.name));
    let slug = f.take("slug", Slug::parse(&input.slug));
    let destination = f.take("destination_url", TargetUrl::parse(&input.destination_url));
    let fallback = f.take_opt(
        "fallback_url",
        input.fallback_url.as_deref().map(TargetUrl::parse),
    );
    let currency = f.take(
        "currency",
        input
            .currency
            .as_deref()
            .map_or(Ok(Currency::USD), Currency::parse),
    );
    let in_currency = currency.unwrap_or(Currency::USD);
    let rule = parse_commission(&mut f, &input.commission, in_currency);
    let hold = f.take("hold_days", HoldDays::parse(input.hold_days.unwrap_or(0)));
    let window = f.take(
        "attribution_window_days",
        AttributionWindowDays::parse(input.attribution_window_days.unwrap_or(30)),
    );
    let min_seconds = f.take(
        "min_conversion_seconds",
        MinConversionSeconds::parse(input.min_conversion_seconds.unwrap_or(0)),
    );
    let click_param = f.take(
        "click_param",
        ParamName::parse(input.click_param.as_deref().unwrap_or("click_id")),
    );
    let revenue = f.take_opt(
        "default_revenue",
        input
            .default_revenue
            .as_deref()
            .map(|v| Money::parse(v, in_currency)),
    );
    let payout_minimum = f.take_opt(
        "payout_minimum",
        input
            .payout_minimum
            .as_deref()
            .map(|v| Money::parse(v, in_currency)),
    );
    let parsed = (
        name,
        slug,
        destination,
        fallback,
        currency,
        rule,
        hold,
        window,
        min_seconds,
        click_param,
        revenue,
        payout_minimum,
    );
    let (
        name,
        slug,
        destination,
        fallback,
        currency,
        rule,
        hold,
        window,
        min_seconds,
        click_param,
        revenue,
        payout_minimum,
    ) = f.done(parsed)?;
    Ok(ProgramFields {
        name,
        slug,
        destination,
        fallback,
        currency,
        rule,
        hold,
        window,
        min_seconds,
        click_param,
        revenue,
        payout_minimum,
    })
}

/// A new program's row and default rule, every bad field named.
fn parse_new(tenant: &TenantId, input: NewProgram) -> Result<(program::Model, PlanRule), Invalid> {
    let p = parse_fields(input)?;
    let t = Utc::now();
    let program = program::Model {
        id: ProgramId::generate(),
        tenant_id: tenant.clone(),
        created_at: t,
        name: p.name.into_string(),
        slug: p.slug.to_string(),
        destination_url: p.destination.into_string(),
        fallback_url: p.fallback.map(TargetUrl::into_string),
        currency: p.currency.into(),
        click_param: p.click_param.into_string(),
        attribution_window_days: p.window.get(),
        hold_days: p.hold.get(),
        default_revenue_minor: p.revenue.map(|m| m.minor),
        status: Activity::Active,
        updated_at: t,
        min_conversion_seconds: p.min_seconds.get(),
        payout_minimum_minor: p.payout_minimum.map(|m| m.minor),
    };
    Ok((program, p.rule))
}

/// The UPDATE a program change makes, every bad field named.
fn parse_update(
    tenant: &TenantId,
    existing: &program::Model,
    input: ProgramUpdate,
) -> Result<trcker_storage::sea_orm::UpdateMany<program::Entity>, Invalid> {
    use program::Column as C;
    let mut f = Fields::default();
    let name = f.take_opt("name", input.name.as_deref().map(Name::parse));
    let destination = f.take_opt(
        "destination_url",
        input.destination_url.as_deref().map(TargetUrl::parse),
    );
    let fallback = f.take_patch(
        "fallback_url",
        input
            .fallback_url
            .as_ref()
            .map(|u| u.as_deref().map(TargetUrl::parse)),
    );
    let status = f.take_opt("status", input.status.as_deref().map(activity));
    let window = f.take_opt(
        "attribution_window_days",
        input
            .attribution_window_days
            .map(AttributionWindowDays::parse),
    );
    let min_seconds = f.take_opt(
        "min_conversion_seconds",
        input
            .min_conversion_seconds
            .map(MinConversionSeconds::parse),
    );
    let hold = f.take_opt("hold_days", input.hold_days.map(HoldDays::parse));
    let payout_minimum = f.take_patch(
        "payout_minimum",
        input
            .payout_minimum
            .as_ref()
            .map(|v| v.as_deref().map(|v| Money::parse(v, existing.currency.0))),
    );
    let (name, destination, fallback, status, window, min_seconds, hold, payout_minimum) =
        f.done((
            name,
            destination,
            fallback,
            status,
            window,
            min_seconds,
            hold,
            payout_minimum,
        ))?;
    let mut q = scoped_update_by_id::<program::Entity>(tenant, existing.id.as_str());
    if let Some(v) = name {
        q = q.col_expr(C::Name, Expr::value(v.into_string()));
    }
    if let Some(v) = destination {
        q = q.col_expr(C::DestinationUrl, Expr::value(v.into_string()));
    }
    if let Some(v) = fallback {
        q = q.col_expr(C::FallbackUrl, Expr::value(v.map(TargetUrl::into_string)));
    }
    if let Some(v) = status {
        q = q.col_expr(C::Status, Expr::value(v));
    }
    if let Some(v) = window {
        q = q.col_expr(C::AttributionWindowDays, Expr::value(v.get()));
    }
    if let Some(v) = min_seconds {
        q = q.col_expr(C::MinConversionSeconds, Expr::value(v.get()));
    }
    if let Some(v) = hold {
        q = q.col_expr(C::HoldDays, Expr::value(v.get()));
    }
    if let Some(v) = payout_minimum {
        q = q.col_expr(C::PayoutMinimumMinor, Expr::value(v.map(|m| m.minor)));
    }
    Ok(q)
}

fn plan_row(
    tenant: &TenantId,
    program_id: &ProgramId,
    affiliate_id: Option<String>,
    event: EventKey,
    rule: &PlanRule,
    currency: Currency,
) -> commission_plan::Model {
    commission_plan::Model {
        id: PlanId::generate(),
        tenant_id: tenant.clone(),
        created_at: Utc::now(),
        program_id: program_id.clone(),
        affiliate_id: affiliate_id.map(Into::into),
        event: event.into_string(),
        kind: rule.rule.kind().into(),
        value: rule.rule.value_string(),
        currency: currency.into(),
        active: true,
        version: 1,
        retired_at: None,
        max_payout_minor: rule.max.map(|m| m.minor),
        tiers: rule.tiers.as_ref().map(Tiers::to_stored),
    }
}

/// The rule a stored plan describes.
pub fn rule_of(plan: &commission_plan::Model) -> Result<CommissionRule, RuleError> {
    CommissionRule::parse(&plan.kind, &plan.value, plan.currency.0)
}

/// The rule, maximum and tiers a stored plan describes.
pub fn plan_rule(plan: &commission_plan::Model) -> Result<PlanRule, String> {
    Ok(PlanRule {
        currency: plan.currency.0,
        rule: rule_of(plan).map_err(|e| e.to_string())?,
        max: plan
            .max_payout_minor
            .map(|m| Money::new(m, plan.currency.0)),
        tiers: plan
            .tiers
            .as_deref()
            .map(|t| Tiers::from_stored(t, plan.currency.0))
            .transpose()
            .map_err(|e| e.to_string())?,
    })
}

/// A commission's rule, maximum and tiers, each bad part named
/// (`commission`, `commission.percent`, `commission.max`,
/// `commission.tiers.basis`, `commission.tiers.steps[0].from`…).
fn parse_commission(f: &mut Fields, c: &CommissionInput, currency: Currency) -> Option<PlanRule> {
    let rule = parse_rule(
        f,
        "commission",
        &c.kind,
        &c.value,
        c.percent.as_deref(),
        currency,
    );
    let max = f.take_opt(
        "commission.max",
        c.max.as_deref().map(|m| Money::parse(m, currency)),
    );
    let tiers = match &c.tiers {
        Some(t) => parse_tiers(f, t, currency).map(Some),
        None => Some(None),
    };
    let (rule, max, tiers) = (rule?, max?, tiers?);
    Some(PlanRule {
        currency,
        rule,
        max,
        tiers,
    })
}

/// One rule: `{type, value, percent}` under `field`.
fn parse_rule(
    f: &mut Fields,
    field: &str,
    kind: &str,
    value: &str,
    percent: Option<&str>,
    currency: Currency,
) -> Option<CommissionRule> {
    let value = match (kind, percent) {
        ("combined", Some(p)) => format!("{}+{}", value.trim(), p.trim()),
        ("combined", None) => {
            f.error(
                &format!("{field}.percent"),
                "a combined rule needs its percentage beside the flat value",
            );
            return None;
        }
        (_, Some(_)) => {
            f.error(&format!("{field}.percent"), "is only for a combined rule");
            return None;
        }
        (_, None) => value.to_owned(),
    };
    f.take(field, CommissionRule::parse(kind, &value, currency))
}

/// A tiered plan's basis, period and steps.
fn parse_tiers(f: &mut Fields, t: &TiersInput, currency: Currency) -> Option<Tiers> {
    let basis = f.take("commission.tiers.basis", TierBasis::parse(&t.basis));
    let period = f.take(
        "commission.tiers.period",
        t.period
            .as_deref()
            .map_or(Ok(TierPeriod::Month), TierPeriod::parse),
    );
    let mut steps = Some(Vec::with_capacity(t.steps.len()));
    for (i, step) in t.steps.iter().enumerate() {
        let field = format!("commission.tiers.steps[{i}]");
        let from = match basis {
            Some(TierBasis::Revenue) => f.take(
                &format!("{field}.from"),
                Money::parse(&step.from, currency).map(|m| m.minor),
            ),
            _ => f.take(&format!("{field}.from"), conversions_count(&step.from)),
        };
        let rule = parse_rule(
            f,
            &field,
            &step.kind,
            &step.value,
            step.percent.as_deref(),
            currency,
        );
        steps = steps.zip(from.zip(rule)).map(|(mut steps, (from, rule))| {
            steps.push(Tier { from, rule });
            steps
        });
    }
    let (basis, period, steps) = (basis?, period?, steps?);
    f.take("commission.tiers.steps", Tiers::new(basis, period, steps))
}

/// A tier's start on the `conversions` basis: a whole number of conversions.
fn conversions_count(s: &str) -> Result<i64, &'static str> {
    match s.trim().parse::<i64>() {
        Ok(n) if (1..=1_000_000_000).contains(&n) => Ok(n),
        _ => Err("must be a whole number of conversions from 1 to 1000000000"),
    }
}

/// The tenant and program a public URL's `{brand}` and `{offer}` name, or
/// which of the two is unknown.
pub(crate) async fn by_slugs(
    store: &Store,
    brand: &str,
    offer: &str,
) -> Result<Result<(tenant::Model, program::Model), &'static str>, DbErr> {
    let Some(tenant) = lookup::tenant_by_slug(brand).one(&store.conn).await? else {
        return Ok(Err("brand"));
    };
    let program = scoped::<program::Entity>(&tenant.id)
        .filter(program::Column::Slug.eq(offer))
        .one(&store.conn)
        .await?;
    Ok(program.map(|p| (tenant, p)).ok_or("offer"))
}
