//! Access tokens: a JWT issued for an API key (`POST /api/v1/auth/token`)
//! works like the key until it expires; every forged, altered, stale or
//! foreign token answers 401; revoking the key ends its tokens; the
//! operator rotates the signing key and old tokens verify until they
//! expire. Over real HTTP on both databases.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use trcker_storage::entities::signing_key;
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::harness::{OPERATOR, TestApp};
use crate::on_both_databases;

async fn issue(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    app.post("/api/v1/auth/token", key, body).await
}

async fn token(app: &TestApp, key: &str) -> String {
    let (status, t) = issue(app, key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    t["access_token"].as_str().expect("access_token").to_owned()
}

/// The newest signing key's id and its material, as the server derives it.
async fn newest_key(app: &TestApp) -> (String, Vec<u8>) {
    let s = app.services();
    let k = signing_key::Entity::find()
        .order_by_desc(signing_key::Column::CreatedAt)
        .one(&s.store.conn)
        .await
        .expect("read")
        .expect("a signing key");
    let material = s.settings.access_token_key(&k.kid, &k.salt);
    (k.kid, material)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(app: &TestApp, tenant: &str, key_id: &str) -> Value {
    json!({
        "iss": app.services().settings.public_base(),
        "aud": "trcker-admin-api",
        "sub": key_id,
        "tid": tenant,
        "iat": now(),
        "nbf": now(),
        "exp": now() + 600,
        "jti": "test",
    })
}

fn sign(alg: Algorithm, kid: &str, material: &[u8], claims: &Value) -> String {
    let header = Header {
        kid: Some(kid.to_owned()),
        ..Header::new(alg)
    };
    let key = EncodingKey::from_secret(material).expect("key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// A token whose header and signature are written by hand.
fn raw(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

fn with(mut v: Value, field: &str, value: Value) -> Value {
    v[field] = value;
    v
}

async fn assert_refused(app: &TestApp, token: &str, what: &str) {
    let (status, p) = app.get("/api/v1/programs", token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {p}");
    assert_eq!(p["code"], "unauthorized", "{what}: {p}");
    assert!(p["items"].is_null(), "{what}: nothing read: {p}");
}

async fn access_tokens_issued_checked_and_revoked(app: &TestApp) {
    let acme = app.create_tenant("acme").await;
    let (status, keys) = app.get("/api/v1/api-keys", &acme.key).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let key_id = keys["items"][0]["id"].as_str().expect("id").to_owned();

    // Issued for the key: works like it until it expires.
    let (status, t) = issue(app, &acme.key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 900);
    let access = t["access_token"].as_str().expect("token").to_owned();
    let (status, _) = app.get("/api/v1/programs", &access).await;
    assert_eq!(status, StatusCode::OK);
    let (status, p) = app
        .post(
            "/api/v1/programs",
            &access,
            json!({"name": "Pro", "slug": "pro", "destination_url": "https://shop.example.com/", "currency": "USD",
                   "commission": {"type": "percent", "value": "10"}}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "an admin key's token writes: {p}"
    );
    let (status, t) = issue(app, &acme.key, json!({"expires_in": 3600})).await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    assert_eq!(t["expires_in"], 3600);

    // Bad lifetimes, the operator, and a token asking for a token.
    for bad in [json!({"expires_in": 59}), json!({"expires_in": 3601})] {
        let (status, p) = issue(app, &acme.key, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {p}");
        assert_eq!(p["errors"][0]["field"], "expires_in", "{p}");
    }
    let (status, p) = issue(app, OPERATOR, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
    assert_eq!(p["code"], "tenant-key-required");
    let (status, p) = issue(app, &access, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
    assert_eq!(p["code"], "api-key-required");

    // A read key's token reads and is refused every write.
    let (status, made) = app
        .post(
            "/api/v1/api-keys",
            &acme.key,
            json!({"name": "reports", "scope": "read"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let read_key = made["token"].as_str().expect("token").to_owned();
    let read_id = made["id"].as_str().expect("id").to_owned();
    let read_access = token(app, &read_key).await;
    let (status, _) = app.get("/api/v1/programs", &read_access).await;
    assert_eq!(status, StatusCode::OK);
    let (status, p) = app
        .post("/api/v1/api-keys", &read_access, json!({"name": "x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
    assert_eq!(p["code"], "read-only-key");

    // Forgeries, each with everything else right.
    let (kid, material) = newest_key(app).await;
    let good = claims(app, &acme.id, &key_id);
    let genuine = sign(Algorithm::HS256, &kid, &material, &good);
    let (status, _) = app.get("/api/v1/programs", &genuine).await;
    assert_eq!(status, StatusCode::OK, "the test signs as the server does");
    let hs256_over = |header: &Value, claims: &Value| {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let key = EncodingKey::from_secret(&material).expect("key");
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).expect("sign");
        format!("{input}.{sig}")
    };
    let forged = [
        (
            "alg none",
            raw(&json!({"alg": "none", "typ": "JWT", "kid": kid}), &good, ""),
        ),
        (
            "alg RS256 over an HMAC signature",
            hs256_over(&json!({"alg": "RS256", "typ": "JWT", "kid": kid}), &good),
        ),
        (
            "alg HS512 with the right key",
            sign(Algorithm::HS512, &kid, &material, &good),
        ),
        (
            "expired",
            sign(
                Algorithm::HS256,
                &kid,
                &material,
                &with(
                    with(good.clone(), "exp", json!(now() - 120)),
                    "nbf",
                    json!(now() - 900),
                ),
            ),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::HS256,
                &kid,
                &material,
                &with(good.clone(), "nbf", json!(now() + 300)),
            ),
        ),
        (
            "another audience",
            sign(
                Algorithm::HS256,
                &kid,
                &material,
                &with(good.clone(), "aud", json!("trcker-portal")),
            ),
        ),
        (
            "another issuer",
            sign(
                Algorithm::HS256,
                &kid,
                &material,
                &with(good.clone(), "iss", json!("https://evil.example.com")),
            ),
        ),
        (
            "no exp",
            sign(
                Algorithm::HS256,
                &kid,
                &material,
                &serde_json::from_value::<serde_json::Map<String, Value>>(good.clone())
                    .map(|mut m| {
                        m.remove("exp");
                        Value::Object(m)
                    })
                    .expect("object"),
            ),
        ),
        (
            "unknown kid",
            sign(Algorithm::HS256, "sk_unknown", &material, &good),
        ),
        (
            "no kid",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &good,
                &EncodingKey::from_secret(&material).expect("key"),
            )
            .expect("sign"),
        ),
        (
            "another installation's key",
            sign(
                Algorithm::HS256,
                &kid,
                b"0123456789abcdef0123456789abcdef",
                &good,
            ),
        ),
        ("tampered claims", {
            let sig = genuine.rsplit('.').next().expect("signature");
            let header = genuine.split('.').next().expect("header");
            format!(
                "{header}.{}.{sig}",
                B64.encode(with(good.clone(), "sub", json!(read_id)).to_string())
            )
        }),
        ("not a token", "eyJhbGciOiJIUzI1NiJ9.bm90.anNvbg".to_owned()),
    ];
    for (what, t) in &forged {
        assert_refused(app, t, what).await;
    }

    // Another tenant's key id under a genuine signature names no key of it.
    let globex = app.create_tenant("globex").await;
    let cross = sign(
        Algorithm::HS256,
        &kid,
        &material,
        &with(good.clone(), "tid", json!(globex.id)),
    );
    assert_refused(app, &cross, "another tenant's id").await;

    // Revoking the key ends its tokens at once.
    let (status, _) = app.get("/api/v1/programs", &read_access).await;
    assert_eq!(status, StatusCode::OK);
    let (status, p) = app
        .post(
            &format!("/api/v1/api-keys/{read_id}/revoke"),
            &acme.key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_refused(app, &read_access, "a revoked key's token").await;
}
on_both_databases!(access_tokens_issued_checked_and_revoked);

async fn signing_keys_rotate(app: &TestApp) {
    let acme = app.create_tenant("acme").await;
    let before = token(app, &acme.key).await;
    let old_kid = jsonwebtoken::decode_header(&before)
        .expect("header")
        .kid
        .expect("kid");

    // Only the operator sees and rotates the keys.
    let (status, p) = app.get("/api/v1/auth/signing-keys", &acme.key).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
    assert_eq!(p["code"], "operator-only");
    let (status, p) = app
        .post("/api/v1/auth/signing-keys/rotate", &acme.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
    let (status, keys) = app.get("/api/v1/auth/signing-keys", OPERATOR).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    assert_eq!(keys[0]["kid"], old_kid.as_str());
    assert!(keys[0]["retired_at"].is_null(), "{keys}");

    let (status, rotated) = app
        .post("/api/v1/auth/signing-keys/rotate", OPERATOR, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new_kid = rotated["kid"].as_str().expect("kid").to_owned();
    assert_ne!(new_kid, old_kid);

    // New tokens carry the new key; the old token still works.
    let after = token(app, &acme.key).await;
    assert_eq!(
        jsonwebtoken::decode_header(&after).expect("header").kid,
        Some(new_kid.clone())
    );
    for t in [&before, &after] {
        let (status, p) = app.get("/api/v1/programs", t).await;
        assert_eq!(status, StatusCode::OK, "{p}");
    }
    let (_, keys) = app.get("/api/v1/auth/signing-keys", OPERATOR).await;
    assert_eq!(keys[0]["kid"], new_kid.as_str(), "{keys}");
    assert_eq!(keys[1]["kid"], old_kid.as_str(), "{keys}");
    assert!(keys[1]["retired_at"].is_string(), "{keys}");
    let until =
        chrono::DateTime::parse_from_rfc3339(keys[1]["verifies_until"].as_str().expect("until"))
            .expect("time");
    let retired =
        chrono::DateTime::parse_from_rfc3339(keys[1]["retired_at"].as_str().expect("retired"))
            .expect("time");
    assert!(
        until - retired >= chrono::Duration::hours(1),
        "the longest token outlives the rotation: {keys}"
    );

    // Once every token of the old key has expired, it verifies nothing.
    signing_key::Entity::update_many()
        .col_expr(
            signing_key::Column::RetiredAt,
            Expr::value(Some(chrono::Utc::now() - chrono::Duration::hours(3))),
        )
        .filter(signing_key::Column::Kid.eq(old_kid.as_str()))
        .exec(&app.services().store.conn)
        .await
        .expect("age the old key");
    // The operator's list reloads this process's copy of the keys.
    let (status, _) = app.get("/api/v1/auth/signing-keys", OPERATOR).await;
    assert_eq!(status, StatusCode::OK);
    assert_refused(app, &before, "a token of a key retired long ago").await;
    let (status, _) = app.get("/api/v1/programs", &after).await;
    assert_eq!(status, StatusCode::OK);
}
on_both_databases!(signing_keys_rotate);
