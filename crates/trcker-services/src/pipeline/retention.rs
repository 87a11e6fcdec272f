//! Retention: the sweeper deletes what is older than the operator keeps it,
//! in bounded batches, at most once a minute per process (several processes
//! may do it at once: a row deleted twice is deleted once).
//!
//! - clicks older than their retention, and never younger than the longest
//!   attribution window plus the longest hold period of their tenant's
//!   programs (a conversion may still come for them);
//! - postbacks older than theirs that the pipeline is done with (a postback
//!   still `received` is never deleted);
//! - notification deliveries that are over (delivered or dead) older than
//!   theirs, with their attempts.
//!
//! Money rows (conversions, ledger entries, payouts) are never deleted.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Duration, Utc};
use trcker_storage::batch::among;
use trcker_storage::entities::*;
use trcker_storage::ids::{DeliveryId, PostbackId};
use trcker_storage::sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
use trcker_storage::{TenantId, lookup, scoped, scoped_delete};

use super::{JobError, Pipeline};

/// How long rows are kept, in days (0: for ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub clicks_days: u32,
    pub postbacks_days: u32,
    pub deliveries_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            clicks_days: 400,
            postbacks_days: 400,
            deliveries_days: 90,
        }
    }
}

/// What a retention pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub clicks: u64,
    pub postbacks: u64,
    pub deliveries: u64,
    pub attempts: u64,
    /// Idempotency keys past their day.
    pub idempotency_keys: u64,
}

/// Rows of one kind a pass deletes at most.
const BATCH: u64 = 1_000;
/// A pass runs at most this often (seconds).
const EVERY_SECS: i64 = 60;
/// Affiliates whose clicks one DELETE walks (see the IP retention sweep).
const AFFILIATES_AT_ONCE: usize = 256;

impl Pipeline {
    /// A retention pass, if the last one is a minute old.
    pub(super) async fn retention_pass(&self, t: DateTime<Utc>) -> Result<Deleted, JobError> {
        let last = self.last_retention.load(Ordering::Relaxed);
        if t.timestamp() - last < EVERY_SECS {
            return Ok(Deleted::default());
        }
        let deleted = self.apply_retention(t).await?;
        self.last_retention.store(t.timestamp(), Ordering::Relaxed);
        Ok(deleted)
    }

    /// Deletes what is older than the retention periods at `t` (a batch of
    /// each kind).
    pub async fn apply_retention(&self, t: DateTime<Utc>) -> Result<Deleted, JobError> {
        let r = self.settings.retention;
        let mut deleted = Deleted::default();
        if r.clicks_days > 0 {
            deleted.clicks = self.delete_old_clicks(t, r.clicks_days).await?;
        }
        if r.postbacks_days > 0 {
            deleted.postbacks = self
                .delete_old_postbacks(t - Duration::days(r.postbacks_days.into()))
                .await?;
        }
        if r.deliveries_days > 0 {
            (deleted.deliveries, deleted.attempts) = self
                .delete_old_deliveries(t - Duration::days(r.deliveries_days.into()))
                .await?;
        }
        deleted.idempotency_keys =
            trcker_storage::idempotency::purge(&self.store.conn, t - crate::idempotency::KEEP)
                .await
                .map_err(|e| JobError::from(crate::StoreError::from(e)))?;
        Ok(deleted)
    }

    /// Clicks, tenant by tenant, older than the retention and than their
    /// tenant's longest attribution window plus hold period.
    async fn delete_old_clicks(&self, t: DateTime<Utc>, days: u32) -> Result<u64, JobError> {
        let db = &self.store.conn;
        let backend = db.get_database_backend();
        let tenants = lookup::all_tenant_ids(db).await?;
        let mut deleted = 0;
        for tenant in tenants {
            let programs = scoped::<program::Entity>(&tenant).all(db).await?;
            let needed = programs
                .iter()
                .map(|p| i64::from(p.attribution_window_days) + i64::from(p.hold_days))
                .max()
                .unwrap_or(0);
            let cutoff = t - Duration::days(i64::from(days).max(needed));
            let affiliates: Vec<String> = scoped::<affiliate::Entity>(&tenant)
                .select_only()
                .column(affiliate::Column::Id)
                .into_tuple()
                .all(db)
                .await?;
            for chunk in affiliates.chunks(AFFILIATES_AT_ONCE) {
                deleted += scoped_delete::<click::Entity>(&tenant)
                    .filter(among(
                        backend,
                        click::Column::AffiliateId,
                        chunk.iter().cloned(),
                    ))
                    .filter(click::Column::CreatedAt.lt(cutoff))
                    .exec(db)
                    .await?
                    .rows_affected;
            }
        }
        Ok(deleted)
    }

    /// Postbacks the pipeline is done with, older than `cutoff`.
    async fn delete_old_postbacks(&self, cutoff: DateTime<Utc>) -> Result<u64, JobError> {
        let db = &self.store.conn;
        let backend = db.get_database_backend();
        let old: Vec<(TenantId, PostbackId)> = lookup::finished_postbacks_before(cutoff)
            .select_only()
            .columns([postback::Column::TenantId, postback::Column::Id])
            .limit(BATCH)
            .into_tuple()
            .all(db)
            .await?;
        let mut deleted = 0;
        for (tenant, ids) in by_tenant(old) {
            deleted += scoped_delete::<postback::Entity>(&tenant)
                .filter(among(backend, postback::Column::Id, ids))
                .exec(db)
                .await?
                .rows_affected;
        }
        Ok(deleted)
    }

    /// Deliveries that are over, older than `cutoff`, and their attempts.
    async fn delete_old_deliveries(&self, cutoff: DateTime<Utc>) -> Result<(u64, u64), JobError> {
        let db = &self.store.conn;
        let backend = db.get_database_backend();
        let old: Vec<(TenantId, DeliveryId)> = lookup::finished_deliveries_before(cutoff)
            .select_only()
            .columns([
                notification_delivery::Column::TenantId,
                notification_delivery::Column::Id,
            ])
            .limit(BATCH)
            .into_tuple()
            .all(db)
            .await?;
        let (mut deliveries, mut attempts) = (0, 0);
        for (tenant, ids) in by_tenant(old) {
            let txn = self.store.pipeline_txn().await?;
            attempts += scoped_delete::<notification_attempt::Entity>(&tenant)
                .filter(among(
                    backend,
                    notification_attempt::Column::DeliveryId,
                    ids.iter().cloned(),
                ))
                .exec(&txn)
                .await?
                .rows_affected;
            deliveries += scoped_delete::<notification_delivery::Entity>(&tenant)
                .filter(among(backend, notification_delivery::Column::Id, ids))
                .exec(&txn)
                .await?
                .rows_affected;
            txn.commit().await?;
        }
        Ok((deliveries, attempts))
    }
}

fn by_tenant<T>(rows: Vec<(TenantId, T)>) -> BTreeMap<TenantId, Vec<T>> {
    let mut out: BTreeMap<TenantId, Vec<T>> = BTreeMap::new();
    for (tenant, id) in rows {
        out.entry(tenant).or_default().push(id);
    }
    out
}
