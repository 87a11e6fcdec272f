//! `trcker-chaos`: a fault run against real Trcker processes on PostgreSQL.
//!
//! Two `trcker serve` processes (receivers, API and workers) and two `trcker
//! worker` processes share one PostgreSQL database. Postbacks are spread over
//! both receivers, a tenth of them sent twice at once, while the worker
//! processes are killed with SIGKILL every few seconds and restarted (one under
//! its old name, one under a new one). When the queue has drained, every
//! acknowledged postback must be exactly one conversion with exactly one ledger
//! entry, the ledger exact to the cent, no job left running, and the affiliate
//! notified of each conversion. Exits non-zero on any loss or duplicate.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/trcker")]
    trcker: PathBuf,
    /// A PostgreSQL server whose user may create databases.
    #[arg(
        long,
        env = "TRCKER_CHAOS_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// Postbacks to send.
    #[arg(long, default_value_t = 5000)]
    postbacks: usize,
    /// Seconds between worker kills.
    #[arg(long, default_value_t = 3)]
    kill_every: u64,
}

fn spawn(
    trcker: &PathBuf,
    role: &str,
    db: &str,
    dir: &std::path::Path,
    name: Option<&str>,
) -> (Child, Option<String>) {
    use std::io::{BufRead, BufReader};
    let mut cmd = Command::new(trcker);
    cmd.arg(role)
        .env("DATABASE_URL", db)
        .env("TRCKER_LISTEN", "127.0.0.1:0")
        .env("TRCKER_DATA_DIR", dir)
        .env("TRCKER_OPERATOR_TOKEN", "chaos-operator")
        .env("TRCKER_ALLOW_PRIVATE_TARGETS", "true")
        .env("TRCKER_LOG", "error")
        .env("TRCKER_DB_CONNECTIONS", "8")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(n) = name {
        cmd.env("TRCKER_WORKER_NAME", n);
    }
    let mut child = cmd.spawn().expect("spawn trcker");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut base = None;
    for line in lines.by_ref() {
        let line = line.expect("banner");
        if let Some(v) = line.trim().strip_prefix("listening on") {
            base = Some(v.trim().to_owned());
        }
        if line.contains("operator token") || line.contains("workers are running") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    (child, base)
}

fn kill9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
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
    let db = format!(
        "{}/{dbname}",
        args.postgres_url.rsplit_once('/').expect("url").0
    );
    let dir = tempfile::tempdir().expect("tempdir");

    // The affiliate's server: counts the conversions it is told about.
    let seen: Arc<Mutex<(u64, HashSet<String>)>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let affiliate_url = format!("http://{}", listener.local_addr().expect("addr"));
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut sock, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    if let Some(cid) = req
                        .split("conv=")
                        .nth(1)
                        .and_then(|r| r.split([' ', '&']).next())
                        && let Ok(mut s) = seen.lock()
                    {
                        s.0 += 1;
                        s.1.insert(cid.to_owned());
                    }
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
    }

    let (mut serve_a, base_a) = spawn(&args.trcker, "serve", &db, dir.path(), None);
    let (mut serve_b, base_b) = spawn(&args.trcker, "serve", &db, dir.path(), None);
    let (base_a, base_b) = (base_a.expect("serve a"), base_b.expect("serve b"));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let post = |path: String, token: String, body: Value| {
        let req = http
            .post(format!("{base_a}{path}"))
            .bearer_auth(token)
            .json(&body);
        async move {
            req.send()
                .await
                .expect("seed")
                .json::<Value>()
                .await
                .expect("seed json")
        }
    };
    let tenant = post(
        "/api/v1/tenants".into(),
        "chaos-operator".into(),
        json!({"name":"Chaos","slug":"chaos"}),
    )
    .await;
    let key = tenant["api_key"].as_str().expect("key").to_owned();
    let program = post(
        "/api/v1/programs".into(),
        key.clone(),
        json!({"name":"Pro","slug":"pro",
        "destination_url":"https://shop.example/","commission":{"type":"flat","value":"1.00"}}),
    )
    .await;
    post(
        "/api/v1/affiliates".into(),
        key.clone(),
        json!({"name":"Jane","email":"jane@example.com","slug":"jane",
        "postback_url": format!("{affiliate_url}/pb?conv={{conversion_id}}")}),
    )
    .await;
    let integration = post(
        "/api/v1/integrations".into(),
        key.clone(),
        json!({"name":"Shop","program_id":program["id"]}),
    )
    .await;
    let secret = integration["secret"].as_str().expect("secret").to_owned();
    let mut clicks = Vec::new();
    for _ in 0..100 {
        let r = http
            .get(format!("{base_a}/api/r/chaos/pro?via=jane"))
            .send()
            .await
            .expect("click");
        let loc = r.headers()["location"].to_str().expect("loc").to_owned();
        clicks.push(loc.rsplit_once("click_id=").expect("cid").1.to_owned());
    }

    // Worker processes, killed and restarted while the postbacks arrive.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kills = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let killer = {
        let (trcker, db, dir_path, stop, kills) = (
            args.trcker.clone(),
            db.clone(),
            dir.path().to_owned(),
            stop.clone(),
            kills.clone(),
        );
        let every = args.kill_every;
        std::thread::spawn(move || {
            let mut w1 = spawn(&trcker, "worker", &db, &dir_path, Some("chaos-w1")).0;
            let mut w2 = spawn(&trcker, "worker", &db, &dir_path, None).0;
            let mut turn = 0u64;
            let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
            while !stopped() {
                let slept = Instant::now();
                while !stopped() && slept.elapsed() < Duration::from_secs(every) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if stopped() {
                    break;
                }
                turn += 1;
                if turn % 2 == 1 {
                    kill9(&mut w1);
                    w1 = spawn(&trcker, "worker", &db, &dir_path, Some("chaos-w1")).0; // same name
                } else {
                    kill9(&mut w2);
                    w2 = spawn(&trcker, "worker", &db, &dir_path, None).0; // a new name
                }
                kills.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (w1, w2)
        })
    };

    let started = Instant::now();
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let duplicates_answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..32 {
        let (http, next, acked, dups, clicks) = (
            http.clone(),
            next.clone(),
            acked.clone(),
            duplicates_answered.clone(),
            clicks.clone(),
        );
        let (a, b, secret, n) = (
            base_a.clone(),
            base_b.clone(),
            secret.clone(),
            args.postbacks,
        );
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let base = if i % 2 == 0 { &a } else { &b };
                let url = format!("{base}/api/postback/chaos/pro?secret={secret}&click_id={}&amount=10&txn_id=t{i}", clicks[i % clicks.len()]);
                let copies = if i % 10 == 0 { 2 } else { 1 };
                let mut accepted = 0;
                for _ in 0..copies {
                    // A merchant retries until it gets an answer.
                    for _attempt in 0..20 {
                        match http.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                let body: Value = r.json().await.unwrap_or_default();
                                if body["status"] == "accepted" {
                                    accepted += 1;
                                } else {
                                    dups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                                break;
                            }
                            _ => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                }
                if accepted > 1 {
                    eprintln!("txn t{i} was accepted {accepted} times");
                }
                if accepted >= 1 {
                    acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for s in senders {
        let _ = s.await;
    }
    let send_secs = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut w1, mut w2) = killer.join().expect("killer");
    let kills = kills.load(std::sync::atomic::Ordering::Relaxed);
    let acked = acked.load(std::sync::atomic::Ordering::Relaxed);

    // Wait for the pipeline to drain.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db)
        .await
        .expect("db");
    let drain_started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let conversions = count(
            &pool,
            "SELECT count(*) FROM conversions WHERE payout_minor IS NOT NULL",
        )
        .await;
        let pending = count(
            &pool,
            "SELECT count(*) FROM notification_deliveries WHERE status <> 'delivered'",
        )
        .await;
        let deliveries = count(&pool, "SELECT count(*) FROM notification_deliveries").await;
        if conversions as u64 >= acked && deliveries as u64 >= acked && pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "the pipeline did not drain: {conversions} conversions, {deliveries} deliveries ({pending} not delivered)"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    // Jobs held by a killed worker are handed back once its heartbeat is stale
    // (10 s); they then run again, changing nothing.
    let orphans_started = Instant::now();
    while count(
        &pool,
        "SELECT count(*) FROM apalis.jobs WHERE status IN ('Running', 'Queued')",
    )
    .await
        > 0
        && orphans_started.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let orphan_secs = orphans_started.elapsed().as_secs_f64();
    let conversions = count(&pool, "SELECT count(*) FROM conversions").await;
    let distinct_txn = count(&pool, "SELECT count(DISTINCT txn_id) FROM conversions").await;
    let ledger = count(&pool, "SELECT count(*) FROM ledger_entries").await;
    let ledger_sum = count(
        &pool,
        "SELECT COALESCE(sum(amount_minor), 0)::bigint FROM ledger_entries",
    )
    .await;
    let stuck_inbox = count(
        &pool,
        "SELECT count(*) FROM postbacks WHERE state = 'received'",
    )
    .await;
    let unattributed = count(
        &pool,
        "SELECT count(*) FROM postbacks WHERE state = 'unattributed'",
    )
    .await;
    let running = count(
        &pool,
        "SELECT count(*) FROM apalis.jobs WHERE status IN ('Running', 'Queued')",
    )
    .await;
    let conversions_after = count(&pool, "SELECT count(*) FROM conversions").await;
    let ledger_after = count(&pool, "SELECT count(*) FROM ledger_entries").await;
    let (calls, notified) = seen.lock().map(|s| (s.0, s.1.len())).unwrap_or_default();

    for c in [&mut serve_a, &mut serve_b, &mut w1, &mut w2] {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
    pool.close().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;

    let lost = acked as i64 - conversions;
    let report = json!({
        "postbacks_sent": args.postbacks,
        "acknowledged": acked,
        "duplicate_answers": duplicates_answered.load(std::sync::atomic::Ordering::Relaxed),
        "conversions": conversions,
        "duplicate_conversions": conversions - distinct_txn,
        "lost": lost,
        "ledger_entries": ledger,
        "ledger_sum_minor": ledger_sum,
        "ledger_expected_minor": acked as i64 * 100,
        "unattributed": unattributed,
        "inbox_still_received": stuck_inbox,
        "jobs_still_running": running,
        "affiliate_calls": calls,
        "affiliate_conversions_notified": notified,
        "worker_kills": kills,
        "send_seconds": (send_secs * 10.0).round() / 10.0,
        "drain_seconds_after_last_postback": (drain_secs * 10.0).round() / 10.0,
        "seconds_until_no_job_running_after_drain": (orphan_secs * 10.0).round() / 10.0,
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    let ok = args.postbacks as u64 == acked
        && lost == 0
        && conversions == distinct_txn
        && ledger == conversions
        && ledger_sum == acked as i64 * 100
        && stuck_inbox == 0
        && running == 0
        && conversions_after == conversions
        && ledger_after == ledger
        && notified as i64 == conversions;
    if !ok {
        eprintln!("FAILED: loss, duplicate or leftover work");
        std::process::exit(1);
    }
    eprintln!("chaos run passed");
}
