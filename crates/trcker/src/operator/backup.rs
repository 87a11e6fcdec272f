//! `trcker backup <file>`: an online, consistent copy of the embedded SQLite
//! database, taken while Trcker serves (readers and writers carry on; the
//! copy holds everything committed when it began, so every postback
//! acknowledged before then). On PostgreSQL the database's own tools do this
//! better: the command says which, and fails.

use std::path::Path;

use crate::AppError;
use crate::config::Config;

/// Writes the backup; the line to print on success.
pub async fn run(config: &Config, file: &Path) -> Result<String, AppError> {
    if config.database_url.is_some() {
        return Err(AppError::Config(format!(
            "{} is backed up with PostgreSQL's tools, not trcker: pg_dump --format=custom --file={} \"$DATABASE_URL\" (restore with pg_restore; see docs/operations.md)",
            config.database_shown(),
            file.display()
        )));
    }
    let store = super::open_existing(config).await?;
    let started = std::time::Instant::now();
    let result = store.backup_sqlite_into(file).await;
    store.close().await;
    result?;
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    Ok(format!(
        "backed up {} to {} ({:.1} MiB in {:.1} s); restore by stopping Trcker and putting the file in place of trcker.db (its -wal and -shm files removed)",
        config.database_shown(),
        file.display(),
        size as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    ))
}
