//! The operator's commands: `check`, `config`, `backup`, `tenant`, `api-key`
//! and `seed`. Each takes the layered configuration, opens the database it
//! names (never creating one), does one thing, prints what it did, and
//! exits; a failure is one line and a non-zero exit.

pub mod backup;
pub mod check;
pub mod seed;
pub mod tenants;

use trcker_services::auth::Caller;
use trcker_services::{Services, Settings};
use trcker_storage::Store;

use crate::config::Config;
use crate::{AppError, ExposeSecret};

/// The database flags of the operator's commands; everything else comes from
/// the configuration file and the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseFlags {
    /// Configuration file (default: ./trcker.toml if it exists).
    #[arg(long = "config", value_name = "FILE")]
    pub config_file: Option<std::path::PathBuf>,
    /// Directory of the embedded SQLite database [env: TRCKER_DATA_DIR].
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// PostgreSQL URL instead of SQLite [env: DATABASE_URL].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

impl DatabaseFlags {
    /// The effective configuration, these flags over the file and the
    /// environment.
    pub fn load(&self) -> Result<crate::config::Loaded, Vec<String>> {
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        Config::load_with(&[
            ("config", path(&self.config_file)),
            ("data-dir", path(&self.data_dir)),
            ("database-url", self.database_url.clone()),
        ])
    }
}

/// Opens the configured database, which must exist already: an SQLite file
/// that is not there is named rather than created.
pub async fn open_existing(config: &Config) -> Result<Store, AppError> {
    if config.database_url.is_none() {
        let path = config.data_dir.join("trcker.db");
        if !path.exists() {
            return Err(AppError::Config(format!(
                "no database at {} (trcker serve or trcker migrate creates it; --data-dir names another)",
                path.display()
            )));
        }
    }
    Ok(Store::open(&config.database()).await?)
}

/// The services on the configured database, whose schema must be current,
/// for commands that act as the operator.
pub async fn operator_services(config: &Config) -> Result<Services, AppError> {
    let store = open_existing(config).await?;
    let pending = store.pending_migrations().await?;
    if !pending.is_empty() {
        return Err(AppError::Config(format!(
            "the database's schema is older than this version ({} migrations to run): run trcker migrate first",
            pending.len()
        )));
    }
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let token_hash = config
        .operator_token
        .as_ref()
        .map(|t| crate::sha256_hex(t.expose_secret()))
        .unwrap_or_default();
    Ok(Services::new(
        store,
        Settings {
            allow_private_targets: config.allow_private_targets,
            ..Settings::new(public_url, token_hash)
        },
    )?)
}

/// Whoever can run these commands holds the database: the operator.
pub const OPERATOR: Caller = Caller::Operator;

/// Closes the services' writers and the database.
pub async fn close(services: Services) {
    services.intake.close().await;
    services.store.close().await;
}
