//! What the sweepers and the workers' watchdog do with apalis's tables
//! directly: hand back the jobs of dead or wedged workers, prune finished
//! jobs, and tell a backlog from a lost job.

use crate::{Pool, StorageError};

use super::JobQueue;

impl JobQueue {
    /// Hands back the queue jobs held by workers of these names: called when a
    /// process starts workers under a fixed name, whose earlier holder (the same
    /// name) can only be a process that died. Without this, a worker restarted
    /// under its old name would keep its predecessor's jobs "running" for good,
    /// since its own heartbeat keeps the name fresh. Returns how many.
    pub async fn release_jobs_of_workers(&self, names: &[String]) -> Result<u64, StorageError> {
        let mut released = 0;
        for name in names {
            released += match &self.pool {
                Pool::Sqlite(pool) => sqlx::query(
                    "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL \
                     WHERE lock_by = ?1 AND status IN ('Running', 'Queued')",
                )
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected(),
                Pool::Postgres(pool) => sqlx::query(
                    "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL \
                     WHERE lock_by = $1 AND status IN ('Running', 'Queued')",
                )
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected(),
            };
        }
        Ok(released)
    }

    /// Which of these workers have not heartbeaten for `secs` seconds.
    pub async fn silent_workers(
        &self,
        names: &[String],
        secs: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut silent = Vec::new();
        for name in names {
            let quiet: Option<bool> = match &self.pool {
                Pool::Sqlite(pool) => {
                    sqlx::query_scalar(
                        "SELECT strftime('%s', 'now') - last_seen >= ?2 FROM Workers WHERE id = ?1",
                    )
                    .bind(name)
                    .bind(secs)
                    .fetch_optional(pool)
                    .await?
                }
                Pool::Postgres(pool) => {
                    sqlx::query_scalar(
                        "SELECT last_seen < NOW() - make_interval(secs => $2) FROM apalis.workers WHERE id = $1",
                    )
                    .bind(name)
                    .bind(secs as f64)
                    .fetch_optional(pool)
                    .await?
                }
            };
            if quiet == Some(true) {
                silent.push(name.clone());
            }
        }
        Ok(silent)
    }

    /// Hands back the queue jobs held by workers whose heartbeat is older than
    /// `stale_secs` (their process died), and jobs locked more than `stuck_secs`
    /// ago whoever holds them: no Trcker job runs that long (a notification call
    /// times out after 10 s), so such a job was lost inside a live process (a
    /// worker whose fetch broke mid-way, when the database restarted, is
    /// restarted under the same name and keeps heartbeating). apalis recovers
    /// dead workers' jobs too; this pass, run by Trcker's sweepers, bounds the
    /// recovery time whatever apalis does. A job handed back runs again and
    /// changes nothing (every job effect is keyed). Returns how many.
    pub async fn release_orphaned_jobs(
        &self,
        stale_secs: i64,
        stuck_secs: i64,
    ) -> Result<u64, StorageError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(
                "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL \
                 WHERE status IN ('Running', 'Queued') AND (lock_by IN \
                 (SELECT id FROM Workers WHERE strftime('%s', 'now') - last_seen >= ?1) \
                 OR strftime('%s', 'now') - lock_at >= ?2)",
            )
            .bind(stale_secs)
            .bind(stuck_secs)
            .execute(pool)
            .await?
            .rows_affected(),
            Pool::Postgres(pool) => sqlx::query(
                "UPDATE apalis.jobs j SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL \
                 WHERE j.status IN ('Running', 'Queued') \
                 AND (j.lock_at < NOW() - make_interval(secs => $2) \
                 OR EXISTS (SELECT 1 FROM apalis.workers w WHERE w.id = j.lock_by \
                 AND w.last_seen < NOW() - make_interval(secs => $1)))",
            )
            .bind(stale_secs as f64)
            .bind(stuck_secs as f64)
            .execute(pool)
            .await?
            .rows_affected(),
        })
    }

    /// Deletes queue jobs that finished well (`Done`) more than `older_than_secs`
    /// ago, at most 10,000 per call. Trcker's own tables are the record of what
    /// happened (postback log, conversions, deliveries and attempts); a job's
    /// effects are keyed, so a job pushed again after its row is gone runs again
    /// and changes nothing. Without this, apalis-sqlite's acknowledgement, which
    /// visits every job a worker ever locked, slows down as the table grows.
    /// Failed jobs are kept for inspection. Returns how many were deleted.
    pub async fn prune_done_jobs(&self, older_than_secs: i64) -> Result<u64, StorageError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(
                "DELETE FROM Jobs WHERE rowid IN (SELECT rowid FROM Jobs WHERE status = 'Done' \
                 AND done_at IS NOT NULL AND done_at < strftime('%s', 'now') - ?1 LIMIT 10000)",
            )
            .bind(older_than_secs)
            .execute(pool)
            .await?
            .rows_affected(),
            Pool::Postgres(pool) => sqlx::query(
                "DELETE FROM apalis.jobs WHERE id IN (SELECT id FROM apalis.jobs WHERE status = 'Done' \
                 AND done_at < NOW() - make_interval(secs => $1) LIMIT 10000)",
            )
            .bind(older_than_secs as f64)
            .execute(pool)
            .await?
            .rows_affected(),
        })
    }

    /// When the oldest job of a queue that has not finished (waiting, fetched
    /// or running) was queued, if there is one. The sweepers use it to tell a
    /// postback or delivery that lost its job from one whose job is simply
    /// still waiting behind others.
    pub async fn oldest_open_job(
        &self,
        queue: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MIN(run_at) FROM Jobs WHERE job_type = ?1 \
                 AND status IN ('Pending', 'Queued', 'Running')",
            )
            .bind(queue)
            .fetch_one(pool)
            .await?
            .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0)),
            Pool::Postgres(pool) => {
                sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
                    "SELECT MIN(run_at) FROM apalis.jobs WHERE job_type = $1 \
                 AND status IN ('Pending', 'Queued', 'Running')",
                )
                .bind(queue)
                .fetch_one(pool)
                .await?
            }
        })
    }

    /// Jobs waiting to run (pending, not yet fetched) in each of `queues`.
    pub async fn depths(
        &self,
        queues: &[&'static str],
    ) -> Result<Vec<(&'static str, i64)>, StorageError> {
        let counted: Vec<(String, i64)> = match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT job_type, COUNT(*) FROM Jobs WHERE status = 'Pending' GROUP BY job_type",
                )
                .fetch_all(pool)
                .await?
            }
            Pool::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT job_type, COUNT(*) FROM apalis.jobs WHERE status = 'Pending' GROUP BY job_type",
                )
                .fetch_all(pool)
                .await?
            }
        };
        Ok(queues
            .iter()
            .map(|q| {
                let n = counted.iter().find(|(t, _)| t == q).map_or(0, |(_, n)| *n);
                (*q, n)
            })
            .collect())
    }
}
