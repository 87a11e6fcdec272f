//! The `notification_endpoints` table.

use sea_orm::entity::prelude::*;

use crate::TenantId;
use crate::ids::{AffiliateId, EndpointId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: EndpointId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub affiliate_id: AffiliateId,
    pub kind: EndpointKind,
    pub url_template: String,
    pub active: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::text_enum! {
    /// How an endpoint is called.
    pub enum EndpointKind ("endpoint kind") {
        /// The affiliate's URL template, called by GET.
        Postback = "postback",
    }
}
