//! Walks over every operation of the served OpenAPI document, so that a
//! new endpoint is covered the day it is added:
//! - the isolation walk calls each one with tenant B's admin key on tenant
//!   A's ids (in the path, in id fields of the body and in id filters of
//!   the query) and expects 404, an empty list (a report: 404) or 403 for operator-only
//!   operations, with nothing of A's in any answer;
//! - the read-only walk calls each write with A's read key and expects 403
//!   and nothing changed.
//!
//! An operation whose path or body the walk cannot fill in fails the test.

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::harness::{OPERATOR, Setup, TestApp};
use crate::on_both_databases;

/// One operation of the document.
struct Operation {
    method: Method,
    path: String,
    id: String,
    /// Its query parameters.
    query: Vec<String>,
    /// The schema of its JSON body, resolved.
    body: Option<Value>,
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().expect("ref name");
        return resolve(doc, &doc["components"]["schemas"][name]);
    }
    if let Some(first) = schema["allOf"].as_array().and_then(|a| a.first()) {
        return resolve(doc, first);
    }
    schema
}

async fn operations(app: &TestApp) -> (Value, Vec<Operation>) {
    let (status, doc) = app
        .api(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let method: Method = method.to_uppercase().parse().expect("method");
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().expect("name").to_owned())
                .collect();
            let body = op["requestBody"]["content"].as_object().map(|c| {
                let (ct, media) = c.iter().next().expect("a body type");
                assert!(ct.starts_with("application/json"), "{path}: {ct}");
                resolve(&doc, &media["schema"]).clone()
            });
            ops.push(Operation {
                method,
                path: path.clone(),
                id: op["operationId"].as_str().expect("operationId").to_owned(),
                query,
                body,
            });
        }
    }
    assert!(ops.len() > 50, "the whole document: {}", ops.len());
    (doc, ops)
}

/// The resource a path's first segment names.
fn kind_of_path(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "affiliates" => "affiliate",
        "api-keys" => "api_key",
        "conversions" => "conversion",
        "coupons" => "coupon",
        "commission-plans" => "plan",
        "endpoints" => "endpoint",
        "deliveries" => "delivery",
        "integrations" => "integration",
        "links" => "link",
        "payout-batches" => "batch",
        "payouts" => "payout",
        "postbacks" => "postback",
        "programs" => "program",
        "tenants" => "tenant",
        other => panic!("the walk cannot fill in a path under /{other}: {path}"),
    }
}

/// The resource an id field names (`program_id`, or `ids` of the path's).
fn kind_of_field(field: &str, path: &str) -> Option<&'static str> {
    if field == "ids" {
        return Some(kind_of_path(path));
    }
    let kind = field.strip_suffix("_id")?;
    Some(match kind {
        "affiliate" => "affiliate",
        "program" => "program",
        "integration" => "integration",
        "conversion" => "conversion",
        "payout" => "payout",
        "batch" => "batch",
        "link" => "link",
        "coupon" => "coupon",
        "endpoint" => "endpoint",
        "delivery" => "delivery",
        // The audit log's filter by any resource: A's program's records.
        "resource" => "program",
        // A merchant's own order id.
        "txn" => "txn",
        other => panic!("the walk cannot fill in the id field {field} ({other}) of {path}"),
    })
}

/// A value for a field that the operation would accept, with `ids` for
/// every id field.
fn fill(
    doc: &Value,
    schema: &Value,
    field: &str,
    path: &str,
    ids: &HashMap<&str, String>,
    n: usize,
) -> Value {
    let schema = resolve(doc, schema);
    if let Some(kind) = kind_of_field(field, path) {
        let id = ids
            .get(kind)
            .unwrap_or_else(|| panic!("no {kind} id for {field} of {path}"));
        return if schema["type"] == "array" {
            json!([id])
        } else {
            json!(id)
        };
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    match schema["type"].as_str() {
        Some("object") => {
            let props = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut out = Map::new();
            for (name, prop) in &props {
                let is_id = kind_of_field(name, path).is_some();
                if required.contains(&name.as_str()) || is_id {
                    out.insert(name.clone(), fill(doc, prop, name, path, ids, n));
                }
            }
            Value::Object(out)
        }
        Some("array") => json!([fill(doc, &schema["items"], field, path, ids, n)]),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        Some("string") if schema["format"] == "date-time" => json!(chrono::Utc::now().to_rfc3339()),
        Some("string") => json!(match field {
            "email" => format!("walk{n}@example.com"),
            f if f == "url" || f.ends_with("_url") => format!("https://example.com/walk{n}"),
            "slug" => format!("walk{n}"),
            "code" => format!("WALK{n}"),
            "currency" | "from" => "USD".to_owned(),
            "to" => "EUR".to_owned(),
            "rate" | "amount" | "minimum" | "value" | "percent" => "1.00".to_owned(),
            "time_zone" => "UTC".to_owned(),
            "type" => "percent".to_owned(),
            "scope" => "admin".to_owned(),
            "action" => "approve".to_owned(),
            _ => format!("walk {n}"),
        }),
        _ => panic!("the walk cannot fill in {field} of {path}: {schema}"),
    }
}

fn fill_path(path: &str, ids: &HashMap<&str, String>) -> String {
    if !path.contains('{') {
        return path.to_owned();
    }
    let kind = kind_of_path(path);
    let id = ids
        .get(kind)
        .unwrap_or_else(|| panic!("no {kind} id for {path}"));
    let mut out = String::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if seg.starts_with('{') {
            assert_eq!(seg, "{id}", "the walk fills in {{id}} only: {path}");
            out.push_str(id);
        } else {
            out.push_str(seg);
        }
    }
    out
}

/// Tenant A (the quickstart's acme) with one of everything.
struct World {
    setup: Setup,
    ids: HashMap<&'static str, String>,
    /// What must never reach tenant B.
    secrets: Vec<String>,
    read_key: String,
}

async fn world(app: &TestApp) -> World {
    let s = app.quickstart_setup("acme", "http://127.0.0.1:9").await;
    let key = s.tenant.key.clone();
    let created = |v: &Value| v["id"].as_str().expect("id").to_owned();
    let (status, link) = app
        .post(
            "/api/v1/links",
            &key,
            json!({"program_id": s.program_id, "affiliate_id": s.affiliate_id, "sub1": "walk"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let (status, coupon) = app
        .post(
            "/api/v1/coupons",
            &key,
            json!({"program_id": s.program_id, "affiliate_id": s.affiliate_id, "code": "ACME10"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{coupon}");
    let (status, plan) = app
        .post(
            &format!("/api/v1/programs/{}/commission-plans", s.program_id),
            &key,
            json!({"affiliate_id": s.affiliate_id, "commission": {"type": "percent", "value": "12"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let click_id = app.click_id("/api/r/acme/pro?via=jane").await;
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click_id}&amount=100&txn_id=walk-1",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = app
        .conversions_until(&key, "txn_id=walk-1", |b| {
            !b["items"][0]["payout"].is_null()
        })
        .await;
    let conversion = page["items"][0]["id"].as_str().expect("id").to_owned();
    let (status, batch) = app.post("/api/v1/payouts", &key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let payout = batch["payouts"][0]["id"]
        .as_str()
        .expect("a payout")
        .to_owned();
    let (_, postbacks) = app.get("/api/v1/postbacks", &key).await;
    let postback = postbacks["items"][0]["id"]
        .as_str()
        .expect("a postback")
        .to_owned();
    let (status, made) = app
        .post(
            "/api/v1/api-keys",
            &key,
            json!({"name": "reports", "scope": "read"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let read_key = made["token"].as_str().expect("token").to_owned();
    let (status, endpoint) = app
        .post(
            "/api/v1/endpoints",
            &key,
            json!({"affiliate_id": s.affiliate_id, "kind": "webhook", "url": "https://hooks.example/acme"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    // Jane's delivery of the conversion (to an address that refuses it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let delivery = loop {
        let (_, page) = app.get("/api/v1/deliveries", &key).await;
        if let Some(id) = page["items"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no delivery: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let ids = HashMap::from([
        ("tenant", s.tenant.id.clone()),
        ("program", s.program_id.clone()),
        ("affiliate", s.affiliate_id.clone()),
        ("integration", s.integration_id.clone()),
        ("link", created(&link)),
        ("coupon", created(&coupon)),
        ("conversion", conversion),
        ("payout", payout),
        ("batch", created(&batch)),
        ("postback", postback),
        ("api_key", created(&made)),
        ("txn", "walk-1".to_owned()),
        ("plan", created(&plan)),
        ("endpoint", created(&endpoint)),
        ("delivery", delivery),
    ]);
    let mut secrets: Vec<String> = ids.values().cloned().collect();
    secrets.extend([
        s.secret.clone(),
        key.clone(),
        read_key.clone(),
        created(&plan),
        endpoint["secret"].as_str().expect("secret").to_owned(),
        "hooks.example/acme".to_owned(),
        "jane@example.com".to_owned(),
        "ACME10".to_owned(),
        "walk-1".to_owned(),
    ]);
    World {
        setup: s,
        ids,
        secrets,
        read_key,
    }
}

async fn call(
    app: &TestApp,
    op: &Operation,
    doc: &Value,
    ids: &HashMap<&str, String>,
    key: &str,
    n: usize,
) -> (String, StatusCode, String, Option<Value>) {
    let mut url = fill_path(&op.path, ids);
    let filters: Vec<String> = op
        .query
        .iter()
        .filter_map(|q| {
            let kind = kind_of_field(q, &op.path)?;
            Some(format!("{q}={}", ids.get(kind)?))
        })
        .collect();
    if !filters.is_empty() {
        url = format!("{url}?{}", filters.join("&"));
    }
    let body = op
        .body
        .as_ref()
        .map(|schema| fill(doc, schema, "", &op.path, ids, n));
    let mut req = reqwest::Client::new()
        .request(op.method.clone(), app.url(&format!("/api/v1{url}")))
        .bearer_auth(key);
    if let Some(b) = &body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (url, status, text, body)
}

fn operator_only(path: &str) -> bool {
    path == "/tenants" || path.starts_with("/tenants/") || path.starts_with("/auth/signing-keys")
}

async fn tenant_b_reaches_nothing_of_tenant_a(app: &TestApp) {
    let a = world(app).await;
    let b = app.create_tenant("globex").await;
    let (doc, ops) = operations(app).await;
    let mut failures = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        let (url, status, text, body) = call(app, op, &doc, &a.ids, &b.key, n).await;
        let what = format!(
            "{} {} {url} {}",
            op.id,
            op.method,
            body.map(|b| b.to_string()).unwrap_or_default()
        );
        // An answer may quote the ids the request sent; nothing else of A's.
        let sent = format!("{url} {what}");
        if let Some(leak) = a
            .secrets
            .iter()
            .find(|s| text.contains(s.as_str()) && !sent.contains(s.as_str()))
        {
            failures.push(format!("{what}: answer holds A's {leak}: {status} {text}"));
            continue;
        }
        let id_fields: Vec<String> = op
            .body
            .as_ref()
            .and_then(|s| s["properties"].as_object())
            .map(|p| {
                p.keys()
                    .filter(|k| kind_of_field(k, &op.path).is_some())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let filtered = op
            .query
            .iter()
            .any(|q| kind_of_field(q, &op.path).is_some());
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let ok = if operator_only(&op.path) {
            status == StatusCode::FORBIDDEN && answer["code"] == "operator-only"
        } else if op.path.contains('{') {
            status == StatusCode::NOT_FOUND
        } else if !id_fields.is_empty() {
            // A reference in a body answers as an id that exists nowhere:
            // 404, 422 on exactly the id fields, or a bulk answer that
            // touched nothing (it made nothing, so not 201).
            let on_ids = answer["errors"].as_array().is_some_and(|errs| {
                !errs.is_empty()
                    && errs
                        .iter()
                        .all(|e| id_fields.iter().any(|f| e["field"] == f.as_str()))
            });
            status == StatusCode::NOT_FOUND
                || (status == StatusCode::UNPROCESSABLE_ENTITY && on_ids)
                || status == StatusCode::OK
        } else if filtered {
            // A list filtered by another's id is empty; a report filtered
            // so is refused as not found.
            (status == StatusCode::OK && answer["items"].as_array().is_some_and(Vec::is_empty))
                || (status == StatusCode::NOT_FOUND
                    && answer["code"]
                        .as_str()
                        .is_some_and(|c| c.ends_with("-not-found")))
        } else {
            !status.is_server_error()
        };
        if !ok {
            failures.push(format!("{what}: {status} {text}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} operations:\n{}",
        failures.len(),
        ops.len(),
        failures.join("\n")
    );
    // And A's own data is as it was.
    let (_, conversions) = app.get("/api/v1/conversions", &a.setup.tenant.key).await;
    assert_eq!(
        conversions["items"][0]["status"], "approved",
        "{conversions}"
    );
}
on_both_databases!(tenant_b_reaches_nothing_of_tenant_a);

/// Every list and single read of the tenant, as its admin key sees them.
async fn snapshot(
    app: &TestApp,
    ops: &[Operation],
    ids: &HashMap<&str, String>,
    key: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for op in ops
        .iter()
        .filter(|o| o.method == Method::GET && !operator_only(&o.path))
    {
        let url = fill_path(&op.path, ids);
        let resp = reqwest::Client::new()
            .get(app.url(&format!("/api/v1{url}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("read");
        out.push(format!(
            "{url} {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        ));
    }
    out
}

async fn a_read_key_changes_nothing(app: &TestApp) {
    let a = world(app).await;
    let (doc, ops) = operations(app).await;
    let key = &a.setup.tenant.key;
    let (status, _) = app.get("/api/v1/programs", &a.read_key).await;
    assert_eq!(status, StatusCode::OK, "the read key reads");
    let before = snapshot(app, &ops, &a.ids, key).await;
    let mut failures = Vec::new();
    let mut writes = 0;
    for (n, op) in ops.iter().enumerate() {
        // Issuing an access token changes nothing; the token has the key's scope.
        if op.method == Method::GET || op.id == "create_access_token" {
            continue;
        }
        writes += 1;
        let (url, status, text, _) = call(app, op, &doc, &a.ids, &a.read_key, n).await;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let expected = if operator_only(&op.path) {
            "operator-only"
        } else {
            "read-only-key"
        };
        if status != StatusCode::FORBIDDEN || answer["code"] != expected {
            failures.push(format!("{} {} {url}: {status} {text}", op.id, op.method));
        }
    }
    assert!(writes > 30, "{writes}");
    assert!(
        failures.is_empty(),
        "{} of {writes} writes:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let after = snapshot(app, &ops, &a.ids, key).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "a read key's writes changed nothing");
    }
    let (_, tenants) = app.get("/api/v1/tenants", OPERATOR).await;
    assert_eq!(tenants["items"][0]["status"], "active", "{tenants}");
}
on_both_databases!(a_read_key_changes_nothing);
