//! The commission ledger: append-only entries, and everything derived from
//! them.
//!
//! An entry's amount, kind and explanation never change once written. What
//! an affiliate is owed is the sum of her entries, split by where each
//! stands:
//!
//! - **pending**: the entry's conversion is still pending (in review or in
//!   its hold period);
//! - **approved**: owed and payable, in no payout or in a payout not yet
//!   paid (an affiliate whose reversals outweigh her commissions has a
//!   negative approved balance, which the next payout nets against: a
//!   clawback);
//! - **paid**: what payouts marked paid paid out: the payout debits.
//!
//! A payout marked paid books a **payout debit** per program it covers, the
//! negative of its entries there: the sum of all an affiliate's entries is
//! what she is owed (pending and approved), and her commissions, reversals
//! and adjustments add up to what she earned (pending, approved and paid).
//!
//! A reversal (refund, chargeback, rejection) is a new negative entry, never
//! an edit; so is every later correction. The only column that changes is
//! `payout_id`: set once when a payout batch claims the entry (only where
//! it is unset, so an entry is in at most one payout), and cleared if that
//! payout fails.
//!
//! Sums are taken in `i128`: an entry is at most 10^12 minor units (the
//! intake's maximum) and a sum of 2^64 of them still fits.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use trcker_domain::ConversionStatus;
use trcker_domain::Fields;
use trcker_domain::ids::IdKind;
use trcker_domain::money::{Currency, Money, format_minor};
use trcker_storage::TenantId;
use trcker_storage::batch::{insert, pow2_chunks};
use trcker_storage::entities::{affiliate, conversion, ledger_entry, program};
use trcker_storage::ids::{ConversionId, LedgerEntryId};
use trcker_storage::rollups::Tally;
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter,
};
use trcker_storage::{scoped, scoped_by_id, scoped_update_by_id};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::conversions::{Page, newest_page};
use crate::error::{Invalid, StoreError, from_store};

/// The longest reason an adjustment takes.
pub const MAX_REASON: usize = 500;

/// Inserts ledger entries in `txn`: one per conversion and entry key, whoever
/// gets there first (a repeat is left out, not an error).
pub(crate) async fn book_entries(
    txn: &DatabaseTransaction,
    entries: Vec<ledger_entry::Model>,
) -> Result<(), DbErr> {
    if entries.is_empty() {
        return Ok(());
    }
    for chunk in pow2_chunks(&entries, 256) {
        ledger_entry::Entity::insert_many(
            chunk
                .iter()
                .map(|e| e.clone().into_active_model().reset_all()),
        )
        .on_conflict_do_nothing_on([
            ledger_entry::Column::TenantId,
            ledger_entry::Column::ConversionId,
            ledger_entry::Column::EntryKey,
        ])
        .exec_without_returning(txn)
        .await?;
    }
    Ok(())
}

/// What moved a conversion: a merchant's postback, or a review through the
/// admin API (with the acting key and the reviewer's reason).
#[derive(Debug, Clone)]
pub(crate) struct Cause {
    /// Ends the reversal's explanation: "postback pbk_…", "review by …".
    pub said: String,
    pub actor: Option<String>,
}

impl Cause {
    pub(crate) fn postback(id: &str) -> Self {
        Cause {
            said: format!("postback {id}"),
            actor: None,
        }
    }

    pub(crate) fn review(actor: String, reason: Option<&str>) -> Self {
        let said = match reason {
            Some(r) => format!("review by {actor}: {r}"),
            None => format!("review by {actor}"),
        };
        Cause {
            said,
            actor: Some(actor),
        }
    }
}

/// Moves a conversion from one status to another inside `txn`, booking the
/// reversal of what it earned if it no longer earns, and taking it out of
/// the report rollups' counts (`tally`, applied by the caller before it
/// commits). False when the conversion is no longer in `from` (someone else
/// moved it first).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn move_conversion(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    conv: &conversion::Model,
    from: ConversionStatus,
    to: ConversionStatus,
    cause: &Cause,
    t: DateTime<Utc>,
    tally: &mut Tally,
) -> Result<bool, DbErr> {
    let moved = scoped_update_by_id::<conversion::Entity>(tenant, &conv.id)
        .col_expr(
            conversion::Column::Status,
            Expr::value(conversion::Status(to)),
        )
        .col_expr(
            conversion::Column::HoldUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(conversion::Column::UpdatedAt, Expr::value(t))
        .filter(conversion::Column::Status.eq(conversion::Status(from)))
        .exec(txn)
        .await?;
    if moved.rows_affected != 1 {
        return Ok(false);
    }
    if from.earns_commission() && !to.earns_commission() {
        let booked: Vec<ledger_entry::Model> = scoped::<ledger_entry::Entity>(tenant)
            .filter(ledger_entry::Column::ConversionId.eq(&conv.id))
            .all(txn)
            .await?;
        let owed: i64 = booked.iter().map(|e| e.amount_minor).sum();
        tally.conversion(conv, -1);
        tally.commission(conv, -owed);
        if owed != 0 {
            book_entries(txn, vec![reversal(conv, to, owed, cause, t)]).await?;
        }
    }
    Ok(true)
}

/// The negative entry that takes back what a conversion earned.
fn reversal(
    conv: &conversion::Model,
    to: ConversionStatus,
    owed: i64,
    cause: &Cause,
    t: DateTime<Utc>,
) -> ledger_entry::Model {
    ledger_entry::Model {
        id: LedgerEntryId::generate(),
        tenant_id: conv.tenant_id.clone(),
        created_at: t,
        affiliate_id: conv.affiliate_id.clone(),
        program_id: conv.program_id.clone(),
        conversion_id: Some(conv.id.clone()),
        entry_key: format!("reversal:{}", to.as_str()),
        kind: ledger_entry::Kind::Reversal,
        amount_minor: -owed,
        currency: conv.currency,
        explanation: format!(
            "reversal of {} {} after the conversion became {} ({})",
            format_minor(owed, conv.currency.0),
            conv.currency,
            to,
            cause.said
        ),
        available_at: t,
        payout_id: None,
        is_test: conv.is_test,
        actor: cause.actor.clone(),
    }
}

/// A manual adjustment: a bonus (positive) or a correction (negative)
/// for an affiliate, in a program's currency, with its reason.
#[derive(Debug, Default)]
pub struct NewAdjustment {
    pub affiliate_id: String,
    pub program_id: String,
    /// A signed decimal string in the program's currency: "25.00", "-4.50".
    pub amount: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct EntryFilter {
    pub affiliate_id: Option<String>,
    pub program_id: Option<String>,
    pub conversion_id: Option<String>,
    pub payout_id: Option<String>,
    /// `commission`, `reversal` or `adjustment`.
    pub kind: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(LedgerError);

/// The ledger as the tenant reads and corrects it.
#[derive(Clone)]
pub struct LedgerService {
    area: Area,
}

impl LedgerService {
    pub(crate) fn new(area: Area) -> Self {
        LedgerService { area }
    }

    /// Books a manual adjustment, with its reason and the acting key, and
    /// its audit record; it is payable at once.
    pub async fn adjust(
        &self,
        caller: &Caller,
        input: NewAdjustment,
    ) -> Result<ledger_entry::Model, LedgerError> {
        let tenant = caller.tenant_admin()?;
        let db = &self.area.store.conn;
        let mut f = Fields::default();
        let affiliate = scoped_by_id::<affiliate::Entity>(tenant, &input.affiliate_id)
            .one(db)
            .await?;
        if affiliate.is_none() {
            f.error("affiliate_id", "no affiliate with this id");
        }
        let program = scoped_by_id::<program::Entity>(tenant, &input.program_id)
            .one(db)
            .await?;
        if program.is_none() {
            f.error("program_id", "no program with this id");
        }
        let currency = program.as_ref().map_or(Currency::USD, |p| p.currency.0);
        let amount = f.take("amount", signed_amount(&input.amount, currency));
        let reason = f.take(
            "reason",
            crate::input::required_note(&input.reason, MAX_REASON),
        );
        let (affiliate, program, amount, reason) = f
            .done((affiliate, program, amount, reason))
            .map_err(Invalid)?;
        let t = Utc::now();
        let actor = caller.actor();
        let id = LedgerEntryId::generate();
        let entry = ledger_entry::Model {
            entry_key: format!("adjustment:{id}"),
            id,
            tenant_id: tenant.clone(),
            created_at: t,
            affiliate_id: affiliate.id,
            program_id: program.id,
            conversion_id: None,
            kind: ledger_entry::Kind::Adjustment,
            amount_minor: amount,
            currency: currency.into(),
            explanation: format!(
                "manual adjustment of {} {currency} by {actor}: {reason}",
                format_minor(amount, currency)
            ),
            available_at: t,
            payout_id: None,
            is_test: false,
            actor: Some(actor),
        };
        let txn = self.area.store.write_txn().await?;
        insert(&txn, entry.clone()).await?;
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "ledger.adjust",
            "ledger_entry",
            entry.id.as_str(),
            Some(serde_json::json!({
                "affiliate_id": entry.affiliate_id.as_str(),
                "program_id": entry.program_id.as_str(),
                "amount": format_minor(amount, currency),
                "currency": currency.code(),
                "reason": reason,
            })),
        )
        .await?;
        txn.commit().await?;
        Ok(entry)
    }

    /// Ledger entries, newest first, by cursor.
    pub async fn entries(
        &self,
        caller: &Caller,
        f: EntryFilter,
    ) -> Result<Page<ledger_entry::Model>, LedgerError> {
        use ledger_entry::Column as C;
        let tenant = caller.tenant()?;
        let mut q = scoped::<ledger_entry::Entity>(tenant);
        if let Some(k) = f.kind {
            let k: ledger_entry::Kind = k.parse().map_err(|_| {
                Invalid::field(
                    "kind",
                    "must be one of commission, reversal, adjustment, payout",
                )
            })?;
            q = q.filter(C::Kind.eq(k));
        }
        if let Some(v) = f.affiliate_id {
            q = q.filter(C::AffiliateId.eq(v));
        }
        if let Some(v) = f.program_id {
            q = q.filter(C::ProgramId.eq(v));
        }
        if let Some(v) = f.conversion_id {
            q = q.filter(C::ConversionId.eq(v));
        }
        if let Some(v) = f.payout_id {
            q = q.filter(C::PayoutId.eq(v));
        }
        let db = &self.area.store.conn;
        newest_page(q, IdKind::LedgerEntry, f.cursor, f.limit, db, |e| {
            e.id.as_str()
        })
        .await
    }
}

/// A signed amount ("-4.50"), not zero, at most the maximum either way.
fn signed_amount(s: &str, currency: Currency) -> Result<i64, String> {
    let s = s.trim();
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let m = Money::parse(digits, currency).map_err(|e| e.to_string())?;
    if m.minor == 0 {
        return Err("must not be zero".into());
    }
    Ok(if negative { -m.minor } else { m.minor })
}

/// An affiliate's balances in one currency, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    pub pending: i128,
    pub approved: i128,
    pub paid: i128,
}

impl Balance {
    /// Everything earned, paid or not: the sum of every entry but payout
    /// debits.
    pub fn total(&self) -> i128 {
        self.pending + self.approved + self.paid
    }

    /// What is owed now: the sum of every entry.
    pub fn owed(&self) -> i128 {
        self.pending + self.approved
    }
}

/// Balances per currency from entries and the status of their conversions.
pub fn balances(
    entries: &[ledger_entry::Model],
    status: &HashMap<ConversionId, ConversionStatus>,
) -> BTreeMap<String, (Currency, Balance)> {
    let mut out: BTreeMap<String, (Currency, Balance)> = BTreeMap::new();
    for e in entries {
        let currency = e.currency.0;
        let (_, b) = out
            .entry(currency.code().to_owned())
            .or_insert((currency, Balance::default()));
        let amount = i128::from(e.amount_minor);
        match where_entry_stands(e, status) {
            Standing::Pending => b.pending += amount,
            Standing::Approved => b.approved += amount,
            // A debit moves what it paid from approved to paid.
            Standing::Payment => {
                b.approved += amount;
                b.paid -= amount;
            }
        }
    }
    out
}

/// Where one entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Pending,
    Approved,
    /// A payout debit.
    Payment,
}

pub fn where_entry_stands(
    e: &ledger_entry::Model,
    status: &HashMap<ConversionId, ConversionStatus>,
) -> Standing {
    if e.kind == ledger_entry::Kind::Payout {
        return Standing::Payment;
    }
    if e.payout_id.is_none()
        && e.conversion_id
            .as_ref()
            .and_then(|c| status.get(c))
            .copied()
            == Some(ConversionStatus::Pending)
    {
        return Standing::Pending;
    }
    Standing::Approved
}

/// Formats an `i128` sum of minor units; a sum beyond `i64` (which no real
/// ledger reaches) is shown exactly too.
pub fn format_sum(minor: i128, currency: Currency) -> String {
    match i64::try_from(minor) {
        Ok(m) => format_minor(m, currency),
        Err(_) => {
            let exp = currency.exponent() as usize;
            let digits = minor.unsigned_abs().to_string();
            let sign = if minor < 0 { "-" } else { "" };
            if exp == 0 {
                return format!("{sign}{digits}");
            }
            let padded = format!("{digits:0>width$}", width = exp + 1);
            let (int, frac) = padded.split_at(padded.len() - exp);
            format!("{sign}{int}.{frac}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use trcker_domain::money::MAX_MINOR;
    use trcker_storage::ids::{AffiliateId, PayoutId, ProgramId};

    /// One conversion's story: its amount, where it ended, whether its
    /// commission was paid, and whether its reversal (if any) was paid too.
    #[derive(Debug, Clone)]
    struct Story {
        commission: i64,
        end: ConversionStatus,
        commission_paid: bool,
        reversal_paid: bool,
        currency: usize,
    }

    const CURRENCIES: [&str; 3] = ["USD", "JPY", "KWD"];

    fn story() -> impl Strategy<Value = Story> {
        (
            0..=MAX_MINOR,
            prop::sample::select(vec![
                ConversionStatus::Pending,
                ConversionStatus::Approved,
                ConversionStatus::Rejected,
                ConversionStatus::Refunded,
                ConversionStatus::Chargeback,
            ]),
            any::<bool>(),
            any::<bool>(),
            0..CURRENCIES.len(),
        )
            .prop_map(
                |(commission, end, commission_paid, reversal_paid, currency)| Story {
                    commission,
                    end,
                    // Only an entry whose conversion is no longer pending is payable.
                    commission_paid: commission_paid && end != ConversionStatus::Pending,
                    reversal_paid: reversal_paid && commission_paid && !end.earns_commission(),
                    currency,
                },
            )
    }

    fn entry(
        conv: &ConversionId,
        key: &str,
        amount: i64,
        cur: Currency,
        payout: Option<&PayoutId>,
    ) -> ledger_entry::Model {
        let t = Utc::now();
        ledger_entry::Model {
            id: LedgerEntryId::generate(),
            tenant_id: TenantId::generate(),
            created_at: t,
            affiliate_id: AffiliateId::generate(),
            program_id: ProgramId::generate(),
            conversion_id: Some(conv.clone()),
            entry_key: key.into(),
            kind: if amount < 0 {
                ledger_entry::Kind::Reversal
            } else {
                ledger_entry::Kind::Commission
            },
            amount_minor: amount,
            currency: cur.into(),
            explanation: String::new(),
            available_at: t,
            payout_id: payout.cloned(),
            is_test: false,
            actor: None,
        }
    }

    /// The entries the stories make (with the paid payout's debit per
    /// currency) and the conversions' statuses.
    fn ledger(
        stories: &[Story],
    ) -> (
        Vec<ledger_entry::Model>,
        HashMap<ConversionId, ConversionStatus>,
    ) {
        let paid = PayoutId::generate();
        let mut entries = Vec::new();
        let mut status = HashMap::new();
        for s in stories {
            let conv = ConversionId::generate();
            let cur = Currency::parse(CURRENCIES[s.currency]).unwrap_or(Currency::USD);
            status.insert(conv.clone(), s.end);
            entries.push(entry(
                &conv,
                "commission",
                s.commission,
                cur,
                s.commission_paid.then_some(&paid),
            ));
            if !s.end.earns_commission() && s.commission != 0 {
                entries.push(entry(
                    &conv,
                    "reversal",
                    -s.commission,
                    cur,
                    s.reversal_paid.then_some(&paid),
                ));
            }
        }
        let mut debits: BTreeMap<&str, i64> = BTreeMap::new();
        for e in entries
            .iter()
            .filter(|e| e.payout_id.as_ref() == Some(&paid))
        {
            *debits.entry(e.currency.0.code()).or_default() -= e.amount_minor;
        }
        let debits: Vec<_> = debits
            .into_iter()
            .map(|(code, amount)| {
                let cur = Currency::parse(code).unwrap_or(Currency::USD);
                let mut d = entry(
                    &ConversionId::generate(),
                    "payout",
                    amount,
                    cur,
                    Some(&paid),
                );
                d.conversion_id = None;
                d.kind = ledger_entry::Kind::Payout;
                d
            })
            .collect();
        entries.extend(debits);
        (entries, status)
    }

    fn is_debit(e: &ledger_entry::Model) -> bool {
        e.kind == ledger_entry::Kind::Payout
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// The balances add up to the ledger, per currency, exactly: what
        /// is owed is the sum of every entry, what was earned the sum of
        /// all but the debits, and what was paid the debits' negative.
        #[test]
        fn balances_sum_to_the_ledger(stories in prop::collection::vec(story(), 0..40)) {
            let (entries, status) = ledger(&stories);
            let balances = balances(&entries, &status);
            let sum = |code: &str, which: &dyn Fn(&ledger_entry::Model) -> bool| -> i128 {
                entries
                    .iter()
                    .filter(|e| e.currency.0.code() == code && which(e))
                    .map(|e| i128::from(e.amount_minor))
                    .sum()
            };
            for (code, (_, b)) in &balances {
                prop_assert_eq!(b.owed(), sum(code, &|_| true));
                prop_assert_eq!(b.total(), sum(code, &|e| !is_debit(e)));
                prop_assert_eq!(b.paid, -sum(code, &is_debit));
                prop_assert!(b.pending >= 0);
            }
            prop_assert_eq!(
                balances.values().map(|(_, b)| b.owed()).sum::<i128>(),
                entries.iter().map(|e| i128::from(e.amount_minor)).sum::<i128>()
            );
        }

        /// A reversed conversion leaves nothing owed, however its entries
        /// were paid: its commission and its reversal cancel out exactly.
        #[test]
        fn a_reversal_returns_the_balance_exactly(
            stories in prop::collection::vec(story(), 1..40),
        ) {
            let (entries, status) = ledger(&stories);
            let earning: Vec<&Story> = stories.iter().filter(|s| s.end.earns_commission()).collect();
            let balances = balances(&entries, &status);
            for (i, code) in CURRENCIES.iter().enumerate() {
                let owed: i128 = earning
                    .iter()
                    .filter(|s| s.currency == i)
                    .map(|s| i128::from(s.commission))
                    .sum();
                let total = balances.get(*code).map_or(0, |(_, b)| b.total());
                prop_assert_eq!(total, owed);
            }
        }
    }

    #[test]
    fn sums_beyond_i64_are_formatted_exactly() {
        let usd = Currency::USD;
        assert_eq!(format_sum(790, usd), "7.90");
        assert_eq!(format_sum(-2, usd), "-0.02");
        let big = i128::from(i64::MAX) * 2;
        assert_eq!(format_sum(big, usd), "184467440737095516.14");
        assert_eq!(format_sum(-big, usd), "-184467440737095516.14");
        let jpy = Currency::parse("JPY").unwrap_or(usd);
        assert_eq!(format_sum(big, jpy), "18446744073709551614");
    }
}
