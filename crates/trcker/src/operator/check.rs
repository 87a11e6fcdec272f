//! `trcker check`: whether this configuration can run, for deploy scripts:
//! the configuration is valid (it was loaded), the database answers, the job
//! queue's tables answer, and the schema's state is said. Exit 0 when the
//! database and queue answer; pending migrations are reported, not failed
//! (the first start, or `trcker migrate`, runs them).

use trcker_storage::queue::{Job, JobQueue};

use crate::config::Loaded;

/// One line per check, and whether every check held.
pub async fn run(loaded: &Loaded) -> (Vec<String>, bool) {
    let config = &loaded.config;
    let mut lines = vec![match &loaded.file {
        Some(f) => format!("configuration  ok (file {})", f.display()),
        None => "configuration  ok (no file; defaults and environment)".to_owned(),
    }];
    let store = match super::open_existing(config).await {
        Ok(store) => store,
        Err(e) => {
            lines.push(format!(
                "database       FAILED: {}: {e}",
                config.database_shown()
            ));
            return (lines, false);
        }
    };
    let mut ok = true;
    if store.ping().await {
        lines.push(format!("database       ok ({})", config.database_shown()));
    } else {
        ok = false;
        lines.push(format!(
            "database       FAILED: {} does not answer",
            config.database_shown()
        ));
    }
    match store.pending_migrations().await {
        Ok(p) if p.is_empty() => lines.push("schema         up to date".to_owned()),
        Ok(p) => lines.push(format!(
            "schema         {} migrations to run (trcker migrate, or the first start, runs them): {}",
            p.len(),
            p.join(", ")
        )),
        Err(e) => {
            ok = false;
            lines.push(format!("schema         FAILED: {e}"));
        }
    }
    let queue = JobQueue::new(store.pool.clone());
    let queued = queue
        .oldest_open_job(trcker_services::pipeline::attribute::AttributeJob::QUEUE)
        .await;
    match queued {
        Ok(_) => lines.push("queue          ok".to_owned()),
        Err(e) => {
            ok = false;
            lines.push(format!(
                "queue          FAILED: {e} (trcker migrate creates the queue's tables)"
            ));
        }
    }
    store.close().await;
    (lines, ok)
}
