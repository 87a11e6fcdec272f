//! The `notification_endpoints` table: where an affiliate (or the tenant
//! itself) is told of conversions, and how.

use sea_orm::entity::prelude::*;

use crate::TenantId;
use crate::ids::{AffiliateId, EndpointId, ProgramId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: EndpointId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    /// `None`: the tenant's own endpoint, told of every conversion.
    pub affiliate_id: Option<AffiliateId>,
    /// Only this program's conversions; it replaces its owner's program-less
    /// endpoints of the same kind for them.
    pub program_id: Option<ProgramId>,
    pub kind: EndpointKind,
    pub url_template: String,
    pub method: Method,
    pub body_format: Option<BodyFormat>,
    pub body_template: Option<String>,
    /// The URL called for reversals when `url_template` has no `{status}`.
    pub reversal_template: Option<String>,
    /// Comma-separated event names (`created`, `approved`, …).
    pub events: String,
    pub send_test: bool,
    /// `false` once deleted (or replaced); its deliveries stay readable.
    pub active: bool,
    pub disabled_at: Option<DateTimeUtc>,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i32,
    pub secret_salt: Option<String>,
    pub previous_secret_salt: Option<String>,
    pub previous_secret_until: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::text_enum! {
    /// How an endpoint is called.
    pub enum EndpointKind ("endpoint kind") {
        /// A URL template with macros, called by GET or POST.
        Postback = "postback",
        /// A signed JSON event (Standard Webhooks).
        Webhook = "webhook",
    }
}

super::text_enum! {
    /// The HTTP method a postback endpoint is called with.
    pub enum Method ("endpoint method") {
        Get = "GET",
        Post = "POST",
    }
}

super::text_enum! {
    /// The body a POST postback sends.
    pub enum BodyFormat ("endpoint body format") {
        /// `application/x-www-form-urlencoded`.
        Form = "form",
        /// `application/json`.
        Json = "json",
    }
}
