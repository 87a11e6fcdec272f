//! The `signing_keys` table: the keys of the admin API's access tokens, as
//! ids and salts (the key material is derived, never stored).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    /// The JWT header's `kid`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kid: String,
    pub salt: String,
    pub created_at: DateTimeUtc,
    /// When a newer key took over signing; `None` for the signing key.
    pub retired_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
