//! Credentials: a tenant's own API keys through the admin API (made with
//! their token shown once, scoped `admin` or `read`, listed with a hint
//! and their last use, revoked at once), over real HTTP on both databases.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{OPERATOR, TestApp};
use crate::on_both_databases;

async fn keys(app: &TestApp, key: &str, query: &str) -> Value {
    let (status, page) = app.get(&format!("/api/v1/api-keys{query}"), key).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

async fn api_keys_made_used_and_revoked(app: &TestApp) {
    let acme = app.create_tenant("acme").await;
    let admin = &acme.key;
    let before = keys(app, admin, "").await;
    assert_eq!(
        before["items"].as_array().map(Vec::len),
        Some(1),
        "{before}"
    );

    // Bad input names every bad field and makes nothing.
    let (status, p) = app
        .post(
            "/api/v1/api-keys",
            admin,
            json!({"name": " ", "scope": "root"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let fields: Vec<&Value> = p["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| &e["field"])
        .collect();
    assert_eq!(fields, ["name", "scope"], "{p}");
    assert_eq!(keys(app, admin, "").await["items"], before["items"]);
    // The operator manages tenants, not their keys.
    let (status, p) = app
        .post("/api/v1/api-keys", OPERATOR, json!({"name": "x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
    assert_eq!(p["code"], "tenant-key-required");

    // A read key: its token once, a hint after.
    let (status, made) = app
        .post(
            "/api/v1/api-keys",
            admin,
            json!({"name": "reports", "scope": "read"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let token = made["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("trk_"), "{made}");
    assert_eq!(made["scope"], "read");
    assert_eq!(
        made["hint"],
        format!("trk_…{}", &token[token.len() - 4..]).as_str()
    );
    assert!(made["last_used_at"].is_null());
    let id = made["id"].as_str().expect("id").to_owned();
    let (_, one) = app.get(&format!("/api/v1/api-keys/{id}"), admin).await;
    assert!(one.get("token").is_none(), "never shown again: {one}");

    // It reads; every write answers 403.
    let (status, _) = app.get("/api/v1/programs", &token).await;
    assert_eq!(status, StatusCode::OK);
    for (path, body) in [
        ("/api/v1/api-keys".to_owned(), json!({"name": "mine"})),
        (format!("/api/v1/api-keys/{id}/revoke"), json!({})),
        (
            "/api/v1/affiliates".to_owned(),
            json!({"name": "Jane", "email": "jane@example.com", "slug": "jane"}),
        ),
    ] {
        let (status, p) = app.post(&path, &token, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {p}");
        assert_eq!(p["code"], "read-only-key");
    }
    // Its use is recorded, once a minute rather than on every call.
    let (_, one) = app.get(&format!("/api/v1/api-keys/{id}"), &token).await;
    let used = one["last_used_at"].clone();
    assert!(used.is_string(), "{one}");
    app.get("/api/v1/programs", &token).await;
    let (_, again) = app.get(&format!("/api/v1/api-keys/{id}"), admin).await;
    assert_eq!(again["last_used_at"], used);

    // Listed newest first, by cursor.
    let page = keys(app, admin, "?limit=1").await;
    assert_eq!(page["items"][0]["id"], id.as_str(), "{page}");
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    let rest = keys(app, admin, &format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(rest["items"][0]["scope"], "admin", "{rest}");
    assert!(rest["next_cursor"].is_null());
    let (status, p) = app.get("/api/v1/api-keys?cursor=nope", admin).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (status, _) = app.get("/api/v1/api-keys?limit=201", admin).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Another tenant can neither see nor revoke it.
    let globex = app.create_tenant("globex").await;
    for (method, path) in [
        (reqwest::Method::GET, format!("/api/v1/api-keys/{id}")),
        (
            reqwest::Method::POST,
            format!("/api/v1/api-keys/{id}/revoke"),
        ),
    ] {
        let (status, p) = app
            .api(method, &path, Some(&globex.key), Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {p}");
        assert_eq!(p["code"], "api-key-not-found");
    }
    assert_eq!(
        keys(app, &globex.key, "").await["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Revoked: refused at once; revoking again changes nothing.
    let (status, revoked) = app
        .post(&format!("/api/v1/api-keys/{id}/revoke"), admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (status, p) = app.get("/api/v1/programs", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{p}");
    let (_, again) = app
        .post(&format!("/api/v1/api-keys/{id}/revoke"), admin, json!({}))
        .await;
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);

    // The audit log says who made and revoked it, once each.
    let admin_id = before["items"][0]["id"].as_str().expect("id").to_owned();
    let (status, log) = app
        .get(
            &format!("/api/v1/audit-log?resource_type=api_key&resource_id={id}"),
            admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let actions: Vec<(&Value, &Value)> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| (&r["action"], &r["actor"]))
        .collect();
    let actor = json!(format!("api_key:{admin_id}"));
    assert_eq!(
        actions,
        [
            (&json!("api_key.revoke"), &actor),
            (&json!("api_key.create"), &actor)
        ],
        "{log}"
    );
    let (_, globex_log) = app.get("/api/v1/audit-log", &globex.key).await;
    assert!(
        globex_log["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|r| r["resource_id"] != id.as_str()),
        "{globex_log}"
    );
}

on_both_databases!(api_keys_made_used_and_revoked);

/// A tenant's settings change with a before and after in the audit log,
/// which any key reads with filters and by cursor.
async fn the_audit_log_is_readable(app: &TestApp) {
    let acme = app.create_tenant("acme").await;
    let key = &acme.key;
    for zone in ["Europe/Berlin", "Asia/Tokyo"] {
        let (status, t) = app
            .api(
                reqwest::Method::PATCH,
                "/api/v1/tenant",
                Some(key),
                Some(json!({"time_zone": zone})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{t}");
    }
    let (status, page) = app
        .get("/api/v1/audit-log?action=tenant.update&limit=1", key)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page["items"][0]["details"],
        json!({"before": {"name": "ACME", "time_zone": "Europe/Berlin", "fallback_url": null},
               "after": {"name": "ACME", "time_zone": "Asia/Tokyo", "fallback_url": null}}),
        "{page}"
    );
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (_, older) = app
        .get(
            &format!("/api/v1/audit-log?action=tenant.update&limit=1&cursor={cursor}"),
            key,
        )
        .await;
    assert_eq!(
        older["items"][0]["details"]["after"]["time_zone"],
        "Europe/Berlin"
    );
    assert!(older["next_cursor"].is_null(), "{older}");
    // Out of the time range, nothing; a range that ends before it starts is refused.
    let (_, none) = app
        .get("/api/v1/audit-log?until=2000-01-01T00:00:00Z", key)
        .await;
    assert_eq!(none["items"], json!([]));
    let (status, p) = app
        .get(
            "/api/v1/audit-log?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
            key,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["errors"][0]["field"], "until");
    let (status, p) = app.get("/api/v1/audit-log", OPERATOR).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
}

on_both_databases!(the_audit_log_is_readable);

/// Integrations are listed by cursor and filter; a rotated secret keeps
/// working through its overlap (signatures too) while the new one works
/// at once; revocation refuses every secret for good.
async fn integration_secrets_rotated_and_revoked(app: &TestApp) {
    use trcker_domain::protection::{sign, signed_message};
    let jane = crate::harness::AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let int = format!("/api/v1/integrations/{}", s.integration_id);
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let pb = |secret: &str, txn: &str| {
        format!("/api/postback/acme/pro?secret={secret}&click_id={click}&amount=10&txn_id={txn}")
    };

    // Four integrations over pages of two, newest first, each once.
    let mut made = vec![s.integration_id.clone()];
    for name in ["b", "c", "d"] {
        let (status, i) = app
            .post(
                "/api/v1/integrations",
                key,
                json!({"name": name, "program_id": s.program_id}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{i}");
        made.push(i["id"].as_str().expect("id").to_owned());
    }
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let (status, page) = app.get(&format!("/api/v1/integrations{query}"), key).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for i in page["items"].as_array().expect("items") {
            assert!(i.get("secret").is_none(), "never listed: {i}");
            seen.push(i["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=2&cursor={c}"),
            None => break,
        }
    }
    made.reverse();
    assert_eq!(seen, made);
    for bad in [
        "?status=paused",
        "?program_id=nope",
        "?cursor=nope",
        "?limit=0",
    ] {
        let (status, p) = app.get(&format!("/api/v1/integrations{bad}"), key).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {p}");
    }

    // A bad overlap is refused and changes nothing.
    let rotate = format!("{int}/rotate-secret");
    let (status, p) = app.post(&rotate, key, json!({"overlap_hours": 169})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["errors"][0]["field"], "overlap_hours", "{p}");
    let (_, unchanged) = app.get(&int, key).await;
    assert!(unchanged["previous_secret_until"].is_null(), "{unchanged}");
    assert_eq!(app.postback(&pb(&s.secret, "t0")).await.0, StatusCode::OK);

    // A read key cannot rotate; another tenant's key finds nothing.
    let (_, read) = app
        .post(
            "/api/v1/api-keys",
            key,
            json!({"name": "r", "scope": "read"}),
        )
        .await;
    let read = read["token"].as_str().expect("token");
    assert_eq!(
        app.post(&rotate, read, json!({})).await.0,
        StatusCode::FORBIDDEN
    );
    let globex = app.create_tenant("globex").await;
    for path in [rotate.clone(), format!("{int}/revoke")] {
        let (status, p) = app.post(&path, &globex.key, json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {p}");
        assert_eq!(p["code"], "integration-not-found");
    }

    // Rotated with the default overlap: both secrets work, signatures too.
    let (status, rotated) = app.post(&rotate, key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = rotated["secret"].as_str().expect("secret").to_owned();
    assert_ne!(second, s.secret);
    assert_eq!(
        rotated["postback_url"],
        s.postback_url.replace(&s.secret, &second).as_str()
    );
    assert_eq!(rotated["secret_hint"], &second[60..]);
    let until: chrono::DateTime<chrono::Utc> = rotated["previous_secret_until"]
        .as_str()
        .expect("previous_secret_until")
        .parse()
        .expect("time");
    let hours = (until - chrono::Utc::now()).num_minutes();
    assert!((23 * 60..=24 * 60).contains(&hours), "{rotated}");
    assert_eq!(app.postback(&pb(&s.secret, "t1")).await.0, StatusCode::OK);
    assert_eq!(app.postback(&pb(&second, "t2")).await.0, StatusCode::OK);
    let (status, _) = app
        .api(
            reqwest::Method::PATCH,
            &int,
            Some(key),
            Some(json!({"require_signature": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let signed = |secret: &str, txn: &str| {
        let url = pb(secret, txn);
        let (path, query) = url.split_once('?').expect("query");
        let ts = chrono::Utc::now().timestamp().to_string();
        let signing_key = trcker_domain::secret::hash_secret(secret);
        let sig = sign(
            signing_key.as_bytes(),
            &signed_message(&ts, "GET", path, query, b""),
        );
        app.http
            .get(app.url(&url))
            .header("X-Trcker-Timestamp", ts)
            .header("X-Trcker-Signature", sig)
            .send()
    };
    for (secret, txn) in [(s.secret.as_str(), "t3"), (second.as_str(), "t4")] {
        let resp = signed(secret, txn).await.expect("send");
        assert_eq!(resp.status(), StatusCode::OK, "signed with {txn}");
    }
    // Signed with the other secret's key: refused.
    let url = pb(&second, "t5");
    let (path, query) = url.split_once('?').expect("query");
    let ts = chrono::Utc::now().timestamp().to_string();
    let wrong = sign(
        trcker_domain::secret::hash_secret(&s.secret).as_bytes(),
        &signed_message(&ts, "GET", path, query, b""),
    );
    let resp = app
        .http
        .get(app.url(&url))
        .header("X-Trcker-Timestamp", ts)
        .header("X-Trcker-Signature", wrong)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    app.api(
        reqwest::Method::PATCH,
        &int,
        Some(key),
        Some(json!({"require_signature": false})),
    )
    .await;

    // Rotated again without overlap: only the newest secret works.
    let (status, third) = app.post(&rotate, key, json!({"overlap_hours": 0})).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert!(third["previous_secret_until"].is_null(), "{third}");
    let third = third["secret"].as_str().expect("secret").to_owned();
    for old in [&s.secret, &second] {
        let (status, p) = app.postback(&pb(old, "t6")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{p}");
        assert_eq!(p["code"], "invalid-secret");
    }
    assert_eq!(app.postback(&pb(&third, "t6")).await.0, StatusCode::OK);

    // Revoked: final. No secret works, no change or rotation revives it.
    let (status, revoked) = app.post(&format!("{int}/revoke"), key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, p) = app.postback(&pb(&third, "t7")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{p}");
    let (status, p) = app
        .api(
            reqwest::Method::PATCH,
            &int,
            Some(key),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["code"], "integration-revoked");
    let (status, p) = app.post(&rotate, key, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    let (_, again) = app.post(&format!("{int}/revoke"), key, json!({})).await;
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    assert_eq!(
        app.postback(&pb(&third, "t8")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, listed) = app.get("/api/v1/integrations?status=revoked", key).await;
    assert_eq!(
        listed["items"][0]["id"],
        s.integration_id.as_str(),
        "{listed}"
    );
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));

    // The audit log has each rotation and the revocation, never a secret.
    let (_, log) = app
        .get(
            &format!(
                "/api/v1/audit-log?resource_type=integration&resource_id={}",
                s.integration_id
            ),
            key,
        )
        .await;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "integration.revoke",
            "integration.rotate_secret",
            "integration.update",
            "integration.update",
            "integration.rotate_secret",
            "integration.create"
        ],
        "{log}"
    );
    let text = log.to_string();
    for secret in [&s.secret, &second, &third] {
        assert!(!text.contains(secret.as_str()), "a secret in the audit log");
    }
}

on_both_databases!(integration_secrets_rotated_and_revoked);
