//! The affiliate portal's accounts and what it shows: accepting the invitation
//! (choosing a password), signing in, the session's affiliate, and earnings.
//!
//! Passwords are stored as Argon2id hashes. Balances come from the append-only
//! ledger: an entry is pending while its conversion is pending (merchant
//! approval or hold period), approved once the conversion is approved (a
//! reversal nets a refunded one to zero), and paid as the payouts marked paid
//! debit it (`crate::ledger`). Test conversions never count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Duration, Utc};
use trcker_domain::ConversionStatus;
use trcker_domain::money::format_minor;
use trcker_domain::secret::hash_secret;
use trcker_domain::tiers::TimeZone;
use trcker_storage::entities::*;
use trcker_storage::ids::{ConversionId, ProgramId};
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use trcker_storage::{Store, TenantId, lookup, scoped, scoped_by_id, scoped_update_by_id};

use crate::areas::Area;
use crate::error::{Invalid, StoreError, from_store};
use crate::guard::Failures;
use crate::ledger::format_sum;

pub const MIN_PASSWORD_LEN: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// No tenant has this portal.
    #[error("no portal here")]
    UnknownPortal,
    /// The operator suspended the tenant: its portal is closed.
    #[error("this partner portal is closed for now")]
    Suspended,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("this invitation link is not valid, has expired or was used already")]
    InvalidInvite,
    #[error("wrong email or password")]
    WrongPassword,
    /// The password was right, but the program paused this affiliate.
    #[error("your account with this program is paused; please contact the program")]
    AffiliatePaused,
    /// The session ended (signed out on another device) while in use.
    #[error("you were signed out; please sign in again")]
    SessionEnded,
    /// Too many failed sign-ins for this account or from this address.
    #[error("too many sign-in attempts; please try again in {} minutes", retry_after_secs.div_ceil(60))]
    TooManyAttempts { retry_after_secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(PortalError);

/// A signed-in affiliate.
#[derive(Debug, Clone)]
pub struct PortalUser {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    /// The tenant's time zone: the portal's dates and days are on its clock.
    pub time_zone: TimeZone,
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
    pub created_at: DateTime<Utc>,
    /// When, on the tenant's clock (`2026-12-06 14:03`).
    pub date: String,
    /// For a pending conversion with a hold: the day it becomes approved.
    pub approves_on: Option<String>,
    /// What was taken back (a reversal's negative amount), if anything.
    pub reversal: Option<String>,
    pub event: String,
    pub subs: [Option<String>; 5],
    pub program: String,
    pub status: String,
    pub amount: String,
    pub payout: String,
    pub currency: String,
    pub explanation: String,
}

/// An offer the affiliate may promote, with its terms for her and her own
/// short links and coupons for it.
#[derive(Debug, Clone)]
pub struct Offer {
    pub name: String,
    pub slug: String,
    pub currency: String,
    /// What each kind of event earns her ("sale: 10% of the sale").
    pub terms: Vec<String>,
    pub hold_days: i32,
    pub attribution_window_days: i32,
    /// Codes of her active short links for this offer (`/c/{code}`).
    pub short_links: Vec<String>,
    /// Her active coupon codes for this offer.
    pub coupons: Vec<String>,
}

/// A payout to the affiliate, as her payouts page shows it.
#[derive(Debug, Clone)]
pub struct PayoutLine {
    pub id: String,
    /// When it was made, on the tenant's clock.
    pub date: String,
    pub amount: String,
    pub currency: String,
    /// `pending` (on its way), `paid` or `failed`.
    pub status: String,
    pub paid_on: Option<String>,
    pub reference: Option<String>,
    pub failure_reason: Option<String>,
    pub entries: i32,
}

/// One ledger entry a payout covers.
#[derive(Debug, Clone)]
pub struct CoveredEntry {
    pub date: String,
    pub program: String,
    pub kind: String,
    pub amount: String,
    pub currency: String,
    pub explanation: String,
}

/// Conversions the earnings page lists.
const RECENT: usize = 20;
/// Conversions to a page of the conversions list.
pub const PER_PAGE: u64 = 50;
/// The most rows a CSV export holds.
pub const CSV_MAX_ROWS: u64 = 100_000;

/// Which of her conversions the affiliate asks for.
#[derive(Debug, Clone, Default)]
pub struct ConversionFilter {
    pub status: Option<ConversionStatus>,
    /// An offer's slug.
    pub offer: Option<String>,
    /// Days on the tenant's calendar, both included.
    pub from: Option<chrono::NaiveDate>,
    pub to: Option<chrono::NaiveDate>,
}

/// A page of the affiliate's conversions.
#[derive(Debug, Clone)]
pub struct ConversionList {
    pub lines: Vec<ConversionLine>,
    /// How many the filter keeps in all.
    pub total: u64,
    pub page: u64,
    pub pages: u64,
}

/// The sum of the reversal entries of each conversion among `entries`.
fn reversed_by_conversion(entries: &[ledger_entry::Model]) -> HashMap<ConversionId, i64> {
    let mut out = HashMap::new();
    for e in entries
        .iter()
        .filter(|e| e.kind == ledger_entry::Kind::Reversal)
    {
        if let Some(c) = &e.conversion_id {
            *out.entry(c.clone()).or_insert(0) += e.amount_minor;
        }
    }
    out
}

/// A commission plan's terms in words.
fn plan_terms(plan: &commission_plan::Model) -> String {
    let base = match plan.kind.as_str() {
        "percent" => format!("{}% of the sale", plan.value),
        "flat" => format!("{} {} per conversion", plan.value, plan.currency.code()),
        other => format!("{other} {}", plan.value),
    };
    let tiered = if plan.tiers.is_some() {
        ", more at higher volumes"
    } else {
        ""
    };
    format!("{}: {base}{tiered}", plan.event)
}

#[derive(Debug, Clone)]
pub struct Earnings {
    pub balances: Vec<Balance>,
    pub clicks_30_days: u64,
    pub conversions_30_days: u64,
    pub recent: Vec<ConversionLine>,
}

fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::encode_b64(trcker_domain::secret::random_alnum(16).as_bytes())
        .map_err(|e| StoreError::Internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Internal(format!("password hash: {e}")))
}

fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash no password matches in practice, verified against when the email
/// has no password (unknown, or invited and not yet activated), so that
/// sign-in costs the same Argon2 work either way and its time does not tell
/// which emails are registered.
static NO_ACCOUNT: LazyLock<String> =
    LazyLock::new(|| hash_password(&trcker_domain::secret::random_alnum(32)).unwrap_or_default());

/// Whether `password` matches `stored` (or, without one, the dummy hash,
/// which it never does), off the request threads: Argon2 takes tens of
/// milliseconds of CPU.
async fn password_matches(password: &str, stored: Option<String>) -> bool {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || match stored {
        Some(stored) => verify_password(&password, &stored),
        None => {
            verify_password(&password, &NO_ACCOUNT);
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// A new password is long enough and typed twice alike.
fn check_new_password(password: &str, confirm: &str) -> Result<(), PortalError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(Invalid::field(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        )
        .into());
    }
    if password != confirm {
        return Err(Invalid::field("confirm", "does not match the password").into());
    }
    Ok(())
}

/// An invitation link still in its time (or from before links expired).
fn invite_unexpired() -> trcker_storage::sea_orm::Condition {
    use trcker_storage::sea_orm::Condition;
    Condition::any()
        .add(affiliate::Column::InviteExpiresAt.is_null())
        .add(affiliate::Column::InviteExpiresAt.gt(Utc::now()))
}

/// Failed sign-ins an account may have in [`SIGN_IN_WINDOW`].
pub const SIGN_IN_FAILURES_PER_ACCOUNT: u32 = 10;
/// Failed sign-ins an address may make in [`SIGN_IN_WINDOW`], whatever the
/// accounts.
pub const SIGN_IN_FAILURES_PER_ADDRESS: u32 = 20;
/// The window of the sign-in limits, from the first failure.
pub const SIGN_IN_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Failed sign-ins per account (tenant and email) and per client address.
/// Counted per process, like the API's guard.
struct SignInGuard {
    accounts: Failures<(String, String)>,
    addresses: Failures<IpAddr>,
}

impl SignInGuard {
    fn new() -> Self {
        SignInGuard {
            accounts: Failures::new(SIGN_IN_FAILURES_PER_ACCOUNT, SIGN_IN_WINDOW, 100_000),
            addresses: Failures::new(SIGN_IN_FAILURES_PER_ADDRESS, SIGN_IN_WINDOW, 100_000),
        }
    }

    fn check(&self, account: &(String, String), from: Option<IpAddr>) -> Result<(), PortalError> {
        let by_address = from.map_or(Ok(()), |ip| self.addresses.check(&ip));
        match (self.accounts.check(account), by_address) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(a), Err(b)) => Err(PortalError::TooManyAttempts {
                retry_after_secs: a.max(b),
            }),
            (Err(secs), _) | (_, Err(secs)) => Err(PortalError::TooManyAttempts {
                retry_after_secs: secs,
            }),
        }
    }

    fn failed(&self, account: (String, String), from: Option<IpAddr>) {
        self.accounts.failed(account);
        if let Some(ip) = from {
            self.addresses.failed(ip);
        }
    }
}

#[derive(Clone)]
pub struct PortalService {
    area: Area,
    sign_in: Arc<SignInGuard>,
}

impl PortalService {
    pub(crate) fn new(area: Area) -> Self {
        PortalService {
            area,
            sign_in: Arc::new(SignInGuard::new()),
        }
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    /// The tenant whose portal `brand` is; every page asks, so a
    /// suspended tenant's portal closes at once, sessions included.
    async fn tenant(&self, brand: &str) -> Result<tenant::Model, PortalError> {
        let t = lookup::tenant_by_slug(brand)
            .one(&self.store().conn)
            .await?
            .ok_or(PortalError::UnknownPortal)?;
        match t.status {
            tenant::Status::Active => Ok(t),
            tenant::Status::Suspended => Err(PortalError::Suspended),
        }
    }

    /// The display name of the tenant whose portal `brand` is.
    pub async fn tenant_name(&self, brand: &str) -> Result<String, PortalError> {
        Ok(self.tenant(brand).await?.name)
    }

    /// Whether an invitation link is valid (to show the form or a clear message).
    pub async fn invite_valid(&self, brand: &str, token: &str) -> Result<bool, PortalError> {
        let tenant = self.tenant(brand).await?;
        let found = scoped::<affiliate::Entity>(&tenant.id)
            .filter(affiliate::Column::InviteTokenHash.eq(hash_secret(token)))
            .filter(invite_unexpired())
            .one(&self.store().conn)
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
    ) -> Result<PortalUser, PortalError> {
        use affiliate::Column as C;
        let tenant = self.tenant(brand).await?;
        check_new_password(password, confirm)?;
        let token_hash = hash_secret(token);
        let affiliate = scoped::<affiliate::Entity>(&tenant.id)
            .filter(C::InviteTokenHash.eq(&token_hash))
            .filter(invite_unexpired())
            .one(&self.store().conn)
            .await?
            .ok_or(PortalError::InvalidInvite)?;
        let updated = scoped_update_by_id::<affiliate::Entity>(&tenant.id, &affiliate.id)
            .col_expr(C::PasswordHash, Expr::value(hash_password(password)?))
            .col_expr(C::InviteTokenHash, Expr::value(Option::<String>::None))
            .col_expr(
                C::InviteExpiresAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(C::UpdatedAt, Expr::value(Utc::now()))
            .filter(C::InviteTokenHash.eq(&token_hash))
            .filter(invite_unexpired())
            .exec(self.store().writer())
            .await?;
        if updated.rows_affected != 1 {
            return Err(PortalError::InvalidInvite);
        }
        self.active_user(tenant, affiliate.id.as_str())
            .await?
            .ok_or(PortalError::InvalidInvite)
    }

    /// Changes the signed-in affiliate's password, given the current one
    /// (a wrong one counts as a failed sign-in of the account), and ends
    /// every session of hers: the returned user, of the new session epoch,
    /// is for this browser's new session.
    pub async fn change_password(
        &self,
        user: &PortalUser,
        current: &str,
        password: &str,
        confirm: &str,
        from: Option<IpAddr>,
    ) -> Result<PortalUser, PortalError> {
        use affiliate::Column as C;
        let account = (user.tenant_id.to_string(), user.affiliate.email.clone());
        self.sign_in.check(&account, from)?;
        check_new_password(password, confirm)?;
        if !password_matches(current, user.affiliate.password_hash.clone()).await {
            self.sign_in.failed(account, from);
            return Err(Invalid::field("current", "is not your current password").into());
        }
        let epoch = user.affiliate.session_epoch;
        let updated = scoped_update_by_id::<affiliate::Entity>(&user.tenant_id, &user.affiliate.id)
            .col_expr(C::PasswordHash, Expr::value(hash_password(password)?))
            .col_expr(C::SessionEpoch, Expr::value(epoch + 1))
            .col_expr(C::UpdatedAt, Expr::value(Utc::now()))
            .filter(C::SessionEpoch.eq(epoch))
            .exec(self.store().writer())
            .await?;
        if updated.rows_affected != 1 {
            // Signed out meanwhile (another device): this session is over.
            return Err(PortalError::SessionEnded);
        }
        let mut user = user.clone();
        user.affiliate.session_epoch = epoch + 1;
        Ok(user)
    }

    /// Signs an affiliate in by email and password, sent from `from`. An
    /// account or an address with too many failures is refused before its
    /// password is looked at; the time taken does not depend on whether the
    /// email has an account.
    pub async fn login(
        &self,
        brand: &str,
        email: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<PortalUser, PortalError> {
        let tenant = self.tenant(brand).await?;
        let email = email.trim().to_ascii_lowercase();
        let account = (tenant.id.to_string(), email);
        self.sign_in.check(&account, from)?;
        let affiliate = scoped::<affiliate::Entity>(&tenant.id)
            .filter(affiliate::Column::Email.eq(&account.1))
            .one(&self.store().conn)
            .await?;
        let stored = affiliate.as_ref().and_then(|a| a.password_hash.clone());
        let ok = password_matches(password, stored).await;
        match affiliate {
            Some(a) if ok => {
                self.sign_in.accounts.forget(&account);
                if a.status != Activity::Active {
                    return Err(PortalError::AffiliatePaused);
                }
                self.active_user(tenant, a.id.as_str())
                    .await?
                    .ok_or(PortalError::AffiliatePaused)
            }
            _ => {
                self.sign_in.failed(account, from);
                Err(PortalError::WrongPassword)
            }
        }
    }

    /// The affiliate a session names, on the portal of `brand`: `None` unless
    /// the session is of this portal's tenant, of the affiliate's current
    /// session epoch, and its affiliate is active.
    pub async fn session_user(
        &self,
        brand: &str,
        tenant_id: &str,
        affiliate_id: &str,
        epoch: i64,
    ) -> Result<Option<PortalUser>, PortalError> {
        let tenant = self.tenant(brand).await?;
        if tenant.id.as_str() != tenant_id {
            return Ok(None);
        }
        Ok(self
            .active_user(tenant, affiliate_id)
            .await?
            .filter(|u| u.affiliate.session_epoch == epoch))
    }

    /// Ends every session of the affiliate (signing out on one device signs
    /// out all of them).
    pub async fn end_sessions(&self, user: &PortalUser) -> Result<(), PortalError> {
        use affiliate::Column as C;
        scoped_update_by_id::<affiliate::Entity>(&user.tenant_id, &user.affiliate.id)
            .col_expr(
                C::SessionEpoch,
                trcker_storage::sea_orm::sea_query::ExprTrait::add(Expr::col(C::SessionEpoch), 1),
            )
            .exec(self.store().writer())
            .await?;
        Ok(())
    }

    async fn active_user(
        &self,
        tenant: tenant::Model,
        affiliate_id: &str,
    ) -> Result<Option<PortalUser>, PortalError> {
        let affiliate = scoped_by_id::<affiliate::Entity>(&tenant.id, affiliate_id)
            .one(&self.store().conn)
            .await?
            .filter(|a| a.status == Activity::Active);
        Ok(affiliate.map(|affiliate| PortalUser {
            time_zone: TimeZone::parse(&tenant.time_zone).unwrap_or(TimeZone::UTC),
            tenant_id: tenant.id,
            tenant_name: tenant.name,
            affiliate,
        }))
    }

    /// The active offers the affiliate may promote, by name, with her terms
    /// (her own plan where the program has one for her, else the program's),
    /// short links and coupons.
    pub async fn offers(&self, user: &PortalUser) -> Result<Vec<Offer>, PortalError> {
        let (tenant, aff) = (&user.tenant_id, &user.affiliate.id);
        let db = &self.store().conn;
        let programs = self.active_programs(tenant).await?;
        let plans = scoped::<commission_plan::Entity>(tenant)
            .filter(commission_plan::Column::Active.eq(true))
            .filter(
                trcker_storage::sea_orm::Condition::any()
                    .add(commission_plan::Column::AffiliateId.is_null())
                    .add(commission_plan::Column::AffiliateId.eq(aff)),
            )
            .all(db)
            .await?;
        let links = scoped::<tracking_link::Entity>(tenant)
            .filter(tracking_link::Column::AffiliateId.eq(aff))
            .filter(tracking_link::Column::Status.eq(Activity::Active))
            .order_by_asc(tracking_link::Column::Code)
            .all(db)
            .await?;
        let coupons = scoped::<coupon::Entity>(tenant)
            .filter(coupon::Column::AffiliateId.eq(aff))
            .filter(coupon::Column::Status.eq(Activity::Active))
            .order_by_asc(coupon::Column::Code)
            .all(db)
            .await?;
        Ok(programs
            .into_iter()
            .map(|p| {
                // Per event, her own plan wins over the program's.
                let mut by_event: std::collections::BTreeMap<&str, &commission_plan::Model> =
                    Default::default();
                for plan in plans.iter().filter(|pl| pl.program_id == p.id) {
                    let mine = plan.affiliate_id.is_some();
                    match by_event.get(plan.event.as_str()) {
                        Some(kept) if kept.affiliate_id.is_some() && !mine => {}
                        _ => {
                            by_event.insert(plan.event.as_str(), plan);
                        }
                    }
                }
                Offer {
                    terms: by_event.values().map(|pl| plan_terms(pl)).collect(),
                    short_links: links
                        .iter()
                        .filter(|l| l.program_id == p.id)
                        .map(|l| l.code.clone())
                        .collect(),
                    coupons: coupons
                        .iter()
                        .filter(|c| c.program_id == p.id)
                        .map(|c| c.code.clone())
                        .collect(),
                    currency: p.currency.code().to_owned(),
                    name: p.name,
                    slug: p.slug,
                    hold_days: p.hold_days,
                    attribution_window_days: p.attribution_window_days,
                }
            })
            .collect())
    }

    /// A page of the affiliate's conversions (newest first) that `filter`
    /// keeps, [`PER_PAGE`] to a page, pages counted from 1.
    pub async fn conversions(
        &self,
        user: &PortalUser,
        filter: &ConversionFilter,
        page: u64,
    ) -> Result<ConversionList, PortalError> {
        let db = &self.store().conn;
        let query = self.filtered(user, filter).await?;
        let pages = query.clone().paginate(db, PER_PAGE);
        let numbers = pages.num_items_and_pages().await?;
        let page = page.clamp(1, numbers.number_of_pages.max(1));
        let rows = pages.fetch_page(page - 1).await?;
        Ok(ConversionList {
            lines: self.lines(user, &rows).await?,
            total: numbers.number_of_items,
            page,
            pages: numbers.number_of_pages.max(1),
        })
    }

    /// Every conversion `filter` keeps (up to [`CSV_MAX_ROWS`]) as CSV, dates
    /// on the tenant's clock.
    pub async fn conversions_csv(
        &self,
        user: &PortalUser,
        filter: &ConversionFilter,
    ) -> Result<String, PortalError> {
        use crate::csv::{quote, text_cell};
        let rows = self
            .filtered(user, filter)
            .await?
            .limit(CSV_MAX_ROWS)
            .all(&self.store().conn)
            .await?;
        let mut out = format!(
            "date ({}),offer,event,status,sale,currency,commission,reversal,explanation,sub1,sub2,sub3,sub4,sub5\r\n",
            user.time_zone.name()
        );
        for l in self.lines(user, &rows).await? {
            let mut cells = vec![
                l.date,
                quote(&text_cell(&l.program)),
                quote(&text_cell(&l.event)),
                l.status,
                l.amount,
                l.currency,
                l.payout,
                l.reversal.unwrap_or_default(),
                quote(&text_cell(&l.explanation)),
            ];
            cells.extend(
                l.subs
                    .iter()
                    .map(|s| quote(&text_cell(s.as_deref().unwrap_or("")))),
            );
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
        Ok(out)
    }

    /// The affiliate's real conversions that `filter` keeps, newest first.
    async fn filtered(
        &self,
        user: &PortalUser,
        filter: &ConversionFilter,
    ) -> Result<trcker_storage::sea_orm::Select<conversion::Entity>, PortalError> {
        use conversion::Column as C;
        let mut query = scoped::<conversion::Entity>(&user.tenant_id)
            .filter(C::AffiliateId.eq(&user.affiliate.id))
            .filter(C::IsTest.eq(false))
            .order_by_desc(C::Id);
        if let Some(status) = filter.status {
            query = query.filter(C::Status.eq(conversion::Status(status)));
        }
        if let Some(slug) = &filter.offer {
            let program = scoped::<program::Entity>(&user.tenant_id)
                .filter(program::Column::Slug.eq(slug))
                .one(&self.store().conn)
                .await?
                .ok_or_else(|| Invalid::field("offer", "is not an offer of this program"))?;
            query = query.filter(C::ProgramId.eq(program.id));
        }
        if let Some(from) = filter.from {
            query = query.filter(C::CreatedAt.gte(user.time_zone.midnight(from)));
        }
        if let Some(to) = filter.to {
            let next = to.succ_opt().unwrap_or(to);
            query = query.filter(C::CreatedAt.lt(user.time_zone.midnight(next)));
        }
        Ok(query)
    }

    /// The affiliate's payouts, newest first (up to 500).
    pub async fn payouts(&self, user: &PortalUser) -> Result<Vec<PayoutLine>, PortalError> {
        let rows = scoped::<payout::Entity>(&user.tenant_id)
            .filter(payout::Column::AffiliateId.eq(&user.affiliate.id))
            .order_by_desc(payout::Column::CreatedAt)
            .limit(500)
            .all(&self.store().conn)
            .await?;
        Ok(rows
            .iter()
            .map(|p| payout_line(p, user.time_zone))
            .collect())
    }

    /// One of the affiliate's payouts and the ledger entries it covers;
    /// `None` unless it is hers.
    pub async fn payout(
        &self,
        user: &PortalUser,
        id: &str,
    ) -> Result<Option<(PayoutLine, Vec<CoveredEntry>)>, PortalError> {
        let Some(p) = scoped_by_id::<payout::Entity>(&user.tenant_id, id)
            .filter(payout::Column::AffiliateId.eq(&user.affiliate.id))
            .one(&self.store().conn)
            .await?
        else {
            return Ok(None);
        };
        let programs = self.program_names(&user.tenant_id).await?;
        let entries = scoped::<ledger_entry::Entity>(&user.tenant_id)
            .filter(ledger_entry::Column::AffiliateId.eq(&user.affiliate.id))
            .filter(ledger_entry::Column::PayoutId.eq(p.id.clone()))
            .filter(ledger_entry::Column::Kind.ne(ledger_entry::Kind::Payout))
            .order_by_asc(ledger_entry::Column::CreatedAt)
            .all(&self.store().conn)
            .await?
            .into_iter()
            .map(|e| CoveredEntry {
                date: user.time_zone.day_of(e.created_at).to_string(),
                program: programs.get(&e.program_id).cloned().unwrap_or_default(),
                kind: e.kind.to_string(),
                amount: format_minor(e.amount_minor, e.currency.0),
                currency: e.currency.0.code().to_owned(),
                explanation: e.explanation,
            })
            .collect();
        Ok(Some((payout_line(&p, user.time_zone), entries)))
    }

    /// The names of the tenant's programs (offers).
    async fn program_names(
        &self,
        tenant: &TenantId,
    ) -> Result<HashMap<ProgramId, String>, PortalError> {
        Ok(scoped::<program::Entity>(tenant)
            .limit(1000)
            .all(&self.store().conn)
            .await?
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect())
    }

    /// The lines of `rows`: offer names, and what was reversed of each.
    async fn lines(
        &self,
        user: &PortalUser,
        rows: &[conversion::Model],
    ) -> Result<Vec<ConversionLine>, PortalError> {
        let db = &self.store().conn;
        let programs = self.program_names(&user.tenant_id).await?;
        let mut reversals = HashMap::new();
        for chunk in rows.chunks(500) {
            let entries = scoped::<ledger_entry::Entity>(&user.tenant_id)
                .filter(ledger_entry::Column::AffiliateId.eq(&user.affiliate.id))
                .filter(ledger_entry::Column::Kind.eq(ledger_entry::Kind::Reversal))
                .filter(
                    ledger_entry::Column::ConversionId.is_in(chunk.iter().map(|c| c.id.clone())),
                )
                .all(db)
                .await?;
            reversals.extend(reversed_by_conversion(&entries));
        }
        Ok(rows
            .iter()
            .map(|c| line(c, &programs, user.time_zone, reversals.get(&c.id).copied()))
            .collect())
    }

    /// The affiliate's balances per currency (what the earnings page shows
    /// at its top), without the rest of that page.
    pub async fn balances(&self, user: &PortalUser) -> Result<Vec<Balance>, PortalError> {
        let (entries, conversions) = self.ledger_of(user).await?;
        Ok(balances(
            &entries,
            &conversions,
            Utc::now() - Duration::days(30),
        ))
    }

    /// The affiliate's real ledger entries, and her real conversions newest
    /// first (their statuses decide what is pending and what approved).
    async fn ledger_of(
        &self,
        user: &PortalUser,
    ) -> Result<(Vec<ledger_entry::Model>, Vec<conversion::Model>), PortalError> {
        let (tenant, aff) = (&user.tenant_id, &user.affiliate.id);
        let db = &self.store().conn;
        let entries = scoped::<ledger_entry::Entity>(tenant)
            .filter(ledger_entry::Column::AffiliateId.eq(aff))
            .filter(ledger_entry::Column::IsTest.eq(false))
            .all(db)
            .await?;
        let conversions = scoped::<conversion::Entity>(tenant)
            .filter(conversion::Column::AffiliateId.eq(aff))
            .filter(conversion::Column::IsTest.eq(false))
            .order_by_desc(conversion::Column::Id)
            .all(db)
            .await?;
        Ok((entries, conversions))
    }

    /// The active offers by name, as (slug, name): the conversions filter's
    /// choice.
    pub async fn offer_choices(
        &self,
        user: &PortalUser,
    ) -> Result<Vec<(String, String)>, PortalError> {
        Ok(self
            .active_programs(&user.tenant_id)
            .await?
            .into_iter()
            .map(|p| (p.slug, p.name))
            .collect())
    }

    /// The tenant's active programs (offers), by name.
    async fn active_programs(&self, tenant: &TenantId) -> Result<Vec<program::Model>, PortalError> {
        Ok(scoped::<program::Entity>(tenant)
            .filter(program::Column::Status.eq(Activity::Active))
            .order_by_asc(program::Column::Name)
            .limit(1000)
            .all(&self.store().conn)
            .await?)
    }

    /// What the affiliate earned: balances per currency and recent conversions.
    pub async fn earnings(&self, user: &PortalUser) -> Result<Earnings, PortalError> {
        let (tenant, aff) = (&user.tenant_id, &user.affiliate.id);
        let db = &self.store().conn;
        let since = Utc::now() - Duration::days(30);
        let (entries, conversions) = self.ledger_of(user).await?;
        let clicks_30_days = scoped::<click::Entity>(tenant)
            .filter(click::Column::AffiliateId.eq(aff))
            .filter(click::Column::CreatedAt.gte(since))
            .filter(click::Column::IsTest.eq(false))
            .count(db)
            .await?;
        let programs = self.program_names(tenant).await?;
        let reversals = reversed_by_conversion(&entries);
        Ok(Earnings {
            balances: balances(&entries, &conversions, since),
            clicks_30_days,
            conversions_30_days: conversions.iter().filter(|c| c.created_at >= since).count()
                as u64,
            recent: conversions
                .iter()
                .take(RECENT)
                .map(|c| line(c, &programs, user.time_zone, reversals.get(&c.id).copied()))
                .collect(),
        })
    }
}

/// Pending, approved and paid balances per currency, and the last 30 days'.
fn balances(
    entries: &[ledger_entry::Model],
    conversions: &[conversion::Model],
    since: DateTime<Utc>,
) -> Vec<Balance> {
    let status: HashMap<ConversionId, ConversionStatus> = conversions
        .iter()
        .map(|c| (c.id.clone(), c.status.0))
        .collect();
    crate::ledger::balances(entries, &status)
        .into_values()
        .map(|(cur, b)| {
            let recent: i128 = entries
                .iter()
                .filter(|e| e.currency.0 == cur && e.created_at >= since)
                .filter(|e| e.kind != ledger_entry::Kind::Payout)
                .map(|e| i128::from(e.amount_minor))
                .sum();
            Balance {
                pending: format_sum(b.pending, cur),
                approved: format_sum(b.approved, cur),
                paid: format_sum(b.paid, cur),
                last_30_days: format_sum(recent, cur),
                currency: cur.code().to_owned(),
            }
        })
        .collect()
}

fn payout_line(p: &payout::Model, zone: TimeZone) -> PayoutLine {
    let cur = p.currency.0;
    PayoutLine {
        id: p.id.to_string(),
        date: zone.day_of(p.created_at).to_string(),
        amount: format_minor(p.amount_minor, cur),
        currency: cur.code().to_owned(),
        status: p.status.to_string(),
        paid_on: p.paid_at.map(|t| zone.day_of(t).to_string()),
        reference: p.reference.clone(),
        failure_reason: p.failure_reason.clone(),
        entries: p.entry_count,
    }
}

fn line(
    c: &conversion::Model,
    programs: &HashMap<ProgramId, String>,
    zone: TimeZone,
    reversed: Option<i64>,
) -> ConversionLine {
    let cur = c.currency.0;
    ConversionLine {
        id: c.id.to_string(),
        created_at: c.created_at,
        date: zone
            .local(c.created_at)
            .format("%Y-%m-%d %H:%M")
            .to_string(),
        approves_on: c
            .hold_until
            .filter(|_| c.status.0 == ConversionStatus::Pending)
            .map(|t| zone.day_of(t).to_string()),
        reversal: reversed.map(|m| format_minor(m, cur)),
        event: c.event.clone(),
        subs: [
            c.sub1.clone(),
            c.sub2.clone(),
            c.sub3.clone(),
            c.sub4.clone(),
            c.sub5.clone(),
        ],
        program: programs.get(&c.program_id).cloned().unwrap_or_default(),
        status: c.status.to_string(),
        amount: format_minor(c.amount_minor, cur),
        payout: c
            .payout_minor
            .map(|m| format_minor(m, cur))
            .unwrap_or_else(|| "…".into()),
        currency: cur.code().to_owned(),
        explanation: c.commission_explanation.clone().unwrap_or_default(),
    }
}
