//! The `clicks` table.

use sea_orm::entity::prelude::*;

use crate::TenantId;
use crate::ids::{AffiliateId, LinkId, ProgramId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "clicks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub program_id: ProgramId,
    pub affiliate_id: AffiliateId,
    pub link_id: Option<LinkId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub referrer: Option<String>,
    pub is_unique: bool,
    pub is_bot: bool,
    pub is_test: bool,
    pub outcome: Outcome,
    pub sub1: Option<String>,
    pub sub2: Option<String>,
    pub sub3: Option<String>,
    pub sub4: Option<String>,
    pub sub5: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::text_enum! {
    /// Where the click went.
    pub enum Outcome ("click outcome") {
        /// To the destination, with its click id.
        Redirected = "redirected",
        /// To the program's fallback URL (something was paused).
        Fallback = "fallback",
        /// Made by a test-fire.
        Test = "test",
    }
}
