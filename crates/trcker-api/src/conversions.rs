//! `/conversions`: what attribution made of accepted postbacks, and their
//! review (approve, reject, refund, chargeback; one or in bulk).

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::conversions::{
    BulkOutcome, ConversionFilter, ConversionService, Review, Selection,
};
use trcker_services::pipeline::commission::{Pricing, pricing_of};
use trcker_services::storage::entities::conversion;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Text, money};
use crate::error::ApiError;

pub struct ConversionsApi {
    pub conversions: ConversionService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Conversions")]
impl ConversionsApi {
    /// List conversions, newest first, with filters and cursor pagination.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/conversions",
        method = "get",
        operation_id = "list_conversions"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        txn_id: Query<Option<String>>,
        status: Query<Option<String>>,
        affiliate_id: Query<Option<String>>,
        program_id: Query<Option<String>>,
        /// Created at or after this time (RFC 3339).
        created_from: Query<Option<DateTime<Utc>>>,
        /// Created before this time (RFC 3339).
        created_to: Query<Option<DateTime<Utc>>>,
        /// true: only test conversions; false: only real ones.
        test: Query<Option<bool>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<ConversionPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let filter = ConversionFilter {
            txn_id: txn_id.0,
            status: status.0,
            affiliate_id: affiliate_id.0,
            program_id: program_id.0,
            created_from: created_from.0,
            created_to: created_to.0,
            test: test.0,
            cursor: cursor.0,
            limit: limit.0,
        };
        let page = self.conversions.list(&caller, filter).await?;
        Ok(Json(ConversionPage {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Get one conversion.
    #[oai(
        path = "/conversions/:id",
        method = "get",
        operation_id = "get_conversion"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<ConversionOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.conversions.get(&caller, &id.0).await?.into()))
    }

    /// Approve a pending conversion (also during its hold period, which
    /// ends). Its commission becomes payable and the affiliate is notified.
    #[oai(
        path = "/conversions/:id/approve",
        method = "post",
        operation_id = "approve_conversion"
    )]
    async fn approve(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
        body: Json<ReviewIn>,
    ) -> Result<Json<ConversionOut>, ApiError> {
        self.review(auth, id.0, Review::Approve, body.0.reason.map(String::from))
            .await
    }

    /// Reject a pending conversion: its commission is reversed in the ledger
    /// and the affiliate is notified. Final.
    #[oai(
        path = "/conversions/:id/reject",
        method = "post",
        operation_id = "reject_conversion"
    )]
    async fn reject(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
        body: Json<ReviewIn>,
    ) -> Result<Json<ConversionOut>, ApiError> {
        self.review(auth, id.0, Review::Reject, body.0.reason.map(String::from))
            .await
    }

    /// Reverse a pending or approved conversion as refunded (default) or
    /// charged back: its commission is reversed in the ledger (after a
    /// payout, the next payout nets it) and the affiliate is notified. Final.
    #[oai(
        path = "/conversions/:id/reverse",
        method = "post",
        operation_id = "reverse_conversion"
    )]
    async fn reverse(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
        body: Json<ReverseIn>,
    ) -> Result<Json<ConversionOut>, ApiError> {
        let review = Review::parse(body.0.kind.as_deref().unwrap_or("refund"))
            .ok()
            .filter(|r| matches!(r, Review::Reverse(_)))
            .ok_or_else(|| {
                ApiError::from(trcker_services::Invalid::field(
                    "kind",
                    "must be refund or chargeback",
                ))
            })?;
        self.review(auth, id.0, review, body.0.reason.map(String::from))
            .await
    }

    /// Review many conversions at once: listed by id (up to 1000), or every
    /// conversion matching a filter (up to 1000 per request; `more` says
    /// whether others matched). Each moves as its own review would; those
    /// that cannot move are listed with why and left as they were.
    #[oai(
        path = "/conversions/review",
        method = "post",
        operation_id = "review_conversions"
    )]
    async fn review_bulk(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<BulkReviewIn>,
    ) -> Result<Json<BulkReviewOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let b = body.0;
        let review = Review::parse(&b.action)?;
        let selection = match (b.ids, b.filter) {
            (Some(ids), None) => Selection::Ids(ids.into_iter().map(String::from).collect()),
            (None, Some(f)) => Selection::Filter(f.into()),
            _ => {
                return Err(trcker_services::Invalid::field(
                    "ids",
                    "give either ids or filter, not both and not neither",
                )
                .into());
            }
        };
        let outcome = self
            .conversions
            .review_bulk(&caller, selection, review, b.reason.map(String::from))
            .await?;
        Ok(Json(outcome.into()))
    }
}

impl ConversionsApi {
    async fn review(
        &self,
        auth: BearerAuth,
        id: String,
        review: Review,
        reason: Option<String>,
    ) -> Result<Json<ConversionOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let conv = self
            .conversions
            .review(&caller, &id, review, reason)
            .await?;
        Ok(Json(conv.into()))
    }
}

/// A review's body; `{}` when there is nothing to say.
#[derive(Debug, Object)]
pub struct ReviewIn {
    /// Why (kept in the audit log and the ledger's reversal), at most 500 characters.
    pub reason: Option<Text>,
}

#[derive(Debug, Object)]
pub struct ReverseIn {
    /// `refund` (default) or `chargeback`.
    pub kind: Option<Text>,
    /// Why (kept in the audit log and the ledger's reversal), at most 500 characters.
    pub reason: Option<Text>,
}

/// Which conversions a bulk review takes, when chosen by filter.
#[derive(Debug, Object)]
pub struct ReviewFilterIn {
    pub status: Option<Text>,
    pub program_id: Option<Text>,
    pub affiliate_id: Option<Text>,
    pub txn_id: Option<Text>,
    /// Created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before this time.
    pub created_to: Option<DateTime<Utc>>,
    pub test: Option<bool>,
}

impl From<ReviewFilterIn> for ConversionFilter {
    fn from(f: ReviewFilterIn) -> Self {
        ConversionFilter {
            txn_id: f.txn_id.map(String::from),
            status: f.status.map(String::from),
            affiliate_id: f.affiliate_id.map(String::from),
            program_id: f.program_id.map(String::from),
            created_from: f.created_from,
            created_to: f.created_to,
            test: f.test,
            cursor: None,
            limit: None,
        }
    }
}

#[derive(Debug, Object)]
pub struct BulkReviewIn {
    /// `approve`, `reject`, `refund` or `chargeback`.
    pub action: Text,
    /// The conversions, by id (1 to 1000). Give this or `filter`.
    pub ids: Option<Vec<Text>>,
    /// Every conversion matching this, up to 1000. Give this or `ids`.
    pub filter: Option<ReviewFilterIn>,
    /// Why, for each of them (audit log and ledger), at most 500 characters.
    pub reason: Option<Text>,
}

#[derive(Debug, Object)]
pub struct RefusedOut {
    pub id: String,
    /// Why this conversion was left as it was.
    pub reason: String,
}

#[derive(Debug, Object)]
pub struct BulkReviewOut {
    /// The conversions moved.
    pub moved: Vec<String>,
    /// The conversions left as they were, with why.
    pub refused: Vec<RefusedOut>,
    /// True when a filter matched more than 1000: repeat the request.
    pub more: bool,
}

impl From<BulkOutcome> for BulkReviewOut {
    fn from(o: BulkOutcome) -> Self {
        BulkReviewOut {
            moved: o.moved,
            refused: o
                .refused
                .into_iter()
                .map(|(id, reason)| RefusedOut { id, reason })
                .collect(),
            more: o.more,
        }
    }
}

#[derive(Debug, Object)]
pub struct ConversionOut {
    pub id: String,
    pub txn_id: String,
    pub status: String,
    pub event: String,
    pub amount: String,
    pub currency: String,
    /// The affiliate's commission; null until computed.
    pub payout: Option<String>,
    /// Why the payout is what it is, for people.
    pub commission_explanation: Option<String>,
    /// What priced the payout: plan, version, rule, tier, inputs and result; null until computed.
    pub commission: Option<PricingOut>,
    pub affiliate_id: String,
    pub program_id: String,
    pub click_id: Option<String>,
    pub coupon_code: Option<String>,
    pub postback_id: String,
    pub is_test: bool,
    pub hold_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<conversion::Model> for ConversionOut {
    fn from(c: conversion::Model) -> Self {
        let commission = pricing_of(&c).map(Into::into);
        ConversionOut {
            commission,
            amount: money(c.amount_minor, c.currency.0),
            payout: c.payout_minor.map(|m| money(m, c.currency.0)),
            id: c.id.into(),
            txn_id: c.txn_id,
            status: c.status.to_string(),
            event: c.event,
            currency: c.currency.to_string(),
            commission_explanation: c.commission_explanation,
            affiliate_id: c.affiliate_id.into(),
            program_id: c.program_id.into(),
            click_id: c.click_id,
            coupon_code: c.coupon_code,
            postback_id: c.postback_id.into(),
            is_test: c.is_test,
            hold_until: c.hold_until,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ConversionPage {
    pub items: Vec<ConversionOut>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// What priced a conversion's payout.
#[derive(Debug, Object)]
pub struct PricingOut {
    /// `program_plan`, `affiliate_plan` (the affiliate's own), `postback_payout` (the merchant's `payout`) or `no_plan`.
    pub source: String,
    pub plan_id: Option<String>,
    /// The plan's version in force when the conversion happened.
    pub plan_version: Option<i32>,
    pub rule: Option<PricedRuleOut>,
    /// The tier that set the rate (null: the plan has no tiers).
    pub tier: Option<PricedTierOut>,
    pub inputs: PricingInputsOut,
    pub result: PricingResultOut,
    /// The same, for people.
    pub sentence: String,
}

#[derive(Debug, Object)]
pub struct PricedRuleOut {
    /// `flat`, `percent` or `combined`.
    #[oai(rename = "type")]
    pub kind: String,
    pub flat: Option<String>,
    pub percent: Option<String>,
    /// The plan's maximum per conversion.
    pub max: Option<String>,
}

/// Where a conversion fell among its plan's tiers.
#[derive(Debug, Object)]
pub struct PricedTierOut {
    /// 1 for the plan's own rule, 2 for its first step...
    pub number: u32,
    /// `conversions` or `revenue`.
    pub basis: String,
    /// `month` or `week`, in the tenant's time zone.
    pub period: String,
    /// When the period began.
    pub period_start: DateTime<Utc>,
    pub time_zone: String,
    /// The tier's start: a number of conversions, or revenue in the offer's currency.
    pub from: String,
    /// The affiliate's volume in the period before this conversion (priced conversions that stand).
    pub volume: String,
}

#[derive(Debug, Object)]
pub struct PricingInputsOut {
    pub event: String,
    pub amount: String,
    pub currency: String,
    /// The exchange rate applied to the amount (null: the offer's own currency).
    pub exchange_rate: Option<String>,
    /// The amount the merchant sent, before conversion.
    pub original_amount: Option<String>,
    pub original_currency: Option<String>,
    /// A tiered plan's volume before this conversion (the tier's `volume`).
    pub tier_volume: Option<String>,
}

#[derive(Debug, Object)]
pub struct PricingResultOut {
    pub payout: String,
    pub currency: String,
    /// What the rule gave before the plan's maximum cut it.
    pub uncapped: Option<String>,
}

impl From<Pricing> for PricingOut {
    fn from(p: Pricing) -> Self {
        PricingOut {
            source: p.source,
            plan_id: p.plan_id,
            plan_version: p.plan_version,
            rule: p.rule.map(|r| PricedRuleOut {
                kind: r.kind,
                flat: r.flat,
                percent: r.percent,
                max: r.max,
            }),
            inputs: PricingInputsOut {
                tier_volume: p.tier.as_ref().map(|t| t.volume.clone()),
                event: p.inputs.event,
                amount: p.inputs.amount,
                currency: p.inputs.currency,
                exchange_rate: p.inputs.exchange_rate,
                original_amount: p.inputs.original_amount,
                original_currency: p.inputs.original_currency,
            },
            result: PricingResultOut {
                payout: p.result.payout,
                currency: p.result.currency,
                uncapped: p.result.uncapped,
            },
            tier: p.tier.map(|t| PricedTierOut {
                number: u32::try_from(t.number).unwrap_or(u32::MAX),
                basis: t.basis,
                period: t.period,
                period_start: t.period_start,
                time_zone: t.time_zone,
                from: t.from,
                volume: t.volume,
            }),
            sentence: p.sentence,
        }
    }
}
