//! One typed configuration: defaults, then `TRCKER_*` environment variables
//! (and `DATABASE_URL`), then command-line flags. Secrets are `secrecy`'s
//! `SecretString`, so they never print.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

/// A secret from the command line or the environment (its `Debug` prints no value).
fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "TRCKER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Directory for the embedded SQLite database and the operator token's hash.
    #[arg(long, env = "TRCKER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL; when unset, the embedded SQLite database is used.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret)]
    pub database_url: Option<SecretString>,
    /// Base of generated links and postback URLs (default: http://<listen address>).
    #[arg(long, env = "TRCKER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The operator token; when unset, one is generated at first start and printed once.
    #[arg(long, env = "TRCKER_OPERATOR_TOKEN", hide_env_values = true, value_parser = secret)]
    pub operator_token: Option<SecretString>,
    /// Let notifications reach loopback and private addresses (for local testing only).
    #[arg(long, env = "TRCKER_ALLOW_PRIVATE_TARGETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_private_targets: bool,
    /// Jobs of each kind run at once by this process's workers.
    #[arg(long, env = "TRCKER_WORKER_CONCURRENCY", default_value_t = 8)]
    pub worker_concurrency: usize,
    /// Repeat clicks of a visitor (same link, IP and user agent) within this many
    /// seconds are counted as raw clicks, not unique ones.
    #[arg(
        long,
        env = "TRCKER_UNIQUE_CLICK_WINDOW_SECS",
        default_value_t = 86_400
    )]
    pub unique_click_window_secs: u64,
    /// Days after which click IP addresses are erased (0: IP addresses are never stored).
    #[arg(long, env = "TRCKER_IP_RETENTION_DAYS", default_value_t = 30)]
    pub ip_retention_days: u32,
    /// Days clicks are kept (0: for ever); never fewer than a tenant's longest
    /// attribution window plus hold period.
    #[arg(long, env = "TRCKER_RETAIN_CLICKS_DAYS", default_value_t = 400)]
    pub retain_clicks_days: u32,
    /// Days postbacks are kept once the pipeline is done with them (0: for ever).
    #[arg(long, env = "TRCKER_RETAIN_POSTBACKS_DAYS", default_value_t = 400)]
    pub retain_postbacks_days: u32,
    /// Days notification deliveries and their attempts are kept once over (0: for ever).
    #[arg(long, env = "TRCKER_RETAIN_DELIVERIES_DAYS", default_value_t = 90)]
    pub retain_deliveries_days: u32,
    /// A fixed name for this process's workers (default: unique per process).
    #[arg(long, env = "TRCKER_WORKER_NAME")]
    pub worker_name: Option<String>,
    /// Load balancers and proxies (CIDR ranges, comma-separated) whose
    /// `Forwarded` / `X-Forwarded-For` headers name the client; from any other
    /// peer those headers are ignored.
    #[arg(long, env = "TRCKER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// PostgreSQL connections of this process's pool (the inbox writer has
    /// two more of its own).
    #[arg(long, env = "TRCKER_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
}

impl Config {
    /// Defaults for a data directory (used by tests and embedders).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: "127.0.0.1:0".into(),
            data_dir: data_dir.into(),
            database_url: None,
            public_url: None,
            operator_token: None,
            allow_private_targets: false,
            worker_concurrency: 8,
            unique_click_window_secs: 86_400,
            ip_retention_days: 30,
            retain_clicks_days: 400,
            retain_postbacks_days: 400,
            retain_deliveries_days: 90,
            worker_name: None,
            trusted_proxies: Vec::new(),
            db_connections: 16,
        }
    }

    /// The trusted proxies, parsed; a bad one is named.
    pub fn trusted_proxies(&self) -> Result<Vec<trcker_domain::protection::Cidr>, String> {
        self.trusted_proxies
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .map(|c| {
                trcker_domain::protection::Cidr::parse(c)
                    .map_err(|e| format!("TRCKER_TRUSTED_PROXIES: {e}"))
            })
            .collect()
    }

    pub fn database(&self) -> trcker_storage::DatabaseConfig {
        match &self.database_url {
            Some(url) => trcker_storage::DatabaseConfig::Postgres {
                url: url.expose_secret().to_owned(),
                max_connections: self.db_connections,
            },
            None => trcker_storage::Store::sqlite_in(&self.data_dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let mut config = Config::with_data_dir("/tmp/x");
        config.operator_token = Some(SecretString::from("op_very_secret_token"));
        config.database_url = secret("postgres://trcker:hunter2@db/trcker").ok();
        let shown = format!("{config:?}");
        assert!(!shown.contains("op_very_secret_token"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(matches!(
            config.database(),
            trcker_storage::DatabaseConfig::Postgres { url, .. } if url.ends_with("hunter2@db/trcker")
        ));
    }
}
