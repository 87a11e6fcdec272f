//! Clicks: both link forms, macros, sub-IDs, fallbacks, 404s, unique and bot
//! clicks, the attribution rules they drive, and IP retention; on both databases.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{AffiliateServer, TestApp};
use crate::on_both_databases;

async fn clicks_of(app: &TestApp, tenant_id: &str) -> Vec<trcker_storage::entities::click::Model> {
    use trcker_storage::entities::click;
    use trcker_storage::sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    app.services().clicks.flush().await;
    click::Entity::find()
        .filter(click::Column::TenantId.eq(tenant_id))
        .order_by_asc(click::Column::Id)
        .all(&app.services().store.conn)
        .await
        .expect("clicks")
}

async fn tracking_links_fallbacks_and_404s(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let patch = |path: String, body: serde_json::Value| async move {
        app.api(reqwest::Method::PATCH, &path, Some(key), Some(body))
            .await
    };

    // A link with its own destination (macros) and default sub-IDs.
    let (status, link) = app
        .post(
            "/api/v1/links",
            key,
            json!({"program_id": s.program_id, "affiliate_id": s.affiliate_id,
                   "destination_url": "https://shop.example/landing?ref={affiliate_id}&s1={sub1}&s2={sub2}&cid={click_id}",
                   "sub1": "newsletter", "sub2": "top banner"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let code = link["code"].as_str().expect("code").to_owned();
    assert_eq!(link["url"], format!("{}/c/{code}", app.base));
    let (status, loc) = app.click(&format!("/c/{code}")).await;
    assert_eq!(status, StatusCode::FOUND);
    let loc = loc.expect("location");
    assert!(
        loc.starts_with(&format!(
            "https://shop.example/landing?ref={}&s1=newsletter&s2=top%20banner&cid=",
            s.affiliate_id
        )),
        "{loc}"
    );
    // Sub-IDs in the URL win over the defaults.
    let (_, loc) = app.click(&format!("/c/{code}?sub1=a%26b")).await;
    assert!(
        loc.expect("location")
            .contains("&s1=a%26b&s2=top%20banner&")
    );

    // The admin changes the destination: the very next click uses it.
    let link_path = format!("/api/v1/links/{}", link["id"].as_str().expect("id"));
    let (status, _) = patch(
        link_path.clone(),
        json!({"destination_url": "https://shop.example/new?x=1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, loc) = app.click(&format!("/c/{code}")).await;
    assert!(
        loc.expect("location")
            .starts_with("https://shop.example/new?x=1&click_id=")
    );
    // Removing the override falls back to the program's destination.
    patch(link_path.clone(), json!({"destination_url": null})).await;
    let (_, loc) = app.click(&format!("/c/{code}")).await;
    assert!(
        loc.expect("location")
            .starts_with("https://shop.example/pro?click_id=")
    );

    // Paused link, program or affiliate: the program's fallback URL (a 404 page without one).
    patch(link_path.clone(), json!({"status": "paused"})).await;
    let (status, _) = app.click(&format!("/c/{code}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no fallback URL yet");
    let program_path = format!("/api/v1/programs/{}", s.program_id);
    let (status, body) = patch(
        program_path.clone(),
        json!({"fallback_url": "https://shop.example/paused"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.click(&format!("/c/{code}")).await.1.as_deref(),
        Some("https://shop.example/paused")
    );
    patch(link_path.clone(), json!({"status": "active"})).await;
    patch(program_path.clone(), json!({"status": "paused"})).await;
    assert_eq!(
        app.click("/api/r/acme/pro?via=jane").await.1.as_deref(),
        Some("https://shop.example/paused")
    );
    patch(program_path.clone(), json!({"status": "active"})).await;
    let affiliate_path = format!("/api/v1/affiliates/{}", s.affiliate_id);
    patch(affiliate_path.clone(), json!({"status": "paused"})).await;
    assert_eq!(
        app.click("/api/r/acme/pro?via=jane").await.1.as_deref(),
        Some("https://shop.example/paused")
    );
    patch(affiliate_path.clone(), json!({"status": "active"})).await;
    assert!(
        app.click("/api/r/acme/pro?via=jane")
            .await
            .1
            .is_some_and(|l| l.contains("click_id="))
    );

    // Bad changes are refused, each named, and change nothing.
    let (status, body) = patch(
        program_path.clone(),
        json!({"status": "gone", "fallback_url": "nope", "hold_days": 999}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["fallback_url", "status", "hold_days"]);
    let (status, body) = app
        .post("/api/v1/links", key, json!({"program_id": "prg_nope", "affiliate_id": s.affiliate_id, "destination_url": "x"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["program_id", "destination_url"]);
    let other = app.create_tenant("globex").await;
    let (status, _) = app
        .api(
            reqwest::Method::PATCH,
            &link_path,
            Some(&other.key),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Unknown links answer a small page a shopper can read on a phone, with
    // nothing to run and no way to be framed.
    for path in [
        "/c/nope",
        "/api/r/nope/pro?via=jane",
        "/api/r/acme/nope?via=jane",
        "/api/r/acme/pro?via=nobody",
        "/api/r/acme/pro",
    ] {
        let resp = app.http.get(app.url(path)).send().await.expect("get");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let header = |name: &str| crate::harness::header_of(&resp, name);
        assert!(header("content-type").starts_with("text/html"), "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(header("cache-control"), "no-store");
        let html = resp.text().await.unwrap_or_default();
        assert!(
            html.contains(r#"name="viewport" content="width=device-width"#),
            "{html}"
        );
        assert!(html.contains("This link does not lead anywhere"), "{html}");
        assert!(!html.contains("<script"), "{html}");
    }

    // Fallback clicks are recorded as such.
    let clicks = clicks_of(app, &s.tenant.id).await;
    assert_eq!(
        clicks
            .iter()
            .filter(|c| c.outcome.as_str() == "fallback")
            .count(),
        3
    );
    assert!(
        clicks
            .iter()
            .filter(|c| c.link_id.is_some())
            .all(|c| c.sub2.as_deref() == Some("top banner"))
    );
}
on_both_databases!(tracking_links_fallbacks_and_404s);

async fn unique_and_bot_clicks(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let browser =
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Safari/604.1";
    for ua in [
        browser,
        browser,
        browser,
        "Googlebot/2.1 (+http://www.google.com/bot.html)",
        "Mozilla/5.0 (X11; Linux) Firefox/130.0",
    ] {
        let resp = app
            .http
            .get(app.url("/api/r/acme/pro?via=jane"))
            .header("user-agent", ua)
            .header("referer", "https://blog.example/post")
            .send()
            .await
            .expect("click");
        assert_eq!(resp.status(), StatusCode::FOUND);
    }
    let clicks = clicks_of(app, &s.tenant.id).await;
    assert_eq!(clicks.len(), 5);
    assert_eq!(
        clicks.iter().filter(|c| c.is_unique).count(),
        2,
        "one per real visitor"
    );
    assert_eq!(clicks.iter().filter(|c| c.is_bot).count(), 1);
    assert!(
        clicks
            .iter()
            .all(|c| c.referrer.as_deref() == Some("https://blog.example/post"))
    );
    assert!(clicks.iter().all(|c| c.ip.as_deref() == Some("127.0.0.1")));
}
on_both_databases!(unique_and_bot_clicks);

async fn postbacks_right_after_their_click_are_attributed(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    for i in 0..20 {
        let click = app.click_id("/api/r/acme/pro?via=jane").await;
        let (status, _) = app
            .postback(&format!(
                "/api/postback/acme/pro?secret={}&click_id={click}&amount=10&txn_id=fast-{i}",
                s.secret
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    app.conversions_until(&s.tenant.key, "limit=50", |b| {
        b["items"]
            .as_array()
            .is_some_and(|i| i.len() == 20 && i.iter().all(|c| c["payout"] == "1.00"))
    })
    .await;
}
on_both_databases!(postbacks_right_after_their_click_are_attributed);

async fn too_fast_conversions_and_ip_retention(app: &TestApp) {
    use trcker_storage::entities::click;
    use trcker_storage::sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    app.api(
        reqwest::Method::PATCH,
        &format!("/api/v1/programs/{}", s.program_id),
        Some(key),
        Some(json!({"min_conversion_seconds": 3600})),
    )
    .await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let (_, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=10&txn_id=fast",
            s.secret
        ))
        .await;
    let id = body["postback_id"].as_str().expect("id").to_owned();
    let row = app.processed_postback(&id).await;
    assert_eq!(row.state.as_str(), "unattributed");
    assert!(
        row.reason
            .as_deref()
            .is_some_and(|r| r.contains("the offer's minimum is 3600 seconds")),
        "{:?}",
        row.reason
    );

    // IP addresses older than the retention period (30 days by default) are
    // erased, whichever affiliate's clicks they are; newer ones stay.
    app.api(
        reqwest::Method::POST,
        "/api/v1/affiliates",
        Some(key),
        Some(json!({"name": "Bob", "email": "bob@example.com", "slug": "bob"})),
    )
    .await;
    let bobs = app.click_id("/api/r/acme/pro?via=bob").await;
    let recent_click = app.click_id("/api/r/acme/pro?via=jane").await;
    app.services().clicks.flush().await;
    let services = app.services();
    let ip_of = |id: String| {
        let db = services.store.conn.clone();
        async move {
            click::Entity::find_by_id(id)
                .one(&db)
                .await
                .expect("q")
                .expect("click")
                .ip
        }
    };
    for id in [&click, &bobs] {
        let c = click::Entity::find_by_id(id.clone())
            .one(&services.store.conn)
            .await
            .expect("q")
            .expect("click");
        assert!(c.ip.is_some());
        let mut old = c.into_active_model();
        old.created_at = Set(chrono::Utc::now() - chrono::Duration::days(31));
        old.update(&services.store.conn)
            .await
            .expect("age the click");
    }
    // (The sweepers run this once a minute.)
    assert_eq!(
        services
            .pipeline
            .erase_expired_click_ips()
            .await
            .expect("erase"),
        2
    );
    assert!(ip_of(click.clone()).await.is_none());
    assert!(ip_of(bobs).await.is_none());
    assert!(ip_of(recent_click).await.is_some());
    assert_eq!(
        services
            .pipeline
            .erase_expired_click_ips()
            .await
            .expect("erase"),
        0
    );
    assert_eq!(clicks_of(app, &s.tenant.id).await.len(), 3);

    // That click is now 31 days old: past the offer's 30-day attribution window.
    let (_, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=10&txn_id=late",
            s.secret
        ))
        .await;
    let id = body["postback_id"].as_str().expect("id").to_owned();
    let row = app.processed_postback(&id).await;
    assert_eq!(row.state.as_str(), "unattributed");
    assert!(
        row.reason
            .as_deref()
            .is_some_and(|r| r
                .contains("expired: made 31 days ago, the offer's attribution window is 30 days")),
        "{:?}",
        row.reason
    );
}
on_both_databases!(too_fast_conversions_and_ip_retention);
