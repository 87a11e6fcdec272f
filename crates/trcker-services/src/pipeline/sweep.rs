//! The sweepers: periodic passes that make the pipeline whole after crashes and
//! carry schedules longer than a job.
//!
//! - inbox: an accepted postback still `received` after a grace period gets its
//!   attribute job (the receiver crashed between commit and enqueue, or the
//!   enqueue failed), once every attribute job queued before it has finished:
//!   a backlog is not mistaken for lost jobs;
//! - retries: notification deliveries whose next attempt is due get their job;
//! - holds: conversions whose hold period is over are approved;
//! - click IP addresses older than the retention period are erased, and old
//!   clicks, postbacks and deliveries deleted ([`super::retention`]);
//! - statistics: the busiest tables are analyzed when their
//!   planner statistics are missing or stale (see
//!   `Store::refresh_planner_statistics`);
//! - the queue: jobs of dead or wedged workers are handed back, finished ones
//!   pruned.
//!
//! Every push carries an idempotency key, so sweepers in several worker
//! processes can run at once.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Duration, Utc};
use trcker_domain::ConversionStatus;
use trcker_storage::batch::among;
use trcker_storage::entities::*;
use trcker_storage::queue::Job;
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
use trcker_storage::{lookup, scoped, scoped_update, scoped_update_by_id};

use super::attribute::AttributeJob;
use super::commission::CommissionJob;
use super::notify::{NotifyItem, NotifyJob};
use super::{JobError, Pipeline};

/// How long an accepted postback may wait for its job before the sweeper queues it.
pub const INBOX_GRACE_SECS: i64 = 5;
/// Rows a pass takes of each backlog.
const BATCH: u64 = 500;
/// Jobs of a worker silent this long are handed back (workers heartbeat every 5 s).
pub const ORPHAN_AFTER_SECS: i64 = 15;
/// Jobs locked this long are handed back whoever holds them: no job runs this
/// long, so one locked this long was lost inside a live process.
pub const STUCK_AFTER_SECS: i64 = 60;
/// Finished jobs are deleted this long after they finished.
pub const KEEP_DONE_JOBS_SECS: i64 = 5;
/// The IP retention sweep runs at most this often (seconds).
const IP_SWEEP_EVERY_SECS: i64 = 60;
/// Affiliates whose clicks one UPDATE of the IP retention sweep walks.
const IP_SWEEP_AFFILIATES: usize = 256;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub postbacks: usize,
    pub deliveries: usize,
    pub approved: usize,
    pub ips_erased: u64,
    pub orphaned_jobs: u64,
    pub pruned_jobs: u64,
    /// Tables whose planner statistics were refreshed.
    pub analyzed: usize,
    /// What retention deleted.
    pub retention: super::retention::Deleted,
}

impl Pipeline {
    /// One pass of every sweeper.
    pub async fn sweep(&self) -> Result<SweepReport, JobError> {
        let t = Utc::now();
        Ok(SweepReport {
            postbacks: self.requeue_postbacks(t).await?,
            deliveries: self.queue_due_deliveries(t).await?,
            approved: self.approve_held(self.settings.clock.now()).await?,
            ips_erased: self.erase_old_ips(t).await?,
            retention: self.retention_pass(t).await?,
            analyzed: self.store.refresh_planner_statistics().await?.len(),
            orphaned_jobs: self
                .queue
                .release_orphaned_jobs(ORPHAN_AFTER_SECS, STUCK_AFTER_SECS)
                .await?,
            pruned_jobs: self.queue.prune_done_jobs(KEEP_DONE_JOBS_SECS).await?,
        })
    }

    /// Queues the attribute job of each accepted postback that lost its own.
    async fn requeue_postbacks(&self, t: DateTime<Utc>) -> Result<usize, JobError> {
        // A postback whose job is still queued behind others is not lost: only
        // postbacks older than every open attribute job (by the grace) are.
        let cutoff = self.sweep_cutoff(AttributeJob::QUEUE, t).await?;
        let stale = lookup::received_postbacks_before(cutoff)
            .limit(BATCH)
            .all(&self.store.conn)
            .await?;
        let jobs: Vec<AttributeJob> = stale
            .iter()
            .map(|p| match p.processed_at {
                // A re-attributed postback was processed before: its new job
                // is keyed by that time (as the tenant's request keyed it).
                Some(_) => AttributeJob::again(p.tenant_id.clone(), p),
                None => AttributeJob::one(p.tenant_id.clone(), p.id.clone()),
            })
            .collect();
        self.queue.push_all(&jobs).await?;
        Ok(jobs.len())
    }

    /// Queues the notification attempts that are due: retries, attempts put
    /// off, and first attempts whose job was lost.
    async fn queue_due_deliveries(&self, t: DateTime<Utc>) -> Result<usize, JobError> {
        let first_cutoff = self.sweep_cutoff(NotifyJob::QUEUE, t).await?;
        // Retries are due by the clock their schedule was made by.
        let due = lookup::due_deliveries(self.settings.clock.now())
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
        self.queue.push_all(&jobs).await?;
        Ok(jobs.len())
    }

    /// Approves conversions whose hold period is over, and queues their
    /// commission step (its key makes it once).
    async fn approve_held(&self, t: DateTime<Utc>) -> Result<usize, JobError> {
        use conversion::Column as C;
        let pending = conversion::Status(ConversionStatus::Pending);
        let held = lookup::held_conversions_due(t)
            .limit(BATCH)
            .all(&self.store.conn)
            .await?;
        let mut approved = 0;
        for conv in held {
            let moved = scoped_update_by_id::<conversion::Entity>(&conv.tenant_id, &conv.id)
                .col_expr(
                    C::Status,
                    Expr::value(conversion::Status(ConversionStatus::Approved)),
                )
                .col_expr(C::HoldUntil, Expr::value(Option::<DateTime<Utc>>::None))
                .col_expr(C::UpdatedAt, Expr::value(t))
                .filter(C::Status.eq(pending))
                .filter(C::HoldUntil.is_not_null())
                .exec(self.store.writer())
                .await?;
            if moved.rows_affected == 1 {
                approved += 1;
            }
            // Queued whether or not this pass moved it: the key makes it once.
            self.queue
                .push(&CommissionJob::one(
                    conv.tenant_id,
                    conv.id,
                    ConversionStatus::Approved,
                ))
                .await?;
        }
        Ok(approved)
    }

    /// Rows created before this time whose job cannot be found are lost: older
    /// than the grace period, and older (by the grace) than every job of the
    /// queue still open, since their job was queued right after they were made.
    async fn sweep_cutoff(&self, queue: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, JobError> {
        let grace = Duration::seconds(INBOX_GRACE_SECS);
        Ok(match self.queue.oldest_open_job(queue).await? {
            Some(since) => (t - grace).min(since - grace),
            None => t - grace,
        })
    }

    /// Erases click IP addresses older than the retention period (at most once a
    /// minute). Each pass after the first looks only at the clicks that aged
    /// past the period since the previous pass (from a second before its
    /// cutoff: its time is kept in whole seconds).
    async fn erase_old_ips(&self, t: DateTime<Utc>) -> Result<u64, JobError> {
        let last = self.last_ip_sweep.load(Ordering::Relaxed);
        if t.timestamp() - last < IP_SWEEP_EVERY_SECS {
            return Ok(0);
        }
        let retention = self.ip_retention();
        let since = (last > 0)
            .then(|| DateTime::from_timestamp(last, 0))
            .flatten()
            .map(|previous| previous - retention);
        let erased = self.erase_click_ips(since, t - retention).await?;
        self.last_ip_sweep.store(t.timestamp(), Ordering::Relaxed);
        Ok(erased)
    }

    /// Erases the IP address of every click older than the retention period.
    pub async fn erase_expired_click_ips(&self) -> Result<u64, JobError> {
        self.erase_click_ips(None, Utc::now() - self.ip_retention())
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
        since: Option<DateTime<Utc>>,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, JobError> {
        let db = &self.store.conn;
        let backend = db.get_database_backend();
        let tenants = lookup::all_tenant_ids(db).await?;
        let mut erased = 0;
        for tenant in tenants {
            let affiliates: Vec<String> = scoped::<affiliate::Entity>(&tenant)
                .select_only()
                .column(affiliate::Column::Id)
                .into_tuple()
                .all(db)
                .await?;
            for chunk in affiliates.chunks(IP_SWEEP_AFFILIATES) {
                let mut update = scoped_update::<click::Entity>(&tenant)
                    .col_expr(click::Column::Ip, Expr::value(Option::<String>::None))
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
