//! More of what a tenant configures: commission plans per event (goal) and per
//! affiliate, coupons, and re-attribution of postbacks whose cause was fixed.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use trcker_domain::commission::CommissionRule;
use trcker_domain::ids::IdKind;
use trcker_domain::money::Currency;
use trcker_domain::postback::FieldError;
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
                tenant_id: tenant.to_string(),
                postback_id: pb.id.clone(),
                retry: Some(pb.processed_at.unwrap_or(pb.created_at).timestamp_millis()),
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
