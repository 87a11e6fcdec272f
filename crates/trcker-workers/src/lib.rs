//! Trcker's workers: the apalis monitor that runs the pipeline's jobs, and the
//! sweeper loop.
//!
//! Every job type of `trcker_services::pipeline::register_all` gets its
//! workers here, in one monitor, on the database the process uses (SQLite or
//! PostgreSQL, through the queue's backends in `trcker_storage::queue`). Each
//! process names its workers uniquely (host, pid and a random suffix) so that
//! a crashed process's jobs are recovered by the others once its heartbeat
//! goes stale, and the monitor restarts a worker that stopped on a database
//! error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use apalis::prelude::*;
use tokio_util::sync::CancellationToken;
use trcker_services::pipeline::{JobRegistry, Pipeline, PipelineJob, register_all};
use trcker_storage::Pool;
use trcker_storage::queue::{self, HEARTBEAT};

/// How often the sweepers run.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs of each type run at once in this process (notification calls four
    /// times as many).
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

/// The name of a job type's workers: the process's name and the queue's
/// (`<name>-attribute` for `trcker.attribute`).
fn worker_name<J: PipelineJob>(name: &str) -> String {
    let queue = J::QUEUE.strip_prefix("trcker.").unwrap_or(J::QUEUE);
    format!("{name}-{queue}")
}

/// How the workers wind down at shutdown.
///
/// apalis stops a worker by waiting for its jobs in flight and only then
/// polling its backend again. A backend step caught under way at that moment
/// (a batch of acknowledgements or a fetch, each a transaction) keeps its
/// connection, and on SQLite the write lock, until the jobs finish; a job that
/// needs to write waits for that lock, so neither moves until the monitor's
/// bound runs out. Winding down first avoids that: jobs already running finish
/// while the workers still run, and so while their backends are still polled;
/// a job fetched meanwhile is held without running and, once none runs any
/// more, handed back as failed (it runs again, here after a restart or at once
/// in another process). Only then are the workers stopped, with nothing left
/// that needs the database.
#[derive(Clone, Default)]
struct Drain(Arc<DrainState>);

#[derive(Default)]
struct DrainState {
    /// Jobs running their work now.
    running: AtomicUsize,
    /// Set when shutdown begins: no job starts its work after it.
    draining: AtomicBool,
    /// Woken when the last running job ends while draining.
    idle: tokio::sync::Notify,
    /// Cancelled when the held jobs are to be handed back.
    release: CancellationToken,
}

/// A running job, counted in [`DrainState::running`] until dropped.
struct Started(Drain);

impl Drop for Started {
    fn drop(&mut self) {
        let state = &self.0.0;
        if state.running.fetch_sub(1, Ordering::SeqCst) == 1
            && state.draining.load(Ordering::SeqCst)
        {
            state.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// Counts a job as running, or `None` once shutdown has begun. (Counting
    /// before looking at the flag means that either the job sees the flag or
    /// the wind-down sees the job.)
    fn start(&self) -> Option<Started> {
        let state = &self.0;
        state.running.fetch_add(1, Ordering::SeqCst);
        let started = Started(self.clone());
        if state.draining.load(Ordering::SeqCst) {
            return None;
        }
        Some(started)
    }

    /// Returns once the jobs held during shutdown are to be handed back.
    async fn held(&self) {
        self.0.release.cancelled().await;
    }

    /// Stops new work, waits up to `bound` for the running jobs, then hands
    /// back the held ones.
    async fn wind_down(&self, bound: Duration) {
        let state = &self.0;
        state.draining.store(true, Ordering::SeqCst);
        let idle = async {
            loop {
                let woken = state.idle.notified();
                let mut woken = std::pin::pin!(woken);
                woken.as_mut().enable();
                if state.running.load(Ordering::SeqCst) == 0 {
                    return;
                }
                woken.await;
            }
        };
        if tokio::time::timeout(bound, idle).await.is_err() {
            tracing::warn!(
                jobs = state.running.load(Ordering::SeqCst),
                "jobs still running {}s after shutdown began; stopping the workers anyway",
                bound.as_secs()
            );
        }
        state.release.cancel();
    }
}

/// How long the monitor gives its workers to stop once the wind-down is over
/// (their last acknowledgements, and handing back jobs fetched but not run).
const STOP_BOUND: Duration = Duration::from_secs(3);

/// Runs one job, timed and counted; an error has apalis run it again.
async fn handle<J: PipelineJob>(
    job: J,
    pipeline: Data<Pipeline>,
    drain: Data<Drain>,
) -> Result<(), BoxDynError> {
    let Some(_started) = drain.start() else {
        drain.held().await;
        tracing::debug!(job = %job.describe(), "job fetched during shutdown; handed back");
        return Err("the workers are stopping; the job runs again".into());
    };
    let started = std::time::Instant::now();
    let result = job.run(&pipeline).await;
    metrics::histogram!("trcker_job_duration_seconds", "job" => J::QUEUE)
        .record(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    metrics::counter!("trcker_jobs_total", "job" => J::QUEUE, "result" => outcome).increment(1);
    result.map_err(|e| {
        tracing::warn!(job = %job.describe(), error = %e, "job failed; will retry");
        e.into()
    })
}

/// Registers each job type's workers on the process's backend.
struct Workers {
    monitor: Monitor,
    pipeline: Pipeline,
    name: String,
    concurrency: usize,
    drain: Drain,
    /// The names registered, for the watchdog.
    names: Vec<String>,
}

impl JobRegistry for Workers {
    fn register<J: PipelineJob>(mut self) -> Self {
        let name = worker_name::<J>(&self.name);
        let (pipeline, c) = (self.pipeline.clone(), self.concurrency * J::CONCURRENCY);
        let (worker, drain) = (name.clone(), self.drain.clone());
        self.monitor = match self.pipeline.store().pool.clone() {
            Pool::Sqlite(pool) => {
                let pushed = self.pipeline.queue().pushed().clone();
                self.monitor.register(move |_restarts| {
                    WorkerBuilder::new(worker.clone())
                        .backend(queue::sqlite_backend::<J>(&pool, &pushed))
                        .data(pipeline.clone())
                        .data(drain.clone())
                        .concurrency(c)
                        .parallelize(tokio::spawn)
                        .build(handle::<J>)
                })
            }
            Pool::Postgres(pool) => self.monitor.register(move |_restarts| {
                WorkerBuilder::new(worker.clone())
                    .backend(queue::postgres_backend::<J>(&pool))
                    .data(pipeline.clone())
                    .data(drain.clone())
                    .concurrency(c)
                    .parallelize(tokio::spawn)
                    .build(handle::<J>)
            }),
        };
        self.names.push(name);
        self
    }
}

/// A worker of this process that has not heartbeaten for this long is wedged
/// (a busy worker still heartbeats well within it; no job runs this long): the
/// process's workers are replaced.
pub const WEDGED_AFTER: Duration = Duration::from_secs(45);

/// Runs the workers and the sweepers until `shutdown` is cancelled, then lets
/// jobs in flight finish (up to the shutdown timeout; see [`Drain`]). A worker that stops
/// heartbeating inside this live process (its loop wedged, which the monitor
/// cannot see since nothing failed) is detected by a watchdog, and the workers
/// are started again; the sweepers hand its jobs to the new ones.
pub async fn run(
    pipeline: Pipeline,
    opts: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let sweeper = tokio::spawn(sweep_loop(pipeline.clone(), shutdown.clone()));
    let result = loop {
        let name = opts.name.clone().unwrap_or_else(unique_worker_name);
        let monitor = Monitor::new()
            .should_restart(|ctx, err| {
                tracing::warn!(worker = %ctx.name(), error = %err, "worker stopped; restarting");
                true
            })
            .shutdown_timeout(STOP_BOUND);
        let drain = Drain::default();
        let Workers { monitor, names, .. } = register_all(Workers {
            monitor,
            pipeline: pipeline.clone(),
            name: name.clone(),
            concurrency: opts.concurrency,
            drain: drain.clone(),
            names: Vec::new(),
        });
        if opts.name.is_some() {
            // A fixed name's earlier holder died: take its jobs back now.
            match pipeline.queue().release_jobs_of_workers(&names).await {
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
        let wedged = CancellationToken::new();
        let watchdog = tokio::spawn(watch(
            pipeline.clone(),
            names,
            wedged.clone(),
            shutdown.clone(),
        ));
        let signal = {
            let (shutdown, wedged) = (shutdown.clone(), wedged.clone());
            let bound = opts.shutdown_timeout;
            async move {
                tokio::select! {
                    _ = shutdown.cancelled() => drain.wind_down(bound).await,
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
    pipeline: Pipeline,
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
        match pipeline
            .queue()
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

async fn sweep_loop(pipeline: Pipeline, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match pipeline.sweep().await {
            Ok(r) if r != Default::default() => tracing::info!(?r, "sweep"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed; will try again"),
        }
    }
}
