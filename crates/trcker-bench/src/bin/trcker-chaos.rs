//! `trcker-chaos`: a fault run against real Trcker processes.
//!
//! On PostgreSQL, two `trcker serve` processes (receivers, API and workers)
//! and two `trcker worker` processes share one database; on SQLite, one `trcker
//! serve` and one `trcker worker` share one database file. Postbacks are spread
//! over the receivers, a tenth of them sent twice at the same moment, while:
//!
//! - a worker process is stopped every few seconds, by SIGKILL (three times in
//!   four) or SIGTERM (the fourth, timed), and restarted, alternately under its
//!   old name and under a new one;
//! - at a quarter of the load, a receiver is SIGKILLed and restarted on its port;
//! - at half the load, PostgreSQL itself is restarted (`--pg-cluster`), and
//!   every receiver's API must answer again without a restart;
//! - at three quarters, a receiver gets SIGTERM under load and must exit within
//!   [`SHUTDOWN_BOUND`] with success; it is started again.
//!
//! The client behaves as a merchant's server does: it retries a postback that
//! got no answer or a 503 until it gets a 200. When the pipeline has drained,
//! every acknowledged postback must be exactly one conversion with exactly one
//! ledger entry, the ledger exact to the cent, the affiliate notified of each
//! conversion, and no job left waiting or running. Prints the figures as JSON
//! and exits non-zero on any loss, duplicate or leftover.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

/// A process told to stop (SIGTERM) must have exited within this.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(30);
/// How long PostgreSQL stays down in the restart.
const PG_OUTAGE: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Database {
    Postgres,
    Sqlite,
}

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/trcker")]
    trcker: PathBuf,
    #[arg(long, value_enum, default_value = "postgres")]
    database: Database,
    /// A PostgreSQL server whose user may create databases.
    #[arg(
        long,
        env = "TRCKER_CHAOS_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// `<version>/<name>` of the cluster behind `--postgres-url`: the run
    /// restarts it at half the load (never point this at a shared server).
    #[arg(long, env = "TRCKER_CHAOS_PG_CLUSTER")]
    pg_cluster: Option<String>,
    /// Postbacks to send.
    #[arg(long, default_value_t = 5000)]
    postbacks: usize,
    /// Seconds between worker stops.
    #[arg(long, default_value_t = 3)]
    kill_every: u64,
    /// Also write the figures to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep each process's log (at info level) in this directory.
    #[arg(long)]
    logs: Option<PathBuf>,
}

/// How Trcker processes of this run are started.
#[derive(Clone)]
struct Launcher {
    trcker: PathBuf,
    database_url: Option<String>,
    dir: PathBuf,
    logs: Option<PathBuf>,
}

impl Launcher {
    /// Starts `trcker <role>` and waits for its banner; `None` if it exited first.
    fn spawn(&self, role: &str, port: Option<u16>, name: Option<&str>) -> Option<Child> {
        use std::io::{BufRead, BufReader};
        let mut cmd = Command::new(&self.trcker);
        cmd.arg(role)
            .env(
                "TRCKER_LISTEN",
                format!("127.0.0.1:{}", port.unwrap_or_default()),
            )
            .env("TRCKER_DATA_DIR", &self.dir)
            .env("TRCKER_OPERATOR_TOKEN", "chaos-operator-token")
            .env("TRCKER_ALLOW_PRIVATE_TARGETS", "true")
            .env("TRCKER_DB_CONNECTIONS", "8")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::piped());
        match &self.logs {
            Some(logs) => {
                static STARTED: AtomicUsize = AtomicUsize::new(0);
                let k = STARTED.fetch_add(1, Ordering::Relaxed);
                let file = std::fs::File::create(logs.join(format!("{k:03}-{role}.log")))
                    .expect("log file");
                cmd.env("TRCKER_LOG", "info,sqlx=warn").stderr(file);
            }
            None => {
                cmd.env("TRCKER_LOG", "error").stderr(Stdio::null());
            }
        }
        if let Some(url) = &self.database_url {
            cmd.env("DATABASE_URL", url);
        }
        if let Some(n) = name {
            cmd.env("TRCKER_WORKER_NAME", n);
        }
        let mut child = cmd.spawn().expect("spawn trcker");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut started = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.contains("operator token") || line.contains("workers are running") {
                started = true;
                break;
            }
        }
        if !started {
            let _ = child.wait();
            return None;
        }
        std::thread::spawn(move || lines.for_each(drop));
        Some(child)
    }

    /// Starts a receiver on `port`, trying again until it is up (the database
    /// may be restarting).
    fn serve(&self, port: u16) -> Child {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.spawn("serve", Some(port), None) {
                return child;
            }
            assert!(Instant::now() < deadline, "trcker serve never started");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// SIGTERM, then the time until exit and whether it exited with success
/// (SIGKILL after [`SHUTDOWN_BOUND`]).
fn terminate(child: &mut Child) -> (f64, bool) {
    let started = Instant::now();
    signal(child, "-TERM");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (started.elapsed().as_secs_f64(), status.success());
        }
        if started.elapsed() > SHUTDOWN_BOUND {
            signal(child, "-KILL");
            let _ = child.wait();
            return (started.elapsed().as_secs_f64(), false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(child: &mut Child) {
    signal(child, "-KILL");
    let _ = child.wait();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn pg_ctl(cluster: &str, action: &str) {
    let (version, name) = cluster
        .split_once('/')
        .expect("--pg-cluster <version>/<name>");
    let mut cmd = Command::new("pg_ctlcluster");
    cmd.args(["--skip-systemctl-redirect", version, name, action]);
    if action == "stop" {
        cmd.args(["-m", "fast"]);
    }
    let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "pg_ctlcluster {action} {cluster} failed");
}

/// Read-only checks on the run's database.
enum Probe {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl Probe {
    async fn scalar(&self, sql: &str) -> i64 {
        let sql = match self {
            Probe::Postgres(_) => sql.replace("{jobs}", "apalis.jobs"),
            Probe::Sqlite(_) => sql.replace("{jobs}", "Jobs"),
        };
        let r = match self {
            Probe::Postgres(p) => {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                    .fetch_one(p)
                    .await
            }
            Probe::Sqlite(p) => {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                    .fetch_one(p)
                    .await
            }
        };
        r.unwrap_or(-1)
    }

    async fn conversions_per_txn(&self) -> HashMap<String, i64> {
        let sql = "SELECT txn_id, CAST(count(*) AS BIGINT) FROM conversions GROUP BY txn_id";
        let rows = match self {
            Probe::Postgres(p) => sqlx::query_as::<_, (String, i64)>(sql).fetch_all(p).await,
            Probe::Sqlite(p) => sqlx::query_as::<_, (String, i64)>(sql).fetch_all(p).await,
        };
        rows.expect("conversions").into_iter().collect()
    }
}

#[derive(Default)]
struct Tally {
    acked: Mutex<HashSet<usize>>,
    accepted_twice: AtomicU64,
    duplicate_answers: AtomicU64,
    answers_503: AtomicU64,
    no_answer: AtomicU64,
    other_answers: AtomicU64,
}

fn secs(d: f64) -> f64 {
    (d * 10.0).round() / 10.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cleanup: Option<(sqlx::PgPool, String)> = None;
    let database_url = match args.database {
        Database::Postgres => {
            let admin = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&args.postgres_url)
                .await
                .expect("postgres");
            let dbname = format!("trcker_chaos_{}", chrono::Utc::now().timestamp_millis());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {dbname}")))
                .execute(&admin)
                .await
                .expect("create db");
            let url = format!(
                "{}/{dbname}",
                args.postgres_url.rsplit_once('/').expect("url").0
            );
            cleanup = Some((admin, dbname));
            Some(url)
        }
        Database::Sqlite => None,
    };
    if args.pg_cluster.is_some() && args.database == Database::Sqlite {
        eprintln!("--pg-cluster applies to --database postgres only");
        std::process::exit(2);
    }
    let launcher = Launcher {
        trcker: args.trcker.clone(),
        database_url: database_url.clone(),
        dir: dir.path().to_owned(),
        logs: args.logs.clone(),
    };
    if let Some(logs) = &args.logs {
        std::fs::create_dir_all(logs).expect("log dir");
    }

    // The affiliate's server: counts the conversions it is told about.
    let affiliate = trcker_bench::Affiliate::start(trcker_bench::Key::Query("conv")).await;
    let affiliate_url = affiliate.url.clone();

    // Receivers on fixed ports, so that a restarted one is found where it was.
    let receiver_count = match args.database {
        Database::Postgres => 2,
        Database::Sqlite => 1,
    };
    let ports: Vec<u16> = (0..receiver_count).map(|_| free_port()).collect();
    let bases: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let receivers: Arc<Mutex<Vec<Child>>> = Arc::new(Mutex::new(
        ports.iter().map(|p| launcher.serve(*p)).collect(),
    ));

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let seeded = trcker_bench::seed(
        &http,
        &bases[0],
        "chaos-operator-token",
        "chaos",
        json!({"type": "flat", "value": "1.00"}),
        trcker_bench::Notify::Postback(&format!("{affiliate_url}/pb?conv={{conversion_id}}")),
    )
    .await;
    let (key, secret) = (seeded.key, seeded.secret);
    let mut clicks = Vec::new();
    for _ in 0..100 {
        let r = http
            .get(format!("{}/api/r/chaos/pro?via=jane", bases[0]))
            .send()
            .await
            .expect("click");
        let loc = r.headers()["location"].to_str().expect("loc").to_owned();
        clicks.push(loc.rsplit_once("click_id=").expect("cid").1.to_owned());
    }
    // Clicks are written in batches: let them land before conversions need them.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Worker processes, stopped and restarted while the postbacks arrive.
    let stop = Arc::new(AtomicBool::new(false));
    let worker_slots = receiver_count;
    let killer = {
        let (launcher, stop) = (launcher.clone(), stop.clone());
        let every = args.kill_every;
        std::thread::spawn(move || {
            let fixed = |slot: usize| format!("chaos-w{slot}");
            let mut workers: Vec<Option<Child>> = (0..worker_slots)
                .map(|s| launcher.spawn("worker", None, Some(&fixed(s))))
                .collect();
            let (mut kills, mut terms, mut worst_term, mut term_failures) =
                (0u64, 0u64, 0f64, 0u64);
            let mut turn = 0usize;
            let stopped = || stop.load(Ordering::Relaxed);
            while !stopped() {
                let slept = Instant::now();
                while !stopped() && slept.elapsed() < Duration::from_secs(every) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if stopped() {
                    break;
                }
                let slot = turn % worker_slots;
                if let Some(mut w) = workers[slot].take() {
                    if turn % 4 == 3 {
                        let (took, ok) = terminate(&mut w);
                        terms += 1;
                        worst_term = worst_term.max(took);
                        if !ok {
                            term_failures += 1;
                        }
                    } else {
                        kill9(&mut w);
                        kills += 1;
                    }
                }
                // Alternately under its old name and under a new one.
                let name = ((turn / worker_slots) % 2 == 1).then(|| fixed(slot));
                workers[slot] = launcher.spawn("worker", None, name.as_deref());
                turn += 1;
            }
            (workers, kills, terms, worst_term, term_failures)
        })
    };

    // The conductor: receiver and database faults at set points of the load.
    let next = Arc::new(AtomicUsize::new(0));
    let n = args.postbacks;
    let conductor = {
        let (launcher, receivers, next, bases, ports) = (
            launcher.clone(),
            receivers.clone(),
            next.clone(),
            bases.clone(),
            ports.clone(),
        );
        let (cluster, key, api) = (args.pg_cluster.clone(), key.clone(), http.clone());
        let rt = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let mut figures = serde_json::Map::new();
            let wait_for = |share: usize| {
                while next.load(Ordering::Relaxed) < n * share / 4 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            let last = ports.len() - 1;
            wait_for(1);
            {
                let mut r = receivers.lock().expect("receivers");
                kill9(&mut r[last]);
                let started = Instant::now();
                r[last] = launcher.serve(ports[last]);
                figures.insert("receiver_kills".into(), json!(1));
                figures.insert(
                    "receiver_restart_seconds".into(),
                    json!(secs(started.elapsed().as_secs_f64())),
                );
            }
            wait_for(2);
            if let Some(cluster) = &cluster {
                pg_ctl(cluster, "stop");
                std::thread::sleep(PG_OUTAGE);
                pg_ctl(cluster, "start");
                // Every receiver's API answers again, without a restart.
                let back = Instant::now();
                for base in &bases {
                    loop {
                        let ok = rt.block_on(async {
                            api.get(format!("{base}/api/v1/conversions?limit=1"))
                                .bearer_auth(&key)
                                .send()
                                .await
                                .map(|r| r.status() == 200)
                                .unwrap_or(false)
                        });
                        if ok {
                            break;
                        }
                        assert!(
                            back.elapsed() < Duration::from_secs(60),
                            "{base}: the API did not recover after PostgreSQL came back"
                        );
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                figures.insert("postgres_restarts".into(), json!(1));
                figures.insert(
                    "postgres_outage_seconds".into(),
                    json!(PG_OUTAGE.as_secs_f64()),
                );
                figures.insert(
                    "api_recovery_seconds_after_postgres_start".into(),
                    json!(secs(back.elapsed().as_secs_f64())),
                );
            }
            wait_for(3);
            {
                let mut r = receivers.lock().expect("receivers");
                let (took, ok) = terminate(&mut r[0]);
                figures.insert("receiver_sigterm_exit_seconds".into(), json!(secs(took)));
                figures.insert("receiver_sigterm_clean_exit".into(), json!(ok));
                r[0] = launcher.serve(ports[0]);
            }
            figures
        })
    };

    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let mut senders = Vec::new();
    for _ in 0..32 {
        let (http, next, tally, clicks, bases, secret) = (
            http.clone(),
            next.clone(),
            tally.clone(),
            clicks.clone(),
            bases.clone(),
            secret.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let path = format!(
                    "/api/postback/chaos/pro?secret={secret}&click_id={}&amount=10&txn_id=t{i}",
                    clicks[i % clicks.len()]
                );
                // A merchant retries until it gets an answer; a tenth of the
                // postbacks are sent twice at the same moment.
                let send = |copy: usize| {
                    let (http, bases, path, tally) = (&http, &bases, &path, &tally);
                    async move {
                        let deadline = Instant::now() + Duration::from_secs(120);
                        let mut attempt = i + copy;
                        while Instant::now() < deadline {
                            let base = &bases[attempt % bases.len()];
                            attempt += 1;
                            match http.get(format!("{base}{path}")).send().await {
                                Ok(r) if r.status() == 200 => {
                                    let body: Value = r.json().await.unwrap_or_default();
                                    return Some(body["status"] == "accepted");
                                }
                                Ok(r) if r.status() == 503 => {
                                    tally.answers_503.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(r) => {
                                    tally.other_answers.fetch_add(1, Ordering::Relaxed);
                                    eprintln!("t{i}: unexpected answer {}", r.status());
                                }
                                Err(_) => {
                                    tally.no_answer.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        None
                    }
                };
                let answers = if i % 10 == 0 {
                    let (a, b) = tokio::join!(send(0), send(1));
                    vec![a, b]
                } else {
                    vec![send(0).await]
                };
                let accepted = answers.iter().filter(|a| **a == Some(true)).count();
                let repeats = answers.iter().filter(|a| **a == Some(false)).count();
                tally
                    .duplicate_answers
                    .fetch_add(repeats as u64, Ordering::Relaxed);
                if accepted > 1 {
                    tally.accepted_twice.fetch_add(1, Ordering::Relaxed);
                    eprintln!("txn t{i} was accepted {accepted} times");
                }
                if answers.iter().any(Option::is_some) {
                    tally.acked.lock().expect("acked").insert(i);
                }
            }
        }));
    }
    for s in senders {
        let _ = s.await;
    }
    let send_secs = started.elapsed().as_secs_f64();
    let fault_figures = conductor.join().expect("conductor");
    stop.store(true, Ordering::Relaxed);
    let (workers, kills, terms, worst_term, term_failures) = killer.join().expect("killer");
    let acked: HashSet<usize> = tally.acked.lock().expect("acked").clone();

    // Wait for the pipeline to drain.
    let probe = match &database_url {
        Some(url) => Probe::Postgres(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect(url)
                .await
                .expect("db"),
        ),
        None => Probe::Sqlite(
            sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(
                    sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(dir.path().join("trcker.db"))
                        .read_only(true),
                )
                .await
                .expect("db"),
        ),
    };
    let drain_started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let conversions = probe
            .scalar("SELECT count(*) FROM conversions WHERE payout_minor IS NOT NULL")
            .await;
        let pending = probe
            .scalar("SELECT count(*) FROM notification_deliveries WHERE status <> 'delivered'")
            .await;
        let deliveries = probe
            .scalar("SELECT count(*) FROM notification_deliveries")
            .await;
        let want = acked.len() as i64;
        if conversions >= want && deliveries >= want && pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "the pipeline did not drain: {conversions} conversions, {deliveries} deliveries ({pending} not delivered)"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    // Jobs held by a killed worker are handed back once its heartbeat is stale;
    // they then run again, changing nothing.
    let waiting_jobs =
        "SELECT count(*) FROM {jobs} WHERE status IN ('Pending', 'Running', 'Queued')";
    let orphans_started = Instant::now();
    while probe.scalar(waiting_jobs).await > 0
        && orphans_started.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let orphan_secs = orphans_started.elapsed().as_secs_f64();
    let per_txn = probe.conversions_per_txn().await;
    let conversions: i64 = per_txn.values().sum();
    let lost = acked
        .iter()
        .filter(|i| !per_txn.contains_key(&format!("t{i}")))
        .count();
    let duplicate_conversions: i64 = per_txn.values().map(|c| c - 1).sum();
    let never_acknowledged = per_txn
        .keys()
        .filter(|t| {
            t.strip_prefix('t')
                .and_then(|i| i.parse::<usize>().ok())
                .is_none_or(|i| !acked.contains(&i))
        })
        .count();
    let ledger = probe.scalar("SELECT count(*) FROM ledger_entries").await;
    let ledger_sum = probe
        .scalar("SELECT CAST(COALESCE(sum(amount_minor), 0) AS BIGINT) FROM ledger_entries")
        .await;
    let stuck_inbox = probe
        .scalar("SELECT count(*) FROM postbacks WHERE state = 'received'")
        .await;
    let unattributed = probe
        .scalar("SELECT count(*) FROM postbacks WHERE state = 'unattributed'")
        .await;
    // The report rollups, counted in the same transactions under the same
    // crashes, equal the raw rows.
    let rollup = |column: &str| {
        format!(
            "SELECT CAST(COALESCE(sum({column}), 0) AS BIGINT) FROM report_rollups WHERE dim = ''"
        )
    };
    let standing = "FROM conversions WHERE is_test = false AND status IN ('pending', 'approved')";
    let rollup_conversions = probe.scalar(&rollup("conversions")).await;
    let raw_conversions = probe.scalar(&format!("SELECT count(*) {standing}")).await;
    let rollup_commission = probe.scalar(&rollup("commission_minor")).await;
    let raw_commission = probe
        .scalar(&format!(
            "SELECT CAST(COALESCE(sum(payout_minor), 0) AS BIGINT) {standing}"
        ))
        .await;
    let rollup_clicks = probe.scalar(&rollup("clicks")).await;
    let raw_clicks = probe
        .scalar("SELECT count(*) FROM clicks WHERE is_test = false")
        .await;
    let jobs_left = probe.scalar(waiting_jobs).await;
    if jobs_left > 0
        && let Probe::Postgres(p) = &probe
    {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT row_to_json(j)::text || ' worker: ' || COALESCE((SELECT row_to_json(w)::text \
             FROM apalis.workers w WHERE w.id = j.lock_by), 'none') FROM apalis.jobs j \
             WHERE status IN ('Pending', 'Running', 'Queued') LIMIT 10",
        )
        .fetch_all(p)
        .await
        .unwrap_or_default();
        for r in rows {
            eprintln!("left: {r}");
        }
    }
    let (calls, notified) = (affiliate.calls(), affiliate.distinct());

    // Everything stops cleanly and in bounded time.
    let mut shutdown_worst = 0f64;
    let mut unclean = 0;
    let mut all: Vec<Child> = receivers.lock().expect("receivers").drain(..).collect();
    all.extend(workers.into_iter().flatten());
    for c in &mut all {
        let (took, ok) = terminate(c);
        shutdown_worst = shutdown_worst.max(took);
        if !ok {
            unclean += 1;
        }
    }
    match &probe {
        Probe::Postgres(p) => p.close().await,
        Probe::Sqlite(p) => p.close().await,
    }
    if let Some((admin, dbname)) = cleanup {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    }

    let mut report = json!({
        "database": match args.database { Database::Postgres => "postgres", Database::Sqlite => "sqlite" },
        "receivers": receiver_count,
        "worker_processes": worker_slots,
        "postbacks_sent": n,
        "acknowledged": acked.len(),
        "sent_twice_at_once": n.div_ceil(10),
        "accepted_twice": tally.accepted_twice.load(Ordering::Relaxed),
        "duplicate_answers": tally.duplicate_answers.load(Ordering::Relaxed),
        "answers_503": tally.answers_503.load(Ordering::Relaxed),
        "requests_without_answer": tally.no_answer.load(Ordering::Relaxed),
        "other_answers": tally.other_answers.load(Ordering::Relaxed),
        "conversions": conversions,
        "duplicate_conversions": duplicate_conversions,
        "lost": lost,
        "conversions_never_acknowledged": never_acknowledged,
        "ledger_entries": ledger,
        "ledger_sum_minor": ledger_sum,
        "ledger_expected_minor": acked.len() as i64 * 100,
        "rollup_conversions": rollup_conversions,
        "rollup_commission_minor": rollup_commission,
        "rollup_clicks": rollup_clicks,
        "raw_clicks": raw_clicks,
        "unattributed": unattributed,
        "inbox_still_received": stuck_inbox,
        "jobs_left": jobs_left,
        "affiliate_calls": calls,
        "affiliate_conversions_notified": notified,
        "worker_sigkills": kills,
        "worker_sigterms": terms,
        "worker_sigterm_worst_exit_seconds": secs(worst_term),
        "send_seconds": secs(send_secs),
        "drain_seconds_after_last_postback": secs(drain_secs),
        "seconds_until_no_job_left_after_drain": secs(orphan_secs),
        "final_shutdown_worst_seconds": secs(shutdown_worst),
    });
    if let Value::Object(map) = &mut report {
        map.extend(fault_figures);
    }
    let text = serde_json::to_string_pretty(&report).expect("json");
    println!("{text}");
    if let Some(path) = &args.json {
        let _ = std::fs::write(path, &text);
    }
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            failures.push(what.to_owned());
        }
    };
    check(acked.len() == n, "a postback never got a 200");
    check(lost == 0, "an acknowledged postback has no conversion");
    check(
        tally.other_answers.load(Ordering::Relaxed) == 0,
        "a postback got an answer other than 200 or 503",
    );
    check(
        duplicate_conversions == 0,
        "a transaction was counted twice",
    );
    check(
        tally.accepted_twice.load(Ordering::Relaxed) == 0,
        "a postback was accepted twice",
    );
    check(
        conversions == acked.len() as i64,
        "conversions differ from acknowledged postbacks",
    );
    check(
        ledger == conversions,
        "ledger entries differ from conversions",
    );
    check(ledger_sum == conversions * 100, "the ledger is not exact");
    check(stuck_inbox == 0, "an accepted postback was never processed");
    check(
        rollup_conversions == raw_conversions
            && rollup_commission == raw_commission
            && rollup_clicks == raw_clicks,
        "the report rollups differ from the raw rows",
    );
    check(jobs_left == 0, "jobs are left waiting or running");
    check(
        notified as i64 == conversions,
        "a conversion was never notified",
    );
    check(
        term_failures == 0 && unclean == 0,
        "a process did not stop cleanly in time",
    );
    check(
        report["receiver_sigterm_clean_exit"] != json!(false),
        "a receiver did not stop cleanly in time under SIGTERM",
    );
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
    eprintln!("chaos run passed");
}
