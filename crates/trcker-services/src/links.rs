//! Tracking links (`/c/{code}`, with their own destination and default
//! sub-IDs) and coupon codes (which attribute a sale to an affiliate without
//! a click).

use chrono::Utc;
use trcker_domain::fields::{CouponCode, Fields, SubId, TargetUrl};
use trcker_domain::ids::IdKind;
use trcker_domain::secret::random_alnum;
use trcker_storage::entities::global_key::Kind;
use trcker_storage::entities::{Activity, affiliate, coupon, program, tracking_link};
use trcker_storage::ids::{CouponId, LinkId};
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{ColumnTrait, DbErr, QueryFilter};
use trcker_storage::{
    Store, TenantId, batch::insert, is_unique_violation, lookup, scoped, scoped_by_id,
    scoped_update_by_id,
};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::conversions::{Page, oldest_page};
use crate::error::{Invalid, StoreError, from_store};
use crate::input::activity;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("tracking link not found")]
    NotFound(String),
    #[error("coupon '{0}' exists already for this program")]
    CouponTaken(String),
    #[error("coupon not found")]
    CouponNotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(LinkError);

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

pub struct NewCoupon {
    pub program_id: String,
    pub affiliate_id: String,
    pub code: String,
}

/// Tries at drawing a link code that is not taken.
const CODE_DRAWS: usize = 5;

/// Which links or coupons a list takes: those of one program and/or one
/// affiliate (an id this tenant does not have matches nothing).
#[derive(Debug, Default)]
pub struct Owners {
    pub program_id: Option<String>,
    pub affiliate_id: Option<String>,
}

#[derive(Clone)]
pub struct LinkService {
    area: Area,
}

impl LinkService {
    pub(crate) fn new(area: Area) -> Self {
        LinkService { area }
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    /// The public URL of a tracking link.
    pub fn url(&self, code: &str) -> String {
        format!("{}/c/{code}", self.area.settings.public_base())
    }

    /// Creates a tracking link for an affiliate and a program.
    pub async fn create(
        &self,
        caller: &Caller,
        input: NewLink,
    ) -> Result<tracking_link::Model, LinkError> {
        let tenant = caller.tenant_admin()?;
        let mut f = self
            .check_owners(tenant, &input.program_id, &input.affiliate_id)
            .await?;
        let destination = f.take_opt(
            "destination_url",
            input.destination_url.as_deref().map(TargetUrl::parse),
        );
        let mut subs: [Option<String>; 5] = Default::default();
        for (i, s) in input.subs.into_iter().enumerate() {
            subs[i] = s.and_then(|s| {
                f.take(&format!("sub{}", i + 1), SubId::parse(&s))
                    .map(SubId::into_string)
            });
        }
        let (destination,) = f.done((destination,)).map_err(Invalid)?;
        let [sub1, sub2, sub3, sub4, sub5] = subs;
        for _ in 0..CODE_DRAWS {
            let link = tracking_link::Model {
                id: LinkId::generate(),
                tenant_id: tenant.clone(),
                created_at: Utc::now(),
                program_id: input.program_id.as_str().into(),
                affiliate_id: input.affiliate_id.as_str().into(),
                code: random_alnum(10),
                destination_url: destination.clone().map(TargetUrl::into_string),
                status: Activity::Active,
                sub1: sub1.clone(),
                sub2: sub2.clone(),
                sub3: sub3.clone(),
                sub4: sub4.clone(),
                sub5: sub5.clone(),
            };
            // The link and its code's claim across tenants, together.
            let txn = self.store().write_txn().await?;
            let written = async {
                let l = insert(&txn, link).await?;
                lookup::claim_global_key(&txn, Kind::Link, &l.code, &l.tenant_id, l.id.as_str())
                    .await?;
                Ok::<_, DbErr>(l)
            }
            .await;
            match written {
                Ok(l) => {
                    txn.commit().await?;
                    self.area.changes.record();
                    return Ok(l);
                }
                // A code collision: the transaction is dropped, draw again.
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Internal(format!("no free link code in {CODE_DRAWS} draws")).into())
    }

    /// The tenant's tracking links, oldest first, by cursor.
    pub async fn list(
        &self,
        caller: &Caller,
        of: Owners,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Page<tracking_link::Model>, LinkError> {
        use tracking_link::Column as C;
        let mut q = scoped::<tracking_link::Entity>(caller.tenant()?);
        if let Some(p) = of.program_id {
            q = q.filter(C::ProgramId.eq(p));
        }
        if let Some(a) = of.affiliate_id {
            q = q.filter(C::AffiliateId.eq(a));
        }
        oldest_page(q, IdKind::Link, cursor, limit, &self.store().conn, |l| {
            l.id.as_str()
        })
        .await
    }

    /// Changes a link's destination or status; the next click uses it.
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        input: LinkUpdate,
    ) -> Result<tracking_link::Model, LinkError> {
        use tracking_link::Column as C;
        let tenant = caller.tenant_admin()?;
        let existing = self.find(tenant, id).await?;
        let mut f = Fields::default();
        let status = f.take_opt("status", input.status.as_deref().map(activity));
        let destination = f.take_patch(
            "destination_url",
            input
                .destination_url
                .as_ref()
                .map(|u| u.as_deref().map(TargetUrl::parse)),
        );
        let (status, destination) = f.done((status, destination)).map_err(Invalid)?;
        let mut q = scoped_update_by_id::<tracking_link::Entity>(tenant, &existing.id)
            .col_expr(C::Id, Expr::col(C::Id));
        if let Some(d) = destination {
            q = q.col_expr(
                C::DestinationUrl,
                Expr::value(d.map(TargetUrl::into_string)),
            );
        }
        if let Some(s) = status {
            q = q.col_expr(C::Status, Expr::value(s));
        }
        let txn = self.store().write_txn().await?;
        q.exec(&txn).await?;
        let after = scoped_by_id::<tracking_link::Entity>(tenant, &existing.id)
            .one(&txn)
            .await?
            .ok_or_else(|| LinkError::NotFound(id.to_owned()))?;
        let settings = |l: &tracking_link::Model| serde_json::json!({"status": l.status.to_string(), "destination_url": l.destination_url});
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "link.update",
            "link",
            existing.id.as_str(),
            Some(serde_json::json!({"before": settings(&existing), "after": settings(&after)})),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        Ok(after)
    }

    /// One of the tenant's tracking links.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<tracking_link::Model, LinkError> {
        self.find(caller.tenant()?, id).await
    }

    /// One of the tenant's coupons.
    pub async fn coupon(&self, caller: &Caller, id: &str) -> Result<coupon::Model, LinkError> {
        scoped_by_id::<coupon::Entity>(caller.tenant()?, id)
            .one(&self.store().conn)
            .await?
            .ok_or_else(|| LinkError::CouponNotFound(id.to_owned()))
    }

    /// Pauses a coupon (postbacks with its code are no longer attributed by
    /// it; conversions made already stand) or makes it active again.
    pub async fn update_coupon(
        &self,
        caller: &Caller,
        id: &str,
        status: Option<String>,
    ) -> Result<coupon::Model, LinkError> {
        let tenant = caller.tenant_admin()?;
        let existing = self.coupon(caller, id).await?;
        let mut f = Fields::default();
        let status = f.take_opt("status", status.as_deref().map(activity));
        let (status,) = f.done((status,)).map_err(Invalid)?;
        let Some(status) = status.filter(|s| *s != existing.status) else {
            return Ok(existing);
        };
        let txn = self.store().write_txn().await?;
        scoped_update_by_id::<coupon::Entity>(tenant, &existing.id)
            .col_expr(coupon::Column::Status, Expr::value(status))
            .exec(&txn)
            .await?;
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "coupon.update",
            "coupon",
            existing.id.as_str(),
            Some(serde_json::json!({
                "before": {"status": existing.status.to_string()},
                "after": {"status": status.to_string()},
            })),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        self.coupon(caller, id).await
    }

    /// Creates a coupon code owned by an affiliate.
    pub async fn create_coupon(
        &self,
        caller: &Caller,
        input: NewCoupon,
    ) -> Result<coupon::Model, LinkError> {
        let tenant = caller.tenant_admin()?;
        let mut f = self
            .check_owners(tenant, &input.program_id, &input.affiliate_id)
            .await?;
        let code = f.take("code", CouponCode::parse(&input.code));
        let (code,) = f.done((code,)).map_err(Invalid)?;
        let coupon = coupon::Model {
            id: CouponId::generate(),
            tenant_id: tenant.clone(),
            created_at: Utc::now(),
            program_id: input.program_id.into(),
            affiliate_id: input.affiliate_id.into(),
            code: code.into_string(),
            status: Activity::Active,
        };
        match insert(self.store().writer(), coupon.clone()).await {
            Ok(c) => Ok(c),
            Err(e) if is_unique_violation(&e) => Err(LinkError::CouponTaken(coupon.code)),
            Err(e) => Err(e.into()),
        }
    }

    /// The tenant's coupons, oldest first, by cursor.
    pub async fn list_coupons(
        &self,
        caller: &Caller,
        of: Owners,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Page<coupon::Model>, LinkError> {
        use coupon::Column as C;
        let mut q = scoped::<coupon::Entity>(caller.tenant()?);
        if let Some(p) = of.program_id {
            q = q.filter(C::ProgramId.eq(p));
        }
        if let Some(a) = of.affiliate_id {
            q = q.filter(C::AffiliateId.eq(a));
        }
        oldest_page(q, IdKind::Coupon, cursor, limit, &self.store().conn, |c| {
            c.id.as_str()
        })
        .await
    }

    /// Fields naming a program or an affiliate that this tenant does not have.
    async fn check_owners(
        &self,
        tenant: &TenantId,
        program_id: &str,
        affiliate_id: &str,
    ) -> Result<Fields, LinkError> {
        let db = &self.store().conn;
        let mut f = Fields::default();
        if scoped_by_id::<program::Entity>(tenant, program_id)
            .one(db)
            .await?
            .is_none()
        {
            f.error("program_id", "no program with this id");
        }
        if scoped_by_id::<affiliate::Entity>(tenant, affiliate_id)
            .one(db)
            .await?
            .is_none()
        {
            f.error("affiliate_id", "no affiliate with this id");
        }
        Ok(f)
    }

    async fn find(&self, tenant: &TenantId, id: &str) -> Result<tracking_link::Model, LinkError> {
        scoped_by_id::<tracking_link::Entity>(tenant, id)
            .one(&self.store().conn)
            .await?
            .ok_or_else(|| LinkError::NotFound(id.to_owned()))
    }
}
