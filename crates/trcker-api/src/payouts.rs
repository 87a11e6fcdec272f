//! `/payouts` and `/payout-batches`: paying affiliates their approved
//! balances, and recording whether each payment went through.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{Object, OpenApi};
use trcker_services::ledger::format_sum;
use trcker_services::payouts::{
    Batch, Carried, NewBatch, PayoutFilter, PayoutService, PayoutView, batch_csv,
};
use trcker_services::storage::entities::payout;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Created, CsvExport, Text, money};
use crate::error::ApiError;
use crate::ledger::EntryOut;

pub struct PayoutsApi {
    pub payouts: PayoutService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Payouts")]
impl PayoutsApi {
    /// Create a payout batch: one payout per affiliate and currency whose
    /// approved balance reaches the minimum (the request's, else the highest
    /// `payout_minimum` of the programs involved). Balances below it, or
    /// negative after a clawback, are carried to the next batch and listed
    /// with why. An entry is in at most one payout, also when batches are
    /// requested at the same moment.
    #[oai(
        path = "/payouts",
        method = "post",
        operation_id = "create_payout_batch"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<NewBatchIn>,
    ) -> Result<Created<BatchOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let batch = self
            .payouts
            .create_batch(
                &caller,
                NewBatch {
                    currency: body.0.currency.map(String::from),
                    minimum: body.0.minimum.map(String::from),
                },
            )
            .await?;
        Ok(Created::Created(Json(batch.into())))
    }

    /// List payouts, newest first, with filters and cursor pagination.
    #[oai(path = "/payouts", method = "get", operation_id = "list_payouts")]
    async fn list(
        &self,
        auth: BearerAuth,
        /// `pending`, `paid` or `failed`.
        status: Query<Option<String>>,
        affiliate_id: Query<Option<String>>,
        batch_id: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<PayoutPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .payouts
            .list(
                &caller,
                PayoutFilter {
                    status: status.0,
                    affiliate_id: affiliate_id.0,
                    batch_id: batch_id.0,
                    cursor: cursor.0,
                    limit: limit.0,
                },
            )
            .await?;
        Ok(Json(PayoutPage {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Get one payout with the ledger entries it covers.
    #[oai(path = "/payouts/:id", method = "get", operation_id = "get_payout")]
    async fn get(
        &self,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<PayoutDetailOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.payouts.get(&caller, &id.0).await?.into()))
    }

    /// Mark a pending payout paid, with your payment's reference. Final.
    #[oai(
        path = "/payouts/:id/mark-paid",
        method = "post",
        operation_id = "mark_payout_paid"
    )]
    async fn mark_paid(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
        body: Json<MarkPaidIn>,
    ) -> Result<Json<PayoutDetailOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let view = self
            .payouts
            .mark_paid(&caller, &id.0, &body.0.reference)
            .await?;
        Ok(Json(view.into()))
    }

    /// Mark a pending payout failed: its entries are owed again and go into
    /// the next batch. Final for this payout.
    #[oai(
        path = "/payouts/:id/mark-failed",
        method = "post",
        operation_id = "mark_payout_failed"
    )]
    async fn mark_failed(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
        body: Json<MarkFailedIn>,
    ) -> Result<Json<PayoutDetailOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let view = self
            .payouts
            .mark_failed(&caller, &id.0, &body.0.reason)
            .await?;
        Ok(Json(view.into()))
    }

    /// A batch's payouts as CSV (`text/csv`, RFC 4180), one row per
    /// affiliate and currency, for your payment provider.
    #[oai(
        path = "/payout-batches/:id/csv",
        method = "get",
        operation_id = "export_payout_batch"
    )]
    async fn export(&self, auth: BearerAuth, id: Path<String>) -> Result<CsvExport, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let rows = self.payouts.batch_rows(&caller, &id.0).await?;
        Ok(CsvExport::Csv(PlainText(batch_csv(&rows))))
    }
}

#[derive(Debug, Object)]
pub struct NewBatchIn {
    /// Only balances in this currency (ISO 4217).
    pub currency: Option<Text>,
    /// The smallest balance paid, a decimal string in `currency` (required
    /// with it). Default: each program's `payout_minimum`.
    pub minimum: Option<Text>,
}

#[derive(Debug, Object)]
pub struct MarkPaidIn {
    /// Your payment's reference (bank transfer id...), 1 to 200 characters.
    pub reference: Text,
}

#[derive(Debug, Object)]
pub struct MarkFailedIn {
    /// Why the payment failed, 1 to 200 characters.
    pub reason: Text,
}

#[derive(Debug, Object)]
pub struct PayoutOut {
    pub id: String,
    pub batch_id: Option<String>,
    pub affiliate_id: String,
    pub amount: String,
    pub currency: String,
    /// `pending`, `paid` or `failed`.
    pub status: String,
    /// How many ledger entries it covers.
    pub entry_count: i32,
    pub reference: Option<String>,
    pub failure_reason: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<payout::Model> for PayoutOut {
    fn from(p: payout::Model) -> Self {
        PayoutOut {
            amount: money(p.amount_minor, p.currency.0),
            id: p.id.into(),
            batch_id: p.batch_id.map(Into::into),
            affiliate_id: p.affiliate_id.into(),
            currency: p.currency.to_string(),
            status: p.status.to_string(),
            entry_count: p.entry_count,
            reference: p.reference,
            failure_reason: p.failure_reason,
            paid_at: p.paid_at,
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct PayoutDetailOut {
    #[oai(flatten)]
    pub payout: PayoutOut,
    /// The ledger entries it covers (none once it failed: they were released).
    pub entries: Vec<EntryOut>,
}

impl From<PayoutView> for PayoutDetailOut {
    fn from(v: PayoutView) -> Self {
        PayoutDetailOut {
            payout: v.payout.into(),
            entries: v.entries.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Object)]
pub struct CarriedOut {
    pub affiliate_id: String,
    pub currency: String,
    /// The balance left for a later batch.
    pub balance: String,
    /// Why it was not paid.
    pub reason: String,
}

impl From<Carried> for CarriedOut {
    fn from(c: Carried) -> Self {
        CarriedOut {
            affiliate_id: c.affiliate_id.into(),
            currency: c.currency.to_string(),
            balance: format_sum(c.balance_minor, c.currency),
            reason: c.reason,
        }
    }
}

#[derive(Debug, Object)]
pub struct BatchOut {
    pub id: String,
    pub payouts: Vec<PayoutOut>,
    /// Balances not paid by this batch, with why.
    pub carried: Vec<CarriedOut>,
}

impl From<Batch> for BatchOut {
    fn from(b: Batch) -> Self {
        BatchOut {
            id: b.id.into(),
            payouts: b.payouts.into_iter().map(Into::into).collect(),
            carried: b.carried.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Object)]
pub struct PayoutPage {
    pub items: Vec<PayoutOut>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}
