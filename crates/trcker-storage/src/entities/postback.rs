//! The `postbacks` table.

use sea_orm::entity::prelude::*;

use crate::TenantId;
use crate::ids::{ConversionId, IntegrationId, PostbackId, ProgramId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "postbacks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: PostbackId,
    pub tenant_id: TenantId,
    pub created_at: DateTimeUtc,
    pub integration_id: IntegrationId,
    pub program_id: ProgramId,
    pub txn_id: Option<String>,
    pub status_param: Option<String>,
    pub dedupe_key: Option<String>,
    pub raw_params: String,
    pub source_ip: Option<String>,
    pub method: String,
    pub http_status: i32,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub state: State,
    pub conversion_id: Option<ConversionId>,
    pub duplicate_of: Option<PostbackId>,
    pub is_test: bool,
    pub processed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::text_enum! {
    /// What Trcker answered.
    pub enum Outcome ("postback outcome") {
        Accepted = "accepted",
        Duplicate = "duplicate",
        Rejected = "rejected",
    }
}

super::text_enum! {
    /// Where an accepted postback is in the pipeline; refused and repeated
    /// postbacks are logged `done`.
    pub enum State ("postback state") {
        /// Stored; its attribute job is queued.
        Received = "received",
        /// Made or moved a conversion (or found it as it already was).
        Processed = "processed",
        /// Kept with the reason it could not be attributed.
        Unattributed = "unattributed",
        /// A log row of a postback that was refused or repeated.
        Done = "done",
    }
}
