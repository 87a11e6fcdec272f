//! `/programs`: affiliate programs (offers) and their commission plans.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Object, OpenApi};
use trcker_domain::tiers::TierBasis;
use trcker_domain::{CommissionRule, Money};
use trcker_services::programs::{
    CommissionInput, NewPlan, NewProgram, PlanRule, ProgramService, ProgramUpdate, ProgramView,
    TierStepInput, TiersInput, plan_rule,
};
use trcker_services::storage::entities::commission_plan;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Created, Text, money, patch};
use crate::error::ApiError;

pub struct ProgramsApi {
    pub programs: ProgramService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Programs")]
impl ProgramsApi {
    /// Create a program with its default commission.
    #[oai(path = "/programs", method = "post", operation_id = "create_program")]
    async fn create(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<NewProgramIn>,
    ) -> Result<Created<ProgramOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let view = self.programs.create(&caller, body.0.into()).await?;
        Ok(Created::Created(Json(view.into())))
    }

    /// The tenant's programs, oldest first, by cursor.
    #[oai(path = "/programs", method = "get", operation_id = "list_programs")]
    async fn list(
        &self,
        auth: BearerAuth,
        /// `active` or `paused`.
        status: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<ProgramList>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .programs
            .list(&caller, status.0, cursor.0, limit.0)
            .await?;
        let items = page.items;
        Ok(Json(ProgramList {
            items: items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Add a commission plan: per event (goal), optionally for one affiliate. It
    /// replaces the plan it supersedes for new conversions.
    #[oai(
        path = "/programs/:id/commission-plans",
        method = "post",
        operation_id = "create_commission_plan"
    )]
    async fn create_plan(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
        body: Json<NewPlanIn>,
    ) -> Result<Created<PlanOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let plan = self
            .programs
            .create_plan(&caller, body.0.into_plan(id.0))
            .await?;
        Ok(Created::Created(Json(plan.into())))
    }

    /// One commission plan, any version, in force or not.
    #[oai(
        path = "/commission-plans/:id",
        method = "get",
        operation_id = "get_commission_plan"
    )]
    async fn get_plan(
        &self,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<PlanOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.programs.get_plan(&caller, &id.0).await?.into()))
    }

    /// Archive a plan in force: new conversions it would have priced fall
    /// back to what it overrode (an affiliate's plan to the program's), and
    /// an event without a plan is no longer a goal. The program's own sale
    /// plan cannot be archived (add a new version instead); conversions
    /// already priced keep their price.
    #[oai(
        path = "/commission-plans/:id/archive",
        method = "post",
        operation_id = "archive_commission_plan"
    )]
    async fn archive_plan(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
    ) -> Result<Json<PlanOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(
            self.programs.archive_plan(&caller, &id.0).await?.into(),
        ))
    }

    /// The program's active commission plans.
    #[oai(
        path = "/programs/:id/commission-plans",
        method = "get",
        operation_id = "list_commission_plans"
    )]
    async fn list_plans(
        &self,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<PlanList>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let items = self.programs.list_plans(&caller, &id.0).await?;
        Ok(Json(PlanList {
            items: items.into_iter().map(Into::into).collect(),
        }))
    }

    /// Change a program: destination, fallback, status (pause), windows, hold.
    #[oai(
        path = "/programs/:id",
        method = "patch",
        operation_id = "update_program"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<UpdateProgramIn>,
    ) -> Result<Json<ProgramOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let view = self.programs.update(&caller, &id.0, body.0.into()).await?;
        Ok(Json(view.into()))
    }

    /// Get one program.
    #[oai(path = "/programs/:id", method = "get", operation_id = "get_program")]
    async fn get(&self, auth: BearerAuth, id: Path<String>) -> Result<Json<ProgramOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.programs.get(&caller, &id.0).await?.into()))
    }
}

/// How a program pays its affiliates.
#[derive(Debug, Object)]
pub struct CommissionIn {
    /// `flat` (an amount per conversion), `percent` (of the conversion's
    /// amount) or `combined` (a flat amount plus a percentage).
    #[oai(rename = "type")]
    pub kind: Text,
    /// A decimal string: "5.00" for flat, "10" for 10 percent; for combined, the flat part.
    pub value: Text,
    /// For combined only: the percentage added to the flat part ("5").
    pub percent: Option<Text>,
    /// The most one conversion earns, a decimal string in the program's currency.
    pub max: Option<Text>,
    /// Steps that change the rule with the affiliate's volume in the
    /// period: this rule prices a conversion until the volume before it
    /// reaches the first step's `from`.
    pub tiers: Option<TiersIn>,
}

/// A tiered plan.
#[derive(Debug, Object)]
pub struct TiersIn {
    /// `conversions` (the affiliate's priced conversions that stand:
    /// pending or approved) or `revenue` (their amounts).
    pub basis: Text,
    /// `month` (default) or `week` (from Monday), in the tenant's time zone.
    pub period: Option<Text>,
    /// Up to 20 steps, each starting above the one before.
    pub steps: Vec<TierStepIn>,
}

/// One step: from which volume before a conversion, and its rule.
#[derive(Debug, Object)]
pub struct TierStepIn {
    /// A number of conversions ("10") or revenue in the program's currency
    /// ("1000.00"): a conversion is priced by this step when the
    /// affiliate's volume in the period before it has reached this.
    pub from: Text,
    #[oai(rename = "type")]
    pub kind: Text,
    pub value: Text,
    /// For combined only.
    pub percent: Option<Text>,
}

impl From<CommissionIn> for CommissionInput {
    fn from(c: CommissionIn) -> Self {
        CommissionInput {
            kind: c.kind.0,
            value: c.value.0,
            percent: c.percent.map(String::from),
            max: c.max.map(String::from),
            tiers: c.tiers.map(|t| TiersInput {
                basis: t.basis.0,
                period: t.period.map(String::from),
                steps: t
                    .steps
                    .into_iter()
                    .map(|s| TierStepInput {
                        from: s.from.0,
                        kind: s.kind.0,
                        value: s.value.0,
                        percent: s.percent.map(String::from),
                    })
                    .collect(),
            }),
        }
    }
}

#[derive(Debug, Object)]
pub struct CommissionOut {
    #[oai(rename = "type")]
    pub kind: String,
    /// The flat amount, or the percentage of a percent rule.
    pub value: String,
    /// A combined rule's percentage.
    pub percent: Option<String>,
    /// The most one conversion earns.
    pub max: Option<String>,
    /// A tiered plan's steps; null: not tiered.
    pub tiers: Option<TiersOut>,
}

#[derive(Debug, Object)]
pub struct TiersOut {
    pub basis: String,
    pub period: String,
    pub steps: Vec<TierStepOut>,
}

#[derive(Debug, Object)]
pub struct TierStepOut {
    pub from: String,
    #[oai(rename = "type")]
    pub kind: String,
    pub value: String,
    pub percent: Option<String>,
}

/// A rule as the API shows it: `(type, value, percent)`.
fn rule_parts(rule: &CommissionRule) -> (String, String, Option<String>) {
    let value = match rule {
        CommissionRule::Combined(flat, _) => flat.amount_string(),
        other => other.value_string(),
    };
    let percent = matches!(rule, CommissionRule::Combined(..))
        .then(|| rule.percent().map(|p| p.to_string()))
        .flatten();
    (rule.kind().into(), value, percent)
}

impl From<PlanRule> for CommissionOut {
    fn from(r: PlanRule) -> Self {
        let (kind, value, percent) = rule_parts(&r.rule);
        CommissionOut {
            kind,
            value,
            percent,
            max: r.max.map(|m| m.amount_string()),
            tiers: r.tiers.map(|t| TiersOut {
                basis: t.basis.as_str().into(),
                period: t.period.as_str().into(),
                steps: t
                    .steps
                    .iter()
                    .map(|s| {
                        let (kind, value, percent) = rule_parts(&s.rule);
                        let from = match t.basis {
                            TierBasis::Conversions => s.from.to_string(),
                            TierBasis::Revenue => Money::new(s.from, r.currency).amount_string(),
                        };
                        TierStepOut {
                            from,
                            kind,
                            value,
                            percent,
                        }
                    })
                    .collect(),
            }),
        }
    }
}

#[derive(Debug, Object)]
pub struct NewProgramIn {
    pub name: Text,
    /// The `{offer}` of public URLs.
    pub slug: Text,
    /// Where clicks go; may use macros `{click_id}`, `{sub1}`..`{sub5}`, `{affiliate_id}`, `{program_id}`.
    pub destination_url: Text,
    /// Where clicks go while the program, link or affiliate is paused.
    pub fallback_url: Option<Text>,
    /// ISO 4217 code; default USD.
    pub currency: Option<Text>,
    pub commission: CommissionIn,
    /// Days a commission stays pending before it is approved; default 0 (approved at once).
    pub hold_days: Option<i32>,
    /// Days after a click within which a conversion is attributed to it; default 30.
    pub attribution_window_days: Option<i32>,
    /// Name of the query parameter that carries the click id when the destination has no `{click_id}`; default `click_id`.
    pub click_param: Option<Text>,
    /// Amount used when a postback sends none (decimal string).
    pub default_revenue: Option<Text>,
    /// Conversions sooner than this many seconds after their click are refused as too fast; default 0.
    pub min_conversion_seconds: Option<i32>,
    /// The smallest approved balance a payout batch pays (decimal string in the program's currency); below it the balance is carried to the next batch. Default: none (any positive balance is paid).
    pub payout_minimum: Option<Text>,
}

impl From<NewProgramIn> for NewProgram {
    fn from(b: NewProgramIn) -> Self {
        NewProgram {
            name: b.name.0,
            slug: b.slug.0,
            destination_url: b.destination_url.0,
            fallback_url: b.fallback_url.map(String::from),
            currency: b.currency.map(String::from),
            commission: b.commission.into(),
            hold_days: b.hold_days,
            attribution_window_days: b.attribution_window_days,
            click_param: b.click_param.map(String::from),
            default_revenue: b.default_revenue.map(String::from),
            min_conversion_seconds: b.min_conversion_seconds,
            payout_minimum: b.payout_minimum.map(String::from),
        }
    }
}

#[derive(Debug, Object)]
pub struct UpdateProgramIn {
    pub name: Option<Text>,
    pub destination_url: Option<Text>,
    /// null removes it.
    pub fallback_url: MaybeUndefined<Text>,
    /// `active` or `paused` (paused programs send clicks to the fallback URL).
    pub status: Option<Text>,
    pub attribution_window_days: Option<i32>,
    pub min_conversion_seconds: Option<i32>,
    pub hold_days: Option<i32>,
    /// Decimal string in the program's currency; null removes it.
    pub payout_minimum: MaybeUndefined<Text>,
}

impl From<UpdateProgramIn> for ProgramUpdate {
    fn from(b: UpdateProgramIn) -> Self {
        ProgramUpdate {
            name: b.name.map(String::from),
            destination_url: b.destination_url.map(String::from),
            fallback_url: patch(b.fallback_url.map_value(String::from)),
            status: b.status.map(String::from),
            attribution_window_days: b.attribution_window_days,
            min_conversion_seconds: b.min_conversion_seconds,
            hold_days: b.hold_days,
            payout_minimum: patch(b.payout_minimum.map_value(String::from)),
        }
    }
}

#[derive(Debug, Object)]
pub struct ProgramOut {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub destination_url: String,
    pub fallback_url: Option<String>,
    pub currency: String,
    pub commission: Option<CommissionOut>,
    pub hold_days: i32,
    pub attribution_window_days: i32,
    pub click_param: String,
    pub default_revenue: Option<String>,
    pub min_conversion_seconds: i32,
    /// Null: any positive approved balance is paid.
    pub payout_minimum: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl From<ProgramView> for ProgramOut {
    fn from(v: ProgramView) -> Self {
        let p = v.program;
        ProgramOut {
            commission: v.commission.map(Into::into),
            default_revenue: p.default_revenue_minor.map(|m| money(m, p.currency.0)),
            payout_minimum: p.payout_minimum_minor.map(|m| money(m, p.currency.0)),
            id: p.id.into(),
            name: p.name,
            slug: p.slug,
            destination_url: p.destination_url,
            fallback_url: p.fallback_url,
            currency: p.currency.to_string(),
            hold_days: p.hold_days,
            attribution_window_days: p.attribution_window_days,
            click_param: p.click_param,
            min_conversion_seconds: p.min_conversion_seconds,
            status: p.status.to_string(),
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ProgramList {
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
    pub items: Vec<ProgramOut>,
}

#[derive(Debug, Object)]
pub struct NewPlanIn {
    /// Goal key (`sale`, `lead`, `install`...); default `sale`.
    pub event: Option<Text>,
    /// Make it this affiliate's own plan, overriding the program's for this event.
    pub affiliate_id: Option<Text>,
    pub commission: CommissionIn,
}

impl NewPlanIn {
    fn into_plan(self, program_id: String) -> NewPlan {
        NewPlan {
            program_id,
            event: self.event.map(String::from),
            affiliate_id: self.affiliate_id.map(String::from),
            commission: self.commission.into(),
        }
    }
}

#[derive(Debug, Object)]
pub struct PlanOut {
    pub id: String,
    pub program_id: String,
    pub event: String,
    pub affiliate_id: Option<String>,
    /// 1 for the first plan of this program, event and affiliate; each change adds one.
    pub version: i32,
    pub commission: CommissionOut,
    pub created_at: DateTime<Utc>,
    /// When the next version took over; null while in force.
    pub retired_at: Option<DateTime<Utc>>,
}

impl From<commission_plan::Model> for PlanOut {
    fn from(p: commission_plan::Model) -> Self {
        let commission = match plan_rule(&p) {
            Ok(r) => r.into(),
            // A stored plan always parses; show it as stored if not.
            Err(_) => CommissionOut {
                kind: p.kind.clone(),
                value: p.value.clone(),
                percent: None,
                max: None,
                tiers: None,
            },
        };
        PlanOut {
            commission,
            version: p.version,
            retired_at: p.retired_at,
            id: p.id.into(),
            program_id: p.program_id.into(),
            event: p.event,
            affiliate_id: p.affiliate_id.map(Into::into),
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct PlanList {
    pub items: Vec<PlanOut>,
}
