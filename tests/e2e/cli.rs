//! The operator's command line as an operator meets it: `trcker config`,
//! `trcker check`, `trcker tenant`, `trcker api-key` and `trcker backup` run
//! as real processes (a clean environment, a scratch working directory)
//! beside a real `trcker serve`; every help text, and the one-line errors of
//! bad input.

use std::path::Path;
use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::json;

use crate::binary::{OverHttp, set_up_over_http, start};

/// Runs `trcker ARGS` in `cwd` with only `env` set.
fn trcker(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trcker"));
    cmd.args(args).current_dir(cwd).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run trcker")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A refused command: a non-zero exit and exactly one line on stderr,
/// containing `says`.
fn assert_one_line_error(out: &Output, says: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "must fail: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("trcker: "), "{err:?}");
    assert!(err.contains(says), "{err:?} should say {says:?}");
}

/// The value printed after `label` on one of the lines.
fn after(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {label:?} in {text}"))
}

/// The `key = value # source` line of `trcker config` for `key`.
fn config_line<'a>(printed: &'a str, key: &str) -> (&'a str, &'a str) {
    let line = printed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no {key} in {printed}"));
    let (value, source) = line.split_once(" # ").expect("a source");
    let value = value.split_once('=').expect("a value").1.trim();
    (value, source.trim())
}

#[test]
fn config_names_each_source_and_never_prints_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("prod.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:7001\"\n\
         database_url = \"postgres://trcker:file-db-password@db.internal:5432/trcker?sslmode=require&password=query-secret\"\n\
         worker_concurrency = 4\n",
    )
    .expect("write config");
    let out = trcker(
        dir.path(),
        &[
            "config",
            "--config",
            file.to_str().expect("path"),
            "--public-url",
            "https://track.example.com",
            "--worker-concurrency",
            "6",
        ],
        &[
            ("TRCKER_OPERATOR_TOKEN", "env-operator-secret-0123456789"),
            ("TRCKER_LOG", "debug"),
        ],
    );
    let printed = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    for secret in [
        "file-db-password",
        "query-secret",
        "env-operator-secret-0123456789",
    ] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    let from_file = format!("file {}", file.display());
    assert_eq!(
        config_line(&printed, "listen"),
        ("0.0.0.0:7001", &*from_file)
    );
    let (url, source) = config_line(&printed, "database_url");
    assert_eq!(source, from_file);
    assert!(url.contains("db.internal:5432/trcker"), "{url}");
    assert!(url.contains("REDACTED"), "{url}");
    assert_eq!(
        config_line(&printed, "operator_token").1,
        "env TRCKER_OPERATOR_TOKEN"
    );
    assert_eq!(config_line(&printed, "log"), ("debug", "env TRCKER_LOG"));
    assert_eq!(
        config_line(&printed, "public_url"),
        ("https://track.example.com", "flag --public-url")
    );
    assert_eq!(
        config_line(&printed, "worker_concurrency"),
        ("6", "flag --worker-concurrency"),
        "a flag wins over the file"
    );
    assert_eq!(config_line(&printed, "db_connections"), ("16", "default"));

    // The file can also be named by TRCKER_CONFIG, and ./trcker.toml is read
    // when nothing names one.
    let by_env = trcker(
        dir.path(),
        &["config"],
        &[("TRCKER_CONFIG", file.to_str().expect("path"))],
    );
    assert_eq!(config_line(&stdout(&by_env), "listen").1, from_file);
    std::fs::write(dir.path().join("trcker.toml"), "db_connections = 5\n").expect("write");
    let implicit = trcker(dir.path(), &["config"], &[]);
    assert_eq!(
        config_line(&stdout(&implicit), "db_connections"),
        ("5", "file trcker.toml")
    );
}

#[test]
fn bad_configuration_is_one_line_per_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unknown = trcker(dir.path(), &["serve", "--no-such-flag"], &[]);
    assert_one_line_error(&unknown, "--no-such-flag");
    assert_eq!(unknown.status.code(), Some(2));
    let bad_value = trcker(dir.path(), &["serve", "--worker-concurrency", "many"], &[]);
    assert_one_line_error(&bad_value, "many");
    let no_command = trcker(dir.path(), &[], &[]);
    assert!(!no_command.status.success());

    let env = trcker(dir.path(), &["serve"], &[("TRCKER_LOG_FORMAT", "xml")]);
    assert_one_line_error(&env, "TRCKER_LOG_FORMAT");
    let proxies = trcker(
        dir.path(),
        &["check"],
        &[("TRCKER_TRUSTED_PROXIES", "10.0.0.0/33")],
    );
    assert_one_line_error(&proxies, "10.0.0.0/33");

    std::fs::write(dir.path().join("trcker.toml"), "listen = 8080\n").expect("write");
    let wrong_type = trcker(dir.path(), &["config"], &[]);
    assert_one_line_error(&wrong_type, "trcker.toml");
    std::fs::write(dir.path().join("trcker.toml"), "lisen = \"127.0.0.1:1\"\n").expect("write");
    let misspelt = trcker(dir.path(), &["config"], &[]);
    assert_one_line_error(&misspelt, "lisen");
    let missing = trcker(dir.path(), &["config", "--config", "nowhere.toml"], &[]);
    assert_one_line_error(&missing, "nowhere.toml");

    // Two problems: two lines, each naming its key and where it came from.
    std::fs::write(
        dir.path().join("trcker.toml"),
        "db_connections = 1\npublic_url = \"ftp://x\"\n",
    )
    .expect("write");
    let two = trcker(dir.path(), &["serve"], &[]);
    let err = stderr(&two);
    assert!(!two.status.success());
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.contains("db_connections (file trcker.toml)"), "{err}");
    assert!(err.contains("public_url (file trcker.toml)"), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "a refused start creates nothing"
    );
}

#[test]
fn every_command_has_clear_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    let top = trcker(dir.path(), &["--help"], &[]);
    assert!(top.status.success());
    let text = stdout(&top);
    let commands = [
        vec!["serve"],
        vec!["worker"],
        vec!["web"],
        vec!["migrate"],
        vec!["check"],
        vec!["config"],
        vec!["backup"],
        vec!["tenant"],
        vec!["tenant", "create"],
        vec!["tenant", "list"],
        vec!["tenant", "suspend"],
        vec!["tenant", "resume"],
        vec!["api-key"],
        vec!["api-key", "create"],
        vec!["api-key", "list"],
        vec!["api-key", "revoke"],
    ];
    for command in &commands {
        if command.len() == 1 {
            assert!(text.contains(command[0]), "--help lists {command:?}");
        }
        let mut args = command.clone();
        args.push("--help");
        let out = trcker(dir.path(), &args, &[]);
        assert!(out.status.success(), "{command:?} --help");
        let help = stdout(&out);
        assert!(help.contains("Usage: trcker"), "{command:?}: {help}");
        assert!(
            help.lines().next().is_some_and(|l| !l.is_empty()),
            "{command:?} says what it does"
        );
    }
    let serve = stdout(&trcker(dir.path(), &["serve", "--help"], &[]));
    assert!(
        serve.contains("TRCKER_LISTEN"),
        "flags name their variables"
    );
    assert!(serve.contains("--config"));
    let version = trcker(dir.path(), &["--version"], &[]);
    assert!(version.status.success());
    assert!(stdout(&version).starts_with("trcker "));
}

#[test]
fn check_fails_until_the_database_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_env = [("TRCKER_DATA_DIR", data.to_str().expect("path"))];
    let missing = trcker(dir.path(), &["check"], &data_env);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stdout(&missing).contains("database       FAILED"),
        "{}",
        stdout(&missing)
    );
    assert!(!data.exists(), "check never creates a database");

    let unreachable = trcker(
        dir.path(),
        &["check"],
        &[(
            "DATABASE_URL",
            "postgres://trcker:pw-not-shown@127.0.0.1:1/trcker",
        )],
    );
    assert_eq!(unreachable.status.code(), Some(1));
    let printed = stdout(&unreachable);
    assert!(printed.contains("database       FAILED"), "{printed}");
    assert!(!printed.contains("pw-not-shown"), "{printed}");

    let migrate = trcker(dir.path(), &["migrate"], &data_env);
    assert!(migrate.status.success(), "{}", stderr(&migrate));
    let ok = trcker(dir.path(), &["check"], &data_env);
    let printed = stdout(&ok);
    assert!(ok.status.success(), "{printed}{}", stderr(&ok));
    for line in [
        "configuration  ok",
        "database       ok",
        "schema         up to date",
        "queue          ok",
    ] {
        assert!(printed.contains(line), "{line}: {printed}");
    }
}

/// Tenants and keys made from the command line work against a running
/// server at once, and suspension and revocation take effect at once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_and_api_key_commands_act_on_a_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_flag = data.to_str().expect("path").to_owned();
    let server = start("serve", &data, Some("cli-test-operator-token"), &[]);
    let base = server.value_after("listening on");
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--data-dir", &data_flag]);
        trcker(dir.path(), &all, &[])
    };

    let created = run(&["tenant", "create", "acme", "--name", "Acme Inc"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let admin = after(&stdout(&created), "admin API key");
    let duplicate = run(&["tenant", "create", "acme"]);
    assert_one_line_error(&duplicate, "acme");
    let bad_slug = run(&["tenant", "create", "Not A Slug"]);
    assert_one_line_error(&bad_slug, "slug");
    let listed = stdout(&run(&["tenant", "list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.contains("acme") && l.contains("active")),
        "{listed}"
    );

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let program = json!({"name":"Pro","slug":"pro","destination_url":"https://shop.example/pro",
        "commission":{"type":"flat","value":"1.00"}});
    let resp = http
        .post(format!("{base}/api/v1/programs"))
        .bearer_auth(&admin)
        .json(&program)
        .send()
        .await
        .expect("program");
    assert_eq!(resp.status(), StatusCode::CREATED, "the CLI's key works");
    http.post(format!("{base}/api/v1/affiliates"))
        .bearer_auth(&admin)
        .json(&json!({"name":"Jane","email":"jane@example.com","slug":"jane"}))
        .send()
        .await
        .expect("affiliate");

    let read_only = run(&[
        "api-key",
        "create",
        "acme",
        "--name",
        "reports",
        "--scope",
        "read-only",
    ]);
    assert!(read_only.status.success(), "{}", stderr(&read_only));
    let reader = after(&stdout(&read_only), "token");
    let get = |token: String| {
        let http = http.clone();
        let url = format!("{base}/api/v1/programs");
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("get")
                .status()
        }
    };
    assert_eq!(get(reader.clone()).await, StatusCode::OK);
    let refused = http
        .post(format!("{base}/api/v1/programs"))
        .bearer_auth(&reader)
        .json(&program)
        .send()
        .await
        .expect("post");
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "read-only keys only read"
    );
    let bad_scope = run(&[
        "api-key", "create", "acme", "--name", "x", "--scope", "root",
    ]);
    assert_one_line_error(&bad_scope, "root");
    let no_tenant = run(&["api-key", "create", "nobody", "--name", "x"]);
    assert_one_line_error(&no_tenant, "nobody");

    let keys = stdout(&run(&["api-key", "list", "acme"]));
    assert!(
        !keys.contains(&reader) && !keys.contains(&admin),
        "tokens are never listed"
    );
    let reader_id = keys
        .lines()
        .find(|l| l.contains("reports"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the reports key is listed")
        .to_owned();
    let revoked = run(&["api-key", "revoke", "acme", &reader_id]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert_eq!(
        get(reader.clone()).await,
        StatusCode::UNAUTHORIZED,
        "revoked at once"
    );
    let keys = stdout(&run(&["api-key", "list", "acme"]));
    assert!(
        keys.lines()
            .any(|l| l.starts_with(&reader_id) && l.contains("revoked")),
        "{keys}"
    );
    let unknown_key = run(&["api-key", "revoke", "acme", "key_nope"]);
    assert_one_line_error(&unknown_key, "key_nope");

    let suspended = run(&["tenant", "suspend", "acme"]);
    assert!(suspended.status.success(), "{}", stderr(&suspended));
    let resp = http
        .get(format!("{base}/api/v1/programs"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let problem: serde_json::Value = resp.json().await.expect("problem");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("tenant-suspended")),
        "{problem}"
    );
    assert!(
        stdout(&run(&["tenant", "list"]))
            .lines()
            .any(|l| l.contains("acme") && l.contains("suspended"))
    );
    let resumed = run(&["tenant", "resume", "acme"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(get(admin.clone()).await, StatusCode::OK);
    let unknown = run(&["tenant", "suspend", "nobody"]);
    assert_one_line_error(&unknown, "nobody");

    assert!(server.sigterm_and_wait().success());
}

/// Reads the rows that matter from a database copy.
async fn copied(path: &Path) -> (String, Vec<String>) {
    use trcker_storage::sea_orm::{ConnectionTrait, EntityTrait, Statement};
    let store = trcker_storage::Store::open(&trcker_storage::DatabaseConfig::Sqlite {
        path: path.to_owned(),
    })
    .await
    .expect("open the copy");
    let row = store
        .conn
        .query_one_raw(Statement::from_string(
            store.conn.get_database_backend(),
            "PRAGMA integrity_check",
        ))
        .await
        .expect("integrity_check")
        .expect("a row");
    let integrity: String = row.try_get_by_index(0).expect("text");
    let txns = trcker_storage::entities::postback::Entity::find()
        .all(&store.conn)
        .await
        .expect("postbacks")
        .into_iter()
        .filter_map(|p| p.txn_id)
        .collect();
    store.close().await;
    (integrity, txns)
}

/// `trcker backup` while postbacks keep arriving: the copy passes SQLite's
/// integrity check, holds every postback acknowledged before the backup
/// began, and serves when put in place of the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_holds_every_acknowledged_postback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_flag = data.to_str().expect("path").to_owned();
    let token = "backup-test-operator-token";
    let server = start("serve", &data, Some(token), &[]);
    let base = server.value_after("listening on");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let OverHttp {
        key,
        secret,
        click_id,
    } = set_up_over_http(&http, &base, token).await;

    // Four senders post sales without pause; each acknowledged txn_id is kept.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..4 {
        let (http, acked, stop) = (http.clone(), acked.clone(), stop.clone());
        let url = format!(
            "{base}/api/postback/acme/pro?secret={secret}&click_id={click_id}&amount=10.00"
        );
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let txn = format!("s{sender}-{n}");
                n += 1;
                let resp = http.get(format!("{url}&txn_id={txn}")).send().await;
                if resp.is_ok_and(|r| r.status().is_success()) {
                    acked.lock().expect("lock").push(txn);
                }
            }
        }));
    }
    while acked.lock().expect("lock").len() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before: Vec<String> = acked.lock().expect("lock").clone();
    let copy = dir.path().join("copy.db");
    let copy_arg = copy.to_str().expect("path").to_owned();
    let backup = tokio::task::spawn_blocking({
        let (cwd, data_flag) = (dir.path().to_owned(), data_flag.clone());
        move || trcker(&cwd, &["backup", &copy_arg, "--data-dir", &data_flag], &[])
    })
    .await
    .expect("backup task");
    // The senders carried on through the backup and still do after it:
    // intake never waits for a backup.
    let after_backup = acked.lock().expect("lock").len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while acked.lock().expect("lock").len() <= after_backup {
        assert!(
            std::time::Instant::now() < deadline,
            "postbacks kept being acknowledged after the backup"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.expect("sender");
    }
    assert!(backup.status.success(), "{}", stderr(&backup));
    assert!(stdout(&backup).contains("backed up"), "{}", stdout(&backup));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&copy).expect("copy").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the copy is its owner's only: {mode:o}");

    let again = trcker(
        dir.path(),
        &[
            "backup",
            copy.to_str().expect("path"),
            "--data-dir",
            &data_flag,
        ],
        &[],
    );
    assert_one_line_error(&again, "copy.db");
    assert!(server.sigterm_and_wait().success());

    let (integrity, txns) = copied(&copy).await;
    assert_eq!(integrity, "ok");
    let txns: std::collections::HashSet<String> = txns.into_iter().collect();
    let lost: Vec<&String> = before.iter().filter(|t| !txns.contains(*t)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged postbacks missing from the copy",
        lost.len()
    );

    // Restore: the copy in place of the database, then serve from it.
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).expect("mkdir");
    std::fs::copy(&copy, restored.join("trcker.db")).expect("restore");
    let server = start("serve", &restored, Some(token), &[]);
    let base = server.value_after("listening on");
    let ready = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    let mut conversions = 0;
    for _ in 0..200 {
        let listed: serde_json::Value = http
            .get(format!("{base}/api/v1/conversions"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("conversions")
            .json()
            .await
            .expect("json");
        conversions = listed["items"].as_array().map_or(0, Vec::len);
        if conversions >= before.len().min(500) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        conversions > 0,
        "the restored database attributes its postbacks"
    );
    assert!(server.sigterm_and_wait().success());
}

/// On PostgreSQL the backup is the database's own tools' work.
#[test]
fn backup_on_postgresql_points_to_pg_dump() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = trcker(
        dir.path(),
        &["backup", "copy.dump"],
        &[(
            "DATABASE_URL",
            "postgres://trcker:pw-not-shown@127.0.0.1:1/trcker",
        )],
    );
    assert_one_line_error(&out, "pg_dump");
    assert!(!stderr(&out).contains("pw-not-shown"));
    assert!(!dir.path().join("copy.dump").exists());
}

/// `trcker seed --demo` on a fresh data directory, then the quickstart's
/// conversions query against `trcker serve`: the sales are there, priced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_demo_makes_conversions_the_api_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_flag = data.to_str().expect("path").to_owned();
    let seed = |args: &[&str]| {
        let mut all = vec!["seed"];
        all.extend(args);
        all.extend(["--data-dir", &data_flag]);
        trcker(dir.path(), &all, &[])
    };
    assert_one_line_error(&seed(&["--clicks", "100"]), "--demo");
    assert_one_line_error(
        &seed(&["--demo", "--clicks", "10", "--conversions", "11"]),
        "--conversions 11",
    );
    assert_one_line_error(&seed(&["--demo", "--clicks", "0"]), "0");
    assert!(!data.exists(), "a refused seed creates nothing");

    let out = seed(&["--demo", "--clicks", "600", "--conversions", "50"]);
    let printed = stdout(&out);
    assert!(out.status.success(), "{printed}{}", stderr(&out));
    assert!(
        printed.contains("600 clicks, 50 sales (2 refunded since)"),
        "{printed}"
    );
    let key = after(&printed, "admin API key");
    let key = key.split_whitespace().next().expect("key").to_owned();
    assert!(
        printed.contains("operator token op_"),
        "a fresh database's token is shown"
    );
    let again = seed(&["--demo"]);
    assert_one_line_error(&again, "demo");

    let server = start("serve", &data, Some("seed-test-operator-token"), &[]);
    let base = server.value_after("listening on");
    let http = reqwest::Client::new();
    let page: serde_json::Value = http
        .get(format!("{base}/api/v1/conversions?limit=100"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("conversions")
        .json()
        .await
        .expect("json");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 50, "{page}");
    let refunded = items.iter().filter(|c| c["status"] == "refunded").count();
    assert_eq!(refunded, 2);
    assert!(
        items.iter().all(|c| c["payout"].is_string()),
        "every sale is priced: {page}"
    );
    // A month of history: the oldest sale is weeks old, and old enough to be past its hold.
    let oldest = items
        .iter()
        .filter_map(|c| c["created_at"].as_str())
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .min()
        .expect("dates");
    assert!(
        chrono::Utc::now() - oldest.to_utc() > chrono::TimeDelta::days(20),
        "{oldest}"
    );
    assert!(items.iter().any(|c| c["status"] == "approved"), "{page}");
    assert!(items.iter().any(|c| c["status"] == "pending"), "{page}");
    assert!(server.sigterm_and_wait().success());
}

/// PostgreSQL with two roles: the owner migrates (`trcker migrate`), and the
/// servers run as a role that may only read and write rows; an up-to-date
/// schema is only read at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(trcker_pg),
    ignore = "PostgreSQL suite off: set TRCKER_TEST_POSTGRES_URL to run it"
)]
async fn a_role_without_schema_rights_serves_once_the_owner_has_migrated() {
    use trcker_storage::sea_orm::{ConnectionTrait, Database};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = crate::harness::PgDatabase::create().await;
    let migrate = trcker(dir.path(), &["migrate"], &[("DATABASE_URL", &db.url)]);
    assert!(migrate.status.success(), "{}", stderr(&migrate));

    let role = format!(
        "trcker_app_{}",
        trcker_domain::secret::random_alnum(8).to_ascii_lowercase()
    );
    let owner = Database::connect(&db.url).await.expect("connect");
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!(
            "GRANT CONNECT ON DATABASE \"{}\" TO {role}",
            db.url.rsplit('/').next().expect("name")
        ),
        format!("GRANT USAGE ON SCHEMA public, apalis TO {role}"),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public, apalis TO {role}"
        ),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public, apalis TO {role}"),
        format!("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA apalis TO {role}"),
    ] {
        owner
            .execute_unprepared(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let mut as_app = url::Url::parse(&db.url).expect("url");
    as_app.set_username(&role).expect("user");
    let app_url = as_app.to_string();

    let check = trcker(dir.path(), &["check"], &[("DATABASE_URL", &app_url)]);
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
    let server = start(
        "serve",
        dir.path(),
        Some("roles-test-operator-token"),
        &[("DATABASE_URL", &app_url)],
    );
    let base = server.value_after("listening on");
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    let created = http
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth("roles-test-operator-token")
        .json(&json!({"name":"Acme","slug":"acme"}))
        .send()
        .await
        .expect("tenant");
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(server.sigterm_and_wait().success());

    // The role goes with its grants; the database goes when `db` drops.
    owner
        .execute_unprepared(&format!("DROP OWNED BY {role}"))
        .await
        .expect("drop owned");
    owner.close().await.expect("close");
    let admin = Database::connect(std::env::var("TRCKER_TEST_POSTGRES_URL").expect("admin url"))
        .await
        .expect("admin");
    admin
        .execute_unprepared(&format!("DROP ROLE {role}"))
        .await
        .expect("drop role");
}
