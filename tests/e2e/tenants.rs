//! The operator's tenants over the admin API: listed by cursor, read,
//! suspended (keys, postbacks and portal refused, links recording nothing
//! and sending shoppers to the tenant's fallback or the not-found page,
//! nothing deleted) and reinstated; on both databases.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{AffiliateServer, OPERATOR, TestApp};
use crate::on_both_databases;

async fn clicks_of(app: &TestApp, slug: &str) -> u64 {
    use trcker_storage::entities::click;
    use trcker_storage::sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    app.services().clicks.flush().await;
    let tenant = app.tenant_id(slug).await;
    click::Entity::find()
        .filter(click::Column::TenantId.eq(tenant))
        .count(&app.services().store.conn)
        .await
        .expect("clicks")
}

async fn the_operator_lists_tenants(app: &TestApp) {
    let mut made = Vec::new();
    for slug in ["t1", "t2", "t3"] {
        made.push(app.create_tenant(slug).await);
    }
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let (status, page) = app.get(&format!("/api/v1/tenants{query}"), OPERATOR).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for t in page["items"].as_array().expect("items") {
            assert!(t.get("api_key").is_none(), "{t}");
            seen.push(t["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=2&cursor={c}"),
            None => break,
        }
    }
    let expected: Vec<String> = made.iter().rev().map(|t| t.id.clone()).collect();
    assert_eq!(seen, expected);
    let (status, one) = app
        .get(&format!("/api/v1/tenants/{}", made[0].id), OPERATOR)
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["slug"], "t1");
    assert_eq!(one["status"], "active");
    for bad in ["?status=gone", "?cursor=nope", "?limit=500"] {
        let (status, p) = app.get(&format!("/api/v1/tenants{bad}"), OPERATOR).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {p}");
    }
    let (status, p) = app.get("/api/v1/tenants/ten_nope", OPERATOR).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
    assert_eq!(p["code"], "tenant-not-found");
    // Tenants are the operator's: a tenant key may neither list nor suspend.
    let (status, p) = app.get("/api/v1/tenants", &made[0].key).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
    assert_eq!(p["code"], "operator-only");
    let (status, _) = app
        .post(
            &format!("/api/v1/tenants/{}/suspend", made[1].id),
            &made[0].key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

on_both_databases!(the_operator_lists_tenants);

async fn a_suspended_tenant_is_refused_and_kept(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let tenant = format!("/api/v1/tenants/{}", s.tenant.id);
    let pb = |txn: &str, click: &str| {
        format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=10&txn_id={txn}",
            s.secret
        )
    };

    // The tenant sets where shoppers go when a link cannot take them; a
    // bad URL is refused and changes nothing.
    let (status, p) = app
        .api(
            reqwest::Method::PATCH,
            "/api/v1/tenant",
            Some(key),
            Some(json!({"fallback_url": "javascript:alert(1)"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["errors"][0]["field"], "fallback_url");
    let (status, t) = app
        .api(
            reqwest::Method::PATCH,
            "/api/v1/tenant",
            Some(key),
            Some(json!({"fallback_url": "https://shop.example/"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["fallback_url"], "https://shop.example/");

    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    assert_eq!(app.postback(&pb("o1", &click)).await.0, StatusCode::OK);
    app.conversions_until(key, "", |b| {
        b["items"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    let clicks_before = clicks_of(app, "acme").await;

    // A bad reason is refused and suspends nothing.
    let (status, p) = app
        .post(
            &format!("{tenant}/suspend"),
            OPERATOR,
            json!({"reason": "x".repeat(501)}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(app.get("/api/v1/programs", key).await.0, StatusCode::OK);

    let (status, t) = app
        .post(
            &format!("{tenant}/suspend"),
            OPERATOR,
            json!({"reason": "unpaid invoice"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["status"], "suspended");
    assert_eq!(t["suspended_reason"], "unpaid invoice");
    assert!(t["suspended_at"].is_string(), "{t}");
    let (_, listed) = app.get("/api/v1/tenants?status=suspended", OPERATOR).await;
    assert_eq!(listed["items"][0]["id"], s.tenant.id.as_str(), "{listed}");

    // Keys: 403.
    let (status, p) = app.get("/api/v1/conversions", key).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
    assert_eq!(p["code"], "tenant-suspended");
    // Links: to the tenant's fallback, recording nothing.
    let (status, location) = app.click("/api/r/acme/pro?via=jane").await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(location.as_deref(), Some("https://shop.example/"));
    // Postbacks: 403 with the reason, logged.
    let (status, p) = app.postback(&pb("o2", &click)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
    assert_eq!(p["code"], "tenant-suspended");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unpaid invoice")),
        "{p}"
    );
    // The portal: closed.
    let resp = app
        .http
        .get(app.url("/portal/acme/login"))
        .send()
        .await
        .expect("portal");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.text().await.unwrap_or_default().contains("closed"));
    assert_eq!(clicks_of(app, "acme").await, clicks_before);

    // Without a fallback, a suspended tenant's link is the not-found page.
    let globex = app.create_tenant("globex").await;
    let (status, _) = app
        .post(
            "/api/v1/programs",
            &globex.key,
            json!({"name":"G","slug":"g","destination_url":"https://globex.example/",
                   "currency":"USD","commission":{"type":"flat","value":"1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .post(
            "/api/v1/affiliates",
            &globex.key,
            json!({"name":"Bo","email":"bo@example.com","slug":"bo"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        app.click("/api/r/globex/g?via=bo").await.0,
        StatusCode::FOUND
    );
    app.post(
        &format!("/api/v1/tenants/{}/suspend", globex.id),
        OPERATOR,
        json!({}),
    )
    .await;
    assert_eq!(
        app.click("/api/r/globex/g?via=bo").await.0,
        StatusCode::NOT_FOUND
    );

    // Reinstated: everything as before, nothing lost.
    let (status, t) = app
        .post(&format!("{tenant}/reinstate"), OPERATOR, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["status"], "active");
    assert!(t["suspended_reason"].is_null() && t["suspended_at"].is_null());
    let (status, convs) = app.get("/api/v1/conversions", key).await;
    assert_eq!(status, StatusCode::OK, "{convs}");
    assert_eq!(convs["items"].as_array().map(Vec::len), Some(1));
    let click2 = app.click_id("/api/r/acme/pro?via=jane").await;
    assert_eq!(app.postback(&pb("o2", &click2)).await.0, StatusCode::OK);
    app.conversions_until(key, "", |b| {
        b["items"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    let resp = app
        .http
        .get(app.url("/portal/acme/login"))
        .send()
        .await
        .expect("portal");
    assert_eq!(resp.status(), StatusCode::OK);

    // The refused postback is in the log, with its reason.
    let (_, log) = app
        .get(
            &format!("/api/v1/integrations/{}/postbacks", s.integration_id),
            key,
        )
        .await;
    let refused: Vec<&Value> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| p["http_status"] == 403)
        .collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("suspended")),
        "{log}"
    );
    // The audit log has the suspension with its reason, by the operator.
    let (_, audit) = app.get("/api/v1/audit-log?resource_type=tenant", key).await;
    let suspend = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|r| r["action"] == "tenant.suspend")
        .expect("suspension audited");
    assert_eq!(suspend["actor"], "operator");
    assert_eq!(
        suspend["details"]["after"]["reason"], "unpaid invoice",
        "{audit}"
    );
}

on_both_databases!(a_suspended_tenant_is_refused_and_kept);
