//! `/ledger`: the append-only ledger as the tenant reads it, and manual
//! adjustments (bonuses and corrections, each with its reason and key).

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::ledger::{EntryFilter, LedgerService, NewAdjustment};
use trcker_services::storage::entities::ledger_entry;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Created, Text, money};
use crate::error::ApiError;

pub struct LedgerApi {
    pub ledger: LedgerService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Payouts")]
impl LedgerApi {
    /// Book a manual adjustment for an affiliate: a bonus (positive) or a
    /// correction (negative), in the program's currency, with its reason.
    /// It is payable at once and never edited; undo it with the opposite one.
    #[oai(
        path = "/ledger/adjustments",
        method = "post",
        operation_id = "create_adjustment"
    )]
    async fn adjust(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<NewAdjustmentIn>,
    ) -> Result<Created<EntryOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let b = body.0;
        let entry = self
            .ledger
            .adjust(
                &caller,
                NewAdjustment {
                    affiliate_id: b.affiliate_id.0,
                    program_id: b.program_id.0,
                    amount: b.amount.0,
                    reason: b.reason.0,
                },
            )
            .await?;
        Ok(Created::Created(Json(entry.into())))
    }

    /// List ledger entries, newest first, with filters and cursor pagination.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/ledger/entries",
        method = "get",
        operation_id = "list_ledger_entries"
    )]
    async fn entries(
        &self,
        auth: BearerAuth,
        affiliate_id: Query<Option<String>>,
        program_id: Query<Option<String>>,
        conversion_id: Query<Option<String>>,
        payout_id: Query<Option<String>>,
        /// `commission`, `reversal`, `adjustment` or `payout` (a payout's debit).
        kind: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<EntryPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .ledger
            .entries(
                &caller,
                EntryFilter {
                    affiliate_id: affiliate_id.0,
                    program_id: program_id.0,
                    conversion_id: conversion_id.0,
                    payout_id: payout_id.0,
                    kind: kind.0,
                    cursor: cursor.0,
                    limit: limit.0,
                },
            )
            .await?;
        Ok(Json(EntryPage {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }
}

#[derive(Debug, Object)]
pub struct NewAdjustmentIn {
    pub affiliate_id: Text,
    /// The program whose currency the amount is in.
    pub program_id: Text,
    /// A signed decimal string: "25.00" (a bonus), "-4.50" (a correction); not zero.
    pub amount: Text,
    /// Why, 1 to 500 characters; the affiliate sees it.
    pub reason: Text,
}

#[derive(Debug, Object)]
pub struct EntryOut {
    pub id: String,
    /// `commission`, `reversal`, `adjustment` or `payout` (what a payout
    /// marked paid paid out, per program: the negative of the entries it covers).
    pub kind: String,
    /// Null for a manual adjustment or a payout debit.
    pub conversion_id: Option<String>,
    pub program_id: String,
    pub amount: String,
    pub currency: String,
    /// Why the entry is what it is.
    pub explanation: String,
    /// Who caused it, when a person did (`api_key:key_…`).
    pub actor: Option<String>,
    /// The payout that covers it.
    pub payout_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<ledger_entry::Model> for EntryOut {
    fn from(e: ledger_entry::Model) -> Self {
        EntryOut {
            amount: money(e.amount_minor, e.currency.0),
            id: e.id.into(),
            kind: e.kind.to_string(),
            conversion_id: e.conversion_id.map(Into::into),
            actor: e.actor,
            payout_id: e.payout_id.map(Into::into),
            program_id: e.program_id.into(),
            currency: e.currency.to_string(),
            explanation: e.explanation,
            created_at: e.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct EntryPage {
    pub items: Vec<EntryOut>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}
