//! The `notification_deliveries` table.

use sea_orm::entity::prelude::*;

use crate::TenantId;
use crate::ids::{AffiliateId, ConversionId, DeliveryId, EndpointId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: DeliveryId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub endpoint_id: EndpointId,
    pub affiliate_id: AffiliateId,
    pub conversion_id: ConversionId,
    pub event_key: String,
    /// The event's name (`created`, `approved`, …); `None` on deliveries
    /// made before events had names.
    pub event: Option<String>,
    pub url: String,
    /// What every attempt of this delivery sends.
    pub method: super::notification_endpoint::Method,
    pub content_type: Option<String>,
    pub body: Option<String>,
    pub status: Status,
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    pub last_status_code: Option<i32>,
    pub last_latency_ms: Option<i32>,
    pub last_error: Option<String>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::text_enum! {
    /// A delivery is pending until an attempt succeeds (delivered) or its
    /// retries run out or its target can never be called (dead).
    pub enum Status ("delivery status") {
        Pending = "pending",
        Delivered = "delivered",
        Dead = "dead",
    }
}
