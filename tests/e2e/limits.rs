//! What Trcker's listener takes: every route's body is bounded (413
//! without reading the rest, so the process's memory stays flat), headers
//! that trickle in are cut off, and a JSON postback with a repeated key is
//! refused like a repeated query parameter.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::binary::{set_up_over_http, start};
use crate::harness::{AffiliateServer, TestApp, spawn_on};
use crate::on_both_databases;

/// The process's peak resident memory, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Sends a request head and then, unless it declares a length, a chunked
/// body of `body_bytes`; returns the answer's status and head.
async fn send(addr: &str, head: &str, body_bytes: usize) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < body_bytes {
            let frame = format!("{:x}\r\n", chunk.len());
            if wr.write_all(frame.as_bytes()).await.is_err()
                || wr.write_all(&chunk).await.is_err()
                || wr.write_all(b"\r\n").await.is_err()
            {
                return;
            }
            sent += chunk.len();
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline.into(), rd.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    writer.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn chunked(method: &str, path: &str, key: &str, content_type: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
}

fn declared(method: &str, path: &str, key: &str, length: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Every operation of the served OpenAPI document that takes a body, with
/// its path parameters filled in.
async fn operations_with_bodies(http: &reqwest::Client, base: &str) -> Vec<(String, String)> {
    let doc: Value = http
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            if op.get("requestBody").is_some() {
                let filled = path
                    .split('/')
                    .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                    .collect::<Vec<_>>()
                    .join("/");
                ops.push((method.to_uppercase(), format!("/api/v1{filled}")));
            }
        }
    }
    assert!(ops.len() > 20, "{ops:?}");
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_bounds_its_body_and_memory_stays_flat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start("serve", dir.path(), Some("limits-operator-token"), &[]);
    let base = running.value_after("listening on");
    let addr = base.trim_start_matches("http://").to_owned();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let set = set_up_over_http(&http, &base, "limits-operator-token").await;
    let ops = operations_with_bodies(&http, &base).await;
    let portal_forms = [
        "/portal/acme/login",
        "/portal/acme/logout",
        "/portal/acme/invite/x",
    ];

    // Past each limit: refused with 413 and the right kind of answer,
    // whether the size is declared or the body just keeps coming.
    let round = |body_bytes: usize| {
        let (ops, addr, key) = (ops.clone(), addr.clone(), set.key.clone());
        async move {
            for (method, path) in &ops {
                let (status, head) = send(&addr, &declared(method, path, &key, 300_000), 0).await;
                assert_eq!(status, 413, "{method} {path}: {head}");
                assert!(head.contains("application/problem+json"), "{head}");
                let head_of = chunked(method, path, &key, "application/json");
                let (status, head) = send(&addr, &head_of, body_bytes).await;
                assert_eq!(status, 413, "{method} {path} chunked: {head}");
            }
            for path in portal_forms {
                let head_of = chunked("POST", path, "", "application/x-www-form-urlencoded");
                let (status, head) = send(&addr, &head_of, body_bytes).await;
                assert_eq!(status, 413, "{path}: {head}");
                assert!(head.contains("text/plain"), "{head}");
            }
            for path in ["/healthz", "/readyz", "/api/docs"] {
                let (status, head) = send(&addr, &chunked("GET", path, "", "text/plain"), 1).await;
                assert_eq!(status, 413, "{path}: {head}");
            }
        }
    };
    round(1024 * 1024).await;
    let pid = running.child.id();
    let before = peak_kib(pid);
    // Eight at once, 16 MiB each, several times over.
    let all: Vec<_> = (0..8)
        .map(|_| tokio::spawn(round(16 * 1024 * 1024)))
        .collect();
    for r in all {
        r.await.expect("round");
    }
    let grown = peak_kib(pid).saturating_sub(before);
    assert!(grown < 8 * 1024, "peak memory grew by {grown} KiB");

    // Within the limits, everything works as before.
    let resp = http
        .get(format!("{base}/api/v1/programs"))
        .bearer_auth(&set.key)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    running.sigterm_and_wait();
}

/// A client that sends part of its headers and waits is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_finish_are_cut_off() {
    let app = spawn_on(None).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("head");
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(40), stream.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(30),
        "closed after {waited:?}"
    );
    // Closed, with at most a 408 said first.
    let said = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || said.starts_with("HTTP/1.1 408"), "{said}");
    app.stop().await;
}

/// `{"amount": "10", "amount": "1000"}` is two values for one parameter.
async fn a_json_postback_with_a_repeated_key_is_refused(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let post = |body: String| {
        app.http
            .post(app.url("/api/postback/acme/pro"))
            .header("X-Postback-Secret", &s.secret)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = post(format!(
        r#"{{"click_id":"{click}","amount":"10","txn_id":"j1","amount":"1000"}}"#
    ))
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let p: Value = resp.json().await.expect("json");
    assert_eq!(p["code"], "invalid-parameters", "{p}");
    assert_eq!(p["errors"][0]["field"], "amount", "{p}");
    // The same value twice is one value; a non-object is refused as before.
    let resp = post(format!(
        r#"{{"click_id":"{click}","amount":"10","txn_id":"j1","amount":"10"}}"#
    ))
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    for body in ["[1,2]", "\"x\"", "{\"a\":"] {
        let resp = post(body.to_owned()).await.expect("send");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let p: Value = resp.json().await.expect("json");
        assert_eq!(p["code"], "invalid-body", "{body}: {p}");
    }
}

on_both_databases!(a_json_postback_with_a_repeated_key_is_refused);

/// An address that keeps sending wrong API keys or postback secrets is
/// refused for the rest of the minute, whatever it sends; others are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_from_one_address_are_refused() {
    let jane = AffiliateServer::start(200).await;
    let app =
        crate::harness::spawn_configured(None, |c| c.trusted_proxies = vec!["127.0.0.1/32".into()])
            .await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let from = |ip: &'static str, path: String, token: String| {
        app.http
            .get(app.url(&path))
            .bearer_auth(token)
            .header("X-Forwarded-For", ip)
            .send()
    };
    let limit = trcker_services::guard::MAX_FAILURES;
    for _ in 0..limit {
        let resp = from(
            "198.51.100.7",
            "/api/v1/programs".into(),
            "trk_wrong".into(),
        )
        .await
        .expect("get");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // Now refused, even with the right key; another address is served.
    let resp = from(
        "198.51.100.7",
        "/api/v1/programs".into(),
        s.tenant.key.clone(),
    )
    .await
    .expect("get");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let p: Value = resp.json().await.expect("json");
    assert_eq!(p["code"], "too-many-auth-failures", "{p}");
    let resp = from(
        "198.51.100.8",
        "/api/v1/programs".into(),
        s.tenant.key.clone(),
    )
    .await
    .expect("get");
    assert_eq!(resp.status(), StatusCode::OK);

    // Postback secrets count alike.
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let pb = |secret: &str, txn: &str| {
        format!("/api/postback/acme/pro?secret={secret}&click_id={click}&amount=10&txn_id={txn}")
    };
    for i in 0..limit {
        let resp = from("203.0.113.5", pb("wrong", &format!("w{i}")), String::new())
            .await
            .expect("postback");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = from("203.0.113.5", pb(&s.secret, "ok1"), String::new())
        .await
        .expect("postback");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let resp = from("203.0.113.6", pb(&s.secret, "ok1"), String::new())
        .await
        .expect("postback");
    assert_eq!(resp.status(), StatusCode::OK);
    app.stop().await;
}
