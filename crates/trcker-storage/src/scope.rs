//! Tenant isolation, enforced where queries are built.
//!
//! Handlers never call `Entity::find()` on a tenant-owned table: they call
//! [`scoped`] or [`scoped_by_id`] with the [`TenantId`] that authentication
//! produced, so a query without its tenant filter is hard to write. A row of
//! another tenant is then simply not found, which the API answers as 404.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Select};

use crate::entities::*;

/// The tenant a request or a job acts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    /// For ids read back from our own rows and job payloads (never from a client).
    pub fn from_trusted(id: impl Into<String>) -> Self {
        TenantId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An entity whose rows belong to one tenant.
pub trait TenantOwned: EntityTrait {
    fn tenant_column() -> Self::Column;
    fn id_column() -> Self::Column;
}

/// All rows of one tenant.
pub fn scoped<E: TenantOwned>(tenant: &TenantId) -> Select<E> {
    E::find().filter(E::tenant_column().eq(tenant.as_str()))
}

/// One row of one tenant.
pub fn scoped_by_id<E: TenantOwned>(tenant: &TenantId, id: &str) -> Select<E> {
    scoped::<E>(tenant).filter(E::id_column().eq(id))
}

macro_rules! tenant_owned {
    ($($m:ident),* $(,)?) => {$(
        impl TenantOwned for $m::Entity {
            fn tenant_column() -> Self::Column {
                $m::Column::TenantId
            }
            fn id_column() -> Self::Column {
                $m::Column::Id
            }
        }
    )*};
}

tenant_owned!(
    api_key,
    program,
    affiliate,
    commission_plan,
    tracking_link,
    coupon,
    click,
    integration,
    postback,
    conversion,
    ledger_entry,
    payout,
    notification_endpoint,
    notification_delivery,
    notification_attempt,
    audit,
);
