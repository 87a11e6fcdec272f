//! `Idempotency-Key` on the admin API's POSTs: a retry gets the first
//! answer, another request with the key is refused, concurrent requests
//! with one key make one resource, and keys are the sender tenant's and
//! are forgotten after a day; on both databases.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::on_both_databases;

async fn post_with_key(
    app: &TestApp,
    path: &str,
    token: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, Option<String>, Value) {
    let resp = app
        .http
        .post(app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("post");
    let status = resp.status();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, replayed, body)
}

async fn count(app: &TestApp, path: &str, token: &str) -> usize {
    let (status, page) = app.get(path, token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().map_or(0, Vec::len)
}

async fn a_retried_post_makes_one_resource(app: &TestApp) {
    let acme = app.create_tenant("acme").await;
    let key = &acme.key;
    let program = json!({"name":"Pro","slug":"pro","destination_url":"https://shop.example/",
                         "currency":"USD","commission":{"type":"flat","value":"1"}});

    let (status, replayed, first) =
        post_with_key(app, "/api/v1/programs", key, "k-1", &program).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(replayed.is_none());
    let (status, replayed, again) =
        post_with_key(app, "/api/v1/programs", key, "k-1", &program).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again, first);
    assert_eq!(count(app, "/api/v1/programs", key).await, 1);

    // The same key with another body or path: refused, nothing made.
    let other = json!({"name":"Max","slug":"max","destination_url":"https://shop.example/",
                       "currency":"USD","commission":{"type":"flat","value":"1"}});
    let (status, _, p) = post_with_key(app, "/api/v1/programs", key, "k-1", &other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["code"], "idempotency-key-reused");
    let affiliate = json!({"name":"Jane","email":"jane@example.com","slug":"jane"});
    let (status, _, p) = post_with_key(app, "/api/v1/affiliates", key, "k-1", &affiliate).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(count(app, "/api/v1/programs", key).await, 1);
    assert_eq!(count(app, "/api/v1/affiliates", key).await, 0);

    // A bad key is refused before anything runs.
    for bad in ["", &"x".repeat(256), "with space"] {
        let (status, _, p) = post_with_key(app, "/api/v1/programs", key, bad, &other).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {p}");
        assert_eq!(p["code"], "idempotency-key-invalid", "{p}");
        // Who may not call at all hears that first.
        let (status, _, p) =
            post_with_key(app, "/api/v1/programs", "trk_unknown", bad, &other).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}: {p}");
    }
    assert_eq!(count(app, "/api/v1/programs", key).await, 1);

    // A refusal is an answer too: its retry gets it again.
    let (status, _, refused) =
        post_with_key(app, "/api/v1/programs", key, "k-2", &json!({"name": ""})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, replayed, again) =
        post_with_key(app, "/api/v1/programs", key, "k-2", &json!({"name": ""})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again["code"], refused["code"]);

    // Concurrent requests with one key: one affiliate.
    let tries: Vec<_> = (0..10)
        .map(|_| post_with_key(app, "/api/v1/affiliates", key, "k-3", &affiliate))
        .collect();
    let answers = futures::future::join_all(tries).await;
    let mut ids: Vec<&str> = Vec::new();
    for (status, _, body) in &answers {
        match *status {
            StatusCode::CREATED => ids.push(body["id"].as_str().expect("id")),
            StatusCode::CONFLICT => assert_eq!(body["code"], "idempotency-key-in-use"),
            other => panic!("{other}: {body}"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(count(app, "/api/v1/affiliates", key).await, 1);

    // Keys are the tenant's own: another tenant's k-1 is its own request.
    let globex = app.create_tenant("globex").await;
    let (status, replayed, theirs) =
        post_with_key(app, "/api/v1/programs", &globex.key, "k-1", &other).await;
    assert_eq!(status, StatusCode::CREATED, "{theirs}");
    assert!(replayed.is_none());
    assert_ne!(theirs["id"], first["id"]);

    // After a day the key is forgotten and may name a new request.
    let later = chrono::Utc::now() + chrono::Duration::hours(25);
    let deleted = app
        .services()
        .pipeline
        .apply_retention(later)
        .await
        .expect("retention");
    assert!(deleted.idempotency_keys >= 4, "{deleted:?}");
    let (status, _, p) = post_with_key(app, "/api/v1/programs", key, "k-1", &other).await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(count(app, "/api/v1/programs", key).await, 2);
}

on_both_databases!(a_retried_post_makes_one_resource);
