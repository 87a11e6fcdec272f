//! `/deliveries`: the notification delivery log, and replays.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::deliveries::{DeliveryDetail, DeliveryFilter, DeliveryService};
use trcker_services::storage::entities::{notification_attempt, notification_delivery};

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::Text;
use crate::error::ApiError;

pub struct DeliveriesApi {
    pub deliveries: DeliveryService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Endpoints")]
impl DeliveriesApi {
    /// The delivery log: every notification delivery, newest first, by
    /// cursor; filters by endpoint, conversion, status and creation time.
    #[oai(path = "/deliveries", method = "get", operation_id = "list_deliveries")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        endpoint_id: Query<Option<String>>,
        conversion_id: Query<Option<String>>,
        /// `pending`, `delivered` or `dead`.
        status: Query<Option<String>>,
        /// Made at or after this time.
        since: Query<Option<DateTime<Utc>>>,
        /// Made before this time.
        until: Query<Option<DateTime<Utc>>>,
        cursor: Query<Option<String>>,
        limit: Query<Option<u64>>,
    ) -> Result<Json<DeliveryPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .deliveries
            .list(
                &caller,
                DeliveryFilter {
                    endpoint_id: endpoint_id.0,
                    conversion_id: conversion_id.0,
                    status: status.0,
                    since: since.0,
                    until: until.0,
                },
                cursor.0,
                limit.0,
            )
            .await?;
        Ok(Json(DeliveryPage {
            items: page.items.into_iter().map(DeliveryOut::from).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// One delivery with every attempt: time, method, URL (secrets
    /// redacted), status code, latency, response excerpt, error class.
    #[oai(
        path = "/deliveries/:id",
        method = "get",
        operation_id = "get_delivery"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<DeliveryDetailOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.deliveries.get(&caller, &id.0).await?.into()))
    }

    /// Replay a delivered or dead delivery: a new attempt of the same
    /// delivery now (the same `webhook-id` and body).
    #[oai(
        path = "/deliveries/:id/replay",
        method = "post",
        operation_id = "replay_delivery"
    )]
    async fn replay(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
    ) -> Result<Json<DeliveryOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.deliveries.replay(&caller, &id.0).await?.into()))
    }

    /// Replay every dead delivery made since a time (of one endpoint, if
    /// given), oldest first, 1,000 a call (`more` when there are more).
    #[oai(
        path = "/deliveries/replay",
        method = "post",
        operation_id = "replay_dead_deliveries"
    )]
    async fn replay_dead(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<ReplayDeadIn>,
    ) -> Result<Json<ReplayedOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let done = self
            .deliveries
            .replay_dead(&caller, body.0.endpoint_id.map(String::from), body.0.since)
            .await?;
        Ok(Json(ReplayedOut {
            replayed: done.replayed as u64,
            more: done.more,
        }))
    }
}

#[derive(Debug, Object)]
pub struct ReplayDeadIn {
    pub endpoint_id: Option<Text>,
    /// Dead deliveries made at or after this time.
    pub since: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct ReplayedOut {
    pub replayed: u64,
    /// More dead deliveries match: call again.
    pub more: bool,
}

#[derive(Debug, Object)]
pub struct DeliveryOut {
    /// Also the `webhook-id` of a webhook's every attempt.
    pub id: String,
    pub endpoint_id: String,
    pub affiliate_id: String,
    pub conversion_id: String,
    /// `created`, `approved`, `rejected`, `reversed` or `paid`.
    pub event: Option<String>,
    pub method: String,
    /// Secret-looking query values redacted.
    pub url: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: i32,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_latency_ms: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<notification_delivery::Model> for DeliveryOut {
    fn from(d: notification_delivery::Model) -> Self {
        let pending = d.status == notification_delivery::Status::Pending;
        DeliveryOut {
            id: d.id.to_string(),
            endpoint_id: d.endpoint_id.to_string(),
            affiliate_id: d.affiliate_id.to_string(),
            conversion_id: d.conversion_id.to_string(),
            event: d.event,
            method: d.method.to_string(),
            url: d.url,
            status: d.status.to_string(),
            attempts: d.attempts,
            next_attempt_at: pending.then_some(d.next_attempt_at),
            last_status_code: d.last_status_code,
            last_latency_ms: d.last_latency_ms,
            last_error: d.last_error,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryOut>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
pub struct AttemptOut {
    pub attempt_no: i32,
    pub at: DateTime<Utc>,
    pub method: Option<String>,
    /// Secret-looking query values redacted.
    pub url: Option<String>,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    /// The start of the response body (at most 2 KiB).
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    /// `http_status`, `timeout`, `refused`, `tls`, `network`, `ssrf`,
    /// `invalid_target` or `disabled`; absent when it was delivered.
    pub error_class: Option<String>,
}

impl From<notification_attempt::Model> for AttemptOut {
    fn from(a: notification_attempt::Model) -> Self {
        AttemptOut {
            attempt_no: a.attempt_no,
            at: a.created_at,
            method: a.method,
            url: a.url,
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            response_excerpt: a.response_excerpt,
            error: a.error,
            error_class: a.error_class,
        }
    }
}

#[derive(Debug, Object)]
pub struct DeliveryDetailOut {
    pub delivery: DeliveryOut,
    /// Oldest first.
    pub attempts: Vec<AttemptOut>,
}

impl From<DeliveryDetail> for DeliveryDetailOut {
    fn from(d: DeliveryDetail) -> Self {
        DeliveryDetailOut {
            delivery: d.delivery.into(),
            attempts: d.attempts.into_iter().map(AttemptOut::from).collect(),
        }
    }
}
