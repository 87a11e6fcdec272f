//! Payouts: paying affiliates what the ledger says they are owed.
//!
//! A batch (`create_batch`) takes every affiliate's payable entries (in no
//! payout yet, not test, and whose conversion is no longer pending: an
//! approved commission, a reversal, which nets against it, a manual
//! adjustment) and makes one
//! payout per affiliate and currency whose sum reaches the minimum (the
//! request's, else the highest of the programs' involved). An affiliate
//! below it, or with a negative balance after a clawback, is carried to the
//! next batch, with why.
//!
//! An entry is in at most one payout: a batch claims its entries with an
//! update that only takes entries still unclaimed, and when it gets fewer
//! than it read (a concurrent batch took some), it rolls back and starts
//! over from what is left. On SQLite the batch's transaction also takes the
//! write lock first, so batches are serialised.
//!
//! A payout is then marked paid (with the merchant's reference) or failed
//! (its entries are released and owed again); either is final.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use trcker_domain::ConversionStatus;
use trcker_domain::ids::IdKind;
use trcker_domain::money::{Currency, Money, format_minor};
use trcker_storage::batch::{among, insert};
use trcker_storage::entities::payout::PayoutStatus;
use trcker_storage::entities::{
    affiliate, conversion, ledger_entry, notification_delivery, payout, program,
};
use trcker_storage::ids::{
    AffiliateId, ConversionId, LedgerEntryId, PayoutBatchId, PayoutId, ProgramId,
};
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
};
use trcker_storage::{Store, TenantId, scoped, scoped_by_id, scoped_update, scoped_update_by_id};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::conversions::{Page, newest_page};
use crate::csv::{quote, text_cell};
use crate::error::{Invalid, StoreError, from_store};
use crate::ledger::{book_entries, format_sum};

#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("payout not found")]
    NotFound(String),
    #[error("payout batch not found")]
    BatchNotFound(String),
    /// Paid and failed payouts are final.
    #[error("payout {0} is {1}; only a pending payout can be marked paid or failed")]
    NotPending(String, String),
    /// Concurrent batches kept taking this one's entries.
    #[error("other payout batches kept claiming the same entries; retry")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(PayoutError);

/// What a batch is asked to pay.
#[derive(Debug, Default)]
pub struct NewBatch {
    /// Only balances in this currency.
    pub currency: Option<String>,
    /// The smallest balance paid, in `currency` (which it requires); else
    /// each program's own minimum applies.
    pub minimum: Option<String>,
}

/// An affiliate's balance a batch did not pay, and why.
#[derive(Debug, Clone)]
pub struct Carried {
    pub affiliate_id: AffiliateId,
    pub currency: Currency,
    pub balance_minor: i128,
    pub reason: String,
}

/// A batch's payouts and the balances it carried.
pub struct Batch {
    pub id: PayoutBatchId,
    pub payouts: Vec<payout::Model>,
    pub carried: Vec<Carried>,
}

/// A payout and the ledger entries it covers.
pub struct PayoutView {
    pub payout: payout::Model,
    pub entries: Vec<ledger_entry::Model>,
}

#[derive(Debug, Default)]
pub struct PayoutFilter {
    pub status: Option<String>,
    pub affiliate_id: Option<String>,
    pub batch_id: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u64>,
}

/// A batch's row in its CSV export.
pub struct CsvRow {
    pub payout: payout::Model,
    pub affiliate: Option<affiliate::Model>,
}

/// How many times a batch starts over when concurrent batches took some
/// of its entries.
const CLAIM_ATTEMPTS: usize = 5;

/// The longest reference or failure reason kept.
pub const MAX_NOTE: usize = 200;

#[derive(Clone)]
pub struct PayoutService {
    area: Area,
    pipeline: crate::pipeline::Pipeline,
}

/// One affiliate's payable entries in one currency.
struct Group {
    entries: Vec<ledger_entry::Model>,
    sum: i128,
    /// The highest payout minimum of the entries' programs.
    program_minimum: i64,
}

impl PayoutService {
    pub(crate) fn new(area: Area, pipeline: crate::pipeline::Pipeline) -> Self {
        PayoutService { area, pipeline }
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    /// Creates a batch of payouts from the approved balances.
    pub async fn create_batch(
        &self,
        caller: &Caller,
        input: NewBatch,
    ) -> Result<Batch, PayoutError> {
        let tenant = caller.tenant_admin()?;
        let (currency, minimum) = parse_batch(&input)?;
        for _ in 0..CLAIM_ATTEMPTS {
            let txn = self.store().write_txn().await?;
            match self
                .try_batch(&txn, caller, tenant, currency, minimum)
                .await?
            {
                Some(batch) => {
                    txn.commit().await?;
                    return Ok(batch);
                }
                None => txn.rollback().await?,
            }
        }
        Err(PayoutError::Contended)
    }

    /// One attempt at a batch in `txn`; `None` when a concurrent batch
    /// claimed some of the entries it read.
    async fn try_batch(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        tenant: &TenantId,
        currency: Option<Currency>,
        minimum: Option<Money>,
    ) -> Result<Option<Batch>, PayoutError> {
        let batch_id = PayoutBatchId::generate();
        let t = Utc::now();
        // Taking the write lock before reading (SQLite): the audit record
        // goes first.
        crate::audit::record_with(
            txn,
            tenant,
            caller,
            "payout_batch.create",
            "payout_batch",
            batch_id.as_str(),
            Some(serde_json::json!({
                "currency": currency.map(|c| c.code().to_owned()),
                "minimum": minimum.map(|m| m.amount_string()),
            })),
        )
        .await?;
        let groups = self.payable(txn, tenant, currency).await?;
        let mut payouts = Vec::new();
        let mut carried = Vec::new();
        for ((affiliate_id, code), group) in groups {
            let cur = group.entries[0].currency.0;
            let needed = minimum.map_or(group.program_minimum, |m| m.minor).max(1);
            let amount = match i64::try_from(group.sum) {
                _ if group.sum <= 0 => Err(format!(
                    "balance {} {code} is not positive (reversals after an earlier payout are netted against later commissions)",
                    format_sum(group.sum, cur)
                )),
                _ if group.sum < i128::from(needed) => Err(format!(
                    "balance {} {code} is below the minimum {} {code}",
                    format_sum(group.sum, cur),
                    format_minor(needed, cur)
                )),
                Ok(a) => Ok(a),
                Err(_) => Err(format!(
                    "balance {} {code} is beyond what one payout can hold",
                    format_sum(group.sum, cur)
                )),
            };
            let amount_minor = match amount {
                Ok(a) => a,
                Err(reason) => {
                    carried.push(Carried {
                        affiliate_id,
                        currency: cur,
                        balance_minor: group.sum,
                        reason,
                    });
                    continue;
                }
            };
            let p = payout::Model {
                id: PayoutId::generate(),
                tenant_id: tenant.clone(),
                created_at: t,
                affiliate_id,
                amount_minor,
                currency: cur.into(),
                status: PayoutStatus::Pending,
                reference: None,
                paid_at: None,
                batch_id: Some(batch_id.clone()),
                entry_count: i32::try_from(group.entries.len()).unwrap_or(i32::MAX),
                failure_reason: None,
                updated_at: Some(t),
            };
            insert(txn, p.clone()).await?;
            if !claim(txn, tenant, &p.id, &group.entries).await? {
                return Ok(None);
            }
            payouts.push(p);
        }
        Ok(Some(Batch {
            id: batch_id,
            payouts,
            carried,
        }))
    }

    /// Every affiliate's payable entries, by affiliate and currency.
    async fn payable(
        &self,
        txn: &DatabaseTransaction,
        tenant: &TenantId,
        currency: Option<Currency>,
    ) -> Result<BTreeMap<(AffiliateId, String), Group>, PayoutError> {
        use ledger_entry::Column as L;
        let pending = scoped::<conversion::Entity>(tenant)
            .select_only()
            .column(conversion::Column::Id)
            .filter(conversion::Column::Status.eq(conversion::Status(ConversionStatus::Pending)))
            .into_query();
        let mut q = scoped::<ledger_entry::Entity>(tenant)
            .filter(L::PayoutId.is_null())
            .filter(L::IsTest.eq(false))
            .filter(
                trcker_storage::sea_orm::Condition::any()
                    .add(L::ConversionId.is_null())
                    .add(L::ConversionId.not_in_subquery(pending)),
            );
        if let Some(c) = currency {
            q = q.filter(L::Currency.eq(c.code()));
        }
        let entries = q.order_by_asc(L::Id).all(txn).await?;
        let minimums: HashMap<_, i64> = scoped::<program::Entity>(tenant)
            .all(txn)
            .await?
            .into_iter()
            .map(|p| (p.id, p.payout_minimum_minor.unwrap_or(0)))
            .collect();
        let mut groups: BTreeMap<(AffiliateId, String), Group> = BTreeMap::new();
        for e in entries {
            let g = groups
                .entry((e.affiliate_id.clone(), e.currency.0.code().to_owned()))
                .or_insert(Group {
                    entries: Vec::new(),
                    sum: 0,
                    program_minimum: 0,
                });
            g.sum += i128::from(e.amount_minor);
            g.program_minimum = g
                .program_minimum
                .max(minimums.get(&e.program_id).copied().unwrap_or(0));
            g.entries.push(e);
        }
        Ok(groups)
    }

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<PayoutView, PayoutError> {
        let tenant = caller.tenant()?;
        let db = &self.store().conn;
        let payout = scoped_by_id::<payout::Entity>(tenant, id)
            .one(db)
            .await?
            .ok_or_else(|| PayoutError::NotFound(id.to_owned()))?;
        let entries = scoped::<ledger_entry::Entity>(tenant)
            .filter(ledger_entry::Column::PayoutId.eq(&payout.id))
            .filter(ledger_entry::Column::Kind.ne(ledger_entry::Kind::Payout))
            .order_by_asc(ledger_entry::Column::Id)
            .all(db)
            .await?;
        Ok(PayoutView { payout, entries })
    }

    /// Payouts, newest first, by cursor.
    pub async fn list(
        &self,
        caller: &Caller,
        f: PayoutFilter,
    ) -> Result<Page<payout::Model>, PayoutError> {
        use payout::Column as C;
        let tenant = caller.tenant()?;
        let mut q = scoped::<payout::Entity>(tenant);
        if let Some(s) = f.status {
            let s: PayoutStatus = s
                .parse()
                .map_err(|_| Invalid::field("status", "must be one of pending, paid, failed"))?;
            q = q.filter(C::Status.eq(s));
        }
        if let Some(v) = f.affiliate_id {
            q = q.filter(C::AffiliateId.eq(v));
        }
        if let Some(v) = f.batch_id {
            q = q.filter(C::BatchId.eq(v));
        }
        newest_page(
            q,
            IdKind::Payout,
            f.cursor,
            f.limit,
            &self.store().conn,
            |p| p.id.as_str(),
        )
        .await
    }

    /// A batch's payouts with their affiliates, for its CSV export.
    pub async fn batch_rows(
        &self,
        caller: &Caller,
        batch_id: &str,
    ) -> Result<Vec<CsvRow>, PayoutError> {
        let tenant = caller.tenant()?;
        let db = &self.store().conn;
        let payouts = scoped::<payout::Entity>(tenant)
            .filter(payout::Column::BatchId.eq(batch_id))
            .order_by_asc(payout::Column::Id)
            .all(db)
            .await?;
        if payouts.is_empty() {
            return Err(PayoutError::BatchNotFound(batch_id.to_owned()));
        }
        let backend = db.get_database_backend();
        let affiliates: HashMap<AffiliateId, affiliate::Model> =
            scoped::<affiliate::Entity>(tenant)
                .filter(among(
                    backend,
                    affiliate::Column::Id,
                    payouts.iter().map(|p| p.affiliate_id.clone()),
                ))
                .all(db)
                .await?
                .into_iter()
                .map(|a| (a.id.clone(), a))
                .collect();
        Ok(payouts
            .into_iter()
            .map(|p| CsvRow {
                affiliate: affiliates.get(&p.affiliate_id).cloned(),
                payout: p,
            })
            .collect())
    }

    /// Marks a pending payout paid, with the merchant's reference.
    pub async fn mark_paid(
        &self,
        caller: &Caller,
        id: &str,
        reference: &str,
    ) -> Result<PayoutView, PayoutError> {
        let reference = parse_note("reference", reference)?;
        self.settle(caller, id, PayoutStatus::Paid, reference).await
    }

    /// Marks a pending payout failed: its entries are owed again and go
    /// into the next batch.
    pub async fn mark_failed(
        &self,
        caller: &Caller,
        id: &str,
        reason: &str,
    ) -> Result<PayoutView, PayoutError> {
        let reason = parse_note("reason", reason)?;
        self.settle(caller, id, PayoutStatus::Failed, reason).await
    }

    /// Moves a pending payout to paid (`note`: the reference) or failed
    /// (`note`: why; its entries are released), with its audit record.
    async fn settle(
        &self,
        caller: &Caller,
        id: &str,
        to: PayoutStatus,
        note: String,
    ) -> Result<PayoutView, PayoutError> {
        use payout::Column as C;
        let tenant = caller.tenant_admin()?;
        let t = Utc::now();
        let mut update = scoped_update_by_id::<payout::Entity>(tenant, id)
            .col_expr(C::Status, Expr::value(to))
            .col_expr(C::UpdatedAt, Expr::value(Some(t)))
            .filter(C::Status.eq(PayoutStatus::Pending));
        let (action, after) = if to == PayoutStatus::Paid {
            update = update
                .col_expr(C::Reference, Expr::value(Some(note.clone())))
                .col_expr(C::PaidAt, Expr::value(Some(t)));
            (
                "payout.paid",
                serde_json::json!({"status": "paid", "reference": note}),
            )
        } else {
            update = update.col_expr(C::FailureReason, Expr::value(Some(note.clone())));
            (
                "payout.failed",
                serde_json::json!({"status": "failed", "reason": note}),
            )
        };
        // The affiliate's endpoints hear of the payment: one delivery per
        // conversion it covers, written with the payment itself.
        let paid = if to == PayoutStatus::Paid {
            let covered: Vec<ConversionId> = scoped::<ledger_entry::Entity>(tenant)
                .filter(ledger_entry::Column::PayoutId.eq(id))
                .filter(ledger_entry::Column::Kind.eq(ledger_entry::Kind::Commission))
                .all(&self.store().conn)
                .await?
                .into_iter()
                .filter_map(|e| e.conversion_id)
                .collect();
            self.pipeline
                .paid_deliveries(tenant, id, covered)
                .await
                .map_err(|e| StoreError::Internal(format!("paid notifications: {e}")))?
        } else {
            Vec::new()
        };
        let txn = self.store().write_txn().await?;
        if update.exec(&txn).await?.rows_affected != 1 {
            txn.rollback().await?;
            return Err(self.not_pending(tenant, id).await?);
        }
        if to == PayoutStatus::Paid {
            book_entries(&txn, debits(&txn, tenant, caller, id, &note, t).await?).await?;
            for chunk in paid.chunks(200) {
                trcker_storage::batch::insert_new::<notification_delivery::Entity, _>(
                    &txn,
                    chunk,
                    &[
                        notification_delivery::Column::TenantId,
                        notification_delivery::Column::EndpointId,
                        notification_delivery::Column::ConversionId,
                        notification_delivery::Column::EventKey,
                    ],
                )
                .await?;
            }
        } else {
            scoped_update::<ledger_entry::Entity>(tenant)
                .col_expr(
                    ledger_entry::Column::PayoutId,
                    Expr::value(Option::<String>::None),
                )
                .filter(ledger_entry::Column::PayoutId.eq(id))
                .exec(&txn)
                .await?;
        }
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            action,
            "payout",
            id,
            Some(serde_json::json!({"before": {"status": "pending"}, "after": after})),
        )
        .await?;
        txn.commit().await?;
        if let Err(e) = self.pipeline.queue_first_attempts(tenant, &paid).await {
            // Written already: the retry sweeper queues them.
            tracing::warn!(payout_id = id, error = %e, "paid notifications not queued; the sweeper will");
        }
        self.get(caller, id).await
    }

    /// Why a payout could not be marked: not there, or not pending.
    async fn not_pending(&self, tenant: &TenantId, id: &str) -> Result<PayoutError, StoreError> {
        let found = scoped_by_id::<payout::Entity>(tenant, id)
            .one(&self.store().conn)
            .await?;
        Ok(match found {
            None => PayoutError::NotFound(id.to_owned()),
            Some(p) => PayoutError::NotPending(id.to_owned(), p.status.to_string()),
        })
    }
}

/// The debits of a payout being marked paid: one per program it covers,
/// the negative of its entries there, so that the affiliate's entries sum to
/// what she is still owed.
async fn debits(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    caller: &Caller,
    id: &str,
    reference: &str,
    t: DateTime<Utc>,
) -> Result<Vec<ledger_entry::Model>, DbErr> {
    let covered = scoped::<ledger_entry::Entity>(tenant)
        .filter(ledger_entry::Column::PayoutId.eq(id))
        .filter(ledger_entry::Column::Kind.ne(ledger_entry::Kind::Payout))
        .all(txn)
        .await?;
    let mut by_program: BTreeMap<ProgramId, (ledger_entry::Model, i128)> = BTreeMap::new();
    for e in covered {
        let amount = i128::from(e.amount_minor);
        by_program.entry(e.program_id.clone()).or_insert((e, 0)).1 += amount;
    }
    by_program
        .into_values()
        .map(|(first, sum)| {
            let amount = i64::try_from(-sum).map_err(|_| {
                DbErr::Custom(format!(
                    "payout {id}: a program's sum {sum} is beyond 64 bits"
                ))
            })?;
            Ok(ledger_entry::Model {
                id: LedgerEntryId::generate(),
                tenant_id: tenant.clone(),
                created_at: t,
                affiliate_id: first.affiliate_id,
                program_id: first.program_id,
                conversion_id: None,
                entry_key: format!("payout:{id}"),
                kind: ledger_entry::Kind::Payout,
                amount_minor: amount,
                currency: first.currency,
                explanation: format!("paid in payout {id} (reference {reference})"),
                available_at: t,
                payout_id: Some(PayoutId::from(id.to_owned())),
                is_test: false,
                actor: Some(caller.actor()),
            })
        })
        .collect()
}

/// Claims `entries` for payout `id`: false when some were claimed already.
async fn claim(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    id: &PayoutId,
    entries: &[ledger_entry::Model],
) -> Result<bool, PayoutError> {
    let backend = txn.get_database_backend();
    let mut claimed = 0u64;
    for chunk in entries.chunks(500) {
        claimed += scoped_update::<ledger_entry::Entity>(tenant)
            .col_expr(ledger_entry::Column::PayoutId, Expr::value(id.clone()))
            .filter(among(
                backend,
                ledger_entry::Column::Id,
                chunk.iter().map(|e| e.id.clone()),
            ))
            .filter(ledger_entry::Column::PayoutId.is_null())
            .exec(txn)
            .await?
            .rows_affected;
    }
    Ok(claimed == entries.len() as u64)
}

/// A batch request's currency and minimum, every bad field named.
fn parse_batch(input: &NewBatch) -> Result<(Option<Currency>, Option<Money>), Invalid> {
    let mut f = trcker_domain::Fields::default();
    let currency = f.take_opt("currency", input.currency.as_deref().map(Currency::parse));
    let minimum = match (&input.minimum, currency.as_ref().and_then(|c| *c)) {
        (None, _) => Some(None),
        (Some(m), Some(c)) => f.take_opt("minimum", Some(Money::parse(m, c))),
        (Some(_), None) => {
            if input.currency.is_none() {
                f.error(
                    "minimum",
                    "needs a currency: the minimum is an amount in it",
                );
            }
            None
        }
    };
    let (currency, minimum) = f.done((currency, minimum))?;
    Ok((currency, minimum))
}

/// A reference or reason: trimmed, 1 to [`MAX_NOTE`] characters.
fn parse_note(field: &str, s: &str) -> Result<String, Invalid> {
    crate::input::required_note(s, MAX_NOTE).map_err(|e| Invalid::field(field, e))
}

/// A batch's CSV (RFC 4180): a header, then one row per payout (one per
/// affiliate and currency). Text a person typed that a spreadsheet would
/// take for a formula (`=`, `+`, `-`, `@`) is prefixed with `'`.
pub fn batch_csv(rows: &[CsvRow]) -> String {
    let mut out = String::from(
        "payout_id,affiliate_id,affiliate_name,affiliate_email,amount,currency,entries,status,reference,created_at\r\n",
    );
    for r in rows {
        let p = &r.payout;
        let fields = [
            p.id.to_string(),
            p.affiliate_id.to_string(),
            text_cell(r.affiliate.as_ref().map_or("", |a| a.name.as_str())),
            text_cell(r.affiliate.as_ref().map_or("", |a| a.email.as_str())),
            format_minor(p.amount_minor, p.currency.0),
            p.currency.to_string(),
            p.entry_count.to_string(),
            p.status.to_string(),
            text_cell(p.reference.as_deref().unwrap_or("")),
            p.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ];
        let line: Vec<String> = fields.iter().map(|f| quote(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_per_rfc_4180() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote("two\nlines"), "\"two\nlines\"");
        assert_eq!(text_cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(text_cell("Jane"), "Jane");
    }

    #[test]
    fn a_minimum_needs_its_currency() {
        let bad = parse_batch(&NewBatch {
            currency: None,
            minimum: Some("50".into()),
        });
        assert!(bad.is_err());
        let ok = parse_batch(&NewBatch {
            currency: Some("jpy".into()),
            minimum: Some("500".into()),
        });
        assert!(matches!(ok, Ok((Some(_), Some(m))) if m.minor == 500));
        let bad = parse_batch(&NewBatch {
            currency: Some("JPY".into()),
            minimum: Some("500.5".into()),
        });
        assert!(bad.is_err());
    }
}
