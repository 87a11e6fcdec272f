//! The pinned quickstart, over real HTTP, on both databases.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{AffiliateServer, TestApp};
use crate::on_both_databases;

async fn quickstart(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    assert_eq!(s.secret.len(), 64);
    assert!(
        s.postback_url
            .starts_with(&format!("{}/api/postback/acme/pro?secret=", app.base))
    );

    let click_id = app.click_id("/api/r/acme/pro?via=jane&sub1=spring").await;
    let (_, loc) = app.click("/api/r/acme/pro?via=jane&sub1=spring").await;
    assert!(loc.is_some_and(|l| l.starts_with("https://shop.example/pro?click_id=")));

    let pb = format!(
        "/api/postback/acme/pro?secret={}&click_id={click_id}&amount=79&txn_id=order_9876",
        s.secret
    );
    let (status, body) = app.postback(&pb).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "accepted");
    let postback_id = body["postback_id"]
        .as_str()
        .expect("postback_id")
        .to_owned();

    // Jane's server is called with the click id and the payout.
    let hit = jane.next().await;
    assert_eq!(hit, format!("/pb?cid={click_id}&payout=7.90"));

    let page = app
        .conversions_until(&s.tenant.key, "txn_id=order_9876", |b| {
            b["items"][0]["payout"] == "7.90"
        })
        .await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    let c = &items[0];
    assert!(c["id"].as_str().is_some_and(|id| id.starts_with("cnv_")));
    assert_eq!(c["txn_id"], "order_9876");
    assert_eq!(c["status"], "approved");
    assert_eq!(c["amount"], "79.00");
    assert_eq!(c["currency"], "USD");
    assert_eq!(c["payout"], "7.90");
    assert_eq!(c["affiliate_id"], s.affiliate_id.as_str());
    assert_eq!(c["click_id"], click_id.as_str());
    assert_eq!(c["commission_explanation"], "10% of 79.00 USD = 7.90 USD");
    assert!(page["next_cursor"].is_null());

    // The merchant retries: a duplicate, never a second conversion.
    let (status, body) = app.postback(&pb).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "duplicate");
    assert_eq!(body["postback_id"], postback_id.as_str());
    assert_eq!(body["conversion_id"], c["id"]);
    // Same again with the secret in the header: still one.
    let resp = app
        .http
        .get(app.url(&format!(
            "/api/postback/acme/pro?click_id={click_id}&amount=79&txn_id=order_9876"
        )))
        .header("X-Postback-Secret", &s.secret)
        .send()
        .await
        .expect("postback");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "duplicate");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, page) = app
        .get("/api/v1/conversions?txn_id=order_9876", &s.tenant.key)
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    jane.assert_quiet(Duration::from_millis(500)).await;

    // No secret: 401, as problem+json. A wrong one: 401 too.
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?click_id={click_id}&amount=79&txn_id=order_1"
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"], 401);
    assert_eq!(body["code"], "missing-secret", "{body}");
    let (status, _) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click_id}&txn_id=order_1",
            "x".repeat(64)
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Unknown brand or offer: 404.
    let (status, _) = app
        .postback(&format!(
            "/api/postback/nope/pro?secret={}&click_id={click_id}&txn_id=o",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A second tenant never sees the first one's program: 404, like a missing one.
    let other = app.create_tenant("globex").await;
    let (status, mut body) = app
        .get(&format!("/api/v1/programs/{}", s.program_id), &other.key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, mut missing) = app
        .get(
            "/api/v1/programs/prg_01m85158m2en7kg83kd5r0qmtm",
            &other.key,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Each answer names its own request; nothing else differs.
    for answer in [&mut body, &mut missing] {
        answer.as_object_mut().and_then(|o| o.remove("request_id"));
    }
    assert_eq!(
        body, missing,
        "another tenant's id must answer exactly like a missing one"
    );
    assert_eq!(body["code"], "program-not-found", "{body}");
    let (_, theirs) = app
        .get("/api/v1/conversions?txn_id=order_9876", &other.key)
        .await;
    assert_eq!(theirs["items"], json!([]));
    let (status, _) = app
        .get(&format!("/api/v1/programs/{}", s.program_id), &s.tenant.key)
        .await;
    assert_eq!(status, StatusCode::OK);
    // Nor can its secret be used on the other tenant's URLs.
    app.post(
        "/api/v1/programs",
        &other.key,
        json!({"name":"Pro","slug":"pro","destination_url":"https://globex.example/","commission":{"type":"flat","value":"5.00"}}),
    )
    .await;
    let (status, _) = app
        .postback(&format!(
            "/api/postback/globex/pro?secret={}&click_id={click_id}&txn_id=x1",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
on_both_databases!(quickstart);

async fn clicks_redirect_or_404(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let (_, program) = app
        .post(
            "/api/v1/programs",
            &s.tenant.key,
            json!({"name":"Macro","slug":"macro","destination_url":"https://shop.example/p?c={click_id}&s={sub1}&a={affiliate_id}",
                   "commission":{"type":"flat","value":"5.00"}}),
        )
        .await;
    let (status, loc) = app
        .click("/api/r/acme/macro?via=jane&sub1=spring%20sale")
        .await;
    assert_eq!(status, StatusCode::FOUND);
    let loc = loc.expect("location");
    assert!(loc.starts_with("https://shop.example/p?c="), "{loc}");
    assert!(loc.contains("&s=spring%20sale&a=aff_"), "{loc}");
    assert!(program["id"].is_string());
    for path in [
        "/api/r/nope/pro?via=jane",
        "/api/r/acme/nope?via=jane",
        "/api/r/acme/pro?via=nobody",
        "/api/r/acme/pro",
    ] {
        let (status, _) = app.click(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}
on_both_databases!(clicks_redirect_or_404);

async fn admin_api_rejects_bad_input(app: &TestApp) {
    let t = app.create_tenant("acme").await;
    // No token, a wrong token, the operator on tenant resources.
    let (status, _) = app
        .api(reqwest::Method::GET, "/api/v1/programs", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.get("/api/v1/programs", "trk_nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = app.get("/api/v1/programs", crate::harness::OPERATOR).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "tenant-key-required", "{body}");
    // Only the operator creates tenants; slugs are unique.
    let (status, body) = app
        .post("/api/v1/tenants", &t.key, json!({"name":"X","slug":"x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "operator-only", "{body}");
    let (status, body) = app
        .post(
            "/api/v1/tenants",
            crate::harness::OPERATOR,
            json!({"name":"Acme 2","slug":"acme"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "tenant-slug-taken", "{body}");
    // Every bad field is named, and nothing is created.
    let (status, body) = app
        .post(
            "/api/v1/programs",
            &t.key,
            json!({"name":"","slug":"Bad Slug","destination_url":"ftp://x","currency":"dollars",
                   "commission":{"type":"percent","value":"150"},"hold_days":-1}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors in {body}"))
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for f in [
        "name",
        "slug",
        "destination_url",
        "currency",
        "commission",
        "hold_days",
    ] {
        assert!(fields.contains(&f), "{f} not named in {body}");
    }
    let (_, list) = app.get("/api/v1/programs", &t.key).await;
    assert_eq!(list["items"], json!([]));
    // Unreadable JSON and missing fields: 400 problem.
    let resp = app
        .http
        .post(app.url("/api/v1/programs"))
        .bearer_auth(&t.key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("application/problem+json")
    );
    let (status, _) = app
        .post("/api/v1/programs", &t.key, json!({"name":"x"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Integrations need a program of this tenant.
    let (status, body) = app
        .post(
            "/api/v1/integrations",
            &t.key,
            json!({"name":"x","program_id":"prg_nope"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "program_id");
    let (status, body) = app
        .post("/api/v1/affiliates", &t.key, json!({"name":"J","email":"not-an-email","slug":"j","postback_url":"javascript:alert(1)"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["email", "postback_url"]);
    let (status, _) = app.get("/api/v1/conversions?limit=0", &t.key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.get("/api/v1/nothing-here", &t.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The OpenAPI document is served.
    let spec: serde_json::Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("spec")
        .json()
        .await
        .expect("json");
    assert!(spec["paths"]["/tenants"]["post"].is_object());
}
on_both_databases!(admin_api_rejects_bad_input);
