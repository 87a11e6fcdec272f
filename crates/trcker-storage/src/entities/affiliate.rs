//! The `affiliates` table.

use sea_orm::entity::prelude::*;

use super::Activity;
use crate::TenantId;
use crate::ids::AffiliateId;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "affiliates")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: AffiliateId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub name: String,
    pub email: String,
    pub slug: String,
    pub status: Activity,
    pub postback_url: Option<String>,
    pub password_hash: Option<String>,
    pub invite_token_hash: Option<String>,
    pub updated_at: DateTimeUtc,
    /// Sessions made in another epoch are refused (sign-out and a password
    /// change move it on).
    pub session_epoch: i64,
    /// When the invitation link stops working (`None`: a link from before
    /// invitations expired).
    pub invite_expires_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
