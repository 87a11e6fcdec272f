//! The `tracking_links` table.

use sea_orm::entity::prelude::*;

use super::Activity;
use crate::TenantId;
use crate::ids::{AffiliateId, LinkId, ProgramId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tracking_links")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: LinkId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub program_id: ProgramId,
    pub affiliate_id: AffiliateId,
    pub code: String,
    pub destination_url: Option<String>,
    pub status: Activity,
    pub sub1: Option<String>,
    pub sub2: Option<String>,
    pub sub3: Option<String>,
    pub sub4: Option<String>,
    pub sub5: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
