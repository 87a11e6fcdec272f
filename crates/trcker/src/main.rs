//! `trcker`: multi-tenant affiliate tracking.
//!
//! `trcker serve` runs every role in one process (embedded SQLite by default,
//! PostgreSQL with `DATABASE_URL`); `trcker worker` runs workers only and
//! `trcker web` the HTTP roles only, for scale-out; `trcker migrate` brings the
//! schema up to date. The operator's commands (`check`, `config`, `backup`,
//! `tenant`, `api-key`, `seed`) live in `trcker::operator`.

use std::path::PathBuf;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use trcker::operator::{self, DatabaseFlags};
use trcker::{App, Config, ExposeSecret, Loaded, OperatorToken, Roles};

/// jemalloc for Rust's allocations: with the system allocator, malloc and free
/// were a large part of a loaded server's own CPU time (clicks handed from the
/// request threads to the click writer, batches built and dropped on other
/// threads; docs/benchmarks.md). SQLite's own allocations stay on the system
/// allocator: moving them too kept more memory at peak.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Prints a line of output; a closed stdout must not take the server down.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Writes one line of a failure; a closed stderr must not panic.
fn say_err(e: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "trcker: {e}");
}

/// Logs to stderr, filtered by `log`, as text for people or, with
/// `log_format = json`, one JSON object per line for log collectors (both
/// were checked when the configuration was loaded).
fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    // A log stream whose reader is gone (`trcker serve 2>&1 | tee log` after
    // Ctrl-C) loses lines, never the process: tracing's own report of a
    // failed write would panic on that same closed stderr.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false);
    if config.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
}

#[derive(Parser)]
#[command(
    name = "trcker",
    version,
    about = "Multi-tenant affiliate tracking: clicks, postbacks, commissions",
    long_about = "Multi-tenant affiliate tracking: clicks, postbacks, commissions.\n\n\
        Configuration comes from defaults, then a TOML file (--config, TRCKER_CONFIG, \
        or ./trcker.toml), then TRCKER_* environment variables, then flags; \
        `trcker config` shows the result and where each value came from."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role (admin API, receiver, portal, workers) in one process.
    Serve(Config),
    /// Run workers only (scale-out on PostgreSQL).
    Worker(Config),
    /// Run the admin API, receiver and portal without workers (scale-out on
    /// PostgreSQL, beside `trcker worker` processes).
    Web(Config),
    /// Bring the database schema up to date, then exit.
    Migrate(Config),
    /// Check the configuration and that the database and queue answer (for
    /// deploy scripts: exit 0 when they do).
    Check(Config),
    /// Print the effective configuration, secrets redacted, and where each
    /// value came from.
    Config(Config),
    /// Write an online, consistent copy of the SQLite database to FILE while
    /// Trcker serves (on PostgreSQL, use pg_dump).
    Backup {
        /// Where to write the copy (must not exist yet).
        file: PathBuf,
        #[command(flatten)]
        db: DatabaseFlags,
    },
    /// Create, list, suspend and resume tenants.
    #[command(subcommand)]
    Tenant(operator::tenants::TenantCommand),
    /// Create, list and revoke a tenant's API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(operator::tenants::ApiKeyCommand),
    /// Make a demo tenant with a month of clicks and sales, attributed and
    /// priced by the pipeline (--clicks and --conversions for large data sets).
    Seed(operator::seed::SeedArgs),
}

/// The arguments of the innermost subcommand (where a command's flags are).
fn innermost(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => innermost(sub),
        None => matches,
    }
}

/// A failure: one line, exit 1.
fn failed(e: impl std::fmt::Display) -> std::process::ExitCode {
    say_err(&e.to_string());
    std::process::ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            say_err(&format!(
                "{} (see trcker --help)",
                trcker::config::first_line(&e)
            ));
            return std::process::ExitCode::from(2);
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return failed(trcker::config::first_line(&e)),
    };
    let loaded = match &cli.command {
        Command::Backup { db, .. } => db.load(),
        Command::Tenant(cmd) => cmd.db().load(),
        Command::ApiKey(cmd) => cmd.db().load(),
        Command::Seed(args) => args.db.load(),
        _ => Config::load(innermost(&matches)),
    };
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(problems) => {
            for p in &problems {
                say_err(p);
            }
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut loaded = loaded;
    // An operator's command prints what it did; the server roles' routine log
    // lines would only bury that (TRCKER_LOG still chooses).
    let operator_command = matches!(
        cli.command,
        Command::Check(_)
            | Command::Backup { .. }
            | Command::Tenant(_)
            | Command::ApiKey(_)
            | Command::Seed(_)
    );
    if operator_command && *loaded.source("log") == trcker::config::Source::Default {
        loaded.config.log = "warn".to_owned();
    }
    init_logging(&loaded.config);
    let config = loaded.config.clone();
    let result = match cli.command {
        Command::Serve(_) => run(config, Roles::All).await,
        Command::Worker(_) => run(config, Roles::Workers).await,
        Command::Web(_) => run(config, Roles::Web).await,
        Command::Migrate(_) => trcker::migrate(&config).await.map(|_| {
            say!("schema is up to date");
        }),
        Command::Check(_) => {
            let (lines, ok) = operator::check::run(&loaded).await;
            for l in lines {
                say!("{l}");
            }
            if !ok {
                return std::process::ExitCode::FAILURE;
            }
            Ok(())
        }
        Command::Config(_) => {
            print_config(&loaded);
            Ok(())
        }
        Command::Backup { file, .. } => operator::backup::run(&config, &file)
            .await
            .map(|line| say!("{line}")),
        Command::Tenant(cmd) => operator::tenants::tenant(&config, cmd)
            .await
            .map(|lines| lines.iter().for_each(|l| say!("{l}"))),
        Command::ApiKey(cmd) => operator::tenants::api_key(&config, cmd)
            .await
            .map(|lines| lines.iter().for_each(|l| say!("{l}"))),
        Command::Seed(args) => operator::seed::run(config, args)
            .await
            .map(|lines| lines.iter().for_each(|l| say!("{l}"))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => failed(e),
    }
}

/// `trcker config`: each key, its value (secrets redacted) and its source.
fn print_config(loaded: &Loaded) {
    match &loaded.file {
        Some(f) => say!("# configuration file: {}", f.display()),
        None => say!(
            "# no configuration file (--config, TRCKER_CONFIG or ./{})",
            trcker::config::DEFAULT_FILE
        ),
    }
    for (key, value) in loaded.config.shown() {
        say!("{key:<26} = {value:<40} # {}", loaded.source(key));
    }
}

async fn run(config: Config, roles: Roles) -> Result<(), trcker::AppError> {
    let database = config.database_shown();
    let app = App::start(config, roles).await?;
    match app.addr {
        Some(addr) => {
            say!("Trcker is running on {database}");
            say!("  listening on   http://{addr}");
            say!("  public URL     {}", app.public_url);
            say!(
                "  admin API      {}/api/v1  (docs: {}/api/docs)",
                app.public_url,
                app.public_url
            );
        }
        None => say!("Trcker workers are running on {database}"),
    }
    if let Some(addr) = app.metrics_addr {
        say!("  metrics        http://{addr}/metrics");
    }
    match &app.operator_token {
        OperatorToken::Generated(token) => {
            say!("  operator token {}", token.expose_secret());
            say!(
                "                 (shown once; only its hash is kept. Set TRCKER_OPERATOR_TOKEN to choose your own.)"
            );
        }
        OperatorToken::FromEnvironment => say!("  operator token from TRCKER_OPERATOR_TOKEN"),
        OperatorToken::Stored if app.addr.is_some() => say!(
            "  operator token generated at first start (only its hash is kept; set TRCKER_OPERATOR_TOKEN to replace it)"
        ),
        OperatorToken::Stored => {}
    }
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing requests and jobs in flight");
        shutdown.cancel();
    });
    app.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
