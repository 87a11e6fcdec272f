//! What a tiered plan needs from the database: an affiliate's volume in a
//! period, and the lock that makes pricing one affiliate's conversions a
//! sequence.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, QueryFilter, QueryOrder, QuerySelect,
};
use trcker_domain::ConversionStatus;

use crate::batch::among;
use crate::entities::{affiliate, conversion};
use crate::ids::{AffiliateId, ProgramId};
use crate::{TenantId, scoped};

/// An affiliate's priced conversions of one offer and event that stand
/// (pending or approved) and happened in `[start, end)`: how many, and
/// their amounts' sum in minor units of the offer's currency.
pub async fn priced_volume<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    affiliate: &AffiliateId,
    program: &ProgramId,
    event: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
) -> Result<(i64, i128), DbErr> {
    use conversion::Column as C;
    let standing = [ConversionStatus::Pending, ConversionStatus::Approved].map(conversion::Status);
    // The sum as text: PostgreSQL sums bigints as numeric (exact, any
    // size), and SQLite refuses an integer sum beyond 64 bits rather than
    // wrap it.
    let row: Option<(i64, Option<String>)> = scoped::<conversion::Entity>(tenant)
        .select_only()
        .column_as(C::Id.count(), "n")
        .column_as(Expr::cust("CAST(SUM(amount_minor) AS TEXT)"), "revenue")
        .filter(C::AffiliateId.eq(affiliate))
        .filter(C::ProgramId.eq(program))
        .filter(C::Event.eq(event))
        .filter(C::Status.is_in(standing))
        .filter(C::PayoutMinor.is_not_null())
        .filter(C::CreatedAt.gte(start))
        .filter(C::CreatedAt.lt(end))
        .into_tuple()
        .one(db)
        .await?;
    let (n, revenue) = row.unwrap_or((0, None));
    let revenue = match revenue {
        Some(s) => s
            .parse::<i128>()
            .map_err(|e| DbErr::Type(format!("revenue sum '{s}': {e}")))?,
        None => 0,
    };
    Ok((n, revenue))
}

/// Locks these affiliates' rows until the transaction ends, in one order
/// (so that two transactions never wait on each other): on PostgreSQL, two
/// workers pricing one affiliate's tiered conversions take turns, and each
/// counts what the other priced. SQLite's write transaction holds the
/// database's one write lock already.
pub async fn lock_affiliates<C: ConnectionTrait>(
    txn: &C,
    tenant: &TenantId,
    ids: Vec<AffiliateId>,
) -> Result<(), DbErr> {
    let backend = txn.get_database_backend();
    if backend != DbBackend::Postgres || ids.is_empty() {
        return Ok(());
    }
    scoped::<affiliate::Entity>(tenant)
        .select_only()
        .column(affiliate::Column::Id)
        .filter(among(backend, affiliate::Column::Id, ids))
        .order_by_asc(affiliate::Column::Id)
        .lock_exclusive()
        .into_tuple::<AffiliateId>()
        .all(txn)
        .await?;
    Ok(())
}
