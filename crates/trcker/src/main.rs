//! `trcker`: multi-tenant affiliate tracking.
//!
//! `trcker serve` runs every role in one process (embedded SQLite by default,
//! PostgreSQL with `DATABASE_URL`); `trcker worker` runs workers only and
//! `trcker web` the HTTP roles only, for scale-out; `trcker migrate` brings the
//! schema up to date.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use trcker::{App, Config, ExposeSecret, OperatorToken, Roles};

/// jemalloc for Rust's allocations: with the system allocator, malloc and free
/// were a large part of a loaded server's own CPU time (clicks handed from the
/// request threads to the click writer, batches built and dropped on other
/// threads; docs/benchmarks.md). SQLite's own allocations stay on the system
/// allocator: moving them too kept more memory at peak.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Prints a banner line; a closed stdout must not take the server down.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Writes the one line of a failed start; a closed stderr must not panic.
fn say_err(e: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "trcker: {e}");
}

/// Logs to stderr, filtered by `TRCKER_LOG`, as text for people or, with
/// `TRCKER_LOG_FORMAT=json`, one JSON object per line for log collectors.
fn init_logging() -> Result<(), String> {
    let filter =
        EnvFilter::try_from_env("TRCKER_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // A log stream whose reader is gone (`trcker serve 2>&1 | tee log` after
    // Ctrl-C) loses lines, never the process: tracing's own report of a
    // failed write would panic on that same closed stderr.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match std::env::var("TRCKER_LOG_FORMAT").as_deref() {
        Err(_) | Ok("") | Ok("text") => logs.init(),
        Ok("json") => logs.json().init(),
        Ok(other) => {
            return Err(format!(
                "TRCKER_LOG_FORMAT must be text or json, not '{other}'"
            ));
        }
    }
    Ok(())
}

#[derive(Parser)]
#[command(
    name = "trcker",
    version,
    about = "Multi-tenant affiliate tracking: clicks, postbacks, commissions"
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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if let Err(e) = init_logging() {
        say_err(&e);
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => run(config, Roles::All).await,
        Command::Worker(config) => run(config, Roles::Workers).await,
        Command::Web(config) => run(config, Roles::Web).await,
        Command::Migrate(config) => trcker::migrate(&config).await.map(|_| {
            say!("schema is up to date");
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            say_err(&e.to_string());
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, roles: Roles) -> Result<(), trcker::AppError> {
    let database = if config.database_url.is_some() {
        "PostgreSQL (DATABASE_URL)".to_owned()
    } else {
        format!("SQLite {}", config.data_dir.join("trcker.db").display())
    };
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
