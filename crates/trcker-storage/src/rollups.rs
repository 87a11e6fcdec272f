//! The reports' rollups (`report_rollups`; its migration says what a row
//! counts): kept in the same transaction as what they count, so that they
//! are exactly as durable as the clicks and conversions themselves. A click
//! batch, a conversion's creation, its commission and its reversal each add
//! their [`Tally`] before committing; a job that runs again after a crash
//! writes nothing the first run committed (its effects are keyed), so it
//! tallies nothing twice.
//!
//! A row's day is the tenant's calendar day, in the time zone read inside
//! the writing transaction. A change of time zone rebuilds the tenant's
//! rollups from its raw rows ([`rebuild`]); on PostgreSQL every writer holds
//! a shared advisory lock on its tenants while it tallies and a rebuild holds
//! it exclusively, so no tally is counted in a zone that no longer applies,
//! nor lost to a rebuild that did not see it. (SQLite has one writer at a
//! time: its write transactions are the lock.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::AddAssign;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, Value,
};
use trcker_domain::tiers::TimeZone;

use crate::TenantId;
use crate::batch::{placeholder, pow2_chunks, value_rows};
use crate::entities::{click, conversion, tenant};
use crate::{TenantOwned, scoped};

/// The sub-ID dimensions, in the order of a click's `sub1`..`sub5`.
pub const SUB_DIMENSIONS: [&str; 5] = ["sub1", "sub2", "sub3", "sub4", "sub5"];
/// The dimension of a conversion's event.
pub const EVENT_DIMENSION: &str = "event";
/// The dimension that counts everything (program, affiliate and day only).
pub const ALL: &str = "";

/// Distinguishes the rollups' advisory locks from any other's (PostgreSQL's
/// two-key form: this, and the tenant id's hash).
const LOCK_SPACE: i32 = 0x7472_6b72;
/// Rows per upsert statement (twelve parameters a row).
const UPSERT_ROWS: usize = 256;
/// Raw rows read per page while rebuilding.
const REBUILD_PAGE: u64 = 5_000;

/// What a row counts. Money is in minor units of the row's currency.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub clicks: i64,
    pub unique_clicks: i64,
    pub conversions: i64,
    pub revenue_minor: i64,
    pub commission_minor: i64,
}

impl Counts {
    fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.clicks += o.clicks;
        self.unique_clicks += o.unique_clicks;
        self.conversions += o.conversions;
        self.revenue_minor += o.revenue_minor;
        self.commission_minor += o.commission_minor;
    }
}

/// One thing to count, before its day is known.
#[derive(Debug, Clone)]
struct Delta {
    tenant: TenantId,
    at: DateTime<Utc>,
    program: String,
    affiliate: String,
    subs: [Option<String>; 5],
    /// A conversion's event; clicks have none.
    event: Option<String>,
    /// '' for click counters.
    currency: String,
    counts: Counts,
}

/// A row's key, in the primary key's order (the order upserts take their
/// locks in, alike in every transaction).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    tenant: String,
    dim: &'static str,
    day: NaiveDate,
    program: String,
    affiliate: String,
    value: String,
    currency: String,
}

/// The counters a transaction changes, applied by [`Tally::apply`] before
/// it commits. Test clicks and test conversions are never counted.
#[derive(Debug, Default)]
pub struct Tally {
    deltas: Vec<Delta>,
}

impl Tally {
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// A click written.
    pub fn click(&mut self, c: &click::Model) {
        if c.is_test {
            return;
        }
        self.deltas.push(Delta {
            tenant: c.tenant_id.clone(),
            at: c.created_at,
            program: c.program_id.to_string(),
            affiliate: c.affiliate_id.to_string(),
            subs: [&c.sub1, &c.sub2, &c.sub3, &c.sub4, &c.sub5].map(Clone::clone),
            event: None,
            currency: String::new(),
            counts: Counts {
                clicks: 1,
                unique_clicks: i64::from(c.is_unique),
                ..Counts::default()
            },
        });
    }

    /// A conversion that begins to stand (`sign` 1: created pending or
    /// approved) or stops standing (`sign` -1: rejected or reversed), with
    /// its sale amount.
    pub fn conversion(&mut self, c: &conversion::Model, sign: i64) {
        self.conversion_counts(
            c,
            Counts {
                conversions: sign,
                revenue_minor: sign * c.amount_minor,
                ..Counts::default()
            },
        );
    }

    /// Commission booked for a conversion (negative when reversed).
    pub fn commission(&mut self, c: &conversion::Model, minor: i64) {
        self.conversion_counts(
            c,
            Counts {
                commission_minor: minor,
                ..Counts::default()
            },
        );
    }

    fn conversion_counts(&mut self, c: &conversion::Model, counts: Counts) {
        if c.is_test || counts.is_zero() {
            return;
        }
        self.deltas.push(Delta {
            tenant: c.tenant_id.clone(),
            at: c.created_at,
            program: c.program_id.to_string(),
            affiliate: c.affiliate_id.to_string(),
            subs: [&c.sub1, &c.sub2, &c.sub3, &c.sub4, &c.sub5].map(Clone::clone),
            event: Some(c.event.clone()),
            currency: c.currency.to_string(),
            counts,
        });
    }

    /// Adds the counters to their rows inside `txn` (which must be a write
    /// transaction that commits what was counted).
    pub async fn apply(self, txn: &DatabaseTransaction) -> Result<(), DbErr> {
        if self.deltas.is_empty() {
            return Ok(());
        }
        let tenants: BTreeSet<TenantId> = self.deltas.iter().map(|d| d.tenant.clone()).collect();
        for t in &tenants {
            lock(txn, t, "pg_advisory_xact_lock_shared").await?;
        }
        let zones = zones(txn, tenants.into_iter().collect()).await?;
        let mut rows = BTreeMap::new();
        for d in self.deltas {
            let zone = zones.get(&d.tenant).copied().unwrap_or(TimeZone::UTC);
            fold(&mut rows, zone, d);
        }
        upsert(txn, rows).await
    }
}

/// Adds one delta to the rows it counts on: everything, each sub-ID (a
/// missing one under ''), and a conversion's event.
fn fold(rows: &mut BTreeMap<Key, Counts>, zone: TimeZone, d: Delta) {
    let key = |dim: &'static str, value: &str| Key {
        tenant: d.tenant.to_string(),
        dim,
        day: zone.day_of(d.at),
        program: d.program.clone(),
        affiliate: d.affiliate.clone(),
        value: value.to_owned(),
        currency: d.currency.clone(),
    };
    *rows.entry(key(ALL, "")).or_default() += d.counts;
    for (dim, sub) in SUB_DIMENSIONS.iter().zip(&d.subs) {
        *rows
            .entry(key(dim, sub.as_deref().unwrap_or("")))
            .or_default() += d.counts;
    }
    if let Some(event) = &d.event {
        *rows.entry(key(EVENT_DIMENSION, event)).or_default() += d.counts;
    }
}

/// Takes the rollups' advisory lock of a tenant for the transaction
/// (PostgreSQL; SQLite's write transaction already excludes every other).
async fn lock(txn: &DatabaseTransaction, tenant: &TenantId, function: &str) -> Result<(), DbErr> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("SELECT {function}($1, hashtext($2))::text"),
        [LOCK_SPACE.into(), tenant.to_string().into()],
    ))
    .await
    .map(|_| ())
}

/// The tenants' time zones (UTC where a stored name no longer parses).
async fn zones(
    txn: &DatabaseTransaction,
    tenants: Vec<TenantId>,
) -> Result<HashMap<TenantId, TimeZone>, DbErr> {
    Ok(tenant::Entity::find()
        .select_only()
        .column(tenant::Column::Id)
        .column(tenant::Column::TimeZone)
        .filter(tenant::Column::Id.is_in(tenants))
        .into_tuple::<(TenantId, String)>()
        .all(txn)
        .await?
        .into_iter()
        .map(|(id, zone)| (id, TimeZone::parse(&zone).unwrap_or(TimeZone::UTC)))
        .collect())
}

const COLUMNS: &str = "tenant_id, dim, day, program_id, affiliate_id, value, currency, \
                       clicks, unique_clicks, conversions, revenue_minor, commission_minor";

/// Adds each row's counters to the stored row, creating it when new.
async fn upsert(txn: &DatabaseTransaction, rows: BTreeMap<Key, Counts>) -> Result<(), DbErr> {
    let rows: Vec<(Key, Counts)> = rows.into_iter().filter(|(_, c)| !c.is_zero()).collect();
    let backend = txn.get_database_backend();
    for chunk in pow2_chunks(&rows, UPSERT_ROWS) {
        let mut sql = format!(
            "INSERT INTO report_rollups ({COLUMNS}) VALUES {}",
            value_rows(backend, chunk.len(), 12)
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 12);
        for (k, c) in chunk {
            values.extend([
                k.tenant.clone().into(),
                k.dim.into(),
                k.day.format("%Y-%m-%d").to_string().into(),
                k.program.clone().into(),
                k.affiliate.clone().into(),
                k.value.clone().into(),
                k.currency.clone().into(),
                c.clicks.into(),
                c.unique_clicks.into(),
                c.conversions.into(),
                c.revenue_minor.into(),
                c.commission_minor.into(),
            ]);
        }
        sql.push_str(
            " ON CONFLICT (tenant_id, dim, day, program_id, affiliate_id, value, currency) \
             DO UPDATE SET clicks = report_rollups.clicks + excluded.clicks, \
             unique_clicks = report_rollups.unique_clicks + excluded.unique_clicks, \
             conversions = report_rollups.conversions + excluded.conversions, \
             revenue_minor = report_rollups.revenue_minor + excluded.revenue_minor, \
             commission_minor = report_rollups.commission_minor + excluded.commission_minor",
        );
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(())
}

/// Builds a tenant's rollups again from its raw rows, in its current time
/// zone, inside `txn` (a write transaction; on PostgreSQL it waits for the
/// tenant's writers in flight and holds the next ones until it commits).
/// It reads every click of the tenant: a time-zone change, or the first
/// start after the rollups came, is when it runs.
pub async fn rebuild(txn: &DatabaseTransaction, tenant: &TenantId) -> Result<(), DbErr> {
    lock(txn, tenant, "pg_advisory_xact_lock").await?;
    let zone = zones(txn, vec![tenant.clone()])
        .await?
        .remove(tenant)
        .unwrap_or(TimeZone::UTC);
    let backend = txn.get_database_backend();
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "DELETE FROM report_rollups WHERE tenant_id = {}",
            placeholder(backend, 1)
        ),
        [tenant.to_string().into()],
    ))
    .await?;
    let mut rows = BTreeMap::new();
    tally_pages::<click::Entity>(
        txn,
        tenant,
        click::Column::IsTest,
        |c| c.id.clone(),
        |tally, c| tally.click(c),
        zone,
        &mut rows,
    )
    .await?;
    tally_pages::<conversion::Entity>(
        txn,
        tenant,
        conversion::Column::IsTest,
        |c| c.id.to_string(),
        |tally, c| {
            if c.status.earns_commission() {
                tally.conversion(c, 1);
                tally.commission(c, c.payout_minor.unwrap_or(0));
            }
        },
        zone,
        &mut rows,
    )
    .await?;
    upsert(txn, rows).await?;
    tenant::Entity::update_many()
        .col_expr(
            tenant::Column::RollupsBuiltAt,
            sea_orm::sea_query::Expr::value(Some(Utc::now())),
        )
        .filter(tenant::Column::Id.eq(tenant.clone()))
        .exec(txn)
        .await?;
    Ok(())
}

/// Tallies every non-test row of a tenant's table, [`REBUILD_PAGE`] rows
/// at a time in id order, folding each page into `rows`.
async fn tally_pages<E>(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    is_test: E::Column,
    id: impl Fn(&E::Model) -> String,
    add: impl Fn(&mut Tally, &E::Model),
    zone: TimeZone,
    rows: &mut BTreeMap<Key, Counts>,
) -> Result<(), DbErr>
where
    E: TenantOwned,
    E::Model: Sync,
{
    let mut after = String::new();
    loop {
        let page = scoped::<E>(tenant)
            .filter(E::id_column().gt(after.clone()))
            .filter(is_test.eq(false))
            .order_by_asc(E::id_column())
            .limit(REBUILD_PAGE)
            .all(txn)
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = id(last);
        let mut tally = Tally::default();
        for row in &page {
            add(&mut tally, row);
        }
        for d in tally.deltas {
            fold(rows, zone, d);
        }
    }
}

/// The tenants whose rollups were never built (they are from before the
/// rollups).
pub async fn unbuilt(db: &impl ConnectionTrait) -> Result<Vec<TenantId>, DbErr> {
    tenant::Entity::find()
        .select_only()
        .column(tenant::Column::Id)
        .filter(tenant::Column::RollupsBuiltAt.is_null())
        .into_tuple::<TenantId>()
        .all(db)
        .await
}

/// What a report groups by: the column of the rows' key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Day,
    Program,
    Affiliate,
    /// A sub-ID (`sub1`..`sub5`) or the event, by its value.
    Value(&'static str),
}

/// A report's range and filters. Days are the tenant's, inclusive.
#[derive(Debug, Clone)]
pub struct Query {
    pub grouping: Grouping,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub program_id: Option<String>,
    pub affiliate_id: Option<String>,
}

/// One key's counters in one currency ('' for clicks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summed {
    pub key: String,
    pub currency: String,
    pub counts: Counts,
}

/// The counters of a tenant's rows in the range, summed per key and
/// currency, in key order.
pub async fn sum(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    q: &Query,
) -> Result<Vec<Summed>, DbErr> {
    let backend = db.get_database_backend();
    let (key, dim) = match q.grouping {
        Grouping::Day => ("day", ALL),
        Grouping::Program => ("program_id", ALL),
        Grouping::Affiliate => ("affiliate_id", ALL),
        Grouping::Value(dim) => ("value", dim),
    };
    let mut values: Vec<Value> = vec![
        tenant.to_string().into(),
        dim.into(),
        q.from.format("%Y-%m-%d").to_string().into(),
        q.to.format("%Y-%m-%d").to_string().into(),
    ];
    let mut filters = String::new();
    for (column, v) in [
        ("program_id", &q.program_id),
        ("affiliate_id", &q.affiliate_id),
    ] {
        if let Some(v) = v {
            values.push(v.clone().into());
            filters.push_str(&format!(" AND {column} = {{{}}}", values.len()));
        }
    }
    let mut sql = format!(
        "SELECT {key} AS k, currency, CAST(SUM(clicks) AS BIGINT) AS clicks, \
         CAST(SUM(unique_clicks) AS BIGINT) AS unique_clicks, \
         CAST(SUM(conversions) AS BIGINT) AS conversions, \
         CAST(SUM(revenue_minor) AS BIGINT) AS revenue_minor, \
         CAST(SUM(commission_minor) AS BIGINT) AS commission_minor \
         FROM report_rollups WHERE tenant_id = {{1}} AND dim = {{2}} \
         AND day >= {{3}} AND day <= {{4}}{filters} GROUP BY {key}, currency ORDER BY {key}, currency"
    );
    for n in 1..=values.len() {
        sql = sql.replace(&format!("{{{n}}}"), &placeholder(backend, n));
    }
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Summed {
                key: r.try_get("", "k")?,
                currency: r.try_get("", "currency")?,
                counts: Counts {
                    clicks: r.try_get("", "clicks")?,
                    unique_clicks: r.try_get("", "unique_clicks")?,
                    conversions: r.try_get("", "conversions")?,
                    revenue_minor: r.try_get("", "revenue_minor")?,
                    commission_minor: r.try_get("", "commission_minor")?,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_counts_on_everything_each_sub_id_and_its_event() {
        let mut rows = BTreeMap::new();
        let d = Delta {
            tenant: TenantId::generate(),
            at: "2026-03-01T23:30:00Z".parse().expect("time"),
            program: "prg".into(),
            affiliate: "aff".into(),
            subs: [Some("news".into()), None, None, None, None],
            event: Some("sale".into()),
            currency: "EUR".into(),
            counts: Counts {
                conversions: 1,
                revenue_minor: 500,
                ..Counts::default()
            },
        };
        fold(
            &mut rows,
            TimeZone::parse("Europe/Berlin").expect("zone"),
            d,
        );
        assert_eq!(rows.len(), 7);
        let days: BTreeSet<NaiveDate> = rows.keys().map(|k| k.day).collect();
        // 23:30 UTC is already the next day in Berlin.
        assert_eq!(
            days.into_iter().collect::<Vec<_>>(),
            ["2026-03-02".parse::<NaiveDate>().expect("day")]
        );
        let subs: Vec<(&str, &str)> = rows.keys().map(|k| (k.dim, k.value.as_str())).collect();
        assert!(subs.contains(&("sub1", "news")));
        assert!(subs.contains(&("sub2", "")));
        assert!(subs.contains(&("event", "sale")));
        assert!(rows.values().all(|c| c.revenue_minor == 500));
    }
}
