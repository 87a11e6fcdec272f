//! The sweepers: periodic passes that make the pipeline whole after crashes and
//! carry schedules longer than a job.
//!
//! - inbox: an accepted postback still `received` after a grace period gets its
//!   attribute job (the receiver crashed between commit and enqueue, or the
//!   enqueue failed), once every attribute job queued before it has finished:
//!   a backlog is not mistaken for lost jobs;
//! - retries: notification deliveries whose next attempt is due get their job;
//! - holds: conversions whose hold period is over are approved;
//! - statistics: on PostgreSQL, the busiest tables are analyzed when their
//!   planner statistics are missing or stale (see
//!   `Store::refresh_planner_statistics`).
//!
//! Every push carries an idempotency key, so sweepers in several worker
//! processes can run at once.

use chrono::Duration;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use trcker_storage::entities::*;
use trcker_storage::{TenantId, sea_orm};

use super::JobError;
use crate::Services;
use crate::queue::{
    ATTRIBUTE_QUEUE, AttributeJob, CommissionJob, NOTIFY_QUEUE, NotifyItem, NotifyJob,
};
use crate::util::{among, now};

/// How long an accepted postback may wait for its job before the sweeper queues it.
pub const INBOX_GRACE_SECS: i64 = 5;
const BATCH: u64 = 500;
/// Jobs of a worker silent this long are handed back (workers heartbeat every 5 s).
pub const ORPHAN_AFTER_SECS: i64 = 15;
/// Jobs locked this long are handed back whoever holds them: no job runs this
/// long, so one locked this long was lost inside a live process.
pub const STUCK_AFTER_SECS: i64 = 60;
/// Finished jobs are deleted this long after they finished.
pub const KEEP_DONE_JOBS_SECS: i64 = 5;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub postbacks: usize,
    pub deliveries: usize,
    pub approved: usize,
    pub ips_erased: u64,
    pub orphaned_jobs: u64,
    pub pruned_jobs: u64,
    /// Tables whose planner statistics were refreshed (PostgreSQL).
    pub analyzed: usize,
}

impl Services {
    pub async fn sweep(&self) -> Result<SweepReport, JobError> {
        let t = now();
        let mut report = SweepReport::default();

        // A postback whose job is still queued behind others is not lost: only
        // postbacks older than every open attribute job (by the grace) are.
        let cutoff = self.sweep_cutoff(ATTRIBUTE_QUEUE, t).await?;
        let stale = postback::Entity::find()
            .filter(postback::Column::State.eq("received"))
            .filter(postback::Column::CreatedAt.lt(cutoff))
            .order_by_asc(postback::Column::CreatedAt)
            .limit(BATCH)
            .all(&self.store.conn)
            .await?;
        let jobs: Vec<AttributeJob> = stale
            .into_iter()
            .map(|p| AttributeJob {
                // A re-attributed postback was processed before: its new job
                // is keyed by that time (as `Services::reattribute` keys it).
                retry: p.processed_at.map(|t| t.timestamp_millis()),
                ..AttributeJob::one(p.tenant_id, p.id)
            })
            .collect();
        report.postbacks = jobs.len();
        self.queue.push_all(&jobs).await?;

        let first_cutoff = self.sweep_cutoff(NOTIFY_QUEUE, t).await?;
        let due = notification_delivery::Entity::find()
            .filter(notification_delivery::Column::Status.eq("pending"))
            .filter(notification_delivery::Column::NextAttemptAt.lte(t))
            .order_by_asc(notification_delivery::Column::NextAttemptAt)
            .limit(BATCH)
            .all(&self.store.conn)
            .await?;
        let jobs: Vec<NotifyJob> = due
            .into_iter()
            .filter(|d| {
                d.attempts > 0 || d.next_attempt_at != d.created_at || d.created_at < first_cutoff
            })
            .map(|d| NotifyJob {
                // A first attempt never put off has the key its first push had.
                due: (d.next_attempt_at != d.created_at)
                    .then(|| d.next_attempt_at.timestamp_millis()),
                tenant_id: d.tenant_id,
                items: vec![NotifyItem {
                    delivery_id: d.id,
                    attempt: d.attempts,
                }],
            })
            .collect();
        report.deliveries = jobs.len();
        self.queue.push_all(&jobs).await?;

        let held = conversion::Entity::find()
            .filter(conversion::Column::Status.eq("pending"))
            .filter(conversion::Column::HoldUntil.lte(t))
            .limit(BATCH)
            .all(&self.store.conn)
            .await?;
        for conv in held {
            let moved = conversion::Entity::update_many()
                .col_expr(conversion::Column::Status, Expr::value("approved"))
                .col_expr(
                    conversion::Column::HoldUntil,
                    Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
                )
                .col_expr(conversion::Column::UpdatedAt, Expr::value(t))
                .filter(conversion::Column::TenantId.eq(&conv.tenant_id))
                .filter(conversion::Column::Id.eq(&conv.id))
                .filter(conversion::Column::Status.eq("pending"))
                .filter(conversion::Column::HoldUntil.is_not_null())
                .exec(&self.store.conn)
                .await?;
            if moved.rows_affected == 1 {
                report.approved += 1;
            }
            // Queued whether or not this pass moved it: the key makes it once.
            let tenant = TenantId::from_trusted(conv.tenant_id.clone());
            self.queue
                .push(&CommissionJob::one(tenant.to_string(), conv.id, "approved"))
                .await?;
        }
        report.ips_erased = self.erase_old_ips(t).await?;
        report.analyzed = self
            .store
            .refresh_planner_statistics()
            .await
            .map_err(|e| JobError(e.to_string()))?
            .len();
        report.orphaned_jobs = self
            .store
            .release_orphaned_jobs(ORPHAN_AFTER_SECS, STUCK_AFTER_SECS)
            .await
            .map_err(|e| JobError(e.to_string()))?;
        report.pruned_jobs = self
            .store
            .prune_done_jobs(KEEP_DONE_JOBS_SECS)
            .await
            .map_err(|e| JobError(e.to_string()))?;
        Ok(report)
    }

    /// Rows created before this time whose job cannot be found are lost: older
    /// than the grace period, and older (by the grace) than every job of the
    /// queue still open, since their job was queued right after they were made.
    async fn sweep_cutoff(
        &self,
        queue: &str,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Result<chrono::DateTime<chrono::Utc>, JobError> {
        let grace = Duration::seconds(INBOX_GRACE_SECS);
        let open = self
            .store
            .oldest_open_job(queue)
            .await
            .map_err(|e| JobError(e.to_string()))?;
        Ok(match open {
            Some(since) => (t - grace).min(since - grace),
            None => t - grace,
        })
    }

    /// Erases click IP addresses older than the retention period (at most once a
    /// minute). Each pass after the first looks only at the clicks that aged
    /// past the period since the previous pass (from a second before its
    /// cutoff: its time is kept in whole seconds).
    async fn erase_old_ips(&self, t: chrono::DateTime<chrono::Utc>) -> Result<u64, JobError> {
        use std::sync::atomic::Ordering;
        let last = self.click_state.last_ip_sweep.load(Ordering::Relaxed);
        if t.timestamp() - last < 60 {
            return Ok(0);
        }
        let retention = self.ip_retention();
        let since = (last > 0)
            .then(|| chrono::DateTime::from_timestamp(last, 0))
            .flatten()
            .map(|previous| previous - retention);
        let erased = self.erase_click_ips(since, t - retention).await?;
        self.click_state
            .last_ip_sweep
            .store(t.timestamp(), Ordering::Relaxed);
        Ok(erased)
    }

    /// Erases the IP address of every click older than the retention period.
    pub async fn erase_expired_click_ips(&self) -> Result<u64, JobError> {
        self.erase_click_ips(None, now() - self.ip_retention())
            .await
    }

    /// How long click IP addresses are kept.
    fn ip_retention(&self) -> Duration {
        Duration::days(self.settings.ip_retention_days.into())
    }

    /// Erases the IP addresses of clicks made in `[since, cutoff)`, tenant by
    /// tenant and, within a tenant, a few hundred affiliates at a time: each
    /// walk is a range of the clicks-by-affiliate index (`tenant_id,
    /// affiliate_id, created_at`), the only index clicks keep besides their
    /// key, so that each click insert updates as few as it can. Every click
    /// names one of its tenant's affiliates, and affiliates are never deleted.
    async fn erase_click_ips(
        &self,
        since: Option<chrono::DateTime<chrono::Utc>>,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, JobError> {
        let db = &self.store.conn;
        let backend = db.get_database_backend();
        let tenants: Vec<String> = tenant::Entity::find()
            .select_only()
            .column(tenant::Column::Id)
            .into_tuple()
            .all(db)
            .await?;
        let mut erased = 0;
        for tenant_id in tenants {
            let affiliates: Vec<String> = affiliate::Entity::find()
                .select_only()
                .column(affiliate::Column::Id)
                .filter(affiliate::Column::TenantId.eq(&tenant_id))
                .into_tuple()
                .all(db)
                .await?;
            for chunk in affiliates.chunks(256) {
                let mut update = click::Entity::update_many()
                    .col_expr(click::Column::Ip, Expr::value(Option::<String>::None))
                    .filter(click::Column::TenantId.eq(&tenant_id))
                    .filter(among(
                        backend,
                        click::Column::AffiliateId,
                        chunk.iter().cloned(),
                    ))
                    .filter(click::Column::CreatedAt.lt(cutoff))
                    .filter(click::Column::Ip.is_not_null());
                if let Some(since) = since {
                    update = update.filter(click::Column::CreatedAt.gte(since));
                }
                erased += update.exec(db).await?.rows_affected;
            }
        }
        Ok(erased)
    }
}
