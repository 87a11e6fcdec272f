//! Trcker's workers: the apalis monitor that runs the pipeline's jobs, and the
//! sweeper loop.
//!
//! All job types are registered here, in one monitor, on the database the
//! process uses (SQLite or PostgreSQL). Each process names its workers uniquely
//! (host, pid and a random suffix) so that a crashed process's jobs are
//! recovered by the others once its heartbeat goes stale, and the monitor
//! restarts a worker that stopped on a database error.

mod jobs;
mod wake;

use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use tokio_util::sync::CancellationToken;
use trcker_services::Services;
use trcker_services::queue::{
    ATTRIBUTE_QUEUE, AttributeJob, COMMISSION_QUEUE, CommissionJob, NOTIFY_QUEUE, NotifyJob,
};
use trcker_storage::Pool;
use wake::{Pushes, WakeUp};

/// How often workers prove they are alive; a worker silent for twice this long
/// is presumed dead and its running jobs are handed to others.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often an idle worker looks for new jobs. PostgreSQL workers are also
/// woken by LISTEN/NOTIFY (see [`wake`]); the poll covers a notification
/// missed while the LISTEN connection was being opened again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The same on SQLite, whose workers are woken by this process's own pushes:
/// every fetch there takes the one write lock, even one that finds nothing.
pub const SQLITE_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the sweepers run.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs of each type run at once in this process.
    pub concurrency: usize,
    /// How long shutdown waits for jobs in flight.
    pub shutdown_timeout: Duration,
    /// A fixed name for this process's workers instead of a unique one. A process
    /// restarted under its old name takes its own orphaned jobs back at once.
    pub name: Option<String>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 8,
            shutdown_timeout: Duration::from_secs(15),
            name: None,
        }
    }
}

/// A name no other process uses: `<host>-<pid>-<random>`.
pub fn unique_worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "trcker".into());
    let suffix = trcker_domain::secret::random_alnum(6).to_ascii_lowercase();
    format!("{host}-{}-{suffix}", std::process::id())
}

fn sqlite_backend<T>(
    pool: &apalis_sqlite::SqlitePool,
    queue: &'static str,
    services: &Services,
) -> PollWith<SqliteStorage<T>, WakeUp<Pushes>> {
    let config = apalis_sqlite::Config::default()
        .queue(queue)
        .heartbeat_interval(HEARTBEAT)
        .batch_size(32);
    SqliteStorage::<T>::new(pool)
        .with_config(config)
        .poll_with_strategy(WakeUp::listening(
            Pushes::new(services.queue.pushed().subscribe(queue)),
            SQLITE_POLL_INTERVAL,
        ))
}

fn postgres_backend<T>(
    pool: &apalis_postgres::PgPool,
    queue: &str,
    _: &Services,
) -> PollWith<PostgresStorage<T>, WakeUp<apalis_postgres::Pubsub>> {
    let config = apalis_postgres::Config::default()
        .queue(queue)
        .heartbeat_interval(HEARTBEAT)
        .batch_size(32);
    let pubsub = apalis_postgres::Pubsub::new(pool.clone(), queue.to_owned());
    PostgresStorage::<T>::new(pool)
        .with_config(config)
        .poll_with_strategy(WakeUp::listening(pubsub, POLL_INTERVAL))
}

/// Registers one worker per job type, all on the same backend.
macro_rules! register_all {
    ($monitor:expr, $services:expr, $opts:expr, $name:expr, $backend:ident, $pool:expr) => {{
        let (services, opts, name, pool) = ($services, $opts, $name, $pool);
        $monitor
            .register({
                let (services, name, pool, c) = (
                    services.clone(),
                    name.clone(),
                    pool.clone(),
                    opts.concurrency,
                );
                move |_restarts| {
                    WorkerBuilder::new(format!("{name}-attribute"))
                        .backend($backend::<AttributeJob>(&pool, ATTRIBUTE_QUEUE, &services))
                        .data(services.clone())
                        .concurrency(c)
                        .parallelize(tokio::spawn)
                        .build(jobs::attribute)
                }
            })
            .register({
                let (services, name, pool, c) = (
                    services.clone(),
                    name.clone(),
                    pool.clone(),
                    opts.concurrency,
                );
                move |_restarts| {
                    WorkerBuilder::new(format!("{name}-commission"))
                        .backend($backend::<CommissionJob>(
                            &pool,
                            COMMISSION_QUEUE,
                            &services,
                        ))
                        .data(services.clone())
                        .concurrency(c)
                        .parallelize(tokio::spawn)
                        .build(jobs::commission)
                }
            })
            .register({
                let (services, name, pool, c) = (
                    services.clone(),
                    name.clone(),
                    pool.clone(),
                    opts.concurrency,
                );
                move |_restarts| {
                    WorkerBuilder::new(format!("{name}-notify"))
                        .backend($backend::<NotifyJob>(&pool, NOTIFY_QUEUE, &services))
                        .data(services.clone())
                        .concurrency(c * 4)
                        .parallelize(tokio::spawn)
                        .build(jobs::notify)
                }
            })
    }};
}

/// A worker of this process that has not heartbeaten for this long is wedged
/// (a busy worker still heartbeats well within it; no job runs this long): the
/// process's workers are replaced.
pub const WEDGED_AFTER: Duration = Duration::from_secs(45);

/// Runs the workers and the sweepers until `shutdown` is cancelled, then lets
/// jobs in flight finish (up to the shutdown timeout). A worker that stops
/// heartbeating inside this live process (its loop wedged, which the monitor
/// cannot see since nothing failed) is detected by a watchdog, and the workers
/// are started again; the sweepers hand its jobs to the new ones.
pub async fn run(
    services: Services,
    opts: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let sweeper = tokio::spawn(sweep_loop(services.clone(), shutdown.clone()));
    let result = loop {
        let name = opts.name.clone().unwrap_or_else(unique_worker_name);
        let names: Vec<String> = ["attribute", "commission", "notify"]
            .iter()
            .map(|q| format!("{name}-{q}"))
            .collect();
        if opts.name.is_some() {
            // A fixed name's earlier holder died: take its jobs back now.
            match services.store.release_jobs_of_workers(&names).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(worker = %name, jobs = n, "took back the jobs of this name's previous process")
                }
                Err(e) => {
                    tracing::warn!(worker = %name, error = %e, "could not take back this name's jobs")
                }
            }
        }
        tracing::info!(worker = %name, "workers starting");
        let monitor = Monitor::new()
            .should_restart(|ctx, err| {
                tracing::warn!(worker = %ctx.name(), error = %err, "worker stopped; restarting");
                true
            })
            .shutdown_timeout(opts.shutdown_timeout);
        let monitor = match services.store.pool.clone() {
            Pool::Sqlite(pool) => {
                register_all!(monitor, &services, &opts, &name, sqlite_backend, pool)
            }
            Pool::Postgres(pool) => {
                register_all!(monitor, &services, &opts, &name, postgres_backend, pool)
            }
        };
        let wedged = CancellationToken::new();
        let watchdog = tokio::spawn(watch(
            services.clone(),
            names,
            wedged.clone(),
            shutdown.clone(),
        ));
        let signal = {
            let (shutdown, wedged) = (shutdown.clone(), wedged.clone());
            async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = wedged.cancelled() => {}
                }
                Ok(())
            }
        };
        let result = monitor
            .run_with_signal(signal)
            .await
            .map_err(|e| e.to_string());
        watchdog.abort();
        if shutdown.is_cancelled() || !wedged.is_cancelled() {
            tracing::info!(worker = %name, "workers stopped");
            break result;
        }
        tracing::error!(worker = %name, "workers started again after one stopped heartbeating");
    };
    // A sweep pass in progress finishes (it stops between passes); aborting it
    // mid-query would hand its connection back in a broken state.
    if tokio::time::timeout(Duration::from_secs(5), sweeper)
        .await
        .is_err()
    {
        tracing::warn!("a sweep pass was still running at shutdown");
    }
    result
}

/// Cancels `wedged` when one of `names` has been silent for [`WEDGED_AFTER`].
async fn watch(
    services: Services,
    names: Vec<String>,
    wedged: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match services
            .store
            .silent_workers(&names, WEDGED_AFTER.as_secs() as i64)
            .await
        {
            Ok(silent) if !silent.is_empty() => {
                tracing::error!(
                    ?silent,
                    "a worker of this process stopped heartbeating; restarting the workers"
                );
                wedged.cancel();
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "worker watchdog could not read heartbeats"),
        }
    }
}

async fn sweep_loop(services: Services, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match services.sweep().await {
            Ok(r) if r != Default::default() => tracing::info!(?r, "sweep"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed; will try again"),
        }
    }
}
