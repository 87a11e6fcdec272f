//! The affiliate portal's use cases: accepting the invitation (choosing a
//! password), signing in, and what an affiliate earned.
//!
//! Passwords are stored as Argon2id hashes. Balances come from the append-only
//! ledger: an entry is pending while its conversion is pending (merchant
//! approval or hold period), approved once the conversion is approved (a
//! reversal nets a refunded one to zero), and paid once it is part of a payout.
//! Test conversions never count.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::Duration;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use trcker_domain::money::{Currency, format_minor};
use trcker_domain::secret::hash_secret;
use trcker_storage::entities::*;
use trcker_storage::{TenantId, scoped, scoped_by_id, sea_orm};

use crate::util::now;
use crate::{ServiceError, ServiceResult, Services};

pub const MIN_PASSWORD_LEN: usize = 10;

/// A signed-in affiliate.
#[derive(Debug, Clone)]
pub struct PortalUser {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub affiliate: affiliate::Model,
}

/// Balances in one currency, as decimal strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub currency: String,
    pub pending: String,
    pub approved: String,
    pub paid: String,
    pub last_30_days: String,
}

#[derive(Debug, Clone)]
pub struct ConversionLine {
    pub id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub program: String,
    pub status: String,
    pub amount: String,
    pub payout: String,
    pub currency: String,
    pub explanation: String,
}

#[derive(Debug, Clone)]
pub struct Earnings {
    pub balances: Vec<Balance>,
    pub clicks_30_days: u64,
    pub conversions_30_days: u64,
    pub recent: Vec<ConversionLine>,
}

fn hash_password(password: &str) -> ServiceResult<String> {
    let salt = SaltString::encode_b64(trcker_domain::secret::random_alnum(16).as_bytes())
        .map_err(|e| ServiceError::Internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(format!("password hash: {e}")))
}

fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

impl Services {
    async fn portal_tenant(&self, brand: &str) -> ServiceResult<tenant::Model> {
        self.tenant_by_slug(brand)
            .await?
            .ok_or(ServiceError::NotFound("portal"))
    }

    /// The display name of the tenant whose portal `brand` is.
    pub async fn portal_tenant_name(&self, brand: &str) -> ServiceResult<String> {
        Ok(self.portal_tenant(brand).await?.name)
    }

    /// The slug of the tenant a signed-in affiliate belongs to.
    pub async fn portal_tenant_slug(&self, user: &PortalUser) -> ServiceResult<String> {
        self.tenant_slug(&user.tenant_id).await
    }

    /// Whether an invitation link is valid (to show the form or a clear message).
    pub async fn invite_valid(&self, brand: &str, token: &str) -> ServiceResult<bool> {
        let tenant = self.portal_tenant(brand).await?;
        let found = scoped::<affiliate::Entity>(&TenantId::from_trusted(tenant.id))
            .filter(affiliate::Column::InviteTokenHash.eq(hash_secret(token)))
            .one(&self.store.conn)
            .await?;
        Ok(found.is_some())
    }

    /// Accepts an invitation: sets the password, consumes the link, signs in.
    pub async fn accept_invite(
        &self,
        brand: &str,
        token: &str,
        password: &str,
        confirm: &str,
    ) -> ServiceResult<PortalUser> {
        let tenant = self.portal_tenant(brand).await?;
        let tenant_id = TenantId::from_trusted(tenant.id.clone());
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(ServiceError::field(
                "password",
                format!("must be at least {MIN_PASSWORD_LEN} characters"),
            ));
        }
        if password != confirm {
            return Err(ServiceError::field(
                "confirm",
                "does not match the password",
            ));
        }
        let token_hash = hash_secret(token);
        let affiliate = scoped::<affiliate::Entity>(&tenant_id)
            .filter(affiliate::Column::InviteTokenHash.eq(&token_hash))
            .one(&self.store.conn)
            .await?
            .ok_or_else(|| {
                ServiceError::Unauthorized(
                    "this invitation link is not valid or was used already".into(),
                )
            })?;
        let hash = hash_password(password)?;
        let updated = affiliate::Entity::update_many()
            .col_expr(affiliate::Column::PasswordHash, Expr::value(hash))
            .col_expr(
                affiliate::Column::InviteTokenHash,
                Expr::value(Option::<String>::None),
            )
            .col_expr(affiliate::Column::UpdatedAt, Expr::value(now()))
            .filter(affiliate::Column::TenantId.eq(tenant_id.as_str()))
            .filter(affiliate::Column::Id.eq(&affiliate.id))
            .filter(affiliate::Column::InviteTokenHash.eq(&token_hash))
            .exec(&self.store.conn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(ServiceError::Unauthorized(
                "this invitation link is not valid or was used already".into(),
            ));
        }
        self.portal_user(&tenant_id, &affiliate.id).await
    }

    /// Signs an affiliate in by email and password.
    pub async fn portal_login(
        &self,
        brand: &str,
        email: &str,
        password: &str,
    ) -> ServiceResult<PortalUser> {
        let tenant = self.portal_tenant(brand).await?;
        let tenant_id = TenantId::from_trusted(tenant.id.clone());
        let affiliate = scoped::<affiliate::Entity>(&tenant_id)
            .filter(affiliate::Column::Email.eq(email.trim().to_ascii_lowercase()))
            .one(&self.store.conn)
            .await?;
        let ok = affiliate
            .as_ref()
            .and_then(|a| a.password_hash.as_deref())
            .is_some_and(|h| verify_password(password, h));
        match affiliate {
            Some(a) if ok && a.status == "active" => self.portal_user(&tenant_id, &a.id).await,
            _ => Err(ServiceError::Unauthorized("wrong email or password".into())),
        }
    }

    /// The affiliate behind a session, if it still exists and is active.
    pub async fn portal_user(
        &self,
        tenant: &TenantId,
        affiliate_id: &str,
    ) -> ServiceResult<PortalUser> {
        let tenant_row = tenant::Entity::find_by_id(tenant.as_str())
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("portal"))?;
        let affiliate = scoped_by_id::<affiliate::Entity>(tenant, affiliate_id)
            .one(&self.store.conn)
            .await?
            .filter(|a| a.status == "active")
            .ok_or_else(|| ServiceError::Unauthorized("please sign in again".into()))?;
        Ok(PortalUser {
            tenant_id: tenant.clone(),
            tenant_name: tenant_row.name,
            affiliate,
        })
    }

    /// What the affiliate earned: balances per currency and recent conversions.
    pub async fn earnings(&self, user: &PortalUser) -> ServiceResult<Earnings> {
        let tenant = &user.tenant_id;
        let aff = &user.affiliate.id;
        let since = now() - Duration::days(30);
        let entries = scoped::<ledger_entry::Entity>(tenant)
            .filter(ledger_entry::Column::AffiliateId.eq(aff))
            .filter(ledger_entry::Column::IsTest.eq(false))
            .all(&self.store.conn)
            .await?;
        let conversions = scoped::<conversion::Entity>(tenant)
            .filter(conversion::Column::AffiliateId.eq(aff))
            .filter(conversion::Column::IsTest.eq(false))
            .order_by_desc(conversion::Column::Id)
            .all(&self.store.conn)
            .await?;
        let status_of = |id: &str| {
            conversions
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.status.as_str())
                .unwrap_or("pending")
        };

        let mut currencies: Vec<String> = entries.iter().map(|e| e.currency.clone()).collect();
        currencies.sort();
        currencies.dedup();
        let balances = currencies
            .into_iter()
            .map(|code| {
                let cur = Currency::parse(&code).unwrap_or(Currency::USD);
                let (mut pending, mut approved, mut paid, mut recent) = (0i64, 0i64, 0i64, 0i64);
                for e in entries.iter().filter(|e| e.currency == code) {
                    if e.payout_id.is_some() {
                        paid += e.amount_minor;
                    } else if status_of(&e.conversion_id) == "pending" {
                        pending += e.amount_minor;
                    } else {
                        approved += e.amount_minor;
                    }
                    if e.created_at >= since {
                        recent += e.amount_minor;
                    }
                }
                Balance {
                    pending: format_minor(pending, cur),
                    approved: format_minor(approved, cur),
                    paid: format_minor(paid, cur),
                    last_30_days: format_minor(recent, cur),
                    currency: code,
                }
            })
            .collect();

        let clicks_30_days = scoped::<click::Entity>(tenant)
            .filter(click::Column::AffiliateId.eq(aff))
            .filter(click::Column::CreatedAt.gte(since))
            .filter(click::Column::IsTest.eq(false))
            .count(&self.store.conn)
            .await?;
        let conversions_30_days =
            conversions.iter().filter(|c| c.created_at >= since).count() as u64;
        let programs = scoped::<program::Entity>(tenant)
            .limit(1000)
            .all(&self.store.conn)
            .await?;
        let recent = conversions
            .iter()
            .take(50)
            .map(|c| {
                let cur = Currency::parse(&c.currency).unwrap_or(Currency::USD);
                ConversionLine {
                    id: c.id.clone(),
                    created_at: c.created_at,
                    program: programs
                        .iter()
                        .find(|p| p.id == c.program_id)
                        .map(|p| p.name.clone())
                        .unwrap_or_default(),
                    status: c.status.clone(),
                    amount: format_minor(c.amount_minor, cur),
                    payout: c
                        .payout_minor
                        .map(|m| format_minor(m, cur))
                        .unwrap_or_else(|| "…".into()),
                    currency: c.currency.clone(),
                    explanation: c.commission_explanation.clone().unwrap_or_default(),
                }
            })
            .collect();
        Ok(Earnings {
            balances,
            clicks_30_days,
            conversions_30_days,
            recent,
        })
    }
}
