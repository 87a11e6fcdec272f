//! Every list of the admin API pages by cursor instead of stopping at a
//! fixed number of rows: programs, affiliates, links and coupons over more
//! rows than one page, and filtered; on both databases.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::on_both_databases;

/// Every item of a list, page by page, and the number of pages.
async fn walk(app: &TestApp, path: &str, key: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut query = "?limit=2".to_owned();
    loop {
        let (status, page) = app.get(&format!("{path}{query}"), key).await;
        assert_eq!(status, StatusCode::OK, "{path}{query}: {page}");
        pages += 1;
        for item in page["items"].as_array().expect("items") {
            ids.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=2&cursor={c}"),
            None => break,
        }
    }
    (ids, pages)
}

async fn made(app: &TestApp, path: &str, key: &str, body: Value) -> String {
    let (status, b) = app.post(path, key, body).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {b}");
    b["id"].as_str().expect("id").to_owned()
}

async fn every_list_pages_past_its_first_page(app: &TestApp) {
    let acme = app.create_tenant("acme").await;
    let key = &acme.key;
    let mut programs = Vec::new();
    let mut affiliates = Vec::new();
    for i in 0..3 {
        programs.push(
            made(
                app,
                "/api/v1/programs",
                key,
                json!({"name": format!("P{i}"), "slug": format!("p{i}"),
                       "destination_url": "https://shop.example/", "currency": "USD",
                       "commission": {"type": "flat", "value": "1"}}),
            )
            .await,
        );
        affiliates.push(
            made(
                app,
                "/api/v1/affiliates",
                key,
                json!({"name": format!("A{i}"), "slug": format!("a{i}"),
                       "email": format!("a{i}@example.com")}),
            )
            .await,
        );
    }
    let mut links = Vec::new();
    let mut coupons = Vec::new();
    for i in 0..3 {
        let owners = json!({"program_id": programs[i], "affiliate_id": affiliates[i]});
        links.push(made(app, "/api/v1/links", key, owners.clone()).await);
        let mut coupon = owners;
        coupon["code"] = json!(format!("CODE{i}"));
        coupons.push(made(app, "/api/v1/coupons", key, coupon).await);
    }
    for (path, expected) in [
        ("/api/v1/programs", &programs),
        ("/api/v1/affiliates", &affiliates),
        ("/api/v1/links", &links),
        ("/api/v1/coupons", &coupons),
    ] {
        let (ids, pages) = walk(app, path, key).await;
        assert_eq!(&ids, expected, "{path}: oldest first, each once");
        assert_eq!(pages, 2, "{path}");
        for bad in ["?cursor=nope", "?limit=0", "?limit=201"] {
            let (status, p) = app.get(&format!("{path}{bad}"), key).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}{bad}: {p}");
        }
        // Another tenant's list is empty.
        let globex = app
            .create_tenant(&format!("g{}", path.len() + ids.len()))
            .await;
        let (_, theirs) = app.get(path, &globex.key).await;
        assert_eq!(theirs["items"], json!([]), "{path}");
    }

    // Filters: links and coupons by program and by affiliate, programs by status.
    let ids_of = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["id"].as_str().expect("id").to_owned())
            .collect()
    };
    for (path, expected) in [("/api/v1/links", &links), ("/api/v1/coupons", &coupons)] {
        let (_, page) = app
            .get(&format!("{path}?program_id={}", programs[1]), key)
            .await;
        assert_eq!(ids_of(&page), [expected[1].clone()], "{path}: {page}");
        let (_, page) = app
            .get(&format!("{path}?affiliate_id={}", affiliates[2]), key)
            .await;
        assert_eq!(ids_of(&page), [expected[2].clone()], "{path}: {page}");
        let (_, page) = app
            .get(
                &format!(
                    "{path}?program_id={}&affiliate_id={}",
                    programs[1], affiliates[2]
                ),
                key,
            )
            .await;
        assert_eq!(page["items"], json!([]), "{path}: both must hold");
        let (_, page) = app.get(&format!("{path}?program_id=prg_none"), key).await;
        assert_eq!(
            page["items"],
            json!([]),
            "{path}: an unknown program has none"
        );
    }
    let (status, p) = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/v1/programs/{}", programs[0]),
            Some(key),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let (_, page) = app.get("/api/v1/programs?status=paused", key).await;
    assert_eq!(ids_of(&page), [programs[0].clone()], "{page}");
    let (_, page) = app.get("/api/v1/programs?status=active", key).await;
    assert_eq!(ids_of(&page), programs[1..].to_vec(), "{page}");
    let (status, p) = app.get("/api/v1/programs?status=gone", key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["errors"][0]["field"], "status", "{p}");
}

on_both_databases!(every_list_pages_past_its_first_page);

/// An affiliate who lost the invitation gets a new one; the old link
/// stops working, and one who signed up already is told so.
async fn an_affiliate_is_invited_again(app: &TestApp) {
    let acme = app.create_tenant("acme").await;
    let key = &acme.key;
    let (status, jane) = app
        .post(
            "/api/v1/affiliates",
            key,
            json!({"name": "Jane", "slug": "jane", "email": "jane@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{jane}");
    let id = jane["id"].as_str().expect("id");
    let first = jane["invite_url"].as_str().expect("invite_url").to_owned();
    let path = format!("/api/v1/affiliates/{id}/invite");

    // Not for another tenant, nor with a read key.
    let globex = app.create_tenant("globex").await;
    let (status, p) = app.post(&path, &globex.key, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
    let (_, read) = app
        .post(
            "/api/v1/api-keys",
            key,
            json!({"name": "r", "scope": "read"}),
        )
        .await;
    let (status, _) = app
        .post(&path, read["token"].as_str().expect("token"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let page = |url: String| async move {
        app.http
            .get(url)
            .send()
            .await
            .expect("invite page")
            .status()
    };
    assert_eq!(page(first.clone()).await, StatusCode::OK);

    let (status, again) = app.post(&path, key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let second = again["invite_url"].as_str().expect("invite_url").to_owned();
    assert_ne!(second, first);
    assert_ne!(page(first).await, StatusCode::OK, "the old link is dead");
    let browser = crate::harness::browser(true);
    let resp = crate::harness::post_portal_form(
        &browser,
        &second,
        &second,
        &[
            ("password", "correct horse battery"),
            ("confirm", "correct horse battery"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.url().path().ends_with("/portal/acme"),
        "{}",
        resp.url()
    );

    // Signed up: nothing to invite again.
    let (status, p) = app.post(&path, key, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["code"], "affiliate-activated");

    // A change to the affiliate is audited with before and after.
    let (status, _) = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/v1/affiliates/{id}"),
            Some(key),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, log) = app
        .get(
            &format!("/api/v1/audit-log?resource_type=affiliate&resource_id={id}"),
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
        ["affiliate.update", "affiliate.reinvite", "affiliate.create"],
        "{log}"
    );
    assert_eq!(log["items"][0]["details"]["before"]["status"], "active");
    assert_eq!(log["items"][0]["details"]["after"]["status"], "paused");

    // Found by status and by email; a bad status is refused.
    for (query, found) in [
        ("?status=paused", 1),
        ("?status=active", 0),
        ("?email=JANE@example.com", 1),
        ("?email=bo@example.com", 0),
    ] {
        let (status, page) = app.get(&format!("/api/v1/affiliates{query}"), key).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            page["items"].as_array().map(Vec::len),
            Some(found),
            "{query}"
        );
    }
    let (status, _) = app.get("/api/v1/affiliates?status=gone", key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

on_both_databases!(an_affiliate_is_invited_again);

/// Links and coupons are read one by one; a paused coupon attributes
/// nothing until it is active again; both changes are audited.
async fn links_and_coupons_read_and_paused(app: &TestApp) {
    let jane = crate::harness::AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let owners = json!({"program_id": s.program_id, "affiliate_id": s.affiliate_id});
    let link = made(app, "/api/v1/links", key, owners.clone()).await;
    let mut coupon = owners;
    coupon["code"] = json!("SPRING");
    let coupon = made(app, "/api/v1/coupons", key, coupon).await;
    let globex = app.create_tenant("globex").await;
    for (path, code) in [
        (format!("/api/v1/links/{link}"), "link-not-found"),
        (format!("/api/v1/coupons/{coupon}"), "coupon-not-found"),
    ] {
        let (status, one) = app.get(&path, key).await;
        assert_eq!(status, StatusCode::OK, "{one}");
        let (status, p) = app.get(&path, &globex.key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
        assert_eq!(p["code"], code);
    }
    let coupon_path = format!("/api/v1/coupons/{coupon}");
    let patch = |body: Value| app.api(reqwest::Method::PATCH, &coupon_path, Some(key), Some(body));
    let (status, p) = patch(json!({"status": "gone"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (status, paused) = patch(json!({"status": "paused"})).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["status"], "paused");
    let pb = |txn: &str| {
        format!(
            "/api/postback/acme/pro?secret={}&coupon_code=SPRING&amount=50&txn_id={txn}",
            s.secret
        )
    };
    let (_, body) = app.postback(&pb("C1")).await;
    let row = app
        .processed_postback(body["postback_id"].as_str().expect("id"))
        .await;
    assert_eq!(row.state.to_string(), "unattributed", "{:?}", row.reason);
    patch(json!({"status": "active"})).await;
    app.postback(&pb("C2")).await;
    app.conversions_until(key, "txn_id=C2", |b| b["items"][0]["payout"] == "5.00")
        .await;
    let (_, log) = app.get("/api/v1/audit-log?action=coupon.update", key).await;
    assert_eq!(log["items"].as_array().map(Vec::len), Some(2), "{log}");
    app.api(
        reqwest::Method::PATCH,
        &format!("/api/v1/links/{link}"),
        Some(key),
        Some(json!({"status": "paused"})),
    )
    .await;
    let (_, log) = app.get("/api/v1/audit-log?action=link.update", key).await;
    assert_eq!(
        log["items"][0]["details"]["after"]["status"], "paused",
        "{log}"
    );
}

on_both_databases!(links_and_coupons_read_and_paused);
