//! The `idempotency_keys` table: an admin API POST's first answer per
//! sender and `Idempotency-Key` (see `crate::idempotency`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    /// The tenant's id, or `operator`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub owner: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// A hash of the request (method, path, query and body).
    pub fingerprint: String,
    pub created_at: DateTimeUtc,
    /// The answer, once there is one (`None` while the first request runs).
    pub status: Option<i32>,
    pub content_type: Option<String>,
    pub body: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
