//! The `trcker` binary itself: first start on a fresh data dir, the operator
//! token shown once, a restart that keeps it, a clean exit on SIGTERM, and the
//! scale-out roles (`trcker web`, `trcker worker`) as separate processes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

pub(crate) struct Running {
    pub(crate) child: Child,
    lines: Vec<String>,
}

/// An HTTP client that follows no redirect.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Starts `trcker serve` and reads its banner up to the operator token line.
fn serve(data_dir: &std::path::Path, token: Option<&str>) -> Running {
    start("serve", data_dir, token, &[])
}

/// Starts `trcker <command>` and reads its banner up to the operator token
/// line (a workers-only process prints none: up to its first line).
pub(crate) fn start(
    command: &str,
    data_dir: &std::path::Path,
    token: Option<&str>,
    env: &[(&str, &str)],
) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trcker"));
    cmd.arg(command);
    launch(cmd, data_dir, token, env)
}

/// Runs `cmd` (`trcker`, or a wrapper that ends by running it) with a test's
/// environment and reads its banner.
pub(crate) fn launch(
    mut cmd: Command,
    data_dir: &std::path::Path,
    token: Option<&str>,
    env: &[(&str, &str)],
) -> Running {
    cmd.env("TRCKER_LISTEN", "127.0.0.1:0")
        .env("TRCKER_DATA_DIR", data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("TRCKER_PUBLIC_URL")
        .env_remove("TRCKER_OPERATOR_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = token {
        cmd.env("TRCKER_OPERATOR_TOKEN", t);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn trcker");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    for line in reader.by_ref() {
        let line = line.expect("line");
        let done = line.contains("operator token") || line.contains("workers are running");
        lines.push(line);
        if done {
            break;
        }
    }
    // Keep reading, as a terminal would, so the process never writes to a closed pipe.
    std::thread::spawn(move || reader.for_each(drop));
    Running { child, lines }
}

impl Running {
    pub(crate) fn value_after(&self, label: &str) -> String {
        self.lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no '{label}' in {:?}", self.lines))
    }

    pub(crate) fn sigterm_and_wait(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("trcker did not exit within 30 s of SIGTERM");
    }
}

#[tokio::test]
async fn serve_generates_the_operator_token_once_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = serve(dir.path(), None);
    let base = first.value_after("listening on");
    let token = first.value_after("operator token");
    assert!(token.starts_with("op_"), "{:?}", first.lines);
    assert!(dir.path().join("trcker.db").exists());
    let hash =
        std::fs::read_to_string(dir.path().join("operator_token.sha256")).expect("hash file");
    assert!(!hash.contains(&token), "only the token's hash is kept");

    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(&token)
        .json(&json!({"name":"Acme","slug":"acme"}))
        .send()
        .await
        .expect("create tenant");
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(first.sigterm_and_wait().success());

    // A restart keeps the token (and the data) without showing it again.
    let second = serve(dir.path(), None);
    assert!(
        second.lines.iter().all(|l| !l.contains(&token)),
        "{:?}",
        second.lines
    );
    let base = second.value_after("listening on");
    let resp = http
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(&token)
        .json(&json!({"name":"Acme","slug":"acme"}))
        .send()
        .await
        .expect("create tenant");
    assert_eq!(
        resp.status(),
        StatusCode::CONFLICT,
        "the first start's tenant is still there"
    );
    assert!(second.sigterm_and_wait().success());
}

/// Clicks buffered for the batch writer when SIGTERM arrives are written before
/// the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_loses_no_buffered_click() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "shutdown-test-operator";
    let run = serve(dir.path(), Some(token));
    let base = run.value_after("listening on");
    let http = no_redirects();
    let post = |path: &str, bearer: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    let tenant: serde_json::Value = post(
        "/api/v1/tenants",
        token,
        json!({"name":"Acme","slug":"acme"}),
    )
    .await
    .expect("tenant")
    .json()
    .await
    .expect("json");
    let key = tenant["api_key"].as_str().expect("key").to_owned();
    post(
        "/api/v1/programs",
        &key,
        json!({"name":"Pro","slug":"pro","destination_url":"https://shop.example/pro",
        "commission":{"type":"flat","value":"1.00"}}),
    )
    .await
    .expect("program");
    post(
        "/api/v1/affiliates",
        &key,
        json!({"name":"Jane","email":"jane@example.com","slug":"jane"}),
    )
    .await
    .expect("affiliate");

    let n = 400;
    let mut handles = Vec::new();
    for _ in 0..n {
        let http = http.clone();
        let url = format!("{base}/api/r/acme/pro?via=jane");
        handles.push(tokio::spawn(async move {
            http.get(url).send().await.map(|r| r.status())
        }));
    }
    for h in handles {
        assert_eq!(h.await.expect("task").expect("click"), StatusCode::FOUND);
    }
    // SIGTERM right away: the clicks may still be in the writer's buffer.
    assert!(run.sigterm_and_wait().success());

    let store = trcker_storage::Store::open(&trcker_storage::Store::sqlite_in(dir.path()))
        .await
        .expect("open");
    use trcker_storage::sea_orm::{EntityTrait, PaginatorTrait};
    let count = trcker_storage::entities::click::Entity::find()
        .count(&store.conn)
        .await
        .expect("count");
    assert_eq!(count, n as u64, "every redirected click is stored");
    store.close().await;
}

/// What [`set_up_over_http`] made.
pub(crate) struct OverHttp {
    /// The tenant's admin API key.
    pub(crate) key: String,
    /// The integration's postback secret.
    pub(crate) secret: String,
    /// A click on Jane's link.
    pub(crate) click_id: String,
}

/// The quickstart's tenant `acme`, offer `pro` (flat 1.00), affiliate
/// `jane` and integration, made over HTTP on a running `trcker` with the
/// operator `token`, and a click on Jane's link (`http` follows no
/// redirect).
pub(crate) async fn set_up_over_http(http: &reqwest::Client, base: &str, token: &str) -> OverHttp {
    let post = |path: &str, bearer: &str, body: serde_json::Value| {
        let req = http
            .post(format!("{base}{path}"))
            .bearer_auth(bearer)
            .json(&body);
        async move {
            let resp = req.send().await.expect("request");
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.json::<serde_json::Value>().await.expect("json")
        }
    };
    let tenant = post(
        "/api/v1/tenants",
        token,
        json!({"name":"Acme","slug":"acme"}),
    )
    .await;
    let key = tenant["api_key"].as_str().expect("key").to_owned();
    let program = post(
        "/api/v1/programs",
        &key,
        json!({"name":"Pro","slug":"pro","destination_url":"https://shop.example/pro",
        "commission":{"type":"flat","value":"1.00"}}),
    )
    .await;
    post(
        "/api/v1/affiliates",
        &key,
        json!({"name":"Jane","email":"jane@example.com","slug":"jane"}),
    )
    .await;
    let integration = post(
        "/api/v1/integrations",
        &key,
        json!({"name":"Shop","program_id": program["id"]}),
    )
    .await;
    let secret = integration["secret"].as_str().expect("secret").to_owned();
    let click = http
        .get(format!("{base}/api/r/acme/pro?via=jane"))
        .send()
        .await
        .expect("click");
    let location = click.headers()["location"].to_str().expect("location");
    let click_id = location
        .rsplit_once("click_id=")
        .expect("click id")
        .1
        .to_owned();
    OverHttp {
        key,
        secret,
        click_id,
    }
}

/// A sale of 10.00 on the click, by the integration's postback: the answer.
async fn sale(
    http: &reqwest::Client,
    base: &str,
    secret: &str,
    click_id: &str,
    txn_id: &str,
) -> serde_json::Value {
    http.get(format!(
        "{base}/api/postback/acme/pro?secret={secret}&click_id={click_id}&amount=10&txn_id={txn_id}"
    ))
    .send()
    .await
    .expect("postback")
    .json()
    .await
    .expect("json")
}

/// The tenant's conversions, newest first (up to 200).
async fn conversions_page(http: &reqwest::Client, base: &str, key: &str) -> serde_json::Value {
    http.get(format!("{base}/api/v1/conversions?limit=200"))
        .bearer_auth(key)
        .send()
        .await
        .expect("conversions")
        .json()
        .await
        .expect("json")
}

/// Scale-out roles: `trcker web` accepts postbacks and runs no workers (they
/// wait in the queue); a `trcker worker` on the same database attributes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_accepts_and_a_worker_process_attributes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "scale-out-operator";
    let web = start("web", dir.path(), Some(token), &[]);
    let base = web.value_after("listening on");
    let http = no_redirects();
    let OverHttp {
        key,
        secret,
        click_id,
    } = set_up_over_http(&http, &base, token).await;
    let accepted = sale(&http, &base, &secret, &click_id, "w1").await;
    assert_eq!(accepted["status"], "accepted", "{accepted}");
    let conversions = || conversions_page(&http, &base, &key);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        conversions().await["items"].as_array().map(Vec::len),
        Some(0),
        "a web process runs no workers"
    );

    let worker = start(
        "worker",
        dir.path(),
        Some(token),
        &[("TRCKER_WORKER_NAME", "scale-out-worker")],
    );
    let mut page = conversions().await;
    for _ in 0..100 {
        if page["items"][0]["payout"] == "1.00" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        page = conversions().await;
    }
    assert_eq!(page["items"][0]["payout"], "1.00", "{page}");
    assert_eq!(page["items"][0]["txn_id"], "w1", "{page}");
    // The worker runs under the name it was given.
    let store = trcker_storage::Store::open(&trcker_storage::Store::sqlite_in(dir.path()))
        .await
        .expect("open");
    use trcker_storage::sea_orm::{ConnectionTrait, Statement};
    // Each job type's worker registers on its first poll (a loaded machine
    // may get to the last one after the conversion is made).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let named = loop {
        let named = store
            .conn
            .query_one_raw(Statement::from_string(
                store.conn.get_database_backend(),
                "SELECT COUNT(*) AS n FROM Workers WHERE id LIKE 'scale-out-worker-%'",
            ))
            .await
            .expect("workers")
            .and_then(|r| r.try_get::<i64>("", "n").ok());
        if named == Some(3) || std::time::Instant::now() > deadline {
            break named;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        named,
        Some(3),
        "one worker per job type, under the given name"
    );
    store.close().await;
    assert!(worker.sigterm_and_wait().success());
    assert!(web.sigterm_and_wait().success());
}

/// What a stopped SQLite Trcker left of one postback: its inbox state, and
/// how many conversions and commission entries its txn_id has.
async fn left_of(dir: &std::path::Path, txn_id: &str) -> (Option<String>, i64, i64) {
    use trcker_storage::sea_orm::{ConnectionTrait, Statement, Value};
    let store = trcker_storage::Store::open(&trcker_storage::Store::sqlite_in(dir))
        .await
        .expect("open");
    let one = |sql: &str| {
        Statement::from_sql_and_values(
            store.conn.get_database_backend(),
            sql,
            [Value::from(txn_id.to_owned())],
        )
    };
    let state = store
        .conn
        .query_one_raw(one(
            "SELECT state FROM postbacks WHERE txn_id = ? AND state <> 'done'",
        ))
        .await
        .expect("postback")
        .map(|r| r.try_get::<String>("", "state").expect("state"));
    let count = |sql: &'static str| {
        let stmt = one(sql);
        let conn = &store.conn;
        async move {
            conn.query_one_raw(stmt)
                .await
                .expect("count")
                .and_then(|r| r.try_get::<i64>("", "n").ok())
                .unwrap_or(0)
        }
    };
    let conversions = count("SELECT COUNT(*) AS n FROM conversions WHERE txn_id = ?").await;
    let commissions = count(
        "SELECT COUNT(*) AS n FROM ledger_entries e JOIN conversions c ON c.id = e.conversion_id \
         WHERE c.txn_id = ?",
    )
    .await;
    store.close().await;
    (state, conversions, commissions)
}

/// `trcker serve` on SQLite killed (SIGKILL) after it acknowledged a
/// postback and before the postback's job finished: after a restart the
/// conversion is made exactly once, with one commission entry. Each round
/// kills the process right after the 200 and reads the file it left; a
/// round whose job had already finished is not the case under test, so
/// rounds go on until one kill landed in between (the first, nearly always).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_acknowledgement_and_job_makes_the_conversion_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "kill-test-operator-token";
    let http = no_redirects();
    let mut serve = start("serve", dir.path(), Some(token), &[]);
    let mut base = serve.value_after("listening on");
    let OverHttp {
        key,
        secret,
        click_id,
    } = set_up_over_http(&http, &base, token).await;
    // The click is written in the background: a kill must not take it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut sent = Vec::new();
    let mut caught = None;
    for round in 0..20 {
        let txn = format!("kill{round}");
        let accepted = sale(&http, &base, &secret, &click_id, &txn).await;
        serve.child.kill().expect("SIGKILL");
        serve.child.wait().expect("wait");
        assert_eq!(accepted["status"], "accepted", "{accepted}");
        sent.push(txn.clone());
        let (state, conversions, _) = left_of(dir.path(), &txn).await;
        assert!(
            state.is_some(),
            "an acknowledged postback was not in the inbox"
        );
        serve = start("serve", dir.path(), Some(token), &[]);
        base = serve.value_after("listening on");
        if state.as_deref() == Some("received") && conversions == 0 {
            caught = Some(txn);
            break;
        }
    }
    let caught = caught.expect("no kill in 20 rounds landed before the postback's job finished");
    // The restarted process finds the postback (its job, or the inbox
    // sweeper once the dead process's jobs are handed back).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let made = conversions_page(&http, &base, &key).await["items"]
            .as_array()
            .map_or(0, Vec::len);
        if made >= sent.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{made} of {} conversions made a minute after the restart",
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past the inbox sweeper's grace and a few of its passes: nothing more.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(serve.sigterm_and_wait().success());
    for txn in &sent {
        let (state, conversions, commissions) = left_of(dir.path(), txn).await;
        assert_eq!(state.as_deref(), Some("processed"), "{txn}");
        assert_eq!(conversions, 1, "{txn}: conversions (caught {caught})");
        assert_eq!(
            commissions, 1,
            "{txn}: commission entries (caught {caught})"
        );
    }
}

/// How many conversions the SQLite Trcker in `dir` made on txn_ids starting
/// with `prefix`, and how many distinct txn_ids they have.
async fn conversions_made(dir: &std::path::Path, prefix: &str) -> (i64, i64) {
    use trcker_storage::sea_orm::{ConnectionTrait, Statement, Value};
    let store = trcker_storage::Store::open(&trcker_storage::Store::sqlite_in(dir))
        .await
        .expect("open");
    let row = store
        .conn
        .query_one_raw(Statement::from_sql_and_values(
            store.conn.get_database_backend(),
            "SELECT COUNT(*) AS n, COUNT(DISTINCT txn_id) AS d FROM conversions WHERE txn_id LIKE ?",
            [Value::from(format!("{prefix}%"))],
        ))
        .await
        .expect("count")
        .expect("row");
    let counts = (
        row.try_get::<i64>("", "n").expect("n"),
        row.try_get::<i64>("", "d").expect("d"),
    );
    store.close().await;
    counts
}

/// `trcker serve` on SQLite sent SIGTERM while postbacks pour in and its
/// workers are busy stops soon after, well inside the workers' 15 s bound
/// (apalis stopped a worker in the middle of its acknowledgements, which kept
/// the one writing connection while the jobs still running waited for it
/// until that bound ran out), and every postback it acknowledged is made a
/// conversion exactly once after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_stops_at_once_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "load-stop-operator-token";
    let http = no_redirects();
    let serve = start("serve", dir.path(), Some(token), &[]);
    let base = serve.value_after("listening on");
    let OverHttp {
        key,
        secret,
        click_id,
    } = set_up_over_http(&http, &base, token).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for sender in 0..8 {
        let (http, base, secret, click_id) =
            (http.clone(), base.clone(), secret.clone(), click_id.clone());
        let accepted = accepted.clone();
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let txn = format!("load-{sender}-{i}");
                let url = format!(
                    "{base}/api/postback/acme/pro?secret={secret}&click_id={click_id}&amount=10&txn_id={txn}"
                );
                let Ok(resp) = http.get(url).send().await else {
                    return;
                };
                let Ok(body) = resp.json::<serde_json::Value>().await else {
                    return;
                };
                if body["status"] == "accepted" {
                    accepted.lock().expect("lock").push(txn);
                }
            }
        }));
    }
    // Let the workers fall behind the senders, then stop the process.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopping = std::time::Instant::now();
    assert!(serve.sigterm_and_wait().success());
    let took = stopping.elapsed();
    for s in senders {
        s.await.expect("sender");
    }
    let accepted = accepted.lock().expect("lock").clone();
    assert!(accepted.len() > 100, "only {} postbacks", accepted.len());
    let (before, _) = conversions_made(dir.path(), "load-").await;
    assert!(
        took < Duration::from_secs(8),
        "SIGTERM took {took:?} to stop a loaded Trcker ({before} of {} conversions made)",
        accepted.len()
    );

    let serve = start("serve", dir.path(), Some(token), &[]);
    let base = serve.value_after("listening on");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let made = loop {
        let (made, distinct) = conversions_made(dir.path(), "load-").await;
        assert_eq!(made, distinct, "a txn_id converted twice");
        if made >= accepted.len() as i64 || std::time::Instant::now() > deadline {
            break made;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(made, accepted.len() as i64, "acknowledged postbacks lost");
    let page = conversions_page(&http, &base, &key).await;
    assert_eq!(page["items"][0]["payout"], "1.00", "{page}");
    assert!(serve.sigterm_and_wait().success());
}

/// A closed log stream never stops Trcker from shutting down: `trcker serve
/// 2>&1 | tee log` whose `tee` is gone (Ctrl-C in a terminal stops both) leaves
/// stderr and stdout writing to closed pipes. SIGTERM must still stop it,
/// cleanly and within its bound.
#[tokio::test]
async fn sigterm_stops_trcker_whose_log_stream_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trcker"))
        .arg("serve")
        .env("TRCKER_LISTEN", "127.0.0.1:0")
        .env("TRCKER_DATA_DIR", dir.path())
        .env("TRCKER_OPERATOR_TOKEN", "closed-streams-operator")
        .env_remove("DATABASE_URL")
        .env_remove("TRCKER_PUBLIC_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn trcker");
    // Read the banner up to the listening address, then close both streams.
    drop(child.stderr.take());
    let stdout = child.stdout.take().expect("stdout");
    let mut base = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(url) = line.trim().strip_prefix("listening on") {
            base = Some(url.trim().to_owned());
            break;
        }
    }
    let base = base.expect("a listening address");
    // Requests after the streams closed are still served.
    let healthz = reqwest::get(format!("{base}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(healthz.status(), StatusCode::OK);
    let status = Running {
        child,
        lines: Vec::new(),
    }
    .sigterm_and_wait();
    assert!(status.success(), "{status:?}");
}

/// `TRCKER_LOG_FORMAT=json`: every log line is one JSON object, from start
/// to a clean stop; an unknown format is refused in one line.
/// Starts `trcker serve` with `env` and its log lines collected (stderr
/// piped): the base URL, the process, and the lines once it has exited.
fn serve_logging(
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (String, Running, std::thread::JoinHandle<Vec<String>>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trcker"));
    cmd.arg("serve")
        .env("TRCKER_LISTEN", "127.0.0.1:0")
        .env("TRCKER_DATA_DIR", data_dir)
        .env("TRCKER_OPERATOR_TOKEN", "json-logs-operator")
        .env_remove("TRCKER_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("TRCKER_PUBLIC_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn trcker");
    let stderr = child.stderr.take().expect("stderr");
    let logs = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map(|l| l.expect("line"))
            .collect::<Vec<String>>()
    });
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = lines
        .by_ref()
        .map(|l| l.expect("line"))
        .find_map(|l| {
            l.trim()
                .strip_prefix("listening on")
                .map(|u| u.trim().to_owned())
        })
        .expect("a listening address");
    std::thread::spawn(move || lines.for_each(drop));
    let running = Running {
        child,
        lines: Vec::new(),
    };
    (base, running, logs)
}

/// A request's id (the sender's, when sane) is on the answer and on the
/// span of every log line the request causes.
#[tokio::test]
async fn request_ids_follow_requests_into_the_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, running, logs) = serve_logging(
        dir.path(),
        &[
            ("TRCKER_LOG_FORMAT", "json"),
            ("TRCKER_LOG", "info,trcker=debug"),
        ],
    );
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{base}/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
    let resp = http
        .get(format!("{base}/api/v1/programs"))
        .send()
        .await
        .expect("unauthorized");
    let generated = resp.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert!(
        trcker_domain::ids::IdKind::Request.matches(&generated),
        "{generated}"
    );
    assert!(running.sigterm_and_wait().success());
    let logs = logs.join().expect("logs");
    let spans_of = |id: &str| {
        logs.iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["span"]["request_id"] == id)
            .map(|e| e["fields"]["path"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(spans_of("trace-me-42"), ["/healthz"], "{logs:#?}");
    assert_eq!(spans_of(&generated), ["/api/v1/programs"], "{logs:#?}");
}

#[tokio::test]
async fn json_logs_parse_line_by_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, running, logs) = serve_logging(dir.path(), &[("TRCKER_LOG_FORMAT", "json")]);
    let resp = reqwest::get(format!("{base}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(resp.status(), StatusCode::OK);
    let status = running.sigterm_and_wait();
    assert!(status.success(), "{status:?}");
    let logs = logs.join().expect("logs");
    assert!(logs.len() >= 3, "{logs:?}");
    for line in &logs {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        logs.iter().any(|l| l.contains("\"stopped\"")),
        "the last line is logged too: {logs:?}"
    );

    let refused = Command::new(env!("CARGO_BIN_EXE_trcker"))
        .arg("serve")
        .env("TRCKER_LOG_FORMAT", "xml")
        .env("TRCKER_DATA_DIR", dir.path())
        .output()
        .expect("run trcker");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("TRCKER_LOG_FORMAT"), "{said}");
}

/// No secret reaches the logs, at the default level or at debug: the
/// operator token, the tenant's API key, the integration's postback secret
/// (in the query string and in its header), the affiliate's invitation
/// token (a path segment) and password (a form field).
#[tokio::test]
async fn no_secret_is_ever_logged() {
    for level in ["info", "debug"] {
        let secrets = quickstart_logged(level).await;
        let (logs, used) = (secrets.0, secrets.1);
        assert!(logs.len() > 5, "{level}: {logs:?}");
        for secret in &used {
            if let Some(line) = logs.iter().find(|l| l.contains(secret.as_str())) {
                panic!("at {level}, a secret is in the logs: {line}");
            }
        }
    }
}

/// Runs the quickstart against `trcker serve` at `TRCKER_LOG=<level>`: its
/// log lines, and every secret it used.
async fn quickstart_logged(level: &str) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let operator = "op-logs-check-0123456789";
    let mut child = Command::new(env!("CARGO_BIN_EXE_trcker"))
        .arg("serve")
        .env("TRCKER_LISTEN", "127.0.0.1:0")
        .env("TRCKER_DATA_DIR", dir.path())
        .env("TRCKER_OPERATOR_TOKEN", operator)
        .env("TRCKER_LOG", level)
        .env("TRCKER_ALLOW_PRIVATE_TARGETS", "true")
        .env_remove("TRCKER_LOG_FORMAT")
        .env_remove("DATABASE_URL")
        .env_remove("TRCKER_PUBLIC_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn trcker");
    let stderr = child.stderr.take().expect("stderr");
    let logs = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = lines
        .by_ref()
        .map(|l| l.expect("line"))
        .find_map(|l| {
            l.trim()
                .strip_prefix("listening on")
                .map(|u| u.trim().to_owned())
        })
        .expect("a listening address");
    std::thread::spawn(move || lines.for_each(drop));
    let used = run_quickstart(&base, operator).await;
    let status = Running {
        child,
        lines: Vec::new(),
    }
    .sigterm_and_wait();
    assert!(status.success(), "{status:?}");
    (logs.join().expect("logs"), used)
}

/// The quickstart over HTTP, and the portal's invitation and sign-in: the
/// secrets it used.
async fn run_quickstart(base: &str, operator: &str) -> Vec<String> {
    let http = no_redirects();
    let post = |path: &str, bearer: &str, body: serde_json::Value| {
        let req = http
            .post(format!("{base}{path}"))
            .bearer_auth(bearer)
            .json(&body);
        async move {
            let resp = req.send().await.expect("request");
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.json::<serde_json::Value>().await.expect("json")
        }
    };
    let tenant = post(
        "/api/v1/tenants",
        operator,
        json!({"name":"Acme","slug":"acme"}),
    )
    .await;
    let key = tenant["api_key"].as_str().expect("key").to_owned();
    let program = post(
        "/api/v1/programs",
        &key,
        json!({"name":"Pro","slug":"pro","destination_url":"https://shop.example/pro",
               "commission":{"type":"percent","value":"10"}}),
    )
    .await;
    let affiliate = post(
        "/api/v1/affiliates",
        &key,
        json!({"name":"Jane","email":"jane@example.com","slug":"jane"}),
    )
    .await;
    let invite_url = affiliate["invite_url"].as_str().expect("invite").to_owned();
    let integration = post(
        "/api/v1/integrations",
        &key,
        json!({"name":"Shop","program_id": program["id"]}),
    )
    .await;
    let secret = integration["secret"].as_str().expect("secret").to_owned();
    let click = http
        .get(format!("{base}/api/r/acme/pro?via=jane"))
        .send()
        .await
        .expect("click");
    let location = click.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let click_id = location
        .rsplit_once("click_id=")
        .expect("click id")
        .1
        .to_owned();
    for (txn, by_header) in [("o1", false), ("o2", true)] {
        let mut req = http.get(format!(
            "{base}/api/postback/acme/pro?click_id={click_id}&amount=79&txn_id={txn}"
        ));
        req = if by_header {
            req.header("X-Postback-Secret", &secret)
        } else {
            req.query(&[("secret", &secret)])
        };
        assert_eq!(req.send().await.expect("postback").status(), StatusCode::OK);
    }
    let password = "correct horse battery staple";
    let token = invite_url.rsplit('/').next().expect("token").to_owned();
    let browser = crate::harness::browser(false);
    let resp = crate::harness::post_portal_form(
        &browser,
        &invite_url,
        &invite_url,
        &[("password", password), ("confirm", password)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let login = format!("{base}/portal/acme/login");
    let resp = crate::harness::post_portal_form(
        &browser,
        &login,
        &login,
        &[("email", "jane@example.com"), ("password", password)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    vec![operator.to_owned(), key, secret, token, password.to_owned()]
}
