//! Test-fire and the postback log, over real HTTP, on both databases.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{AffiliateServer, TestApp};
use crate::on_both_databases;

async fn test_fire_traces_a_real_postback(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let integration_id = s.integration_id.clone();
    let (status, trace) = app
        .post(
            &format!("/api/v1/integrations/{integration_id}/test-fire"),
            &s.tenant.key,
            json!({"affiliate_id": s.affiliate_id, "amount": "50"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{trace}");
    assert_eq!(trace["http_status"], 200, "{trace}");
    assert_eq!(trace["received"], true);
    assert_eq!(trace["attributed"], true);
    assert_eq!(trace["payout"], "5.00 USD");
    assert_eq!(
        trace["commission_explanation"],
        "10% of 50.00 USD = 5.00 USD"
    );
    assert_eq!(trace["complete"], true, "{trace}");
    assert_eq!(trace["notifications"][0]["status"], "delivered", "{trace}");
    let click = trace["click_id"].as_str().expect("click id");
    assert_eq!(jane.next().await, format!("/pb?cid={click}&payout=5.00"));

    // The conversion is flagged as a test and stays out of the affiliate's balance.
    let (_, page) = app
        .get(
            &format!(
                "/api/v1/conversions?txn_id={}",
                trace["txn_id"].as_str().expect("txn")
            ),
            &s.tenant.key,
        )
        .await;
    assert_eq!(page["items"][0]["is_test"], true);
    let portal = app.services().portal;
    let jane = portal
        .session_user("acme", &s.tenant.id, &s.affiliate_id, 0)
        .await
        .expect("session")
        .expect("user");
    let earnings = portal.earnings(&jane).await.expect("earnings");
    assert!(earnings.balances.is_empty(), "{:?}", earnings.balances);
    assert_eq!(earnings.conversions_30_days, 0);

    // Test-fire for an unknown affiliate or another tenant's integration is refused.
    let (status, body) = app
        .post(
            &format!("/api/v1/integrations/{integration_id}/test-fire"),
            &s.tenant.key,
            json!({"affiliate_id": "aff_nope"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "affiliate_id");
    let other = app.create_tenant("globex").await;
    let (status, _) = app
        .post(
            &format!("/api/v1/integrations/{integration_id}/test-fire"),
            &other.key,
            json!({"affiliate_id": s.affiliate_id}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A forged test-fire token is no way in.
    let resp = app
        .http
        .get(app.url(&format!(
            "/api/postback/acme/pro?click_id={click}&txn_id=forged&test=1"
        )))
        .header(
            "X-Trcker-Test-Fire",
            format!("{integration_id}.9999999999.{}", "0".repeat(64)),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
on_both_databases!(test_fire_traces_a_real_postback);

async fn postback_log_shows_every_request_and_its_fate(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let pb = format!(
        "/api/postback/acme/pro?secret={}&click_id={click}&amount=79&txn_id=o1&extra=kept",
        s.secret
    );
    app.postback(&pb).await;
    app.postback(&pb).await;
    app.postback(&format!(
        "/api/postback/acme/pro?secret={}&click_id=bad&txn_id=o2",
        s.secret
    ))
    .await;
    app.conversions_until(&s.tenant.key, "txn_id=o1", |b| {
        b["items"][0]["payout"] == "7.90"
    })
    .await;

    let path = format!("/api/v1/integrations/{}/postbacks", s.integration_id);
    let (status, log) = app.get(&path, &s.tenant.key).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let items = log["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{log}");
    let outcomes: Vec<&str> = items.iter().filter_map(|i| i["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["rejected", "duplicate", "accepted"]);
    assert_eq!(items[0]["http_status"], 422);
    assert!(
        items[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("click_id"))
    );
    assert_eq!(items[1]["duplicate_of"], items[2]["id"]);
    assert_eq!(items[2]["state"], "processed");
    assert!(
        items[2]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("attributed to affiliate jane")),
        "{log}"
    );
    assert_eq!(items[2]["source_ip"], "127.0.0.1");
    assert_eq!(
        items[2]["commission"],
        "7.90 USD (10% of 79.00 USD = 7.90 USD); conversion is approved"
    );
    let params = items[2]["params"].as_array().expect("params");
    assert!(
        params
            .iter()
            .any(|p| p["name"] == "secret" && p["value"] == "[redacted]")
    );
    assert!(
        params
            .iter()
            .any(|p| p["name"] == "extra" && p["value"] == "kept")
    );
    assert!(
        !log.to_string().contains(&s.secret),
        "the secret never shows in the log"
    );

    let (_, first) = app.get(&format!("{path}?limit=2"), &s.tenant.key).await;
    let cursor = first["next_cursor"].as_str().expect("cursor");
    let (_, rest) = app
        .get(&format!("{path}?limit=2&cursor={cursor}"), &s.tenant.key)
        .await;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
    let other = app.create_tenant("globex").await;
    let (status, _) = app.get(&path, &other.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
on_both_databases!(postback_log_shows_every_request_and_its_fate);
