//! More of what a tenant configures: commission plans per event (goal) and per
//! affiliate, coupons, and re-attribution of postbacks whose cause was fixed.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use trcker_domain::commission::CommissionRule;
use trcker_domain::ids::IdKind;
use trcker_domain::money::Currency;
use trcker_domain::postback::FieldError;
use trcker_domain::secret::random_alnum;
use trcker_domain::slug::Slug;
use trcker_storage::entities::*;
use trcker_storage::{is_unique_violation, scoped, scoped_by_id, sea_orm};

use crate::auth::Caller;
use crate::queue::AttributeJob;
use crate::util::{insert, now};
use crate::{ServiceError, ServiceResult, Services};

pub struct NewPlan {
    pub program_id: String,
    /// Goal key; default `sale`.
    pub event: Option<String>,
    /// An affiliate's own plan, overriding the program's for this event.
    pub affiliate_id: Option<String>,
    pub commission_type: String,
    pub commission_value: String,
}

pub struct NewCoupon {
    pub program_id: String,
    pub affiliate_id: String,
    pub code: String,
}

impl Services {
    /// Adds a commission plan. A new plan for the same program, event and
    /// affiliate replaces the previous one (which is kept, inactive, so that
    /// past commissions stay explainable).
    pub async fn create_plan(
        &self,
        caller: &Caller,
        input: NewPlan,
    ) -> ServiceResult<commission_plan::Model> {
        let tenant = caller.tenant_admin()?;
        let mut errors = Vec::new();
        let program = scoped_by_id::<program::Entity>(tenant, &input.program_id)
            .one(&self.store.conn)
            .await?;
        if program.is_none() {
            errors.push(FieldError::new("program_id", "no program with this id"));
        }
        if let Some(a) = &input.affiliate_id
            && scoped_by_id::<affiliate::Entity>(tenant, a)
                .one(&self.store.conn)
                .await?
                .is_none()
        {
            errors.push(FieldError::new("affiliate_id", "no affiliate with this id"));
        }
        let event = input
            .event
            .unwrap_or_else(|| "sale".into())
            .to_ascii_lowercase();
        if let Err(e) = Slug::parse(&event) {
            errors.push(FieldError::new("event", e.to_string()));
        }
        let currency = program
            .as_ref()
            .and_then(|p| Currency::parse(&p.currency).ok())
            .unwrap_or(Currency::USD);
        let rule = CommissionRule::parse(&input.commission_type, &input.commission_value, currency)
            .map_err(|e| errors.push(FieldError::new("commission", e.to_string())))
            .ok();
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let (Some(program), Some(rule)) = (program, rule) else {
            return Err(ServiceError::Internal("checked above".into()));
        };
        let plan = commission_plan::Model {
            id: IdKind::CommissionPlan.generate(),
            tenant_id: tenant.to_string(),
            created_at: now(),
            program_id: program.id.clone(),
            affiliate_id: input.affiliate_id.clone(),
            event: event.clone(),
            kind: rule.kind().into(),
            value: rule.value_string(),
            currency: currency.code().into(),
            active: true,
        };
        let txn = self.store.write_txn().await?;
        let mut retire = commission_plan::Entity::update_many()
            .col_expr(commission_plan::Column::Active, Expr::value(false))
            .filter(commission_plan::Column::TenantId.eq(tenant.as_str()))
            .filter(commission_plan::Column::ProgramId.eq(&program.id))
            .filter(commission_plan::Column::Event.eq(&event));
        retire = match &input.affiliate_id {
            Some(a) => retire.filter(commission_plan::Column::AffiliateId.eq(a)),
            None => retire.filter(commission_plan::Column::AffiliateId.is_null()),
        };
        retire.exec(&txn).await?;
        insert(&txn, plan.clone()).await?;
        txn.commit().await?;
        self.invalidate_caches();
        Ok(plan)
    }

    /// The active plans of a program.
    pub async fn list_plans(
        &self,
        caller: &Caller,
        program_id: &str,
    ) -> ServiceResult<Vec<commission_plan::Model>> {
        let tenant = caller.tenant()?;
        scoped_by_id::<program::Entity>(tenant, program_id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("program"))?;
        Ok(scoped::<commission_plan::Entity>(tenant)
            .filter(commission_plan::Column::ProgramId.eq(program_id))
            .filter(commission_plan::Column::Active.eq(true))
            .order_by_asc(commission_plan::Column::Id)
            .all(&self.store.conn)
            .await?)
    }

    pub async fn create_coupon(
        &self,
        caller: &Caller,
        input: NewCoupon,
    ) -> ServiceResult<coupon::Model> {
        let tenant = caller.tenant_admin()?;
        let mut errors = Vec::new();
        if scoped_by_id::<program::Entity>(tenant, &input.program_id)
            .one(&self.store.conn)
            .await?
            .is_none()
        {
            errors.push(FieldError::new("program_id", "no program with this id"));
        }
        if scoped_by_id::<affiliate::Entity>(tenant, &input.affiliate_id)
            .one(&self.store.conn)
            .await?
            .is_none()
        {
            errors.push(FieldError::new("affiliate_id", "no affiliate with this id"));
        }
        let code = input.code.trim().to_owned();
        if code.is_empty() || code.chars().count() > 64 || code.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "code",
                "must be 1 to 64 printable characters",
            ));
        }
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let coupon = coupon::Model {
            id: IdKind::Coupon.generate(),
            tenant_id: tenant.to_string(),
            created_at: now(),
            program_id: input.program_id,
            affiliate_id: input.affiliate_id,
            code,
            status: "active".into(),
        };
        match insert(&self.store.conn, coupon.clone()).await {
            Ok(c) => Ok(c),
            Err(e) if is_unique_violation(&e) => Err(ServiceError::Conflict(format!(
                "coupon '{}' exists already for this program",
                coupon.code
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_coupons(&self, caller: &Caller) -> ServiceResult<Vec<coupon::Model>> {
        Ok(scoped::<coupon::Entity>(caller.tenant()?)
            .order_by_asc(coupon::Column::Id)
            .limit(1000)
            .all(&self.store.conn)
            .await?)
    }

    /// Runs attribution again for an unattributed postback (after its cause was
    /// fixed: an affiliate resumed, a coupon created...).
    pub async fn reattribute(
        &self,
        caller: &Caller,
        postback_id: &str,
    ) -> ServiceResult<postback::Model> {
        let tenant = caller.tenant_admin()?;
        let pb = scoped_by_id::<postback::Entity>(tenant, postback_id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("postback"))?;
        if pb.state != "unattributed" {
            return Err(ServiceError::Conflict(format!(
                "postback {} is {}; only unattributed postbacks can be attributed again",
                pb.id, pb.state
            )));
        }
        let moved = postback::Entity::update_many()
            .col_expr(postback::Column::State, Expr::value("received"))
            .col_expr(
                postback::Column::Reason,
                Expr::value(format!("re-attribution requested by {}", caller.actor())),
            )
            .filter(postback::Column::TenantId.eq(tenant.as_str()))
            .filter(postback::Column::Id.eq(&pb.id))
            .filter(postback::Column::State.eq("unattributed"))
            .exec(&self.store.conn)
            .await?;
        if moved.rows_affected == 1 {
            // If this push fails, the inbox sweeper pushes the same job.
            let job = AttributeJob {
                retry: Some(pb.processed_at.unwrap_or(pb.created_at).timestamp_millis()),
                ..AttributeJob::one(tenant.to_string(), pb.id.clone())
            };
            if let Err(e) = self.queue.push(&job).await {
                tracing::warn!(error = %e, postback_id = %pb.id, "enqueue failed; the sweeper will pick it up");
            }
        }
        scoped_by_id::<postback::Entity>(tenant, postback_id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("postback"))
    }
}

pub struct NewLink {
    pub program_id: String,
    pub affiliate_id: String,
    pub destination_url: Option<String>,
    pub subs: [Option<String>; 5],
}

#[derive(Default)]
pub struct LinkUpdate {
    /// `Some(None)` removes the override (the program's destination applies).
    pub destination_url: Option<Option<String>>,
    /// `active` or `paused`.
    pub status: Option<String>,
}

#[derive(Default)]
pub struct ProgramUpdate {
    pub name: Option<String>,
    pub destination_url: Option<String>,
    pub fallback_url: Option<Option<String>>,
    /// `active` or `paused`.
    pub status: Option<String>,
    pub attribution_window_days: Option<i32>,
    pub min_conversion_seconds: Option<i32>,
    pub hold_days: Option<i32>,
}

#[derive(Default)]
pub struct AffiliateUpdate {
    pub name: Option<String>,
    /// `active` or `paused`.
    pub status: Option<String>,
    /// `Some(None)` removes the postback URL.
    pub postback_url: Option<Option<String>>,
}

fn check_name(errors: &mut Vec<FieldError>, name: &Option<String>) {
    if let Some(n) = name
        && (n.trim().is_empty() || n.chars().count() > 200)
    {
        errors.push(FieldError::new("name", "must be 1 to 200 characters"));
    }
}

fn check_status(errors: &mut Vec<FieldError>, status: &Option<String>) {
    if let Some(s) = status
        && s != "active"
        && s != "paused"
    {
        errors.push(FieldError::new("status", "must be active or paused"));
    }
}

fn check_url(errors: &mut Vec<FieldError>, field: &str, url: Option<&str>) {
    if let Some(u) = url
        && let Err(e) = trcker_domain::target::parse_target_template(u)
    {
        errors.push(FieldError::new(field, e.to_string()));
    }
}

fn check_range(
    errors: &mut Vec<FieldError>,
    field: &str,
    v: Option<i32>,
    range: std::ops::RangeInclusive<i32>,
) {
    if let Some(v) = v
        && !range.contains(&v)
    {
        errors.push(FieldError::new(
            field,
            format!("must be from {} to {}", range.start(), range.end()),
        ));
    }
}

impl Services {
    /// The public URL of a tracking link.
    pub fn link_url(&self, code: &str) -> String {
        format!("{}/c/{code}", self.public_base())
    }

    pub async fn create_link(
        &self,
        caller: &Caller,
        input: NewLink,
    ) -> ServiceResult<tracking_link::Model> {
        let tenant = caller.tenant_admin()?;
        let mut errors = Vec::new();
        if scoped_by_id::<program::Entity>(tenant, &input.program_id)
            .one(&self.store.conn)
            .await?
            .is_none()
        {
            errors.push(FieldError::new("program_id", "no program with this id"));
        }
        if scoped_by_id::<affiliate::Entity>(tenant, &input.affiliate_id)
            .one(&self.store.conn)
            .await?
            .is_none()
        {
            errors.push(FieldError::new("affiliate_id", "no affiliate with this id"));
        }
        check_url(
            &mut errors,
            "destination_url",
            input.destination_url.as_deref(),
        );
        for (i, s) in input.subs.iter().enumerate() {
            if s.as_ref().is_some_and(|s| s.chars().count() > 255) {
                errors.push(FieldError::new(
                    &format!("sub{}", i + 1),
                    "must be at most 255 characters",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let [sub1, sub2, sub3, sub4, sub5] = input.subs;
        for _ in 0..5 {
            let link = tracking_link::Model {
                id: IdKind::Link.generate(),
                tenant_id: tenant.to_string(),
                created_at: now(),
                program_id: input.program_id.clone(),
                affiliate_id: input.affiliate_id.clone(),
                code: random_alnum(10),
                destination_url: input.destination_url.clone(),
                status: "active".into(),
                sub1: sub1.clone(),
                sub2: sub2.clone(),
                sub3: sub3.clone(),
                sub4: sub4.clone(),
                sub5: sub5.clone(),
            };
            match insert(&self.store.conn, link.clone()).await {
                Ok(l) => {
                    self.invalidate_caches();
                    return Ok(l);
                }
                Err(e) if is_unique_violation(&e) => continue, // a code collision: draw again
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Internal(
            "could not draw a free link code".into(),
        ))
    }

    pub async fn list_links(&self, caller: &Caller) -> ServiceResult<Vec<tracking_link::Model>> {
        Ok(scoped::<tracking_link::Entity>(caller.tenant()?)
            .order_by_asc(tracking_link::Column::Id)
            .limit(1000)
            .all(&self.store.conn)
            .await?)
    }

    pub async fn update_link(
        &self,
        caller: &Caller,
        id: &str,
        input: LinkUpdate,
    ) -> ServiceResult<tracking_link::Model> {
        let tenant = caller.tenant_admin()?;
        let existing = scoped_by_id::<tracking_link::Entity>(tenant, id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("link"))?;
        let mut errors = Vec::new();
        check_status(&mut errors, &input.status);
        check_url(
            &mut errors,
            "destination_url",
            input.destination_url.as_ref().and_then(|d| d.as_deref()),
        );
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let mut q = tracking_link::Entity::update_many()
            .filter(tracking_link::Column::TenantId.eq(tenant.as_str()))
            .filter(tracking_link::Column::Id.eq(&existing.id))
            .col_expr(
                tracking_link::Column::Id,
                Expr::col(tracking_link::Column::Id),
            );
        if let Some(d) = input.destination_url {
            q = q.col_expr(tracking_link::Column::DestinationUrl, Expr::value(d));
        }
        if let Some(s) = input.status {
            q = q.col_expr(tracking_link::Column::Status, Expr::value(s));
        }
        q.exec(&self.store.conn).await?;
        self.invalidate_caches();
        scoped_by_id::<tracking_link::Entity>(tenant, id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("link"))
    }

    pub async fn update_program(
        &self,
        caller: &Caller,
        id: &str,
        input: ProgramUpdate,
    ) -> ServiceResult<program::Model> {
        let tenant = caller.tenant_admin()?;
        let existing = scoped_by_id::<program::Entity>(tenant, id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("program"))?;
        let mut errors = Vec::new();
        check_name(&mut errors, &input.name);
        check_url(
            &mut errors,
            "destination_url",
            input.destination_url.as_deref(),
        );
        check_url(
            &mut errors,
            "fallback_url",
            input.fallback_url.as_ref().and_then(|d| d.as_deref()),
        );
        check_status(&mut errors, &input.status);
        check_range(
            &mut errors,
            "attribution_window_days",
            input.attribution_window_days,
            1..=365,
        );
        check_range(
            &mut errors,
            "min_conversion_seconds",
            input.min_conversion_seconds,
            0..=30 * 86_400,
        );
        check_range(&mut errors, "hold_days", input.hold_days, 0..=365);
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let mut q = program::Entity::update_many()
            .filter(program::Column::TenantId.eq(tenant.as_str()))
            .filter(program::Column::Id.eq(&existing.id))
            .col_expr(program::Column::UpdatedAt, Expr::value(now()));
        if let Some(v) = input.name {
            q = q.col_expr(program::Column::Name, Expr::value(v.trim().to_owned()));
        }
        if let Some(v) = input.destination_url {
            q = q.col_expr(program::Column::DestinationUrl, Expr::value(v));
        }
        if let Some(v) = input.fallback_url {
            q = q.col_expr(program::Column::FallbackUrl, Expr::value(v));
        }
        if let Some(v) = input.status {
            q = q.col_expr(program::Column::Status, Expr::value(v));
        }
        if let Some(v) = input.attribution_window_days {
            q = q.col_expr(program::Column::AttributionWindowDays, Expr::value(v));
        }
        if let Some(v) = input.min_conversion_seconds {
            q = q.col_expr(program::Column::MinConversionSeconds, Expr::value(v));
        }
        if let Some(v) = input.hold_days {
            q = q.col_expr(program::Column::HoldDays, Expr::value(v));
        }
        q.exec(&self.store.conn).await?;
        self.invalidate_caches();
        scoped_by_id::<program::Entity>(tenant, id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("program"))
    }

    pub async fn update_affiliate(
        &self,
        caller: &Caller,
        id: &str,
        input: AffiliateUpdate,
    ) -> ServiceResult<affiliate::Model> {
        let tenant = caller.tenant_admin()?;
        let existing = scoped_by_id::<affiliate::Entity>(tenant, id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("affiliate"))?;
        let mut errors = Vec::new();
        check_name(&mut errors, &input.name);
        check_status(&mut errors, &input.status);
        check_url(
            &mut errors,
            "postback_url",
            input.postback_url.as_ref().and_then(|d| d.as_deref()),
        );
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let t = now();
        let txn = self.store.write_txn().await?;
        let mut q = affiliate::Entity::update_many()
            .filter(affiliate::Column::TenantId.eq(tenant.as_str()))
            .filter(affiliate::Column::Id.eq(&existing.id))
            .col_expr(affiliate::Column::UpdatedAt, Expr::value(t));
        if let Some(v) = input.name {
            q = q.col_expr(affiliate::Column::Name, Expr::value(v.trim().to_owned()));
        }
        if let Some(v) = input.status {
            q = q.col_expr(affiliate::Column::Status, Expr::value(v));
        }
        if let Some(url) = input.postback_url {
            q = q.col_expr(affiliate::Column::PostbackUrl, Expr::value(url.clone()));
            // The affiliate's postback endpoint follows: old ones retire, a new one is made.
            notification_endpoint::Entity::update_many()
                .col_expr(notification_endpoint::Column::Active, Expr::value(false))
                .filter(notification_endpoint::Column::TenantId.eq(tenant.as_str()))
                .filter(notification_endpoint::Column::AffiliateId.eq(&existing.id))
                .filter(notification_endpoint::Column::Kind.eq("postback"))
                .exec(&txn)
                .await?;
            if let Some(url) = url {
                insert(
                    &txn,
                    notification_endpoint::Model {
                        id: IdKind::Endpoint.generate(),
                        tenant_id: tenant.to_string(),
                        created_at: t,
                        affiliate_id: existing.id.clone(),
                        kind: "postback".into(),
                        url_template: url,
                        active: true,
                    },
                )
                .await?;
            }
        }
        q.exec(&txn).await?;
        txn.commit().await?;
        self.invalidate_caches();
        self.invalidate_caches();
        scoped_by_id::<affiliate::Entity>(tenant, id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("affiliate"))
    }
}
