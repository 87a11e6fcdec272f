//! The `postbacks` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "postbacks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub created_at: DateTimeUtc,
    pub integration_id: String,
    pub program_id: String,
    pub txn_id: Option<String>,
    pub status_param: Option<String>,
    pub dedupe_key: Option<String>,
    pub raw_params: String,
    pub source_ip: Option<String>,
    pub method: String,
    pub http_status: i32,
    pub outcome: String,
    pub reason: Option<String>,
    pub state: String,
    pub conversion_id: Option<String>,
    pub duplicate_of: Option<String>,
    pub is_test: bool,
    pub processed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
