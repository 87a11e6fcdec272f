//! Documents committed beside the code that must say what the code does: the
//! OpenAPI document and the table of error codes. Each test prints the one
//! command that writes its file anew.

use std::path::PathBuf;

use serde_json::Value;
use trcker_api::problem::{Code, markdown};

use crate::harness::spawn_on;

/// `TRCKER_BLESS=1` makes these tests write their file instead of comparing.
fn bless() -> bool {
    std::env::var("TRCKER_BLESS").is_ok_and(|v| v == "1")
}

fn docs(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(file)
}

const REGENERATE: &str = "TRCKER_BLESS=1 cargo test -p trcker --test e2e docs::";

/// The server the committed document names: the default listen address.
const SERVER: &str = "http://127.0.0.1:8080/api/v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = spawn_on(None).await;
    let resp = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("get");
    let mut served: Value = resp.json().await.expect("json");
    app.stop().await;
    served["servers"] = serde_json::json!([{ "url": SERVER }]);
    // Every operation is named and summarised, and every POST declares the
    // header that makes its retry safe.
    for (path, item) in served["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            assert!(
                op["operationId"].is_string(),
                "{method} {path}: operationId"
            );
            assert!(op["summary"].is_string(), "{method} {path}: summary");
            let declares = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["in"] == "header" && p["name"] == "Idempotency-Key")
            });
            assert_eq!(
                declares,
                method == "post",
                "{method} {path}: Idempotency-Key"
            );
            // What is refused is said: a page's bounds, the key's form.
            for p in op["parameters"].as_array().into_iter().flatten() {
                match p["name"].as_str() {
                    Some("limit") => {
                        assert_eq!(p["schema"]["minimum"], 1, "{method} {path}");
                        assert_eq!(p["schema"]["maximum"], 200, "{method} {path}");
                    }
                    Some("Idempotency-Key") => {
                        assert_eq!(p["schema"]["maxLength"], 255, "{method} {path}");
                    }
                    _ => {}
                }
            }
        }
    }
    // An optional property may be null, as Trcker writes it.
    let schemas = &served["components"]["schemas"];
    assert_eq!(
        schemas["ApiKeyOut"]["properties"]["revoked_at"]["nullable"],
        true
    );
    assert!(
        schemas["ProgramOut"]["properties"]
            .as_object()
            .is_some_and(|p| p
                .values()
                .any(|v| v["allOf"].is_array() && v["nullable"] == true)),
        "a reference that may be null is wrapped: {}",
        schemas["ProgramOut"]
    );
    let path = docs("openapi.json");
    if bless() {
        let text = serde_json::to_string_pretty(&served).expect("json") + "\n";
        std::fs::write(&path, text).expect("write docs/openapi.json");
        return;
    }
    let committed: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| {
            panic!("docs/openapi.json is missing or unreadable; write it with: {REGENERATE}")
        });
    if served != committed {
        let diff = differences(&committed, &served, "");
        panic!(
            "the served OpenAPI document differs from docs/openapi.json at:\n  {}\n\
             if the change is meant, write the file anew with: {REGENERATE}",
            diff.join("\n  ")
        );
    }
}

/// Where two JSON documents differ, as paths (at most 20).
fn differences(a: &Value, b: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let path = format!("{at}/{key}");
                match (x.get(key), y.get(key)) {
                    (Some(v), Some(w)) => out.extend(differences(v, w, &path)),
                    (Some(_), None) => out.push(format!("{path}: committed, not served")),
                    (None, _) => out.push(format!("{path}: served, not committed")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                out.extend(differences(v, w, &format!("{at}/{i}")));
            }
        }
        _ if a != b => out.push(format!("{at}: {a} committed, {b} served")),
        _ => {}
    }
    out.truncate(20);
    out
}

#[test]
fn every_error_code_is_in_docs_errors_md_and_every_documented_one_exists() {
    let path = docs("errors.md");
    if bless() {
        std::fs::write(&path, markdown()).expect("write docs/errors.md");
        return;
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("docs/errors.md is missing; write it with: {REGENERATE}"));
    // Rows: | `code` | status | ...
    let documented: Vec<(String, u16)> = text
        .lines()
        .filter_map(|l| {
            let mut cells = l.strip_prefix("| `")?.split('|');
            let code = cells.next()?.trim().trim_end_matches('`').to_owned();
            let status = cells.next()?.trim().parse().ok()?;
            Some((code, status))
        })
        .collect();
    let in_code: Vec<(String, u16)> = Code::ALL
        .iter()
        .map(|c| (c.as_str().to_owned(), c.status().as_u16()))
        .collect();
    for code in &in_code {
        assert!(
            documented.contains(code),
            "{code:?} is answered but not in docs/errors.md; write it anew with: {REGENERATE}"
        );
    }
    for code in &documented {
        assert!(
            in_code.contains(code),
            "{code:?} is in docs/errors.md but no answer has it; write it anew with: {REGENERATE}"
        );
    }
    assert_eq!(
        text,
        markdown(),
        "docs/errors.md differs from the table in crates/trcker-api/src/problem.rs; write it anew with: {REGENERATE}"
    );
}
