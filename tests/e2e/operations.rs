//! What an operator meets first: the front page, and the files Trcker keeps.

use reqwest::StatusCode;

use crate::harness::{Db, TestApp, spawn};
use crate::on_both_databases;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_page_says_what_this_is_and_where_to_go() {
    let app = spawn(Db::Sqlite).await;
    let resp = app.http.get(app.url("/")).send().await.expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    let html = resp.text().await.expect("body");
    for link in ["/api/docs", "/api/v1/openapi.json", "/healthz", "/readyz"] {
        assert!(
            html.contains(&format!("href=\"{link}\"")),
            "{link} in {html}"
        );
    }
    app.stop().await;
}

/// Ready: the database and the queue answer, and the schema is current.
async fn a_running_trcker_is_ready(app: &TestApp) {
    let resp = app.http.get(app.url("/readyz")).send().await.expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "checks": {"database": "ok", "queue": "ok", "migrations": "ok"}})
    );
}
on_both_databases!(a_running_trcker_is_ready);

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn(Db::Sqlite).await;
    // A write, so that the WAL exists.
    app.create_tenant("acme").await;
    for file in ["trcker.db", "trcker.db-wal", "operator_token.sha256"] {
        let path = app.data_dir().join(file);
        let Ok(meta) = std::fs::metadata(&path) else {
            // The operator token comes from the configuration in tests.
            assert_eq!(
                file,
                "operator_token.sha256",
                "{} is missing",
                path.display()
            );
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{file} is {mode:o}");
    }
    app.stop().await;
}
