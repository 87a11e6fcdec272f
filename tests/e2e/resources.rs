//! Every list of the admin API pages by cursor instead of stopping at a
//! fixed number of rows: programs, affiliates, links and coupons over more
//! rows than one page; on both databases.

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
}

on_both_databases!(every_list_pages_past_its_first_page);
