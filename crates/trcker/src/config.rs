//! One typed configuration from four layers, each over the one before:
//! defaults, the configuration file (TOML: the one `--config` or
//! `TRCKER_CONFIG` names, else `./trcker.toml` if it exists), the `TRCKER_*`
//! environment variables (and `DATABASE_URL`), then command-line flags.
//! [`Loaded`] keeps where each value came from, for `trcker config`; every
//! problem found at startup is one line naming the value and its source.
//! Secrets are `secrecy`'s `SecretString`, so they never print.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use secrecy::{ExposeSecret, SecretString};

/// A secret from the command line or the environment (its `Debug` prints no value).
fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

/// The configuration file read when none is named.
pub const DEFAULT_FILE: &str = "trcker.toml";

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Configuration file (TOML, keys as the flags' long names with `_`;
    /// default: ./trcker.toml if it exists).
    #[arg(long = "config", env = "TRCKER_CONFIG", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "TRCKER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Serve /metrics on this address of its own instead (kept off the
    /// public listener, e.g. 127.0.0.1:9464 or an internal interface).
    #[arg(long, env = "TRCKER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Directory for the embedded SQLite database and the operator token's hash.
    #[arg(long, env = "TRCKER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL; when unset, the embedded SQLite database is used.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret)]
    pub database_url: Option<SecretString>,
    /// PostgreSQL connections of this process's pool (the inbox writer has
    /// two more of its own).
    #[arg(long, env = "TRCKER_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
    /// Base of generated links and postback URLs (default: http://<listen address>).
    #[arg(long, env = "TRCKER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The operator token; when unset, one is generated at first start and printed once.
    #[arg(long, env = "TRCKER_OPERATOR_TOKEN", hide_env_values = true, value_parser = secret)]
    pub operator_token: Option<SecretString>,
    /// Load balancers and proxies (CIDR ranges, comma-separated) whose
    /// `Forwarded` / `X-Forwarded-For` headers name the client; from any other
    /// peer those headers are ignored.
    #[arg(long, env = "TRCKER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Let notifications reach loopback and private addresses (for local testing only).
    #[arg(long, env = "TRCKER_ALLOW_PRIVATE_TARGETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_private_targets: bool,
    /// Jobs of each kind run at once by this process's workers.
    #[arg(long, env = "TRCKER_WORKER_CONCURRENCY", default_value_t = 8)]
    pub worker_concurrency: usize,
    /// A fixed name for this process's workers (default: unique per process).
    #[arg(long, env = "TRCKER_WORKER_NAME")]
    pub worker_name: Option<String>,
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
    /// Failed authentications (API keys, postback secrets) an address may
    /// make in a minute before it is refused with 429 until the minute is over.
    #[arg(
        long,
        env = "TRCKER_AUTH_FAILURES_PER_MINUTE",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub auth_failures_per_minute: u32,
    /// Failed notification attempts in a row that disable an endpoint (the
    /// tenant enables it again through the admin API).
    #[arg(
        long,
        env = "TRCKER_ENDPOINT_FAILURE_LIMIT",
        default_value_t = trcker_services::pipeline::notify::DEFAULT_FAILURE_LIMIT,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub endpoint_failure_limit: u32,
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
    /// Which log lines are written (tracing's filter syntax, e.g. `info,trcker_services=debug`).
    #[arg(long, env = "TRCKER_LOG", default_value = "info,sqlx=warn")]
    pub log: String,
    /// Log lines as text for people, or one JSON object per line for log collectors.
    #[arg(
        long,
        env = "TRCKER_LOG_FORMAT",
        default_value = "text",
        value_name = "text|json"
    )]
    pub log_format: String,
}

/// Where a value of the effective configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// The effective configuration and where each of its values came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Each key (the file's name for it) with its source, in the order of
    /// [`Config::shown`].
    pub sources: Vec<(&'static str, Source)>,
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
}

impl Loaded {
    pub fn source(&self, key: &str) -> &Source {
        self.sources
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, s)| s)
            .unwrap_or(&Source::Default)
    }
}

/// The configuration as a command of its own, for commands that take only
/// some of its flags (the rest comes from the file and the environment).
#[derive(clap::Parser)]
#[command(name = "trcker")]
struct Standalone {
    #[command(flatten)]
    config: Config,
}

/// The configuration file's keys: the flags' long names with `_`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLayer {
    listen: Option<String>,
    metrics_listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    db_connections: Option<u32>,
    public_url: Option<String>,
    operator_token: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    allow_private_targets: Option<bool>,
    worker_concurrency: Option<usize>,
    worker_name: Option<String>,
    unique_click_window_secs: Option<u64>,
    ip_retention_days: Option<u32>,
    auth_failures_per_minute: Option<u32>,
    endpoint_failure_limit: Option<u32>,
    retain_clicks_days: Option<u32>,
    retain_postbacks_days: Option<u32>,
    retain_deliveries_days: Option<u32>,
    log: Option<String>,
    log_format: Option<String>,
}

/// Sets each value the file has and neither the environment nor a flag
/// overrides: `plain` fields take the value, `optional` ones `Some` of it,
/// `secret` ones a `SecretString`.
macro_rules! file_over_defaults {
    ($loaded:ident, $file:ident, $path:ident;
     plain: $($p:ident),*; optional: $($o:ident),*; secret: $($s:ident),*) => {
        $(if let Some(v) = $file.$p { $loaded.set_from_file(stringify!($p), $path, |c| c.$p = v); })*
        $(if let Some(v) = $file.$o { $loaded.set_from_file(stringify!($o), $path, |c| c.$o = Some(v)); })*
        $(if let Some(v) = $file.$s {
            $loaded.set_from_file(stringify!($s), $path, |c| c.$s = Some(SecretString::from(v)));
        })*
    };
}

impl Loaded {
    /// A value from the file, unless the environment or a flag set it.
    fn set_from_file(&mut self, key: &'static str, path: &Path, set: impl FnOnce(&mut Config)) {
        let Some(entry) = self.sources.iter_mut().find(|(k, _)| *k == key) else {
            return;
        };
        if entry.1 == Source::Default {
            set(&mut self.config);
            entry.1 = Source::File(path.to_owned());
        }
    }
}

impl Config {
    /// The effective configuration of a command that takes every flag of
    /// [`Config`] (`matches` are that command's): each problem is a line.
    pub fn load(matches: &ArgMatches) -> Result<Loaded, Vec<String>> {
        let config = Config::from_arg_matches(matches).map_err(|e| vec![first_line(&e)])?;
        let sources = Standalone::command()
            .get_arguments()
            .filter(|a| a.get_id() != "config_file")
            .map(|arg| {
                let id = arg.get_id().as_str();
                let key = Config::key_of(id);
                let source = match matches.value_source(id) {
                    Some(ValueSource::CommandLine) => {
                        Source::Flag(format!("--{}", arg.get_long().unwrap_or(id)))
                    }
                    Some(ValueSource::EnvVariable) => Source::Env(
                        arg.get_env()
                            .map(|e| e.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    ),
                    _ => Source::Default,
                };
                (key, source)
            })
            .collect();
        let mut loaded = Loaded {
            config,
            sources,
            file: None,
        };
        let (path, named) = match &loaded.config.config_file {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_FILE), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let file: FileLayer = toml::from_str(&text).map_err(|e| {
                    vec![format!(
                        "configuration file {}: {}",
                        path.display(),
                        e.message()
                    )]
                })?;
                let p = path.as_path();
                file_over_defaults!(loaded, file, p;
                    plain: listen, data_dir, db_connections, trusted_proxies,
                        allow_private_targets, worker_concurrency, unique_click_window_secs,
                        ip_retention_days, auth_failures_per_minute, endpoint_failure_limit,
                        retain_clicks_days,
                        retain_postbacks_days,
                        retain_deliveries_days, log, log_format;
                    optional: metrics_listen, public_url, worker_name;
                    secret: database_url, operator_token);
                loaded.file = Some(path);
            }
            Err(e) if !named && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(vec![format!("configuration file {}: {e}", path.display())]);
            }
        }
        let problems = loaded.problems();
        if problems.is_empty() {
            Ok(loaded)
        } else {
            Err(problems)
        }
    }

    /// The effective configuration from the file and the environment, with
    /// these flags over them (for the operator's commands, which take only
    /// the database's flags).
    pub fn load_with(flags: &[(&str, Option<String>)]) -> Result<Loaded, Vec<String>> {
        let mut argv = vec!["trcker".to_owned()];
        for (flag, value) in flags {
            if let Some(v) = value {
                argv.push(format!("--{flag}"));
                argv.push(v.clone());
            }
        }
        let matches = Standalone::command()
            .try_get_matches_from(argv)
            .map_err(|e| vec![first_line(&e)])?;
        Config::load(&matches)
    }

    /// The file's key of a flag's id (they are the same names).
    fn key_of(id: &str) -> &'static str {
        Config::KEYS
            .iter()
            .find(|k| **k == id)
            .copied()
            .unwrap_or("?")
    }

    /// Every key, in the order `trcker config` prints them.
    pub const KEYS: [&'static str; 20] = [
        "listen",
        "metrics_listen",
        "data_dir",
        "database_url",
        "db_connections",
        "public_url",
        "operator_token",
        "trusted_proxies",
        "allow_private_targets",
        "worker_concurrency",
        "worker_name",
        "unique_click_window_secs",
        "ip_retention_days",
        "auth_failures_per_minute",
        "endpoint_failure_limit",
        "retain_clicks_days",
        "retain_postbacks_days",
        "retain_deliveries_days",
        "log",
        "log_format",
    ];

    /// Each key with its value as `trcker config` prints it: secrets
    /// redacted (a database URL keeps everything but its password).
    pub fn shown(&self) -> Vec<(&'static str, String)> {
        let unset = || "(unset)".to_owned();
        let values = [
            self.listen.clone(),
            self.metrics_listen
                .clone()
                .unwrap_or_else(|| "(on listen)".to_owned()),
            self.data_dir.display().to_string(),
            self.database_url
                .as_ref()
                .map_or_else(unset, |u| redact_url(u.expose_secret())),
            self.db_connections.to_string(),
            self.public_url.clone().unwrap_or_else(unset),
            self.operator_token.as_ref().map_or_else(
                || "(generated at first start)".to_owned(),
                |_| "[redacted]".to_owned(),
            ),
            if self.trusted_proxies.is_empty() {
                "(none)".to_owned()
            } else {
                self.trusted_proxies.join(",")
            },
            self.allow_private_targets.to_string(),
            self.worker_concurrency.to_string(),
            self.worker_name.clone().unwrap_or_else(unset),
            self.unique_click_window_secs.to_string(),
            self.ip_retention_days.to_string(),
            self.auth_failures_per_minute.to_string(),
            self.endpoint_failure_limit.to_string(),
            self.retain_clicks_days.to_string(),
            self.retain_postbacks_days.to_string(),
            self.retain_deliveries_days.to_string(),
            self.log.clone(),
            self.log_format.clone(),
        ];
        Config::KEYS.into_iter().zip(values).collect()
    }

    /// Defaults for a data directory (used by tests and embedders).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            config_file: None,
            listen: "127.0.0.1:0".into(),
            metrics_listen: None,
            data_dir: data_dir.into(),
            database_url: None,
            db_connections: 16,
            public_url: None,
            operator_token: None,
            trusted_proxies: Vec::new(),
            allow_private_targets: false,
            worker_concurrency: 8,
            worker_name: None,
            unique_click_window_secs: 86_400,
            ip_retention_days: 30,
            auth_failures_per_minute: trcker_services::guard::MAX_FAILURES,
            endpoint_failure_limit: trcker_services::pipeline::notify::DEFAULT_FAILURE_LIMIT,
            retain_clicks_days: 400,
            retain_postbacks_days: 400,
            retain_deliveries_days: 90,
            log: "info,sqlx=warn".into(),
            log_format: "text".into(),
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

    /// Which database this is, for people: the SQLite file, or PostgreSQL's
    /// host and database (never its password).
    pub fn database_shown(&self) -> String {
        match &self.database_url {
            Some(url) => format!("PostgreSQL {}", redact_url(url.expose_secret())),
            None => format!("SQLite {}", self.data_dir.join("trcker.db").display()),
        }
    }
}

impl Loaded {
    /// What is wrong with the configuration, one line per problem, each
    /// naming the value and where it came from.
    fn problems(&self) -> Vec<String> {
        let c = &self.config;
        let mut out = Vec::new();
        let mut bad = |key: &'static str, why: String| {
            out.push(format!("{key} ({}): {why}", self.source(key)));
        };
        if !valid_listen(&c.listen) {
            bad(
                "listen",
                format!("'{}' is not a host:port address", c.listen),
            );
        }
        if let Some(m) = &c.metrics_listen {
            if !valid_listen(m) {
                bad(
                    "metrics_listen",
                    format!("'{m}' is not a host:port address"),
                );
            } else if *m == c.listen && !m.ends_with(":0") {
                bad(
                    "metrics_listen",
                    format!(
                        "'{m}' is the main listen address; leave it unset to serve /metrics there"
                    ),
                );
            }
        }
        if let Some(url) = &c.database_url {
            let url = url.expose_secret();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                bad(
                    "database_url",
                    "must be a postgres:// URL (leave it unset for the embedded SQLite database)"
                        .into(),
                );
            }
        }
        if c.db_connections < 2 {
            bad("db_connections", "must be at least 2".into());
        }
        if let Some(public) = &c.public_url {
            match url::Url::parse(public) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => {}
                _ => bad(
                    "public_url",
                    format!("'{public}' is not an http(s) URL without a query"),
                ),
            }
        }
        if let Some(token) = &c.operator_token
            && token.expose_secret().len() < 16
        {
            bad(
                "operator_token",
                "must be at least 16 characters long".into(),
            );
        }
        for proxy in c
            .trusted_proxies
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
        {
            if let Err(e) = trcker_domain::protection::Cidr::parse(proxy) {
                bad("trusted_proxies", e.to_string());
            }
        }
        if c.worker_concurrency == 0 {
            bad("worker_concurrency", "must be at least 1".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.log) {
            bad("log", format!("'{}' is not a log filter: {e}", c.log));
        }
        if !matches!(c.log_format.as_str(), "text" | "json") {
            bad(
                "log_format",
                format!("must be text or json, not '{}'", c.log_format),
            );
        }
        out
    }
}

/// `host:port`, `[v6]:port` or `ip:port`, with a port number.
fn valid_listen(listen: &str) -> bool {
    match listen.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// A URL with its password, if it has one, replaced.
fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("REDACTED"));
            }
            let mut shown = u.to_string();
            if u.query().is_some() {
                // Connection options may carry a password too.
                shown = format!("{}?REDACTED", shown.split('?').next().unwrap_or(""));
            }
            shown
        }
        Err(_) => "[redacted: not a URL]".to_owned(),
    }
}

/// A clap error as one line, without its usage block.
pub fn first_line(e: &clap::Error) -> String {
    // Its first paragraph: the message, and what it lists (the missing
    // arguments), without the tips and usage after it.
    let rendered = e.render().to_string();
    let line = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(args: &[&str]) -> ArgMatches {
        let mut argv = vec!["trcker"];
        argv.extend_from_slice(args);
        Standalone::command()
            .try_get_matches_from(argv)
            .expect("arguments")
    }

    #[test]
    fn secrets_never_print() {
        let mut config = Config::with_data_dir("/tmp/x");
        config.operator_token = Some(SecretString::from("op_very_secret_token"));
        config.database_url = secret("postgres://trcker:hunter2@db/trcker").ok();
        let shown = format!("{config:?} {:?}", config.shown());
        assert!(!shown.contains("op_very_secret_token"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://trcker:REDACTED@db/trcker"),
            "{shown}"
        );
        assert!(matches!(
            config.database(),
            trcker_storage::DatabaseConfig::Postgres { url, .. } if url.ends_with("hunter2@db/trcker")
        ));
    }

    #[test]
    fn every_flag_has_a_key_a_value_and_a_file_entry() {
        let ids: Vec<String> = Standalone::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| id != "config_file" && id != "help")
            .collect();
        assert_eq!(ids, Config::KEYS, "flags and keys in the same order");
        assert_eq!(Config::with_data_dir("d").shown().len(), Config::KEYS.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("every.toml");
        std::fs::write(
            &path,
            r#"
listen = "0.0.0.0:9000"
metrics_listen = "127.0.0.1:9464"
data_dir = "/var/lib/trcker"
database_url = "postgres://trcker:pw@db/trcker"
db_connections = 30
public_url = "https://track.example.com"
operator_token = "op_from_the_file_0123456789"
trusted_proxies = ["10.0.0.0/8"]
allow_private_targets = true
worker_concurrency = 4
worker_name = "w1"
unique_click_window_secs = 60
ip_retention_days = 7
auth_failures_per_minute = 100
endpoint_failure_limit = 7
retain_clicks_days = 500
retain_postbacks_days = 500
retain_deliveries_days = 30
log = "debug"
log_format = "json"
"#,
        )
        .expect("write");
        let path_arg = path.display().to_string();
        let loaded = Config::load(&matches(&["--config", &path_arg])).expect("loads");
        for (key, source) in &loaded.sources {
            assert_eq!(source, &Source::File(path.clone()), "{key}");
        }
        assert_eq!(loaded.config.db_connections, 30);
        assert_eq!(loaded.config.trusted_proxies, ["10.0.0.0/8"]);
        assert_eq!(loaded.config.log_format, "json");
    }

    #[test]
    fn flags_win_over_the_file_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "worker_concurrency = 4\nlisten = \"0.0.0.0:9000\"\n")
            .expect("write");
        let p = path.display().to_string();
        let loaded =
            Config::load(&matches(&["--config", &p, "--worker-concurrency", "2"])).expect("ok");
        assert_eq!(loaded.config.worker_concurrency, 2);
        assert_eq!(
            loaded.source("worker_concurrency"),
            &Source::Flag("--worker-concurrency".into())
        );
        assert_eq!(loaded.config.listen, "0.0.0.0:9000");
        assert_eq!(loaded.source("data_dir"), &Source::Default);

        std::fs::write(&path, "listn = \"0.0.0.0:9000\"\n").expect("write");
        let problems = Config::load(&matches(&["--config", &p])).expect_err("refused");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("unknown field `listn`"),
            "{problems:?}"
        );

        std::fs::write(&path, "worker_concurrency = \"many\"\n").expect("write");
        let problems = Config::load(&matches(&["--config", &p])).expect_err("refused");
        assert!(problems[0].contains("invalid type"), "{problems:?}");

        let missing = dir.path().join("absent.toml").display().to_string();
        let problems = Config::load(&matches(&["--config", &missing])).expect_err("refused");
        assert!(problems[0].contains("absent.toml"), "{problems:?}");
    }

    #[test]
    fn every_problem_is_one_line_naming_its_source() {
        let problems = Config::load(&matches(&[
            "--listen",
            "8080",
            "--public-url",
            "track.example.com",
            "--trusted-proxies",
            "10.0.0.0/33",
            "--worker-concurrency",
            "0",
            "--log-format",
            "xml",
            "--database-url",
            "mysql://db",
        ]))
        .expect_err("refused");
        assert_eq!(problems.len(), 6, "{problems:#?}");
        for (p, key) in problems.iter().zip([
            "listen",
            "database_url",
            "public_url",
            "trusted_proxies",
            "worker_concurrency",
            "log_format",
        ]) {
            assert!(p.starts_with(&format!("{key} (flag --")), "{p}");
            assert!(!p.contains('\n'), "{p}");
        }
    }
}
