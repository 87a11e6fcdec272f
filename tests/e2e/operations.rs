//! What an operator meets first: the front page, and the files Trcker keeps.

use reqwest::StatusCode;

use crate::harness::{AffiliateServer, Db, TestApp, spawn, spawn_configured};
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

/// Forwarding headers name the client only when the peer is a trusted proxy:
/// for stored click addresses and for integrations' IP allow-lists alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    use trcker_storage::sea_orm::EntityTrait;
    let click_ip = |app: &TestApp, id: String| {
        let services = app.services();
        async move {
            services.clicks.flush().await;
            trcker_storage::entities::click::Entity::find_by_id(id)
                .one(&services.store.conn)
                .await
                .expect("query")
                .expect("click")
                .ip
        }
    };
    let forwarded_click = |app: &TestApp| {
        let req = app
            .http
            .get(app.url("/api/r/acme/pro?via=jane"))
            .header("x-forwarded-for", "203.0.113.7")
            .header("user-agent", "Mozilla/5.0");
        async move {
            let resp = req.send().await.expect("click");
            let location = resp.headers()["location"]
                .to_str()
                .expect("location")
                .to_owned();
            location
                .rsplit_once("click_id=")
                .expect("click id")
                .1
                .to_owned()
        }
    };

    // Not trusted (the default): the header is ignored, whoever sends it.
    let app = spawn(Db::Sqlite).await;
    let jane = AffiliateServer::start(200).await;
    app.quickstart_setup("acme", &jane.url).await;
    let id = forwarded_click(&app).await;
    assert_eq!(click_ip(&app, id).await.as_deref(), Some("127.0.0.1"));
    app.stop().await;

    // Behind a trusted proxy (here, this machine): the forwarded client.
    let app = spawn_configured(None, |c| c.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let id = forwarded_click(&app).await;
    assert_eq!(
        click_ip(&app, id.clone()).await.as_deref(),
        Some("203.0.113.7")
    );
    // An allow-list of the client's network takes its postbacks through the proxy.
    let (status, body) = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/v1/integrations/{}", s.integration_id),
            Some(&s.tenant.key),
            Some(serde_json::json!({"ip_allowlist": ["203.0.113.0/24"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let postback = |forwarded: Option<&str>| {
        let mut req = app.http.get(app.url(&format!(
            "/api/postback/acme/pro?secret={}&click_id={id}&amount=5&txn_id=fwd",
            s.secret
        )));
        if let Some(f) = forwarded {
            req = req.header("x-forwarded-for", f);
        }
        async move { req.send().await.expect("postback").status() }
    };
    assert_eq!(postback(None).await, StatusCode::FORBIDDEN);
    assert_eq!(postback(Some("198.51.100.1")).await, StatusCode::FORBIDDEN);
    assert_eq!(postback(Some("203.0.113.9")).await, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_trusted_proxy_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = trcker::Config::with_data_dir(dir.path());
    config.trusted_proxies = vec!["10.0.0.0/8".into(), "not-a-range".into()];
    let err = trcker::App::start(config, trcker::Roles::All)
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("TRCKER_TRUSTED_PROXIES") && msg.contains("not-a-range"),
        "{msg}"
    );
}

/// `/metrics` after a click and a postback carried to the affiliate: every
/// series the operations guide lists is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_requests_postbacks_clicks_jobs_and_deliveries() {
    let app = spawn(Db::Sqlite).await;
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let (status, _) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=79&txn_id=m1",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.postback("/api/postback/acme/pro?txn_id=m2").await.0,
        StatusCode::UNAUTHORIZED
    );
    jane.next().await;
    app.services().clicks.flush().await;
    // The notify job records its attempt just after the call.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let resp = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(resp.status(), StatusCode::OK);
        let text = resp.text().await.expect("body");
        if text.contains(r#"trcker_jobs_total{job="trcker.notify",result="ok"}"#)
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for series in [
        r#"trcker_http_requests_total{route="click",status="302"}"#,
        r#"trcker_http_request_duration_seconds_bucket{route="postback""#,
        r#"trcker_postbacks_total{outcome="accepted"}"#,
        r#"trcker_postbacks_total{outcome="refused",code="missing-secret"}"#,
        "trcker_clicks_written_total",
        "trcker_clicks_buffered",
        r#"trcker_jobs_total{job="trcker.attribute",result="ok"}"#,
        r#"trcker_job_duration_seconds_bucket{job="trcker.notify""#,
        r#"trcker_queue_jobs{job="trcker.attribute"}"#,
        r#"trcker_notification_attempts_total{outcome="delivered"}"#,
        r#"trcker_db_connections{state="idle"}"#,
    ] {
        assert!(text.contains(series), "{series} missing in:\n{text}");
    }
    #[cfg(trcker_promtool)]
    {
        use std::io::Write;
        let mut check = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool");
        check
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = check.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    app.stop().await;
}

/// Retention deletes old clicks, finished postbacks and finished deliveries
/// (with their attempts), and nothing else: recent rows, a postback still in
/// the inbox, and every money row stay.
async fn retention_deletes_what_is_old_and_nothing_else(app: &TestApp) {
    use chrono::{Duration, Utc};
    use trcker_storage::entities::*;
    use trcker_storage::sea_orm::sea_query::Expr;
    use trcker_storage::sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let old_click = app.click_id("/api/r/acme/pro?via=jane").await;
    let new_click = app.click_id("/api/r/acme/pro?via=jane").await;
    for (txn, click) in [("r1", &old_click), ("r2", &new_click)] {
        let (status, _) = app
            .postback(&format!(
                "/api/postback/acme/pro?secret={}&click_id={click}&amount=79&txn_id={txn}",
                s.secret
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        jane.next().await;
    }
    let services = app.services();
    services.clicks.flush().await;
    let db = &services.store.conn;
    // Wait for both deliveries to be recorded as delivered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while notification_delivery::Entity::find()
        .filter(notification_delivery::Column::Status.eq(notification_delivery::Status::Delivered))
        .count(db)
        .await
        .expect("count")
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries not recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let long_ago = Utc::now() - Duration::days(500);
    // The old sale's click, postback and delivery are 500 days old; so are
    // its conversion and ledger entries (money rows: they stay).
    let old_conv = conversion::Entity::find()
        .filter(conversion::Column::TxnId.eq("r1"))
        .one(db)
        .await
        .expect("query")
        .expect("conversion");
    click::Entity::update_many()
        .col_expr(click::Column::CreatedAt, Expr::value(long_ago))
        .filter(click::Column::Id.eq(old_click.as_str()))
        .exec(db)
        .await
        .expect("age the click");
    postback::Entity::update_many()
        .col_expr(postback::Column::CreatedAt, Expr::value(long_ago))
        .filter(postback::Column::TxnId.eq("r1"))
        .exec(db)
        .await
        .expect("age the postback");
    notification_delivery::Entity::update_many()
        .col_expr(
            notification_delivery::Column::NextAttemptAt,
            Expr::value(long_ago),
        )
        .filter(notification_delivery::Column::ConversionId.eq(old_conv.id.as_str()))
        .exec(db)
        .await
        .expect("age the delivery");
    conversion::Entity::update_many()
        .col_expr(conversion::Column::CreatedAt, Expr::value(long_ago))
        .exec(db)
        .await
        .expect("age the conversions");
    ledger_entry::Entity::update_many()
        .col_expr(ledger_entry::Column::CreatedAt, Expr::value(long_ago))
        .exec(db)
        .await
        .expect("age the ledger");
    // A postback accepted long ago but still in the inbox is never deleted.
    let waiting = postback::Entity::find()
        .filter(postback::Column::TxnId.eq("r2"))
        .one(db)
        .await
        .expect("query")
        .expect("postback");
    postback::Entity::update_many()
        .col_expr(postback::Column::CreatedAt, Expr::value(long_ago))
        .col_expr(
            postback::Column::State,
            Expr::value(postback::State::Received),
        )
        .filter(postback::Column::Id.eq(waiting.id.as_str()))
        .exec(db)
        .await
        .expect("age the waiting postback");

    // While an offer's window plus hold reaches back past the click, it stays.
    let program = format!("/api/v1/programs/{}", s.program_id);
    let patch = |body: serde_json::Value| {
        app.api(
            reqwest::Method::PATCH,
            &program,
            Some(&s.tenant.key),
            Some(body),
        )
    };
    let (status, body) =
        patch(serde_json::json!({"attribution_window_days": 365, "hold_days": 200})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let counts = |d: trcker_services::pipeline::retention::Deleted| {
        (d.clicks, d.postbacks, d.deliveries, d.attempts)
    };
    let deleted = services
        .pipeline
        .apply_retention(Utc::now())
        .await
        .expect("retention");
    assert_eq!(counts(deleted), (0, 1, 1, 1), "{deleted:?}");
    patch(serde_json::json!({"attribution_window_days": 30, "hold_days": 0})).await;
    let deleted = services
        .pipeline
        .apply_retention(Utc::now())
        .await
        .expect("retention");
    assert_eq!(counts(deleted), (1, 0, 0, 0), "{deleted:?}");
    let exists = |id: String| async move {
        click::Entity::find_by_id(id)
            .one(db)
            .await
            .expect("q")
            .is_some()
    };
    assert!(!exists(old_click.clone()).await);
    assert!(exists(new_click.clone()).await);
    assert!(
        postback::Entity::find_by_id(waiting.id.clone())
            .one(db)
            .await
            .expect("q")
            .is_some(),
        "a waiting postback is kept"
    );
    assert_eq!(
        conversion::Entity::find().count(db).await.expect("count"),
        2
    );
    assert_eq!(
        ledger_entry::Entity::find().count(db).await.expect("count"),
        2
    );
    assert_eq!(
        notification_delivery::Entity::find()
            .count(db)
            .await
            .expect("count"),
        1
    );
    // Nothing is left to delete.
    let again = services
        .pipeline
        .apply_retention(Utc::now())
        .await
        .expect("retention");
    assert_eq!(again, Default::default());
}
on_both_databases!(retention_deletes_what_is_old_and_nothing_else);
