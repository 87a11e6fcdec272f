//! Faults: PostgreSQL going away under a running Trcker: postbacks and the API
//! answer 503, redirects go on (clicks wait in the buffer), and everything
//! recovers by itself. Runs against a
//! disposable cluster (`.ci/fault-cluster`), named by
//! `TRCKER_TEST_PG_FAULT_CLUSTER=<version>/<name>` with its server URL in
//! `TRCKER_TEST_PG_FAULT_URL`; stopping the shared server would break every
//! other test.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::harness::{AffiliateServer, PgDatabase, spawn_on};

fn cluster(action: &str, cluster: &str) {
    let (version, name) = cluster.split_once('/').expect("<version>/<name>");
    let mut cmd = Command::new("pg_ctlcluster");
    cmd.args(["--skip-systemctl-redirect", version, name, action]);
    if action == "stop" {
        cmd.args(["-m", "fast"]);
    }
    let status = cmd.status().expect("pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster {action} {cluster} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(trcker_pg_faults),
    ignore = "fault suite off: run .ci/fault-cluster and set TRCKER_TEST_PG_FAULT_CLUSTER and TRCKER_TEST_PG_FAULT_URL"
)]
async fn postgres_down_answers_503_and_trcker_recovers_by_itself() {
    let name = std::env::var("TRCKER_TEST_PG_FAULT_CLUSTER")
        .expect("the fault suite was built with TRCKER_TEST_PG_FAULT_CLUSTER set; set it to run");
    let url = std::env::var("TRCKER_TEST_PG_FAULT_URL")
        .expect("TRCKER_TEST_PG_FAULT_URL: the fault cluster's server URL");
    let db = PgDatabase::create_at(url).await;
    let app = spawn_on(Some(db)).await;
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let pb = |txn: &str| {
        format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=79&txn_id={txn}",
            s.secret
        )
    };

    cluster("stop", &name);
    let restart = scopeguard(name.clone());
    let started = Instant::now();
    let (status, body) = app.postback(&pb("during-outage")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "503 must come within the pool timeout"
    );
    assert_eq!(body["code"], "storage-unavailable");
    // Customers are still redirected: the link resolves from the cache and the
    // click waits in the writer's buffer until the database is back.
    let outage_click = app.click_id("/api/r/acme/pro?via=jane").await;
    let (status, _) = app.get("/api/v1/conversions", &s.tenant.key).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Not ready, and it says why.
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["checks"]["database"], "unreachable", "{ready}");

    cluster("start", &name);
    drop(restart);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, ready) = readiness(&app).await;
        if status == StatusCode::OK {
            assert_eq!(ready["status"], "ready", "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "never ready again: {ready}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The merchant retries; without a restart of Trcker it gets through.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = app.postback(&pb("during-outage")).await;
        if status == StatusCode::OK {
            assert_eq!(
                body["status"], "accepted",
                "the outage stored nothing: {body}"
            );
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(Instant::now() < deadline, "the receiver never recovered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And the workers carry it to the affiliate.
    app.conversions_until(&s.tenant.key, "txn_id=during-outage", |b| {
        b["items"][0]["payout"] == "7.90"
    })
    .await;
    assert!(jane.next().await.contains("payout=7.90"));
    // The click made during the outage was written once the database was back.
    let late = format!(
        "/api/postback/acme/pro?secret={}&click_id={outage_click}&amount=10&txn_id=outage-click",
        s.secret
    );
    assert_eq!(app.postback(&late).await.0, StatusCode::OK);
    app.conversions_until(&s.tenant.key, "txn_id=outage-click", |b| {
        b["items"][0]["payout"] == "1.00"
    })
    .await;
    app.stop().await;
}

async fn readiness(app: &crate::harness::TestApp) -> (StatusCode, serde_json::Value) {
    let resp = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    let status = resp.status();
    (status, resp.json().await.expect("json"))
}

/// Starts the cluster again if the test fails while it is down.
struct Restart(Option<String>);

fn scopeguard(name: String) -> Restart {
    Restart(Some(name))
}

impl Drop for Restart {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(name) = self.0.take()
        {
            cluster("start", &name);
        }
    }
}
