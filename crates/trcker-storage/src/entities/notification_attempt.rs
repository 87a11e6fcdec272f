//! The `notification_attempts` table.

use sea_orm::entity::prelude::*;

use crate::TenantId;
use crate::ids::{AttemptId, DeliveryId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_attempts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: AttemptId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub delivery_id: DeliveryId,
    pub attempt_no: i32,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub method: Option<String>,
    /// The URL called, secrets redacted.
    pub url: Option<String>,
    /// `timeout`, `refused`, `tls`, `ssrf`, `http_status`, `invalid_target`
    /// or `network`; `None` when the attempt succeeded.
    pub error_class: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
