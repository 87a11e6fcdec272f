//! The report scenario: `trcker seed --demo` makes `--report-clicks` clicks
//! and `--report-conversions` sales over 30 days (the clicks written as the
//! click writer writes them, the sales taken through intake and the
//! pipeline), then `trcker web` answers each report of the last 30 days,
//! one request at a time, and each grouping's latency is measured at the
//! client (HTTP included). The baseline is `/healthz` answered the same way
//! by the same process.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Args, Server, percentile_ms};

/// Requests timed per report.
const SAMPLES: usize = 50;

/// The reports timed: each grouping as JSON, and the day report as CSV.
const REPORTS: [(&str, &str); 7] = [
    ("day", "/api/v1/reports?group_by=day"),
    ("program", "/api/v1/reports?group_by=program"),
    ("affiliate", "/api/v1/reports?group_by=affiliate"),
    ("sub1", "/api/v1/reports?group_by=sub1"),
    ("event", "/api/v1/reports?group_by=event"),
    (
        "affiliate jane by day",
        "/api/v1/reports?group_by=day&affiliate_id=",
    ),
    ("day as CSV", "/api/v1/reports/csv?group_by=day"),
];

pub async fn reports(args: &Args, http: &reqwest::Client, database_url: Option<&str>) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let key = seed(args, dir.path(), database_url);
    let seeded_s = started.elapsed().as_secs_f64();
    eprintln!(
        "seeded {} clicks and {} sales in {seeded_s:.0} s",
        args.report_clicks, args.report_conversions
    );
    let server = Server::start_in("web", &args.trcker, database_url, dir);
    let base = server.base.clone();
    let affiliates = get(http, &format!("{base}/api/v1/affiliates"), &key).await;
    let jane = affiliates["items"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["slug"] == "jane"))
        .and_then(|a| a["id"].as_str())
        .expect("jane")
        .to_owned();
    let totals = get(
        http,
        &format!("{base}/api/v1/reports?group_by=program"),
        &key,
    )
    .await;
    let healthz = time(http, &format!("{base}/healthz"), None).await;
    let mut figures = Vec::new();
    for (name, path) in REPORTS {
        let url = match name {
            "affiliate jane by day" => format!("{base}{path}{jane}"),
            _ => format!("{base}{path}"),
        };
        let (p50, p99) = time(http, &url, Some(&key)).await;
        figures.push(json!({"report": name, "p50_ms": p50, "p99_ms": p99}));
    }
    json!({
        "clicks": args.report_clicks,
        "conversions": args.report_conversions,
        "seed_seconds": seeded_s.round(),
        "report_totals": {
            "clicks": totals["totals"]["clicks"],
            "conversions": totals["totals"]["conversions"],
        },
        "healthz_p50_ms": healthz.0,
        "healthz_p99_ms": healthz.1,
        "reports": figures,
        "peak_rss_mib": server.peak_rss_mib().round(),
    })
}

/// Seeds the demo tenant into `dir` (or the PostgreSQL database); its admin
/// API key.
fn seed(args: &Args, dir: &std::path::Path, database_url: Option<&str>) -> String {
    let mut cmd = Command::new(&args.trcker);
    cmd.args(["seed", "--demo", "--clicks"])
        .arg(args.report_clicks.to_string())
        .arg("--conversions")
        .arg(args.report_conversions.to_string())
        .env("TRCKER_DATA_DIR", dir)
        .env("TRCKER_OPERATOR_TOKEN", "bench-operator-token")
        .env("TRCKER_LOG", "warn")
        .stderr(Stdio::null());
    match database_url {
        Some(url) => cmd.env("DATABASE_URL", url),
        None => cmd.env_remove("DATABASE_URL"),
    };
    let out = cmd.output().expect("trcker seed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "trcker seed failed: {text}");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("admin API key"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no API key in the seed's summary: {text}"))
}

async fn get(http: &reqwest::Client, url: &str, key: &str) -> Value {
    let resp = http
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.expect("json")
}

/// p50 and p99 of `SAMPLES` requests, one at a time (after one untimed).
async fn time(http: &reqwest::Client, url: &str, key: Option<&str>) -> (f64, f64) {
    let mut micros = Vec::with_capacity(SAMPLES);
    for i in 0..=SAMPLES {
        let mut req = http.get(url).timeout(Duration::from_secs(30));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let t = Instant::now();
        let resp = req.send().await.expect("request");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.bytes().await.expect("body");
        if i > 0 {
            micros.push(t.elapsed().as_micros() as u64);
        }
    }
    micros.sort_unstable();
    (percentile_ms(&micros, 0.5), percentile_ms(&micros, 0.99))
}
