//! Affiliates (partners): invited with a portal link shown once, paused and
//! resumed, with the postback URL they are notified at.
//!
//! An affiliate's postback URL is also its notification endpoint: changing
//! the URL retires the old endpoint and makes a new one, so deliveries keep
//! the URL they were made for.

use chrono::Utc;
use trcker_domain::fields::{Email, Fields, Name, TargetUrl};
use trcker_domain::ids::IdKind;
use trcker_domain::secret::{hash_secret, random_alnum};
use trcker_domain::slug::Slug;
use trcker_storage::entities::{Activity, affiliate};
use trcker_storage::ids::AffiliateId;
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{ColumnTrait, QueryFilter};
use trcker_storage::{
    Store, TenantId, batch::insert, is_unique_violation, scoped, scoped_by_id, scoped_update_by_id,
};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::conversions::{Page, oldest_page};
use crate::error::{Invalid, StoreError, from_store};
use crate::input::activity;

/// Days an invitation link works; re-inviting makes a new one.
pub const INVITE_DAYS: i64 = 7;

#[derive(Debug, thiserror::Error)]
pub enum AffiliateError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("affiliate not found")]
    NotFound(String),
    #[error("an affiliate with this slug or email exists already")]
    Taken,
    #[error("affiliate {0} has accepted an invitation already and signs in with a password")]
    AlreadyActivated(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(AffiliateError);

pub struct NewAffiliate {
    pub name: String,
    pub email: String,
    pub slug: String,
    pub postback_url: Option<String>,
}

pub struct CreatedAffiliate {
    pub affiliate: affiliate::Model,
    /// The portal invite link, shown once.
    pub invite_url: String,
}

#[derive(Default)]
pub struct AffiliateUpdate {
    pub name: Option<String>,
    /// `active` or `paused`.
    pub status: Option<String>,
    /// `Some(None)` removes the postback URL.
    pub postback_url: Option<Option<String>>,
}

#[derive(Clone)]
pub struct AffiliateService {
    area: Area,
}

impl AffiliateService {
    pub(crate) fn new(area: Area) -> Self {
        AffiliateService { area }
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    /// Creates (invites) an affiliate; returns its portal invitation link, once.
    pub async fn create(
        &self,
        caller: &Caller,
        input: NewAffiliate,
    ) -> Result<CreatedAffiliate, AffiliateError> {
        let tenant = caller.tenant_admin()?;
        let mut f = Fields::default();
        let name = f.take("name", Name::parse(&input.name));
        let email = f.take("email", Email::parse(&input.email));
        let slug = f.take("slug", Slug::parse(&input.slug));
        let postback_url = f.take_opt(
            "postback_url",
            input
                .postback_url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| self.call_target(u)),
        );
        let (name, email, slug, postback_url) =
            f.done((name, email, slug, postback_url)).map_err(Invalid)?;
        let t = Utc::now();
        let invite = random_alnum(32);
        let affiliate = affiliate::Model {
            id: AffiliateId::generate(),
            tenant_id: tenant.clone(),
            created_at: t,
            name: name.into_string(),
            email: email.into_string(),
            slug: slug.to_string(),
            status: Activity::Active,
            postback_url: postback_url.map(TargetUrl::into_string),
            password_hash: None,
            invite_token_hash: Some(hash_secret(&invite)),
            updated_at: t,
            session_epoch: 0,
            invite_expires_at: Some(t + chrono::Duration::days(INVITE_DAYS)),
        };
        let txn = self.store().write_txn().await?;
        insert(&txn, affiliate.clone()).await.map_err(|e| {
            if is_unique_violation(&e) {
                AffiliateError::Taken
            } else {
                e.into()
            }
        })?;
        if let Some(url) = &affiliate.postback_url {
            crate::endpoints::follow_postback_url(&txn, tenant, &affiliate.id, None, Some(url), t)
                .await?;
        }
        crate::audit::record(
            &txn,
            tenant,
            caller,
            "affiliate.create",
            "affiliate",
            affiliate.id.as_str(),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        let invite_url = self.invite_url(tenant, &invite).await?;
        Ok(CreatedAffiliate {
            affiliate,
            invite_url,
        })
    }

    async fn invite_url(&self, tenant: &TenantId, invite: &str) -> Result<String, AffiliateError> {
        let brand = crate::tenants::slug_of(&self.store().conn, tenant).await?;
        Ok(format!(
            "{}/portal/{brand}/invite/{invite}",
            self.area.settings.public_base()
        ))
    }

    /// Invites an affiliate again: a new portal invitation link, shown
    /// once; the one sent before stops working. Only for an affiliate who
    /// has not accepted one yet.
    pub async fn reinvite(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<CreatedAffiliate, AffiliateError> {
        use affiliate::Column as C;
        let tenant = caller.tenant_admin()?;
        let existing = self.find(tenant, id).await?;
        let invite = random_alnum(32);
        let txn = self.store().write_txn().await?;
        let done = scoped_update_by_id::<affiliate::Entity>(tenant, &existing.id)
            .col_expr(C::InviteTokenHash, Expr::value(Some(hash_secret(&invite))))
            .col_expr(
                C::InviteExpiresAt,
                Expr::value(Some(Utc::now() + chrono::Duration::days(INVITE_DAYS))),
            )
            .col_expr(C::UpdatedAt, Expr::value(Utc::now()))
            .filter(C::PasswordHash.is_null())
            .exec(&txn)
            .await?;
        if done.rows_affected != 1 {
            return Err(AffiliateError::AlreadyActivated(existing.id.to_string()));
        }
        crate::audit::record(
            &txn,
            tenant,
            caller,
            "affiliate.reinvite",
            "affiliate",
            existing.id.as_str(),
        )
        .await?;
        txn.commit().await?;
        let invite_url = self.invite_url(tenant, &invite).await?;
        Ok(CreatedAffiliate {
            affiliate: self.find(tenant, id).await?,
            invite_url,
        })
    }

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<affiliate::Model, AffiliateError> {
        self.find(caller.tenant()?, id).await
    }

    /// The tenant's affiliates, oldest first, by cursor; optionally only
    /// those of a status, or the one with an email.
    pub async fn list(
        &self,
        caller: &Caller,
        status: Option<String>,
        email: Option<String>,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Page<affiliate::Model>, AffiliateError> {
        let mut f = Fields::default();
        let status = f.take_opt("status", status.as_deref().map(activity));
        let (status,) = f.done((status,)).map_err(Invalid)?;
        let mut q = scoped::<affiliate::Entity>(caller.tenant()?);
        if let Some(status) = status {
            q = q.filter(affiliate::Column::Status.eq(status));
        }
        if let Some(email) = email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            q = q.filter(affiliate::Column::Email.eq(email.to_ascii_lowercase()));
        }
        oldest_page(
            q,
            IdKind::Affiliate,
            cursor,
            limit,
            &self.store().conn,
            |a| a.id.as_str(),
        )
        .await
    }

    /// Changes an affiliate: name, status (pause), postback URL.
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        input: AffiliateUpdate,
    ) -> Result<affiliate::Model, AffiliateError> {
        use affiliate::Column as C;
        let tenant = caller.tenant_admin()?;
        let existing = self.find(tenant, id).await?;
        let mut f = Fields::default();
        let name = f.take_opt("name", input.name.as_deref().map(Name::parse));
        let status = f.take_opt("status", input.status.as_deref().map(activity));
        let postback_url = f.take_patch(
            "postback_url",
            input
                .postback_url
                .as_ref()
                .map(|u| u.as_deref().map(|u| self.call_target(u))),
        );
        let (name, status, postback_url) = f.done((name, status, postback_url)).map_err(Invalid)?;
        let t = Utc::now();
        let mut q = scoped_update_by_id::<affiliate::Entity>(tenant, &existing.id)
            .col_expr(C::UpdatedAt, Expr::value(t));
        if let Some(v) = name {
            q = q.col_expr(C::Name, Expr::value(v.into_string()));
        }
        if let Some(v) = status {
            q = q.col_expr(C::Status, Expr::value(v));
        }
        let txn = self.store().write_txn().await?;
        if let Some(url) = postback_url {
            let url = url.map(TargetUrl::into_string);
            q = q.col_expr(C::PostbackUrl, Expr::value(url.clone()));
            crate::endpoints::follow_postback_url(
                &txn,
                tenant,
                &existing.id,
                existing.postback_url.as_deref(),
                url.as_deref(),
                t,
            )
            .await?;
        }
        q.exec(&txn).await?;
        let after = scoped_by_id::<affiliate::Entity>(tenant, &existing.id)
            .one(&txn)
            .await?
            .ok_or_else(|| AffiliateError::NotFound(id.to_owned()))?;
        let settings = |a: &affiliate::Model| serde_json::json!({"name": a.name, "status": a.status.to_string(), "postback_url": a.postback_url});
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "affiliate.update",
            "affiliate",
            existing.id.as_str(),
            Some(serde_json::json!({"before": settings(&existing), "after": settings(&after)})),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        Ok(after)
    }

    /// A postback URL Trcker will call ([`crate::endpoints::call_target`]).
    fn call_target(&self, url: &str) -> Result<TargetUrl, String> {
        crate::endpoints::call_target(url, self.area.settings.allow_private_targets)
            .and_then(|u| TargetUrl::parse(&u).map_err(|e| e.to_string()))
    }

    async fn find(&self, tenant: &TenantId, id: &str) -> Result<affiliate::Model, AffiliateError> {
        scoped_by_id::<affiliate::Entity>(tenant, id)
            .one(&self.store().conn)
            .await?
            .ok_or_else(|| AffiliateError::NotFound(id.to_owned()))
    }
}
