//! The pipeline scenarios: sustained conversions per second (attributed,
//! commissioned and the affiliate notified), end-to-end latency at half that
//! rate, and attribution latency with many clicks stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use trcker_bench::{Affiliate, Key, Notify};

use crate::{Args, Server, bench_seed, percentile_ms};

/// Makes one click and returns its id.
pub async fn click(http: &reqwest::Client, base: &str) -> String {
    let r = http
        .get(format!("{base}/api/r/bench/pro?via=jane"))
        .send()
        .await
        .expect("click");
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    location
        .rsplit_once("click_id=")
        .expect("click id")
        .1
        .to_owned()
}

/// How a merchant's server answers back-pressure (429/503): it tries again,
/// this often, this long apart.
const TRIES: usize = 100;
const RETRY_PAUSE: Duration = Duration::from_millis(20);

fn postback_url(base: &str, secret: &str, click_id: &str, txn: &str) -> String {
    format!(
        "{base}/api/postback/bench/pro?secret={secret}&click_id={click_id}&amount=10&txn_id={txn}"
    )
}

async fn postback(
    http: &reqwest::Client,
    base: &str,
    secret: &str,
    click_id: &str,
    txn: &str,
) -> Option<(Instant, Value)> {
    let url = postback_url(base, secret, click_id, txn);
    for _ in 0..TRIES {
        match http.get(&url).send().await {
            Ok(r) if r.status() == 200 => {
                let at = Instant::now();
                return Some((at, r.json().await.unwrap_or_default()));
            }
            _ => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
    None
}

/// The same over the load generator's own lean connection (see `crate::get`),
/// for the full-speed phase; whether it was accepted.
async fn postback_lean(conn: &mut Option<crate::Connection>, url: &str) -> bool {
    let uri: hyper::Uri = url.parse().expect("postback URL");
    for _ in 0..TRIES {
        match crate::get(conn, &uri).await {
            Ok(status) if status == hyper::StatusCode::OK => return true,
            _ => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
    false
}

async fn wait_for(affiliate: &Affiliate, prefix: &str, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while affiliate.count_with_prefix(prefix) < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// How the pipeline scenario's affiliate is told of each conversion.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Told {
    /// Her postback URL template, by GET (`/n?txn={txn_id}`).
    Postback,
    /// Her webhook endpoint: a signed JSON event, by POST.
    Webhook,
}

/// Conversions per second through the whole pipeline, then end-to-end latency
/// (accepted → affiliate notified) at half that rate.
pub async fn pipeline(
    args: &Args,
    http: &reqwest::Client,
    database_url: Option<&str>,
    told: Told,
) -> Value {
    let affiliate = Affiliate::start(match told {
        Told::Postback => Key::Query("txn"),
        Told::Webhook => Key::JsonField("txn_id"),
    })
    .await;
    let server = Server::start(&args.trcker, database_url);
    let template = format!("{}/n?txn={{txn_id}}", affiliate.url);
    let webhook = format!("{}/webhooks", affiliate.url);
    let seeded = bench_seed(
        http,
        &server.base,
        match told {
            Told::Postback => Notify::Postback(&template),
            Told::Webhook => Notify::Webhook(&webhook),
        },
    )
    .await;
    let click_id = click(http, &server.base).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the click writer's batch

    // On PostgreSQL, the database's own count of commits tells how many
    // transactions a conversion costs.
    let stats = match database_url {
        Some(url) => Some(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .expect("postgres"),
        ),
        None => None,
    };
    let commits = |pool: Option<sqlx::PgPool>| async move {
        let pool = pool?;
        sqlx::query_scalar::<_, i64>(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .ok()
    };
    let commits_before = commits(stats.clone()).await;

    // Maximum: N postbacks as fast as intake takes them; the clock stops when
    // the affiliate has heard of the last one.
    let n = args.pipeline_postbacks;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (base, secret, click_id, next) = (
            server.base.clone(),
            seeded.secret.clone(),
            click_id.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut failed = 0u64;
            let mut conn = None;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return failed;
                }
                let url = postback_url(&base, &secret, &click_id, &format!("max{i}"));
                if !postback_lean(&mut conn, &url).await {
                    failed += 1;
                }
            }
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap_or(1);
    }
    let intake_secs = started.elapsed().as_secs_f64();
    let drained = wait_for(&affiliate, "max", n, Duration::from_secs(900)).await;
    let total_secs = started.elapsed().as_secs_f64();
    let rate = affiliate.count_with_prefix("max") as f64 / total_secs;
    tokio::time::sleep(Duration::from_millis(1500)).await; // statistics are flushed each second
    let commits_per_conversion = match (commits_before, commits(stats.clone()).await) {
        (Some(a), Some(b)) => Some(((b - a) as f64 / n as f64 * 10.0).round() / 10.0),
        _ => None,
    };

    // Half that rate, paced (open loop), for the scenario's time.
    let half = (rate / 2.0).max(1.0);
    let count = ((half * args.seconds as f64) as usize).max(10);
    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for k in 0..count {
        tokio::time::sleep_until((t0 + Duration::from_secs_f64(k as f64 / half)).into()).await;
        let (http, base, secret, click_id, accepted) = (
            http.clone(),
            server.base.clone(),
            seeded.secret.clone(),
            click_id.clone(),
            accepted.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let txn = format!("half{k}");
            if let Some((at, _)) = postback(&http, &base, &secret, &click_id, &txn).await {
                accepted.lock().expect("accepted").insert(txn, at);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let half_drained = wait_for(&affiliate, "half", count, Duration::from_secs(300)).await;
    // (accepted, µs until notified): when the slowest were accepted tells a
    // stall of the whole pipeline (a run of slow ones) from scattered ones.
    let timed: Vec<(Instant, u64)> = accepted
        .lock()
        .expect("accepted")
        .iter()
        .filter_map(|(txn, at)| {
            affiliate
                .arrival(txn)
                .map(|n| (*at, n.saturating_duration_since(*at).as_micros() as u64))
        })
        .collect();
    let mut latencies: Vec<u64> = timed.iter().map(|(_, l)| *l).collect();
    latencies.sort_unstable();
    let slow: Vec<f64> = timed
        .iter()
        .filter(|(_, l)| *l > 250_000)
        .map(|(at, _)| at.saturating_duration_since(t0).as_secs_f64())
        .collect();
    let slow_between = slow
        .iter()
        .copied()
        .reduce(f64::min)
        .zip(slow.iter().copied().reduce(f64::max))
        .map(|(a, b)| json!([round1(a), round1(b)]));
    // Notifications heard per second of the paced phase (and its drain): a
    // pipeline that falls behind the offered rate shows as seconds below it.
    let mut per_second: Vec<u64> = Vec::new();
    for (at, l) in &timed {
        let heard = at.saturating_duration_since(t0) + Duration::from_micros(*l);
        let second = heard.as_secs() as usize;
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += 1;
    }
    let peak = server.peak_rss_mib();
    json!({
        "postbacks": n,
        "failed_postbacks": failed,
        "intake_seconds": round1(intake_secs),
        "all_notified": drained,
        "seconds_until_all_notified": round1(total_secs),
        "conversions_per_second": rate.round(),
        "database_commits_per_conversion": commits_per_conversion,
        "half_load_per_second": half.round(),
        "half_load_postbacks": count,
        "half_load_all_notified": half_drained,
        "end_to_end_p50_ms": percentile_ms(&latencies, 0.50),
        "end_to_end_p99_ms": percentile_ms(&latencies, 0.99),
        "end_to_end_max_ms": latencies.last().map(|l| *l / 1000),
        "half_load_over_250_ms": slow.len(),
        "half_load_over_250_ms_accepted_between_s": slow_between,
        "half_load_notified_per_second": per_second,
        "peak_rss_mib": peak.round(),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Attribution latency (postback accepted → conversion attributed) with
/// `sizes` clicks stored, on PostgreSQL; the clicks beyond the real ones are
/// generated in bulk inside the database.
pub async fn attribution_at_scale(
    args: &Args,
    http: &reqwest::Client,
    database_url: &str,
    sizes: &[u64],
) -> Value {
    let server = Server::start(&args.trcker, Some(database_url));
    let seeded = bench_seed(http, &server.base, Notify::Nothing).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await
        .expect("postgres");
    let template = click(http, &server.base).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = args.attribution_samples;
    let mut rows = Vec::new();
    for (round, &size) in sizes.iter().enumerate() {
        let have: i64 = sqlx::query_scalar("SELECT count(*) FROM clicks")
            .fetch_one(&pool)
            .await
            .expect("count");
        let missing = (size as i64 - have - samples as i64).max(0);
        let fill_started = Instant::now();
        // In chunks, spread over the last 30 days, all of the tenant's program.
        let mut done = 0i64;
        while done < missing {
            let chunk = (missing - done).min(1_000_000);
            sqlx::query(
                "INSERT INTO clicks (id, tenant_id, created_at, program_id, affiliate_id, link_id, \
                 ip, user_agent, referrer, is_unique, is_bot, is_test, outcome, sub1, sub2, sub3, sub4, sub5) \
                 SELECT 'b' || substr(md5(g::text || $4), 1, 31), c.tenant_id, \
                 c.created_at - ((g % 2592000) * interval '1 second'), c.program_id, c.affiliate_id, \
                 c.link_id, c.ip, c.user_agent, c.referrer, c.is_unique, c.is_bot, c.is_test, c.outcome, \
                 c.sub1, c.sub2, c.sub3, c.sub4, c.sub5 \
                 FROM clicks c, generate_series($2::bigint, $3::bigint) g WHERE c.id = $1",
            )
            .bind(&template)
            .bind(done + 1)
            .bind(done + chunk)
            .bind(format!("r{round}"))
            .execute(&pool)
            .await
            .expect("bulk clicks");
            done += chunk;
        }
        let _ = sqlx::query("ANALYZE clicks").execute(&pool).await;
        let fill_secs = fill_started.elapsed().as_secs_f64();
        // Fresh clicks, as customers make them, then one postback each, in turn.
        let mut ids = Vec::with_capacity(samples);
        for _ in 0..samples {
            ids.push(click(http, &server.base).await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM clicks")
            .fetch_one(&pool)
            .await
            .expect("count");
        let mut latencies = Vec::with_capacity(samples);
        for (i, id) in ids.iter().enumerate() {
            let Some((at, body)) = postback(
                http,
                &server.base,
                &seeded.secret,
                id,
                &format!("scale{round}-{i}"),
            )
            .await
            else {
                continue;
            };
            let Some(pb) = body["postback_id"].as_str() else {
                continue;
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let state: String = sqlx::query_scalar("SELECT state FROM postbacks WHERE id = $1")
                    .bind(pb)
                    .fetch_one(&pool)
                    .await
                    .expect("state");
                if state != "received" {
                    if state == "processed" {
                        latencies.push(at.elapsed().as_micros() as u64);
                    }
                    break;
                }
                if Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
        latencies.sort_unstable();
        rows.push(json!({
            "clicks_stored": stored,
            "bulk_fill_seconds": round1(fill_secs),
            "attributed": latencies.len(),
            "p50_ms": percentile_ms(&latencies, 0.50),
            "p99_ms": percentile_ms(&latencies, 0.99),
        }));
    }
    pool.close().await;
    Value::Array(rows)
}
