//! The SSRF guard end to end, with the guard on (every other test lifts it).
//!
//! Literal forbidden addresses are refused when an affiliate's postback URL
//! is set. At send time every form is refused, and nothing connects: a
//! `trcker serve` process runs in a network namespace that has only
//! loopback, with every forbidden address of the test assigned to that
//! loopback, and a canary listener on all of them. The same run with the
//! guard lifted sees every form arrive at the canary, so a refusal that goes
//! missing really connects. Host names come from an `/etc/hosts` made inside
//! the process's own mount namespace (the machine's file is never touched).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::binary::{Running, launch};
use crate::harness::{OPERATOR, TestApp, spawn_configured};

/// IPv4 addresses the namespace's loopback carries besides 127.0.0.1.
const V4_ON_LOOPBACK: &[&str] = &[
    "10.0.0.1",
    "172.16.0.1",
    "192.168.0.1",
    "169.254.169.254",
    "169.254.1.1",
    "100.64.0.1",
    "192.0.2.1",
    "198.18.0.1",
];

/// IPv6 addresses the namespace's loopback carries besides ::1.
const V6_ON_LOOPBACK: &[&str] = &[
    "::127.0.0.1",
    "::ffff:0:7f00:1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
    "2001::7f00:1",
    "fec0::1",
    "100::1",
    "fd00::1",
    "2001:db8::1",
];

/// Host names of the namespace's `/etc/hosts`, and what they resolve to.
const NAMES: &[(&str, &str)] = &[
    ("loopback.canary.test", "127.0.0.1"),
    ("private.canary.test", "10.0.0.1"),
    ("metadata.canary.test", "169.254.169.254"),
    ("v6.canary.test", "::1"),
];

/// Every host form the test calls, as written in a URL (the port follows).
fn forms() -> Vec<String> {
    let mut forms: Vec<String> = vec![
        "127.0.0.1".into(),
        "0.0.0.0".into(),
        // The same loopback address spelled in decimal, octal, hex, short.
        "2130706433".into(),
        "0177.0.0.1".into(),
        "0x7f.0.0.1".into(),
        "127.1".into(),
        "[::1]".into(),
        "[::ffff:127.0.0.1]".into(),
    ];
    forms.extend(V4_ON_LOOPBACK.iter().map(|a| a.to_string()));
    forms.extend(V6_ON_LOOPBACK.iter().map(|a| format!("[{a}]")));
    forms.extend(NAMES.iter().map(|(n, _)| n.to_string()));
    forms
}

/// What a canary listener heard: the `form` of each request.
#[derive(Default)]
struct Heard {
    connections: usize,
    forms: BTreeSet<String>,
}

/// Starts `trcker serve` in a new network and mount namespace, its loopback
/// up and carrying every forbidden address, its `/etc/hosts` the test's.
fn serve_isolated(data_dir: &std::path::Path, hosts: &std::path::Path, guard: bool) -> Running {
    let mut script = String::from("set -e; ip link set lo up; ");
    for a in V4_ON_LOOPBACK {
        script.push_str(&format!("ip addr add {a}/32 dev lo; "));
    }
    for a in V6_ON_LOOPBACK {
        script.push_str(&format!("ip -6 addr add {a}/128 dev lo nodad; "));
    }
    script.push_str(&format!(
        "mount --bind {} /etc/hosts; exec \"$0\" serve",
        hosts.display()
    ));
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--mount", "--", "sh", "-c", &script])
        .arg(env!("CARGO_BIN_EXE_trcker"));
    let allow = if guard { "false" } else { "true" };
    launch(
        cmd,
        data_dir,
        Some(OPERATOR),
        &[("TRCKER_ALLOW_PRIVATE_TARGETS", allow)],
    )
}

/// Runs `work` on a thread of its own that has joined `pid`'s network
/// namespace (a thread's namespace is its own: the rest of the test suite
/// stays where it is), on a runtime of that thread.
fn in_namespace_of<T: Send + 'static>(
    pid: u32,
    work: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("open netns");
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work())
    })
    .join()
    .expect("namespace thread")
}

/// A listener on every address of the namespace (dual-stack `[::]`) that
/// answers 200 and records each request's `form` parameter.
async fn canary(port: u16) -> (u16, Arc<Mutex<Heard>>) {
    let listener = tokio::net::TcpListener::bind(("::", port))
        .await
        .expect("bind the canary");
    let port = listener.local_addr().expect("addr").port();
    let heard = Arc::new(Mutex::new(Heard::default()));
    let h = heard.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            h.lock().expect("lock").connections += 1;
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Some(form) = request
                    .split("form=")
                    .nth(1)
                    .and_then(|r| r.split([' ', '&']).next())
                {
                    h.lock().expect("lock").forms.insert(form.to_owned());
                }
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (port, heard)
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let resp = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Test-fires one postback for each affiliate through the integration and
/// returns each trace's first notification.
async fn test_fire_each(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    integration: &str,
    affiliates: &[(String, String)],
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (form, id) in affiliates {
        let (status, trace) = call(
            http,
            base,
            reqwest::Method::POST,
            &format!("/api/v1/integrations/{integration}/test-fire"),
            key,
            json!({"affiliate_id": id, "amount": "20"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{form}: {trace}");
        out.push((form.clone(), trace["notifications"][0].clone()));
    }
    out
}

#[test]
#[cfg_attr(
    not(trcker_netns),
    ignore = "needs network namespaces: set TRCKER_TEST_NETNS=1 where unshare works (as root)"
)]
fn forbidden_targets_are_refused_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = dir.path().join("hosts");
    let mut lines = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for (name, ip) in NAMES {
        lines.push_str(&format!("{ip} {name}\n"));
    }
    std::fs::write(&hosts, lines).expect("hosts");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");

    // The guard lifted: every form reaches the canary.
    let lifted = serve_isolated(&data, &hosts, false);
    let base = lifted.value_after("listening on");
    let (port, key, integration, affiliates) = in_namespace_of(lifted.child.id(), move || {
        Box::pin(async move {
            let (port, heard) = canary(0).await;
            let http = reqwest::Client::new();
            let (status, tenant) = call(
                &http,
                &base,
                reqwest::Method::POST,
                "/api/v1/tenants",
                OPERATOR,
                json!({"name": "Acme", "slug": "acme"}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{tenant}");
            let key = tenant["api_key"].as_str().expect("key").to_owned();
            let (status, program) = call(
                &http,
                &base,
                reqwest::Method::POST,
                "/api/v1/programs",
                &key,
                json!({"name": "Pro", "slug": "pro", "destination_url": "https://shop.example/",
                       "currency": "USD", "commission": {"type": "percent", "value": "10"}}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{program}");
            let (status, integration) = call(
                &http,
                &base,
                reqwest::Method::POST,
                "/api/v1/integrations",
                &key,
                json!({"name": "Shop", "program_id": program["id"]}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{integration}");
            let integration = integration["id"].as_str().expect("id").to_owned();
            let mut affiliates = Vec::new();
            for (i, form) in forms().iter().enumerate() {
                let (status, a) = call(
                    &http,
                    &base,
                    reqwest::Method::POST,
                    "/api/v1/affiliates",
                    &key,
                    json!({"name": format!("Form {i}"), "email": format!("f{i}@example.com"),
                           "slug": format!("f{i}"),
                           "postback_url": format!("http://{form}:{port}/pb?form={i}&c={{click_id}}")}),
                )
                .await;
                assert_eq!(status, StatusCode::CREATED, "{form}: {a}");
                affiliates.push((form.clone(), a["id"].as_str().expect("id").to_owned()));
            }
            for (form, n) in test_fire_each(&http, &base, &key, &integration, &affiliates).await {
                assert_eq!(
                    n["status"], "delivered",
                    "{form} with the guard lifted: {n}"
                );
            }
            let heard = heard.lock().expect("lock");
            let expected: BTreeSet<String> = (0..affiliates.len()).map(|i| i.to_string()).collect();
            assert_eq!(
                heard.forms, expected,
                "every form arrives with the guard lifted"
            );
            (port, key, integration, affiliates)
        })
    });
    assert!(lifted.sigterm_and_wait().success());

    // The guard on: the same endpoints are refused at send time, each with
    // its reason, and the canary (on the same port) hears nothing.
    let guarded = serve_isolated(&data, &hosts, true);
    let base = guarded.value_after("listening on");
    in_namespace_of(guarded.child.id(), move || {
        Box::pin(async move {
            let (_, heard) = canary(port).await;
            let http = reqwest::Client::new();
            for (form, n) in test_fire_each(&http, &base, &key, &integration, &affiliates).await {
                assert_eq!(n["status"], "dead", "{form} is never retried: {n}");
                let error = n["last_error"].as_str().unwrap_or_default();
                assert!(error.starts_with("SSRF refused: "), "{form}: {n}");
                assert!(
                    error.contains("private targets are not allowed"),
                    "{form}: {n}"
                );
            }
            // Attempts of other kinds are not tried either: wait a moment for
            // any connection to land before counting.
            tokio::time::sleep(Duration::from_millis(300)).await;
            {
                let heard = heard.lock().expect("lock");
                assert_eq!(
                    heard.connections, 0,
                    "the canary was reached with the guard on: {:?}",
                    heard.forms
                );
            }

            // A literal forbidden address is refused when it is set, too.
            let (_, any) = affiliates.first().expect("one").clone();
            for form in forms().iter().filter(|f| !f.contains("canary.test")) {
                let (status, body) = call(
                    &http,
                    &base,
                    reqwest::Method::PATCH,
                    &format!("/api/v1/affiliates/{any}"),
                    &key,
                    json!({"postback_url": format!("http://{form}:{port}/pb")}),
                )
                .await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{form}: {body}");
            }
        })
    });
    assert!(guarded.sigterm_and_wait().success());
}

/// Setting a postback URL with a literal forbidden address is refused with
/// the reason and changes nothing; a host name is checked at send time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_forbidden_targets_are_refused_when_set() {
    let app: TestApp = spawn_configured(None, |c| c.allow_private_targets = false).await;
    let tenant = app.create_tenant("acme").await;
    for (url, reason) in [
        ("http://127.0.0.1/pb", "127.0.0.1 is a loopback address"),
        ("http://0x7f.1:8080/pb", "127.0.0.1 is a loopback address"),
        ("http://2130706433/pb", "127.0.0.1 is a loopback address"),
        (
            "http://169.254.169.254/latest",
            "169.254.169.254 is a cloud metadata address",
        ),
        ("http://[::ffff:10.0.0.1]/pb", "IPv4-mapped"),
        ("http://[2002:a00:1::]/pb", "6to4"),
        ("http://[fec0::1]/pb", "site-local"),
        ("http://[2001::1]/pb", "Teredo"),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/affiliates",
                &tenant.key,
                json!({"name": "Jane", "email": "jane@example.com", "slug": "jane",
                       "postback_url": url}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["errors"][0]["field"], "postback_url", "{body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{url}: {body}");
    }
    let (_, page) = app.get("/api/v1/affiliates", &tenant.key).await;
    assert_eq!(page["items"], json!([]), "nothing was created");

    let (status, jane) = app
        .post(
            "/api/v1/affiliates",
            &tenant.key,
            json!({"name": "Jane", "email": "jane@example.com", "slug": "jane",
                   "postback_url": "https://tracker.example/pb?c={click_id}"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{jane}");
    let id = jane["id"].as_str().expect("id");
    let (status, body) = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/v1/affiliates/{id}"),
            Some(&tenant.key),
            Some(json!({"postback_url": "http://[::1]:9/pb"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, after) = app
        .get(&format!("/api/v1/affiliates/{id}"), &tenant.key)
        .await;
    assert_eq!(
        after["postback_url"],
        "https://tracker.example/pb?c={click_id}"
    );
    app.stop().await;
}
