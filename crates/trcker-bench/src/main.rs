//! `trcker-bench`: measures Trcker on this machine, each figure beside a
//! baseline measured in the same run.
//!
//! It starts the `trcker` binary (release build) on a scratch data dir, seeds a
//! tenant, program, affiliate and integration over HTTP, then drives load from
//! this process for a fixed time per scenario:
//! 1. baseline: the server's cheapest route, `/healthz`;
//! 2. click redirects (`/api/r/...`), each click recorded;
//! 3. postback intake (accepted, durable), on SQLite and, with `--postgres-url`,
//!    on PostgreSQL — beside the database's own one-row-per-transaction commit
//!    rate at the same concurrency (an insert loop over the same driver). These
//!    three run on `trcker web` (the HTTP roles, no workers): intake by itself;
//!    the pipeline scenario runs `trcker serve`, everything at once;
//! 4. the pipeline: sustained conversions per second attributed, commissioned
//!    and notified (the affiliate is a local listener), then end-to-end latency
//!    (accepted → affiliate notified) at half that rate; once with the
//!    affiliate told by a postback URL (GET), once by a signed webhook (POST);
//! 5. peak resident memory of the Trcker process;
//! 6. attribution latency with 10,000 and with 10,000,000 clicks stored
//!    (PostgreSQL; the clicks are generated in bulk inside the database);
//! 7. reports over a seeded data set (`trcker seed --demo`, 1,000,000 clicks
//!    and 20,000 conversions by default), each grouping timed one request at
//!    a time, on SQLite and PostgreSQL.
//!
//! The PostgreSQL commit-rate baseline is pgbench running a one-row INSERT
//! script at the same concurrency (the sqlx loop is kept beside it).
//! `--smoke` runs everything briefly and small, to keep the harness working.
//!
//! Results go to stdout as a Markdown table and to a JSON file.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

mod pipeline;
mod reports;

use pipeline::Told;

#[derive(Parser)]
struct Args {
    /// The trcker binary to measure.
    #[arg(long, default_value = "target/release/trcker")]
    trcker: PathBuf,
    /// Seconds of load per scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// A PostgreSQL server whose user may create databases; enables the PostgreSQL scenarios.
    #[arg(long, env = "TRCKER_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench-results.json")]
    json: PathBuf,
    /// Postbacks pushed through the pipeline at its maximum rate (enough for
    /// several seconds of sustained work, not a burst that intake absorbs).
    #[arg(long, default_value_t = 20_000)]
    pipeline_postbacks: usize,
    /// Postbacks timed one by one at each click-table size.
    #[arg(long, default_value_t = 200)]
    attribution_samples: usize,
    /// The large click-table size for attribution latency.
    #[arg(long, default_value_t = 10_000_000)]
    scale_clicks: u64,
    /// Clicks the report scenario seeds (`trcker seed --demo --clicks`).
    #[arg(long, default_value_t = 1_000_000)]
    report_clicks: u64,
    /// Conversions among them.
    #[arg(long, default_value_t = 20_000)]
    report_conversions: u64,
    /// Everything briefly and small: keeps the harness working, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// One scenario by itself (`intake-sqlite`, `intake-postgres`,
    /// `pipeline-sqlite`, `pipeline-postgres`, `webhooks-sqlite`,
    /// `webhooks-postgres`, `reports-sqlite`, `reports-postgres`), its
    /// figures printed as JSON:
    /// for quick comparisons while working on one path.
    #[arg(long)]
    only: Option<String>,
}

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `trcker serve`: every role in one process.
    fn start(trcker: &PathBuf, database_url: Option<&str>) -> Server {
        Server::start_as("serve", trcker, database_url)
    }

    /// `trcker <command>` (`serve`, or `web` for the HTTP roles alone).
    fn start_as(command: &str, trcker: &PathBuf, database_url: Option<&str>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Server::start_in(command, trcker, database_url, dir)
    }

    /// `trcker <command>` on the data directory `dir` (which a seed may have
    /// filled).
    fn start_in(
        command: &str,
        trcker: &PathBuf,
        database_url: Option<&str>,
        dir: tempfile::TempDir,
    ) -> Server {
        use std::io::{BufRead, BufReader};
        let mut cmd = Command::new(trcker);
        cmd.arg(command)
            .env("TRCKER_LISTEN", "127.0.0.1:0")
            .env("TRCKER_DATA_DIR", dir.path())
            .env("TRCKER_OPERATOR_TOKEN", "bench-operator-token")
            .env("TRCKER_ALLOW_PRIVATE_TARGETS", "true")
            .env(
                "TRCKER_LOG",
                std::env::var("TRCKER_BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // TRCKER_BENCH_LOGS=<dir>: each server's warnings and errors (or what
        // TRCKER_BENCH_LOG_LEVEL asks for) go to a file there.
        if let Some(dir) = std::env::var_os("TRCKER_BENCH_LOGS") {
            let path = std::path::Path::new(&dir).join(format!(
                "{}-{command}.log",
                chrono::Utc::now().format("%H%M%S%.3f")
            ));
            if let Ok(file) = std::fs::File::create(path) {
                cmd.stderr(file);
            }
        }
        match database_url {
            Some(url) => cmd.env("DATABASE_URL", url),
            None => cmd.env_remove("DATABASE_URL"),
        };
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", trcker.display()));
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut base = String::new();
        for line in lines.by_ref() {
            let line = line.expect("banner");
            if let Some(v) = line.trim().strip_prefix("listening on") {
                base = v.trim().to_owned();
            }
            if line.contains("operator token") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        assert!(!base.is_empty(), "trcker printed no address");
        Server {
            child,
            base,
            _dir: dir,
        }
    }

    /// Peak resident memory in MiB (VmHWM).
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The benchmark's tenant: `bench`, program `pro` paying 10 %.
async fn bench_seed(
    http: &reqwest::Client,
    base: &str,
    notify: trcker_bench::Notify<'_>,
) -> trcker_bench::Seeded {
    trcker_bench::seed(
        http,
        base,
        "bench-operator-token",
        "bench",
        json!({"type": "percent", "value": "10"}),
        notify,
    )
    .await
}

/// A process's peak resident memory (MiB) after each phase it ran.
struct Peaks(Vec<(&'static str, f64)>);

impl Peaks {
    fn last(&self) -> f64 {
        self.0.last().map(|p| p.1).unwrap_or(0.0)
    }

    fn json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(phase, mib)| ((*phase).to_owned(), json!(mib.round())))
                .collect(),
        )
    }

    fn text(&self) -> String {
        self.0
            .iter()
            .map(|(phase, mib)| format!("{phase} {mib:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, Copy)]
struct Result_ {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl Result_ {
    fn json(&self) -> Value {
        json!({"requests_per_second": self.rps.round(), "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "errors": self.errors})
    }
}

/// The `p` quantile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Runs `concurrency` loops calling `make(n)` for `seconds`; `ok` judges each
/// answer. Each loop keeps one HTTP/1.1 connection (opened again after an
/// error) and sends bare requests over it: the load generator shares the
/// machine with what it measures, so it should take as little of it as it can
/// (a general-purpose client's URL parsing, pooling and redirect handling took
/// about half of both cores from the server at full load).
async fn load<F>(concurrency: usize, seconds: u64, make: F, ok: reqwest::StatusCode) -> Result_
where
    F: Fn(u64) -> String + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (make, counter, errors) = (make.clone(), counter.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut conn: Option<Connection> = None;
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let uri: hyper::Uri = make(n).parse().expect("load URL");
                let t = Instant::now();
                match get(&mut conn, &uri).await {
                    Ok(status) if status.as_u16() == ok.as_u16() => {
                        latencies.push(t.elapsed().as_micros() as u64);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Result_ {
        rps: all.len() as f64 / elapsed,
        p50_ms: percentile_ms(&all, 0.50),
        p99_ms: percentile_ms(&all, 0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

pub(crate) type Connection =
    hyper::client::conn::http1::SendRequest<http_body_util::Empty<&'static [u8]>>;

/// One GET over `conn` (connecting first if there is none); the answer's body
/// is read to the end so that the connection can carry the next request.
pub(crate) async fn get(
    conn: &mut Option<Connection>,
    uri: &hyper::Uri,
) -> Result<hyper::StatusCode, String> {
    use http_body_util::BodyExt;
    let authority = uri.authority().ok_or("no host")?.as_str().to_owned();
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        *conn = Some(sender);
    }
    let sender = conn.as_mut().ok_or("no connection")?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(http_body_util::Empty::new())
        .map_err(|e| e.to_string())?;
    let result = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
    .await;
    if result.is_err() {
        *conn = None;
    }
    result
}

/// The database's own durable single-row commit rate at `concurrency`, over sqlx
/// (the driver Trcker uses): one INSERT per transaction, each committed.
async fn commit_baseline(database_url: Option<&str>, concurrency: usize, seconds: u64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    match database_url {
        None => {
            use sqlx::sqlite::{
                SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
            };
            let opts = SqliteConnectOptions::new()
                .filename(dir.path().join("baseline.db"))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(opts)
                .await
                .expect("sqlite");
            sqlx::query("CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT)")
                .execute(&pool)
                .await
                .expect("table");
            commit_loop(concurrency, seconds, move |id| {
                let pool = pool.clone();
                async move {
                    sqlx::query("INSERT INTO t VALUES (?, 'x')")
                        .bind(id)
                        .execute(&pool)
                        .await
                        .is_ok()
                }
            })
            .await
        }
        Some(url) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(concurrency as u32)
                .connect(url)
                .await
                .expect("postgres");
            sqlx::query("CREATE TABLE IF NOT EXISTS bench_baseline (id TEXT PRIMARY KEY, v TEXT)")
                .execute(&pool)
                .await
                .expect("table");
            commit_loop(concurrency, seconds, move |id| {
                let pool = pool.clone();
                async move {
                    sqlx::query("INSERT INTO bench_baseline VALUES ($1, 'x')")
                        .bind(id)
                        .execute(&pool)
                        .await
                        .is_ok()
                }
            })
            .await
        }
    }
}

/// Runs `insert` with fresh time-ordered keys from `concurrency` loops; commits per second.
async fn commit_loop<F, Fut>(concurrency: usize, seconds: u64, insert: F) -> f64
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (insert, count) = (insert.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let id = format!("{:020}-{w:04}-{i}", chrono::Utc::now().timestamp_micros());
                if insert(id).await {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// PostgreSQL's own single-row commit rate at `concurrency`, as pgbench
/// measures it: a script of one INSERT, each in its own transaction.
fn pgbench_baseline(url: &str, concurrency: usize, seconds: u64) -> Result<f64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let script = dir.path().join("insert.sql");
    std::fs::write(&script, "INSERT INTO bench_pgbench (v) VALUES ('x');\n")
        .map_err(|e| e.to_string())?;
    let psql = Command::new("psql")
        .args([
            url,
            "-qc",
            "CREATE TABLE IF NOT EXISTS bench_pgbench (id bigserial PRIMARY KEY, v text)",
        ])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if !psql.status.success() {
        return Err(String::from_utf8_lossy(&psql.stderr).into_owned());
    }
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &concurrency.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-f",
            &script.to_string_lossy(),
            url,
        ])
        .output()
        .map_err(|e| format!("pgbench: {e} (install PostgreSQL's client tools)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .ok_or_else(|| {
            format!(
                "pgbench printed no tps: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// A fresh database on the PostgreSQL server at `admin_url`.
async fn fresh_pg_database(admin_url: &str) -> String {
    let name = format!("trcker_bench_{}", chrono::Utc::now().timestamp_millis());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await
        .expect("postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .expect("create database");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("URL ending in /<database>");
    format!("{base}/{name}")
}

/// Drops the scratch database (best effort).
async fn drop_pg_database(admin_url: &str, url: &str) {
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await
    {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
    }
}

async fn intake(
    args: &Args,
    http: &reqwest::Client,
    database_url: Option<&str>,
) -> (Result_, Peaks, Option<(Result_, Result_)>) {
    // The HTTP roles alone (`trcker web`): intake is measured by itself; the
    // pipeline's own figures come from its scenario.
    let server = Server::start_as("web", &args.trcker, database_url);
    let seeded = bench_seed(http, &server.base, trcker_bench::Notify::Nothing).await;
    let mut peaks = vec![("seeded", server.peak_rss_mib())];
    let mut clicks_and_health = None;
    if database_url.is_none() {
        let base = server.base.clone();
        let health = load(
            args.concurrency,
            args.seconds,
            move |_| format!("{base}/healthz"),
            reqwest::StatusCode::OK,
        )
        .await;
        peaks.push(("/healthz", server.peak_rss_mib()));
        let base = server.base.clone();
        let clicks = load(
            args.concurrency,
            args.seconds,
            move |_| format!("{base}/api/r/bench/pro?via=jane&sub1=bench"),
            reqwest::StatusCode::FOUND,
        )
        .await;
        peaks.push(("clicks", server.peak_rss_mib()));
        clicks_and_health = Some((health, clicks));
    }
    // Each postback needs a click of its own to be realistic; one click serves as
    // the id (attribution happens later, in the workers).
    let click_resp = http
        .get(format!("{}/api/r/bench/pro?via=jane", server.base))
        .send()
        .await
        .expect("click");
    let location = click_resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let click_id = location
        .rsplit_once("click_id=")
        .expect("click id")
        .1
        .to_owned();
    let base = server.base.clone();
    let secret = seeded.secret.clone();
    let run = chrono::Utc::now().timestamp_millis();
    let postbacks = load(
        args.concurrency,
        args.seconds,
        move |n| format!("{base}/api/postback/bench/pro?secret={secret}&click_id={click_id}&amount=10&txn_id=r{run}-{n}"),
        reqwest::StatusCode::OK,
    )
    .await;
    peaks.push(("intake", server.peak_rss_mib()));
    (postbacks, Peaks(peaks), clicks_and_health)
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.smoke {
        args.seconds = 1;
        args.pipeline_postbacks = 300;
        args.attribution_samples = 10;
        args.scale_clicks = 20_000;
        args.report_clicks = 20_000;
        args.report_conversions = 400;
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .expect("client");
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().map(|l| l
                .split_whitespace()
                .nth(1)
                .unwrap_or("0")
                .to_owned()))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map(|kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0))
            .unwrap_or_default()
    );
    eprintln!(
        "measuring on {machine}: {} s per scenario, {} connections",
        args.seconds, args.concurrency
    );

    if let Some(only) = &args.only {
        let pg_url = match (only.ends_with("postgres"), &args.postgres_url) {
            (false, _) => None,
            (true, Some(admin)) => Some(fresh_pg_database(admin).await),
            (true, None) => panic!("--only {only} needs --postgres-url"),
        };
        let figures = match only.split_once('-').map(|(s, _)| s) {
            Some("intake") => {
                let (r, peaks, ch) = intake(&args, &http, pg_url.as_deref()).await;
                let (health, clicks) = ch.map(|(h, c)| (h.json(), c.json())).unzip();
                json!({"intake": r.json(), "healthz": health, "clicks": clicks, "peak_rss_mib": peaks.last()})
            }
            Some("pipeline") => {
                pipeline::pipeline(&args, &http, pg_url.as_deref(), Told::Postback).await
            }
            Some("webhooks") => {
                pipeline::pipeline(&args, &http, pg_url.as_deref(), Told::Webhook).await
            }
            Some("reports") => reports::reports(&args, &http, pg_url.as_deref()).await,
            _ => panic!("unknown scenario {only}"),
        };
        // TRCKER_BENCH_KEEP_DATABASE=1 keeps the scenario's PostgreSQL
        // database, to look into afterwards.
        match (&args.postgres_url, &pg_url) {
            (Some(_), Some(url)) if std::env::var_os("TRCKER_BENCH_KEEP_DATABASE").is_some() => {
                eprintln!("kept {url}");
            }
            (Some(admin), Some(url)) => drop_pg_database(admin, url).await,
            _ => {}
        }
        println!("{}", serde_json::to_string_pretty(&figures).expect("json"));
        return;
    }

    eprintln!("SQLite: /healthz, clicks, postback intake, commit baseline");
    let (sqlite_intake, sqlite_peaks, ch) = intake(&args, &http, None).await;
    let sqlite_peak = sqlite_peaks.last();
    let (health, clicks) = ch.expect("click scenario");
    let sqlite_commit = commit_baseline(None, args.concurrency, args.seconds).await;
    eprintln!("SQLite: pipeline");
    let sqlite_pipeline = pipeline::pipeline(&args, &http, None, Told::Postback).await;
    eprintln!("SQLite: pipeline, the affiliate told by webhook");
    let sqlite_webhooks = pipeline::pipeline(&args, &http, None, Told::Webhook).await;
    eprintln!("SQLite: reports over a seeded data set");
    let sqlite_reports = reports::reports(&args, &http, None).await;
    let mut pg = None;
    if let Some(admin) = &args.postgres_url {
        eprintln!("PostgreSQL: postback intake, commit baselines (sqlx, pgbench)");
        let url = fresh_pg_database(admin).await;
        let (pg_intake, pg_peaks, _) = intake(&args, &http, Some(&url)).await;
        let pg_peak = pg_peaks.last();
        let sqlx_commit = commit_baseline(Some(&url), args.concurrency, args.seconds).await;
        let pgbench = pgbench_baseline(&url, args.concurrency, args.seconds);
        if let Err(e) = &pgbench {
            eprintln!("pgbench failed: {e}");
        }
        drop_pg_database(admin, &url).await;
        eprintln!("PostgreSQL: pipeline");
        let url = fresh_pg_database(admin).await;
        let pipe = pipeline::pipeline(&args, &http, Some(&url), Told::Postback).await;
        drop_pg_database(admin, &url).await;
        eprintln!("PostgreSQL: pipeline, the affiliate told by webhook");
        let url = fresh_pg_database(admin).await;
        let webhooks = pipeline::pipeline(&args, &http, Some(&url), Told::Webhook).await;
        drop_pg_database(admin, &url).await;
        eprintln!(
            "PostgreSQL: attribution latency with {} clicks stored (bulk fill)",
            args.scale_clicks
        );
        let url = fresh_pg_database(admin).await;
        let small = if args.smoke { 1_000 } else { 10_000 };
        let scale =
            pipeline::attribution_at_scale(&args, &http, &url, &[small, args.scale_clicks]).await;
        drop_pg_database(admin, &url).await;
        eprintln!("PostgreSQL: reports over a seeded data set");
        let url = fresh_pg_database(admin).await;
        let reports = reports::reports(&args, &http, Some(&url)).await;
        drop_pg_database(admin, &url).await;
        pg = Some(PgFigures {
            reports,
            intake: pg_intake,
            peak: pg_peak,
            sqlx_commit,
            pgbench: pgbench.ok(),
            pipeline: pipe,
            webhooks,
            scale,
        });
    }

    let mut table = String::new();
    table.push_str("| scenario | requests/s | p50 ms | p99 ms | errors | ratio to baseline |\n| --- | ---: | ---: | ---: | ---: | --- |\n");
    let row = |name: &str, r: &Result_, ratio: String| {
        format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} | {ratio} |\n",
            r.rps, r.p50_ms, r.p99_ms, r.errors
        )
    };
    table.push_str(&row("baseline: `/healthz`", &health, "1.00".into()));
    table.push_str(&row(
        "click redirect, click recorded",
        &clicks,
        format!("{:.2} × `/healthz`", clicks.rps / health.rps),
    ));
    table.push_str(&row(
        "postback intake, SQLite (`trcker web`)",
        &sqlite_intake,
        format!(
            "{:.2} × SQLite one-row commits ({sqlite_commit:.0}/s)",
            sqlite_intake.rps / sqlite_commit
        ),
    ));
    if let Some(p) = &pg {
        let ratio = match p.pgbench {
            Some(tps) => format!(
                "{:.2} × pgbench one-row commits ({tps:.0}/s; sqlx loop {:.0}/s)",
                p.intake.rps / tps,
                p.sqlx_commit
            ),
            None => format!(
                "{:.2} × sqlx one-row commits ({:.0}/s; pgbench unavailable)",
                p.intake.rps / p.sqlx_commit,
                p.sqlx_commit
            ),
        };
        table.push_str(&row(
            "postback intake, PostgreSQL (`trcker web`)",
            &p.intake,
            ratio,
        ));
    }
    table.push_str("\n| pipeline | conversions/s (attributed, commissioned, notified) | end-to-end p50 ms | p99 ms | at (postbacks/s) |\n| --- | ---: | ---: | ---: | ---: |\n");
    let pipe_row = |name: &str, v: &Value| {
        format!(
            "| {name} | {} | {} | {} | {} |\n",
            v["conversions_per_second"],
            v["end_to_end_p50_ms"],
            v["end_to_end_p99_ms"],
            v["half_load_per_second"]
        )
    };
    table.push_str(&pipe_row("SQLite, postback", &sqlite_pipeline));
    table.push_str(&pipe_row("SQLite, webhook", &sqlite_webhooks));
    if let Some(p) = &pg {
        table.push_str(&pipe_row("PostgreSQL, postback", &p.pipeline));
        table.push_str(&pipe_row("PostgreSQL, webhook", &p.webhooks));
        table.push_str("\n| clicks stored (PostgreSQL) | attribution p50 ms | p99 ms | samples |\n| ---: | ---: | ---: | ---: |\n");
        for r in p.scale.as_array().into_iter().flatten() {
            table.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r["clicks_stored"], r["p50_ms"], r["p99_ms"], r["attributed"]
            ));
        }
    }
    table.push_str(&format!(
        "\n| report ({} clicks, {} conversions, last 30 days) | SQLite p50 ms | p99 ms | PostgreSQL p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: |\n",
        sqlite_reports["clicks"], sqlite_reports["conversions"]
    ));
    let no_reports = json!({});
    let pg_reports = pg.as_ref().map_or(&no_reports, |p| &p.reports);
    for (i, r) in sqlite_reports["reports"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let other = &pg_reports["reports"][i];
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r["report"].as_str().unwrap_or_default(),
            r["p50_ms"],
            r["p99_ms"],
            other["p50_ms"],
            other["p99_ms"]
        ));
    }
    let mut peaks = vec![
        sqlite_peak,
        sqlite_pipeline["peak_rss_mib"].as_f64().unwrap_or(0.0),
        sqlite_webhooks["peak_rss_mib"].as_f64().unwrap_or(0.0),
    ];
    if let Some(p) = &pg {
        peaks.push(p.peak);
        peaks.push(p.pipeline["peak_rss_mib"].as_f64().unwrap_or(0.0));
        peaks.push(p.webhooks["peak_rss_mib"].as_f64().unwrap_or(0.0));
    }
    let peak = peaks.iter().copied().fold(0.0, f64::max);
    table.push_str(&format!(
        "\nPeak resident memory of a Trcker process: {peak:.0} MiB (per process, in run order: {}).\n\
         The process that took /healthz, clicks and SQLite intake, after each phase (MiB): {}.\n",
        peaks
            .iter()
            .map(|p| format!("{p:.0}"))
            .collect::<Vec<_>>()
            .join(" / "),
        sqlite_peaks.text()
    ));
    println!(
        "Machine: {machine}; load generator in the same process tree, {} connections, {} s per scenario.\n",
        args.concurrency, args.seconds
    );
    println!("{table}");

    let results = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "machine": machine,
        "smoke": args.smoke,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "healthz": health.json(),
        "click_redirect": clicks.json(),
        "click_ratio_to_healthz": clicks.rps / health.rps,
        "postback_intake_sqlite": sqlite_intake.json(),
        "sqlite_single_row_commits_per_second": sqlite_commit.round(),
        "pipeline_sqlite": sqlite_pipeline,
        "pipeline_webhooks_sqlite": sqlite_webhooks,
        "postback_intake_postgres": pg.as_ref().map(|p| p.intake.json()),
        "postgres_single_row_commits_per_second_pgbench": pg.as_ref().and_then(|p| p.pgbench).map(f64::round),
        "postgres_single_row_commits_per_second_sqlx": pg.as_ref().map(|p| p.sqlx_commit.round()),
        "pipeline_postgres": pg.as_ref().map(|p| p.pipeline.clone()),
        "pipeline_webhooks_postgres": pg.as_ref().map(|p| p.webhooks.clone()),
        "attribution_latency_postgres": pg.as_ref().map(|p| p.scale.clone()),
        "reports_sqlite": sqlite_reports,
        "reports_postgres": pg.as_ref().map(|p| p.reports.clone()),
        "peak_rss_mib": peak.round(),
        "peak_rss_mib_after_each_phase_sqlite": sqlite_peaks.json(),
    });
    if let Some(dir) = args.json.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&results).expect("json"),
    )
    .expect("write results");
    eprintln!("results written to {}", args.json.display());
}

struct PgFigures {
    reports: Value,
    intake: Result_,
    peak: f64,
    sqlx_commit: f64,
    pgbench: Option<f64>,
    pipeline: Value,
    webhooks: Value,
    scale: Value,
}
