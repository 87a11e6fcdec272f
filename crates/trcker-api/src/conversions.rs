//! `/conversions`: what attribution made of accepted postbacks.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::conversions::{ConversionFilter, ConversionService};
use trcker_services::storage::entities::conversion;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::money;
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
        cursor: Query<Option<String>>,
        limit: Query<Option<u64>>,
    ) -> Result<Json<ConversionPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let filter = ConversionFilter {
            txn_id: txn_id.0,
            status: status.0,
            affiliate_id: affiliate_id.0,
            program_id: program_id.0,
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
    /// Why the payout is what it is.
    pub commission_explanation: Option<String>,
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
        ConversionOut {
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
