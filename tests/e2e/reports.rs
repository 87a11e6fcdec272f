//! Reports: their figures equal a direct count over the raw clicks and
//! conversions, by every grouping, in the tenant's time zone (also after it
//! changes), with test traffic and reversed sales left out; jobs that run
//! again count nothing twice; the CSV says the same; bad input is named.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{Value, json};
use trcker_domain::tiers::TimeZone;
use trcker_services::pipeline::attribute::AttributeJob;
use trcker_services::pipeline::commission::{CommissionItem, CommissionJob};
use trcker_storage::entities::{click, conversion, postback};
use trcker_storage::sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::harness::{AffiliateServer, Setup, TestApp};
use crate::on_both_databases;

/// What a report line says, as numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Figures {
    clicks: i64,
    unique_clicks: i64,
    conversions: i64,
    /// Minor units of USD (the only currency here).
    revenue: i64,
    commission: i64,
}

/// "12.34" → 1234.
fn cents(s: &Value) -> i64 {
    let s = s.as_str().expect("decimal string");
    let (units, frac) = s.split_once('.').unwrap_or((s, "00"));
    let sign = if units.starts_with('-') { -1 } else { 1 };
    let units: i64 = units.trim_start_matches('-').parse().expect("units");
    sign * (units * 100 + frac.parse::<i64>().expect("cents"))
}

fn figures(line: &Value) -> Figures {
    let amounts = line["amounts"].as_array().expect("amounts");
    assert!(amounts.len() <= 1, "one currency here: {line}");
    let usd = amounts.first();
    if let Some(a) = usd {
        assert_eq!(a["currency"], "USD", "{line}");
        assert_eq!(a["conversions"], line["conversions"], "{line}");
    }
    Figures {
        clicks: line["clicks"].as_i64().expect("clicks"),
        unique_clicks: line["unique_clicks"].as_i64().expect("unique"),
        conversions: line["conversions"].as_i64().expect("conversions"),
        revenue: usd.map_or(0, |a| cents(&a["revenue"])),
        commission: usd.map_or(0, |a| cents(&a["commission"])),
    }
}

/// A report's lines by key (empty lines left out, as a raw count has none).
async fn report(app: &TestApp, key: &str, query: &str) -> (Value, BTreeMap<String, Figures>) {
    let (status, body) = app.get(&format!("/api/v1/reports?{query}"), key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lines = body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| (l["key"].as_str().expect("key").to_owned(), figures(l)))
        .filter(|(_, f)| *f != Figures::default())
        .collect();
    (body, lines)
}

/// The same figures counted from the raw rows: every non-test click, every
/// standing non-test conversion with its commission, keyed as `group_by`.
async fn raw(app: &TestApp, tenant: &str, zone: &str, group_by: &str) -> BTreeMap<String, Figures> {
    let db = &app.services().store.conn;
    let zone = TimeZone::parse(zone).expect("zone");
    let mut out: BTreeMap<String, Figures> = BTreeMap::new();
    let sub = |subs: [&Option<String>; 5], n: usize| subs[n].clone().unwrap_or_default();
    for c in click::Entity::find()
        .filter(click::Column::TenantId.eq(tenant))
        .filter(click::Column::IsTest.eq(false))
        .all(db)
        .await
        .expect("clicks")
    {
        let subs = [&c.sub1, &c.sub2, &c.sub3, &c.sub4, &c.sub5];
        let key = match group_by {
            "day" => zone.day_of(c.created_at).to_string(),
            "program" => c.program_id.to_string(),
            "affiliate" => c.affiliate_id.to_string(),
            "sub1" => sub(subs, 0),
            "sub2" => sub(subs, 1),
            "event" => continue,
            other => panic!("{other}"),
        };
        let f = out.entry(key).or_default();
        f.clicks += 1;
        f.unique_clicks += i64::from(c.is_unique);
    }
    for c in conversion::Entity::find()
        .filter(conversion::Column::TenantId.eq(tenant))
        .filter(conversion::Column::IsTest.eq(false))
        .all(db)
        .await
        .expect("conversions")
    {
        if !c.status.earns_commission() {
            continue;
        }
        let subs = [&c.sub1, &c.sub2, &c.sub3, &c.sub4, &c.sub5];
        let key = match group_by {
            "day" => zone.day_of(c.created_at).to_string(),
            "program" => c.program_id.to_string(),
            "affiliate" => c.affiliate_id.to_string(),
            "sub1" => sub(subs, 0),
            "sub2" => sub(subs, 1),
            "event" => c.event.clone(),
            other => panic!("{other}"),
        };
        let f = out.entry(key).or_default();
        f.conversions += 1;
        f.revenue += c.amount_minor;
        f.commission += c.payout_minor.expect("priced");
    }
    out
}

/// A sale through a click of `via` with sub-IDs, priced before it returns;
/// the conversion's id.
async fn sale(
    app: &TestApp,
    s: &Setup,
    click: &str,
    txn: &str,
    amount: &str,
    extra: &str,
) -> String {
    let conversion = app.sale(s, click, txn, amount, extra).await;
    conversion["id"].as_str().expect("id").to_owned()
}

async fn every_grouping_matches(app: &TestApp, s: &Setup, zone: &str) {
    let tenant = &s.tenant;
    for group_by in ["day", "program", "affiliate", "sub1", "sub2", "event"] {
        // A week beyond today either way: every row falls in the range.
        let today = TimeZone::parse(zone)
            .expect("zone")
            .day_of(chrono::Utc::now());
        let query = format!(
            "group_by={group_by}&from={}&to={}",
            today - chrono::Duration::days(7),
            today + chrono::Duration::days(7)
        );
        let (body, lines) = report(app, &tenant.key, &query).await;
        assert_eq!(body["time_zone"], zone, "{body}");
        let expected = raw(app, &tenant.id, zone, group_by).await;
        assert_eq!(lines, expected, "by {group_by}: {body}");
        let total = expected.values().fold(Figures::default(), |mut t, f| {
            t.clicks += f.clicks;
            t.unique_clicks += f.unique_clicks;
            t.conversions += f.conversions;
            t.revenue += f.revenue;
            t.commission += f.commission;
            t
        });
        assert_eq!(figures(&body["totals"]), total, "totals by {group_by}");
    }
}

async fn reports_equal_a_direct_count_of_the_raw_rows(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let (status, omar) = app
        .post(
            "/api/v1/affiliates",
            key,
            json!({"name":"Omar","email":"omar@example.com","slug":"omar"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{omar}");

    let (status, lead) = app
        .post(
            &format!("/api/v1/programs/{}/commission-plans", s.program_id),
            key,
            json!({"event": "lead", "commission": {"type": "flat", "value": "2"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lead}");

    // Traffic: clicks with and without sub-IDs, from two affiliates.
    for (via, subs) in [
        ("jane", "&sub1=news&sub2=top"),
        ("jane", "&sub1=news"),
        ("jane", "&sub1=blog"),
        ("jane", ""),
        ("omar", "&sub1=yt"),
        ("omar", ""),
    ] {
        app.click_id(&format!("/api/r/acme/pro?via={via}{subs}"))
            .await;
    }
    // Sales: three stand, one is refunded, one rejected up front, one is a test.
    sale(
        app,
        &s,
        "/api/r/acme/pro?via=jane&sub1=news",
        "o1",
        "100.00",
        "",
    )
    .await;
    sale(
        app,
        &s,
        "/api/r/acme/pro?via=omar&sub1=yt",
        "o2",
        "40.00",
        "",
    )
    .await;
    sale(
        app,
        &s,
        "/api/r/acme/pro?via=jane",
        "o3",
        "25.50",
        "&event=lead",
    )
    .await;
    let refunded = sale(
        app,
        &s,
        "/api/r/acme/pro?via=jane&sub1=blog",
        "o4",
        "60.00",
        "",
    )
    .await;
    sale(
        app,
        &s,
        "/api/r/acme/pro?via=omar",
        "o5",
        "10.00",
        "&status=rejected",
    )
    .await;
    sale(
        app,
        &s,
        "/api/r/acme/pro?via=jane",
        "o6",
        "999.00",
        "&test=1",
    )
    .await;
    let (status, c) = app
        .post(
            &format!("/api/v1/conversions/{refunded}/reverse"),
            key,
            json!({"reason": "refund", "kind": "refund"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");

    every_grouping_matches(app, &s, "UTC").await;
    let (_, by_affiliate) = report(app, key, "group_by=affiliate").await;
    assert_eq!(by_affiliate.len(), 2, "{by_affiliate:?}");
    let (body, _) = report(app, key, "group_by=affiliate").await;
    let labels: Vec<&str> = body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l["label"].as_str())
        .collect();
    assert!(
        labels.contains(&"Jane") && labels.contains(&"Omar"),
        "{body}"
    );
    // The range: every day of it is a line, also the empty ones.
    let (body, _) = report(app, key, "from=2026-01-01&to=2026-01-31").await;
    assert_eq!(body["lines"].as_array().map(Vec::len), Some(31), "{body}");
    assert_eq!(body["totals"]["clicks"], 0, "{body}");
    // Conversion rate and EPC: 3 standing conversions of 12 clicks.
    let (body, _) = report(app, key, "group_by=program").await;
    let totals = &body["totals"];
    assert_eq!(totals["clicks"], 12, "{body}");
    assert_eq!(totals["conversion_rate"], "25.00", "{body}");
    let commission = cents(&totals["amounts"][0]["commission"]);
    let epc = cents(&totals["amounts"][0]["epc"]);
    assert_eq!(epc, (commission + 6) / 12, "{body}");
    assert_eq!(body["lines"][0]["label"], "Pro plan", "{body}");

    // Jobs that run again (a worker restarted mid-way, a sweeper's requeue)
    // count nothing twice.
    let services = app.services();
    let tenant = app.tenant_id("acme").await;
    let before = raw(app, &s.tenant.id, "UTC", "day").await;
    for pb in postback::Entity::find()
        .filter(postback::Column::TenantId.eq(&s.tenant.id))
        .all(&services.store.conn)
        .await
        .expect("postbacks")
    {
        services
            .pipeline
            .attribute(&AttributeJob::again(tenant.clone(), &pb))
            .await
            .expect("attribute again");
    }
    let convs = conversion::Entity::find()
        .filter(conversion::Column::TenantId.eq(&s.tenant.id))
        .all(&services.store.conn)
        .await
        .expect("conversions");
    services
        .pipeline
        .commission(&CommissionJob {
            tenant_id: tenant.clone(),
            items: convs
                .iter()
                .map(|c| CommissionItem {
                    conversion_id: c.id.clone(),
                    status: c.status.0,
                })
                .collect(),
        })
        .await
        .expect("commission again");
    assert_eq!(raw(app, &s.tenant.id, "UTC", "day").await, before);
    every_grouping_matches(app, &s, "UTC").await;

    // A new time zone: the rollups are counted again in it. Kiritimati is
    // 14 hours ahead, so today's traffic is on another day there for most
    // of the day; the figures still equal the raw rows, day by day.
    let (status, t) = app
        .api(
            reqwest::Method::PATCH,
            "/api/v1/tenant",
            Some(key),
            Some(json!({"time_zone": "Pacific/Kiritimati"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    every_grouping_matches(app, &s, "Pacific/Kiritimati").await;
    // Traffic after the change is counted in the new zone too.
    app.click_id("/api/r/acme/pro?via=omar&sub2=late").await;
    sale(
        app,
        &s,
        "/api/r/acme/pro?via=jane&sub1=news",
        "o7",
        "12.00",
        "",
    )
    .await;
    wait_for_clicks(app, &s.tenant.id, 14).await;
    every_grouping_matches(app, &s, "Pacific/Kiritimati").await;

    // Rollups lost or from before they existed are built from the raw rows
    // when Trcker starts.
    let db = &services.store.conn;
    db.execute_unprepared("DELETE FROM report_rollups")
        .await
        .expect("delete");
    db.execute_unprepared("UPDATE tenants SET rollups_built_at = NULL")
        .await
        .expect("unset");
    services.store.migrate().await.expect("migrate");
    every_grouping_matches(app, &s, "Pacific/Kiritimati").await;

    // The CSV says the same: a header, a line per key, then the totals.
    let resp = app
        .http
        .get(app.url("/api/v1/reports/csv?group_by=sub1"))
        .bearer_auth(key)
        .send()
        .await
        .expect("csv");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/csv")),
        "{:?}",
        resp.headers()
    );
    let text = resp.text().await.expect("body");
    let rows: Vec<Vec<&str>> = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "key",
            "label",
            "clicks",
            "unique_clicks",
            "conversions",
            "conversion_rate",
            "currency",
            "revenue",
            "commission",
            "epc"
        ]
    );
    let (json_body, _) = report(app, key, "group_by=sub1").await;
    let last = rows.last().expect("totals");
    assert_eq!(last[0], "total");
    assert_eq!(last[2], json_body["totals"]["clicks"].to_string());
    assert_eq!(last[7], json_body["totals"]["amounts"][0]["revenue"]);
    let news = rows.iter().find(|r| r[0] == "news").expect("news line");
    let line = json_body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["key"] == "news")
        .expect("news");
    assert_eq!(news[2], line["clicks"].to_string());
    assert_eq!(news[8], line["amounts"][0]["commission"]);
}
on_both_databases!(reports_equal_a_direct_count_of_the_raw_rows);

/// Clicks are written by the click writer a moment after the redirect.
async fn wait_for_clicks(app: &TestApp, tenant: &str, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let count = click::Entity::find()
            .filter(click::Column::TenantId.eq(tenant))
            .filter(click::Column::IsTest.eq(false))
            .all(&app.services().store.conn)
            .await
            .expect("clicks")
            .len();
        if count >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} clicks of {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Bad groupings, days and ranges are named field by field and answer 422;
/// another tenant's ids filter to nothing.
async fn bad_report_requests_are_named(app: &TestApp) {
    let acme = app.create_tenant("acme").await;
    for (query, field, says) in [
        ("group_by=sub6", "group_by", "must be one of day"),
        ("from=2026-13-01", "from", "YYYY-MM-DD"),
        ("to=yesterday", "to", "YYYY-MM-DD"),
        (
            "from=2026-02-01&to=2026-01-01",
            "to",
            "must not be before from",
        ),
        ("from=2025-01-01&to=2026-01-02", "to", "at most 366 days"),
    ] {
        for path in ["/api/v1/reports", "/api/v1/reports/csv"] {
            let (status, p) = app.get(&format!("{path}?{query}"), &acme.key).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {p}");
            assert_eq!(p["code"], "invalid-fields", "{p}");
            let error = p["errors"]
                .as_array()
                .and_then(|e| e.iter().find(|e| e["field"] == field))
                .unwrap_or_else(|| panic!("{field} named: {p}"));
            assert!(
                error["message"].as_str().is_some_and(|m| m.contains(says)),
                "{p}"
            );
        }
    }
    // A method the path does not have: 405, with the ones it has.
    for (path, allow) in [
        ("/api/v1/reports", "GET"),
        ("/api/v1/programs", "GET, POST"),
        ("/api/v1/conversions/review", "POST"),
    ] {
        let resp = app
            .http
            .delete(app.url(path))
            .bearer_auth(&acme.key)
            .send()
            .await
            .expect("delete");
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{path}"
        );
    }
    let (status, p) = app.get("/api/v1/reports", "trk_not-a-key").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{p}");
    // A filter names one of the tenant's own programs or affiliates.
    for (query, code) in [
        ("program_id=prg_unknown", "program-not-found"),
        ("affiliate_id=aff_unknown", "affiliate-not-found"),
    ] {
        let (status, p) = app
            .get(&format!("/api/v1/reports?{query}"), &acme.key)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
        assert_eq!(p["code"], code, "{p}");
    }
}
on_both_databases!(bad_report_requests_are_named);
