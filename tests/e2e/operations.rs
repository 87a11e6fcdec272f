//! What an operator meets first: the front page, and the files Trcker keeps.

use reqwest::StatusCode;

use crate::harness::{AffiliateServer, TestApp, spawn_configured, spawn_on};
use crate::on_both_databases;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_page_says_what_this_is_and_where_to_go() {
    let app = spawn_on(None).await;
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
    let app = spawn_on(None).await;
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
    let app = spawn_on(None).await;
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
    let app = spawn_on(None).await;
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
    // Nothing is left to delete, but for the waiting postback if the
    // sweeper has queued it again meanwhile and its job finished it (it is
    // old and done then).
    let again = services
        .pipeline
        .apply_retention(Utc::now())
        .await
        .expect("retention");
    let waiting_left = postback::Entity::find_by_id(waiting.id.clone())
        .one(db)
        .await
        .expect("query");
    let expected = trcker_services::pipeline::retention::Deleted {
        postbacks: u64::from(waiting_left.is_none()),
        ..Default::default()
    };
    assert_eq!(again, expected);
}
on_both_databases!(retention_deletes_what_is_old_and_nothing_else);

/// With `metrics_listen`, /metrics is served there and not on the public
/// listener; a workers-only process serves its own metrics the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_a_listen_address_of_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = trcker::Config::with_data_dir(dir.path());
    config.operator_token = Some("metrics-listen-operator".to_owned().into());
    config.metrics_listen = Some("127.0.0.1:0".into());
    let app = trcker::App::start(config.clone(), trcker::Roles::All)
        .await
        .expect("start");
    let http = reqwest::Client::new();
    let main = app.addr.expect("listening");
    let metrics = app.metrics_addr.expect("a metrics listener");
    assert_ne!(main, metrics);
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.expect("get") }
    };
    assert_eq!(
        get(format!("http://{main}/healthz")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(format!("http://{main}/metrics")).await.status(),
        StatusCode::NOT_FOUND,
        "not on the public listener"
    );
    let resp = get(format!("http://{metrics}/metrics")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("text");
    assert!(text.contains("trcker_http_requests_total"), "{text}");
    assert_eq!(
        get(format!("http://{metrics}/healthz")).await.status(),
        StatusCode::NOT_FOUND,
        "the metrics listener serves metrics only"
    );

    let workers = trcker::App::start(config, trcker::Roles::Workers)
        .await
        .expect("workers");
    assert!(workers.addr.is_none());
    let addr = workers.metrics_addr.expect("metrics");
    let text = get(format!("http://{addr}/metrics"))
        .await
        .text()
        .await
        .expect("text");
    assert!(text.contains("trcker_queue_jobs"), "{text}");
    workers.shutdown_token().cancel();
    workers.wait().await;
    app.shutdown_token().cancel();
    app.wait().await;
}

/// SQLite finds a batch of clicks by id through their primary key however
/// many clicks a tenant has: the sweeper gives its planner statistics
/// (without them, `tenant_id = ? AND id IN (…)` walked the tenant's index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_looks_up_batches_by_id_once_the_sweeper_has_analyzed() {
    use trcker_storage::entities::{click, program};
    use trcker_storage::sea_orm::{ConnectionTrait, EntityTrait, Statement};
    let app = spawn_on(None).await;
    let s = app.quickstart_setup("acme", "http://127.0.0.1:9/pb").await;
    let services = app.services();
    let store = &services.store;
    let plan = || async {
        let rows = store
            .conn
            .query_all_raw(Statement::from_string(
                store.conn.get_database_backend(),
                "EXPLAIN QUERY PLAN SELECT * FROM clicks WHERE tenant_id = 't' AND id IN ('a', 'b', 'c', 'd')",
            ))
            .await
            .expect("plan");
        rows.iter()
            .map(|r| r.try_get_by_index::<String>(3).expect("detail"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let program = program::Entity::find_by_id(s.program_id.clone())
        .one(&store.conn)
        .await
        .expect("query")
        .expect("program");
    let now = chrono::Utc::now();
    let clicks: Vec<_> = (0..3000)
        .map(|i| click::Model {
            id: trcker_domain::click_id::ClickId::generate(
                (now.timestamp_millis() - 1000 * i) as u64,
            )
            .to_string(),
            tenant_id: program.tenant_id.clone(),
            created_at: now - chrono::TimeDelta::seconds(i),
            program_id: program.id.clone(),
            affiliate_id: s.affiliate_id.clone().into(),
            link_id: None,
            ip: None,
            user_agent: None,
            referrer: None,
            is_unique: true,
            is_bot: false,
            is_test: false,
            outcome: click::Outcome::Redirected,
            sub1: None,
            sub2: None,
            sub3: None,
            sub4: None,
            sub5: None,
        })
        .collect();
    for chunk in clicks.chunks(500) {
        services.clicks.import(chunk).await.expect("import");
    }
    // The sweeper (every second) analyzes what grew.
    let mut analyzed = Vec::new();
    for _ in 0..3 {
        analyzed.extend(store.refresh_planner_statistics().await.expect("analyze"));
    }
    let plan = plan().await;
    assert!(
        plan.contains("sqlite_autoindex_clicks_1 (id=?)"),
        "by primary key: {plan} (analyzed {analyzed:?})"
    );
    assert!(
        store
            .refresh_planner_statistics()
            .await
            .expect("again")
            .is_empty(),
        "nothing to do until the tables grow again"
    );
    app.stop().await;
}

/// During a rolling upgrade the newer release migrates first: a schema with
/// a migration this release does not know is one it still serves (ready,
/// nothing pending, a start's migrate leaves it alone).
async fn a_schema_ahead_of_this_release_still_serves(app: &TestApp) {
    use trcker_storage::sea_orm::ConnectionTrait;
    let services = app.services();
    let store = &services.store;
    store
        .conn
        .execute_unprepared(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m29991231_000001_from_a_newer_release', 0)",
        )
        .await
        .expect("a newer release's migration");
    assert_eq!(
        store.pending_migrations().await.expect("pending"),
        Vec::<String>::new()
    );
    store.migrate().await.expect("a start's migrate");
    let ready = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "{}",
        ready.text().await.unwrap_or_default()
    );
}

on_both_databases!(a_schema_ahead_of_this_release_still_serves);

/// Every answer names its request: the click redirect, the postback
/// receiver, the admin API (its problems too), the portal and the health
/// endpoints; an id the sender gave is kept when sane and replaced if not.
async fn every_answer_carries_its_request_id(app: &TestApp) {
    let s = app.quickstart_setup("acme", "http://127.0.0.1:9/pb").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let paths = [
        "/".to_owned(),
        "/healthz".to_owned(),
        "/readyz".to_owned(),
        "/api/r/acme/pro?via=jane".to_owned(),
        format!(
            "/api/postback/acme/pro?secret={}&amount=1&txn_id=r1",
            s.secret
        ),
        "/api/v1/programs".to_owned(),
        "/portal/acme/login".to_owned(),
        "/no/such/page".to_owned(),
    ];
    let mut problems = 0;
    for path in &paths {
        let sent = http
            .get(app.url(path))
            .header("x-request-id", "edge-9f2c.1")
            .send()
            .await
            .expect("request");
        assert_eq!(sent.headers()["x-request-id"], "edge-9f2c.1", "{path}");
        let own = http.get(app.url(path)).send().await.expect("request");
        let id = own.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            trcker_domain::ids::IdKind::Request.matches(&id),
            "{path}: {id}"
        );
        // A problem names its request in its body too.
        let is_problem = own
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        if is_problem {
            let body: serde_json::Value = own.json().await.expect("problem");
            assert_eq!(body["request_id"], id.as_str(), "{path}: {body}");
            problems += 1;
        }
    }
    assert_eq!(
        problems, 2,
        "the postback without click_id and the unauthenticated API call"
    );
    let (status, p) = app
        .post(
            "/api/v1/programs",
            &s.tenant.key,
            serde_json::json!({"name": ""}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    assert!(
        trcker_domain::ids::IdKind::Request.matches(p["request_id"].as_str().unwrap_or_default()),
        "{p}"
    );
    let insane = http
        .get(app.url("/healthz"))
        .header("x-request-id", "x".repeat(129))
        .send()
        .await
        .expect("request");
    let id = insane.headers()["x-request-id"].to_str().expect("ascii");
    assert!(trcker_domain::ids::IdKind::Request.matches(id), "{id}");
}

on_both_databases!(every_answer_carries_its_request_id);

/// The schema is ready to distribute by tenant: on a database that holds
/// data from before, the migration makes every primary key and unique
/// index of a tenant-owned table include `tenant_id` (read from the live
/// PostgreSQL catalog), moves the values unique across tenants to
/// `global_keys` (backfilled), and can run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(trcker_pg),
    ignore = "PostgreSQL suite off: set TRCKER_TEST_POSTGRES_URL to run it"
)]
async fn every_unique_index_of_a_tenant_table_includes_tenant_id() {
    use trcker_migrations::{Migrator, MigratorTrait};
    use trcker_storage::sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let db = crate::harness::PgDatabase::create().await;
    let conn = Database::connect(&db.url).await.expect("connect");
    // The schema of the release before, with data in it.
    Migrator::up(&conn, Some(5))
        .await
        .expect("earlier migrations");
    for sql in [
        "INSERT INTO tenants (id, name, slug, status, created_at) VALUES ('ten_a', 'A', 'a', 'active', now())",
        "INSERT INTO api_keys (id, tenant_id, created_at, name, key_hash, key_hint, scope) \
         VALUES ('key_a', 'ten_a', now(), 'k', 'hash-of-key', 'abcd', 'admin')",
        "INSERT INTO programs (id, tenant_id, created_at, updated_at, name, slug, destination_url, currency) \
         VALUES ('prg_a', 'ten_a', now(), now(), 'P', 'p', 'https://shop.example/', 'USD')",
        "INSERT INTO tracking_links (id, tenant_id, created_at, program_id, affiliate_id, code) \
         VALUES ('lnk_a', 'ten_a', now(), 'prg_a', 'aff_a', 'code0001')",
    ] {
        conn.execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let store = trcker_storage::Store::open(&trcker_storage::DatabaseConfig::Postgres {
        url: db.url.clone(),
        max_connections: 4,
    })
    .await
    .expect("open");
    store.migrate().await.expect("the migration, on live data");

    let rows = |sql: &'static str| {
        let conn = &conn;
        async move {
            conn.query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
                .await
                .expect(sql)
                .iter()
                .map(|r| r.try_get_by_index::<String>(0).expect("text"))
                .collect::<Vec<String>>()
        }
    };
    // Tables with a tenant_id are tenant-owned, but for global_keys (a
    // reference table under Citus, which names tenants rather than
    // belonging to one).
    let lacking = rows(
        "SELECT t.relname || '.' || i.relname || ' ' || pg_get_indexdef(i.oid) \
         FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = 'public' AND x.indisunique \
           AND t.relname <> 'global_keys' \
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t.oid \
                       AND a.attname = 'tenant_id' AND NOT a.attisdropped) \
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t.oid \
                       AND a.attname = 'tenant_id' AND a.attnum = ANY(x.indkey))",
    )
    .await;
    assert!(lacking.is_empty(), "unique without tenant_id: {lacking:#?}");
    let owned = rows(
        "SELECT t.relname FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = 'tenant_id' \
         WHERE n.nspname = 'public' AND t.relkind = 'r' AND t.relname <> 'global_keys' \
         ORDER BY 1",
    )
    .await;
    let mut listed = trcker_migrations::TENANT_TABLES.to_vec();
    listed.sort();
    assert_eq!(
        owned, listed,
        "every tenant-owned table is in the migration's list"
    );
    let keys = rows(
        "SELECT conrelid::regclass::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE contype = 'p' AND connamespace = 'public'::regnamespace \
           AND conrelid::regclass::text NOT IN ('tenants', 'global_keys', 'idempotency_keys', 'signing_keys', 'seaql_migrations') \
         ORDER BY 1",
    )
    .await;
    // The report rollups are keyed by what they count, tenant first.
    assert_eq!(keys.len(), listed.len(), "{keys:#?}");
    assert!(
        keys.iter().all(|k| k.ends_with("PRIMARY KEY (tenant_id, id)")
            || k == "report_rollups PRIMARY KEY (tenant_id, dim, day, program_id, affiliate_id, value, currency)"),
        "{keys:#?}"
    );
    let backfilled =
        rows("SELECT kind || ' ' || key || ' ' || object_id FROM global_keys ORDER BY 1").await;
    assert_eq!(
        backfilled,
        ["api_key hash-of-key key_a", "link code0001 lnk_a"]
    );
    let link = trcker_storage::lookup::link_by_code(&store.conn, "code0001")
        .await
        .expect("lookup")
        .expect("the link, through global_keys");
    assert_eq!(link.id.as_str(), "lnk_a");

    // Safe to run again (down, then up).
    Migrator::down(&conn, Some(1)).await.expect("down");
    store.migrate().await.expect("up again");
    assert_eq!(rows("SELECT count(*)::text FROM global_keys").await, ["2"]);
    store.close().await;
}

/// A row from before `global_keys` (written by the release before while the
/// migration ran) is found by its own column and given its global key.
async fn a_key_without_its_global_row_is_found_and_given_one(app: &TestApp) {
    use trcker_storage::sea_orm::{ConnectionTrait, EntityTrait};
    let tenant = app.create_tenant("acme").await;
    let services = app.services();
    let db = &services.store.conn;
    db.execute_unprepared("DELETE FROM global_keys WHERE kind = 'api_key'")
        .await
        .expect("delete");
    let resp = app
        .http
        .get(app.url("/api/v1/programs"))
        .bearer_auth(&tenant.key)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::OK, "found by its hash");
    let restored = trcker_storage::entities::global_key::Entity::find()
        .all(db)
        .await
        .expect("global keys");
    assert!(
        restored
            .iter()
            .any(|k| k.kind == trcker_storage::entities::global_key::Kind::ApiKey),
        "{restored:?}"
    );
}

on_both_databases!(a_key_without_its_global_row_is_found_and_given_one);
