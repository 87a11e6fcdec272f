//! Money an affiliate can trust: conversion review (one by one and in bulk,
//! along the state machine, with ledger reversals, audit records and
//! notifications) and payouts, over real HTTP on both databases.

use reqwest::StatusCode;
use serde_json::{Value, json};
use trcker_storage::entities::{audit, ledger_entry};
use trcker_storage::sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::harness::{AffiliateServer, Setup, TestApp};
use crate::on_both_databases;

/// Makes one sale by Jane per txn id, and waits until each is priced; the
/// conversions' ids in order.
async fn sales(app: &TestApp, s: &Setup, txns: &[(&str, &str)]) -> Vec<String> {
    let mut ids = Vec::new();
    for (txn, amount) in txns {
        ids.push(sale(app, s, "jane", txn, amount).await);
    }
    ids
}

async fn status_of(app: &TestApp, key: &str, id: &str) -> String {
    let (status, c) = app.get(&format!("/api/v1/conversions/{id}"), key).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    c["status"].as_str().expect("status").to_owned()
}

/// The conversions' ledger entries, oldest first.
async fn entries(app: &TestApp, conversion_id: &str) -> Vec<ledger_entry::Model> {
    ledger_entry::Entity::find()
        .filter(ledger_entry::Column::ConversionId.eq(conversion_id))
        .order_by_asc(ledger_entry::Column::Id)
        .all(&app.services().store.conn)
        .await
        .expect("ledger")
}

/// Gives Jane a postback template that carries `{status}` and the offer a
/// 30-day hold.
async fn hold_and_tell_statuses(app: &TestApp, s: &Setup, jane: &AffiliateServer) {
    let template = format!(
        "{}/pb?cid={{click_id}}&status={{status}}&payout={{payout}}",
        jane.url
    );
    for (path, body) in [
        (
            format!("/api/v1/affiliates/{}", s.affiliate_id),
            json!({"postback_url": template}),
        ),
        (
            format!("/api/v1/programs/{}", s.program_id),
            json!({"hold_days": 30}),
        ),
    ] {
        let (status, answer) = app
            .api(
                reqwest::Method::PATCH,
                &path,
                Some(&s.tenant.key),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
}

/// Reads notifications until one names `status` (the test's affiliate URL
/// carries `{status}`); the earlier ones are the sales'.
async fn notified(jane: &AffiliateServer, status: &str) -> String {
    loop {
        let hit = jane.next().await;
        if hit.contains(&format!("status={status}")) {
            return hit;
        }
    }
}

async fn review_one_by_one_and_in_bulk(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    // Jane's tracker tells statuses apart; the offer holds sales 30 days.
    hold_and_tell_statuses(app, &s, &jane).await;
    let ids = sales(
        app,
        &s,
        &[("o1", "100"), ("o2", "50"), ("o3", "20"), ("o4", "10")],
    )
    .await;
    for id in &ids {
        assert_eq!(status_of(app, key, id).await, "pending");
    }

    // One approval ends the hold; the affiliate hears of it.
    let (status, c) = app
        .post(
            &format!("/api/v1/conversions/{}/approve", ids[0]),
            key,
            json!({"reason": "order shipped"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "approved");
    assert!(c["hold_until"].is_null(), "{c}");
    let hit = notified(&jane, "approved").await;
    assert!(hit.contains("payout=10.00"), "{hit}");

    // A move the state machine refuses changes nothing and says why.
    let (status, p) = app
        .post(
            &format!("/api/v1/conversions/{}/approve", ids[0]),
            key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["code"], "conversion-move-refused");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("approved already")),
        "{p}"
    );
    let (status, p) = app
        .post(
            &format!("/api/v1/conversions/{}/reject", ids[0]),
            key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("is approved; it cannot become rejected")),
        "{p}"
    );
    assert_eq!(status_of(app, key, &ids[0]).await, "approved");

    // Bad input: named, nothing changes.
    for (body, field) in [
        (json!({"action": "nuke", "ids": [ids[1]]}), "action"),
        (json!({"action": "reject"}), "ids"),
        (
            json!({"action": "reject", "ids": [ids[1]], "filter": {"status": "pending"}}),
            "ids",
        ),
        (json!({"action": "reject", "ids": []}), "ids"),
        (
            json!({"action": "reject", "ids": [ids[1]], "reason": "x".repeat(501)}),
            "reason",
        ),
        (
            json!({"action": "reject", "filter": {"status": "lost"}}),
            "status",
        ),
    ] {
        let (status, p) = app.post("/api/v1/conversions/review", key, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let (status, p) = app
        .post(
            &format!("/api/v1/conversions/{}/reverse", ids[1]),
            key,
            json!({"kind": "undo"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (status, _) = app
        .post(
            "/api/v1/conversions/cnv_01m85158m2en7kg83kd5r0qmtm/approve",
            key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another tenant's key cannot review these.
    let other = app.create_tenant("globex").await;
    let (status, body) = app
        .post(
            "/api/v1/conversions/review",
            &other.key,
            json!({"action": "reject", "ids": [ids[1]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["moved"], json!([]));
    assert_eq!(body["refused"][0]["reason"], "conversion not found");
    assert_eq!(status_of(app, key, &ids[1]).await, "pending");

    // Bulk rejection by ids: each moves, the unknown id is listed.
    let (status, body) = app
        .post(
            "/api/v1/conversions/review",
            key,
            json!({"action": "reject", "ids": [ids[1], ids[2], ids[0], "cnv_nope"], "reason": "fraud"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut moved: Vec<&str> = body["moved"]
        .as_array()
        .expect("moved")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    moved.sort();
    let mut expected = vec![ids[1].as_str(), ids[2].as_str()];
    expected.sort();
    assert_eq!(moved, expected, "{body}");
    let refused: Vec<&str> = body["refused"]
        .as_array()
        .expect("refused")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(refused.len(), 2, "{body}");
    assert!(refused.contains(&ids[0].as_str()) && refused.contains(&"cnv_nope"));
    for id in &ids[1..3] {
        assert_eq!(status_of(app, key, id).await, "rejected");
        let e = entries(app, id).await;
        assert_eq!(e.len(), 2, "commission and its reversal");
        assert_eq!(e.iter().map(|e| e.amount_minor).sum::<i64>(), 0);
        assert_eq!(e[1].kind, ledger_entry::Kind::Reversal);
        assert!(e[1].explanation.contains("fraud"), "{}", e[1].explanation);
        assert!(
            e[1].actor
                .as_deref()
                .is_some_and(|a| a.starts_with("api_key:")),
            "{:?}",
            e[1].actor
        );
    }
    notified(&jane, "rejected").await;
    notified(&jane, "rejected").await;

    // Reversal of an approved conversion: the ledger returns to zero.
    let (status, c) = app
        .post(
            &format!("/api/v1/conversions/{}/reverse", ids[0]),
            key,
            json!({"kind": "chargeback", "reason": "card disputed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "chargeback");
    let e = entries(app, &ids[0]).await;
    assert_eq!(e.iter().map(|e| e.amount_minor).sum::<i64>(), 0);
    notified(&jane, "chargeback").await;

    // Bulk approval by filter takes what is still pending.
    let (status, body) = app
        .post(
            "/api/v1/conversions/review",
            key,
            json!({"action": "approve", "filter": {"status": "pending", "program_id": s.program_id}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["moved"], json!([ids[3]]), "{body}");
    assert_eq!(body["more"], false);
    assert_eq!(status_of(app, key, &ids[3]).await, "approved");
    notified(&jane, "approved").await;

    // Every review is in the audit log, with before, after and reason.
    let records = audit::Entity::find()
        .filter(audit::Column::ResourceType.eq("conversion"))
        .order_by_asc(audit::Column::Id)
        .all(&app.services().store.conn)
        .await
        .expect("audit");
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "conversion.approve",
            "conversion.reject",
            "conversion.reject",
            "conversion.chargeback",
            "conversion.approve"
        ]
    );
    let details: Value =
        serde_json::from_str(records[0].details.as_deref().expect("details")).expect("json");
    assert_eq!(
        details,
        json!({"before": {"status": "pending"}, "after": {"status": "approved"}, "reason": "order shipped"})
    );
}

on_both_databases!(review_one_by_one_and_in_bulk);

/// Creates an affiliate of the quickstart's tenant; its id.
async fn affiliate(app: &TestApp, key: &str, slug: &str, name: &str) -> String {
    let (status, a) = app
        .post(
            "/api/v1/affiliates",
            key,
            json!({"name": name, "email": format!("{slug}@example.com"), "slug": slug}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    a["id"].as_str().expect("id").to_owned()
}

/// One approved sale of `amount` by the affiliate `via`; the conversion's id.
async fn sale(app: &TestApp, s: &Setup, via: &str, txn: &str, amount: &str) -> String {
    let conversion = app
        .sale(s, &format!("/api/r/acme/pro?via={via}"), txn, amount, "")
        .await;
    conversion["id"].as_str().expect("id").to_owned()
}

/// RFC 4180 records (quoted fields, doubled quotes, CRLF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

/// The payouts of a batch answer, by affiliate id.
fn by_affiliate(batch: &Value) -> std::collections::HashMap<String, Value> {
    batch["payouts"]
        .as_array()
        .expect("payouts")
        .iter()
        .map(|p| {
            (
                p["affiliate_id"].as_str().expect("aff").to_owned(),
                p.clone(),
            )
        })
        .collect()
}

/// Signs the quickstart's Jane in to the portal; her earnings page.
async fn janes_earnings(s: &Setup) -> String {
    let browser = crate::harness::browser(true);
    let resp = crate::harness::post_portal_form(
        &browser,
        &s.invite_url,
        &s.invite_url,
        &[
            ("password", "correct horse battery"),
            ("confirm", "correct horse battery"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap_or_default()
}

async fn payouts_batches_clawbacks_and_csv(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let (status, body) = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/v1/programs/{}", s.program_id),
            Some(key),
            Some(json!({"payout_minimum": "5.00"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["payout_minimum"], "5.00");
    let joe = affiliate(app, key, "joe", "Joe \"JJ\", Jr.").await;
    let amy = affiliate(app, key, "amy", "=Amy").await;
    let o1 = sale(app, &s, "jane", "o1", "100").await;
    sale(app, &s, "jane", "o2", "50").await;
    sale(app, &s, "joe", "o3", "300").await;
    sale(app, &s, "amy", "o4", "20").await;

    // Bad requests are named and create nothing.
    for (body, field) in [
        (json!({"minimum": "5"}), "minimum"),
        (json!({"currency": "US"}), "currency"),
        (json!({"currency": "USD", "minimum": "5.001"}), "minimum"),
    ] {
        let (status, p) = app.post("/api/v1/payouts", key, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }

    // Two batches at the same moment: every entry is paid once.
    let (a, b) = tokio::join!(
        app.post("/api/v1/payouts", key, json!({})),
        app.post("/api/v1/payouts", key, json!({"currency": "USD"}))
    );
    assert_eq!(a.0, StatusCode::CREATED, "{}", a.1);
    assert_eq!(b.0, StatusCode::CREATED, "{}", b.1);
    let (first, second) = if a.1["payouts"].as_array().is_some_and(|p| !p.is_empty()) {
        (a.1, b.1)
    } else {
        (b.1, a.1)
    };
    assert_eq!(second["payouts"], json!([]), "{second}");
    let paid = by_affiliate(&first);
    assert_eq!(paid.len(), 2, "{first}");
    assert_eq!(paid[&s.affiliate_id]["amount"], "15.00");
    assert_eq!(paid[&s.affiliate_id]["entry_count"], 2);
    assert_eq!(paid[&joe]["amount"], "30.00");
    for batch in [&first, &second] {
        let carried = batch["carried"].as_array().expect("carried");
        assert_eq!(carried.len(), 1, "{batch}");
        assert_eq!(carried[0]["affiliate_id"], amy.as_str());
        assert_eq!(carried[0]["balance"], "2.00");
        assert_eq!(
            carried[0]["reason"],
            "balance 2.00 USD is below the minimum 5.00 USD"
        );
    }
    let janes = paid[&s.affiliate_id]["id"].as_str().expect("id").to_owned();
    let joes = paid[&joe]["id"].as_str().expect("id").to_owned();
    let (status, p) = app.get(&format!("/api/v1/payouts/{janes}"), key).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let covered: Vec<&str> = p["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["amount"].as_str())
        .collect();
    assert_eq!(covered, ["10.00", "5.00"], "{p}");

    // The batch's CSV, parsed.
    let resp = app
        .http
        .get(app.url(&format!(
            "/api/v1/payout-batches/{}/csv",
            first["id"].as_str().expect("batch id")
        )))
        .bearer_auth(key)
        .send()
        .await
        .expect("csv");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/csv")),
        "{:?}",
        resp.headers()
    );
    let rows = parse_csv(&resp.text().await.expect("body"));
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows[0],
        [
            "payout_id",
            "affiliate_id",
            "affiliate_name",
            "affiliate_email",
            "amount",
            "currency",
            "entries",
            "status",
            "reference",
            "created_at"
        ]
    );
    let joe_row = rows.iter().find(|r| r[1] == joe).expect("joe's row");
    assert_eq!(joe_row[2], "Joe \"JJ\", Jr.");
    assert_eq!(joe_row[4..8], ["30.00", "USD", "1", "pending"]);
    let (status, p) = app
        .get(
            "/api/v1/payout-batches/pbt_01m85158m2en7kg83kd5r0qmtm/csv",
            key,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(p["code"], "payout-batch-not-found");

    // Paid with a reference (once); failed, its entries owed again.
    let (status, p) = app
        .post(
            &format!("/api/v1/payouts/{janes}/mark-paid"),
            key,
            json!({"reference": " "}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (status, p) = app
        .post(
            &format!("/api/v1/payouts/{janes}/mark-paid"),
            key,
            json!({"reference": "SEPA-2026-12-001"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["status"], "paid");
    assert_eq!(p["reference"], "SEPA-2026-12-001");
    // Paying books the debit: the negative of what it covers, per program.
    let covered = p["entries"].clone();
    assert_eq!(covered.as_array().map(Vec::len), Some(2), "{p}");
    let debit_of = |list: &Value| {
        let items = list["items"].as_array().expect("items").clone();
        assert_eq!(items.len(), 1, "{list}");
        let d = &items[0];
        assert_eq!(d["payout_id"], janes.as_str());
        assert!(d["conversion_id"].is_null());
        (d["amount"].clone(), d["explanation"].clone())
    };
    let (_, debits) = app.get("/api/v1/ledger/entries?kind=payout", key).await;
    let debit = debit_of(&debits);
    assert_eq!(
        debit,
        (
            json!("-15.00"),
            json!(format!(
                "paid in payout {janes} (reference SEPA-2026-12-001)"
            ))
        )
    );
    let (_, again) = app.get(&format!("/api/v1/payouts/{janes}"), key).await;
    assert_eq!(again["entries"], covered, "the debit is not one it covers");
    // A payout paid before debits existed gets its own from the migration.
    {
        use trcker_storage::sea_orm::ConnectionTrait;
        let db = &app.services().store.conn;
        for sql in [
            "DELETE FROM ledger_entries WHERE kind = 'payout'",
            "DELETE FROM seaql_migrations WHERE version = 'm20261203_000013_payout_debits'",
        ] {
            db.execute_unprepared(sql).await.expect(sql);
        }
        let (_, none) = app.get("/api/v1/ledger/entries?kind=payout", key).await;
        assert_eq!(none["items"], json!([]));
        app.services().store.migrate().await.expect("migrate");
        let (_, debits) = app.get("/api/v1/ledger/entries?kind=payout", key).await;
        assert_eq!(debit_of(&debits), debit);
    }
    for path in ["mark-paid", "mark-failed"] {
        let (status, p) = app
            .post(
                &format!("/api/v1/payouts/{janes}/{path}"),
                key,
                json!({"reference": "again", "reason": "again"}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{p}");
        assert_eq!(p["code"], "payout-not-pending");
    }
    let (status, p) = app
        .post(
            &format!("/api/v1/payouts/{joes}/mark-failed"),
            key,
            json!({"reason": "IBAN rejected"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["status"], "failed");
    assert_eq!(p["entries"], json!([]));
    // Another tenant sees none of it.
    let other = app.create_tenant("globex").await;
    let (status, _) = app
        .get(&format!("/api/v1/payouts/{janes}"), &other.key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get("/api/v1/payouts", &other.key).await;
    assert_eq!(list["items"], json!([]));

    // A refund after the payout: a clawback the next payout nets.
    let (status, c) = app
        .post(
            &format!("/api/v1/conversions/{o1}/reverse"),
            key,
            json!({"reason": "returned"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let html = janes_earnings(&s).await;
    assert!(
        html.contains(r#"data-testid="paid-USD">15.00 USD"#),
        "{html}"
    );
    assert!(
        html.contains(r#"data-testid="approved-USD">-10.00 USD"#),
        "{html}"
    );
    let (status, batch) = app.post("/api/v1/payouts", key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let carried: Vec<&str> = batch["carried"]
        .as_array()
        .expect("carried")
        .iter()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    assert!(
        carried.contains(&"balance -10.00 USD is not positive (reversals after an earlier payout are netted against later commissions)"),
        "{batch}"
    );
    assert_eq!(by_affiliate(&batch)[&joe]["amount"], "30.00", "{batch}");
    sale(app, &s, "jane", "o5", "200").await;
    let (status, batch) = app.post("/api/v1/payouts", key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let paid = by_affiliate(&batch);
    assert_eq!(paid.len(), 1, "{batch}");
    assert_eq!(
        paid[&s.affiliate_id]["amount"], "10.00",
        "20.00 less the 10.00 clawed back"
    );
    assert_eq!(paid[&s.affiliate_id]["entry_count"], 2);
    // Every payable entry is in exactly one payout that is not failed.
    let (_, list) = app.get("/api/v1/payouts?status=pending", key).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");
    let (status, p) = app.get("/api/v1/payouts?status=lost", key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
}

on_both_databases!(payouts_batches_clawbacks_and_csv);

/// An amount beyond the documented maximum is refused at intake, naming
/// the field, and changes nothing (a probe's two sales of
/// 92233720368547758.07 at 100 % once wrapped a balance to -0.02).
async fn amounts_beyond_the_maximum_are_refused(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let click_id = app.click_id("/api/r/acme/pro?via=jane").await;
    for (field, query) in [
        ("amount", "amount=92233720368547758.07"),
        ("amount", "amount=10000000000.01"),
        ("payout", "amount=10&payout=10000000000.01"),
    ] {
        let (status, body) = app
            .postback(&format!(
                "/api/postback/acme/pro?secret={}&click_id={click_id}&{query}&txn_id=big",
                s.secret
            ))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("above the maximum 10000000000.00 USD")),
            "{body}"
        );
    }
    // The maximum itself is taken, and priced exactly.
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click_id}&amount=10000000000&txn_id=max",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = app
        .conversions_until(&s.tenant.key, "txn_id=max", |b| {
            !b["items"][0]["payout"].is_null()
        })
        .await;
    assert_eq!(page["items"][0]["payout"], "1000000000.00");
    let (_, page) = app
        .get("/api/v1/conversions?txn_id=big", &s.tenant.key)
        .await;
    assert_eq!(page["items"], json!([]));
}

on_both_databases!(amounts_beyond_the_maximum_are_refused);

/// A sale held for the offer's hold period stays pending, then the
/// sweepers approve it: once, with two worker processes sweeping at once,
/// and the affiliate hears of it once.
async fn holds_end_in_one_approval_across_worker_processes(app: &TestApp) {
    use trcker_storage::entities::notification_delivery;
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    hold_and_tell_statuses(app, &s, &jane).await;
    let second = app.start_workers().await;
    let ids = sales(app, &s, &[("h1", "100"), ("h2", "40")]).await;
    notified(&jane, "pending").await;
    notified(&jane, "pending").await;
    // A day before the hold ends, nothing moves.
    for clock in [
        &app.services().settings.clock,
        &second.services.settings.clock,
    ] {
        clock.advance(chrono::Duration::days(29));
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    for id in &ids {
        assert_eq!(status_of(app, key, id).await, "pending");
    }
    // Past it, both processes' sweepers find them due.
    for clock in [
        &app.services().settings.clock,
        &second.services.settings.clock,
    ] {
        clock.advance(chrono::Duration::days(2));
    }
    app.conversions_until(key, "status=approved", |b| {
        b["items"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    notified(&jane, "approved").await;
    notified(&jane, "approved").await;
    jane.assert_quiet(std::time::Duration::from_millis(2500))
        .await;
    let db = &app.services().store.conn;
    for id in &ids {
        assert_eq!(
            entries(app, id).await.len(),
            1,
            "one commission, booked once"
        );
        let deliveries = notification_delivery::Entity::find()
            .filter(notification_delivery::Column::ConversionId.eq(id))
            .filter(notification_delivery::Column::EventKey.eq("status:approved"))
            .all(db)
            .await
            .expect("deliveries");
        assert_eq!(deliveries.len(), 1);
    }
    second.stop().await;
}

on_both_databases!(holds_end_in_one_approval_across_worker_processes);

/// A lead and a later sale of one order are two conversions, each priced
/// by its event's plan; a repeat of either stays one; a refund names the
/// event it reverses.
async fn a_lead_then_a_sale_of_one_order(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let (status, plan) = app
        .post(
            &format!("/api/v1/programs/{}/commission-plans", s.program_id),
            key,
            json!({"event": "lead", "commission": {"type": "flat", "value": "2.00"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let click_id = app.click_id("/api/r/acme/pro?via=jane").await;
    let (click_id, secret) = (&click_id, &s.secret);
    let fire = |query: String| async move {
        app.postback(&format!(
            "/api/postback/acme/pro?secret={secret}&click_id={click_id}&txn_id=order_1&{query}"
        ))
        .await
    };
    let (status, lead) = fire("event=lead".into()).await;
    assert_eq!(status, StatusCode::OK, "{lead}");
    assert_eq!(lead["status"], "accepted");
    app.conversions_until(key, "txn_id=order_1", |b| b["items"][0]["payout"] == "2.00")
        .await;
    let (status, sale) = fire("amount=80".into()).await;
    assert_eq!(status, StatusCode::OK, "{sale}");
    assert_eq!(sale["status"], "accepted", "a sale after the lead is new");
    let page = app
        .conversions_until(key, "txn_id=order_1", |b| {
            b["items"].as_array().map(Vec::len) == Some(2)
                && b["items"]
                    .as_array()
                    .is_some_and(|i| i.iter().all(|c| !c["payout"].is_null()))
        })
        .await;
    let by_event: std::collections::HashMap<&str, &Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| (c["event"].as_str().expect("event"), c))
        .collect();
    assert_eq!(by_event["lead"]["payout"], "2.00");
    assert_eq!(by_event["sale"]["payout"], "8.00");
    // Repeats are duplicates of their own event.
    let (_, again) = fire("event=lead".into()).await;
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["conversion_id"], by_event["lead"]["id"]);
    let (_, again) = fire("amount=80".into()).await;
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["conversion_id"], by_event["sale"]["id"]);
    // Refunding the sale leaves the lead as it was.
    let (status, refund) = fire("amount=80&status=refunded".into()).await;
    assert_eq!(status, StatusCode::OK, "{refund}");
    app.conversions_until(key, "txn_id=order_1&status=refunded", |b| {
        b["items"].as_array().map(Vec::len) == Some(1)
    })
    .await;
    let lead_id = by_event["lead"]["id"].as_str().expect("id");
    assert_eq!(status_of(app, key, lead_id).await, "approved");
    // A status for an event the order never had says so.
    let (_, pb) = fire("event=signup&status=refunded".into()).await;
    let row = app
        .processed_postback(pb["postback_id"].as_str().expect("postback_id"))
        .await;
    assert_eq!(
        row.reason.as_deref(),
        Some("status refunded for txn_id order_1 (event signup) that has no conversion")
    );
    // An event the offer has no plan for is refused with why, not priced at 0.00.
    let (_, pb) = fire("event=install".into()).await;
    assert_eq!(pb["status"], "accepted", "{pb}");
    let row = app
        .processed_postback(pb["postback_id"].as_str().expect("postback_id"))
        .await;
    assert_eq!(
        row.reason.as_deref(),
        Some(
            format!(
                "event 'install' is not a goal of this offer: no commission plan names it \
                 (add one with POST /api/v1/programs/{}/commission-plans)",
                s.program_id
            )
            .as_str()
        )
    );
    let (_, page) = app.get("/api/v1/conversions?txn_id=order_1", key).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
}

on_both_databases!(a_lead_then_a_sale_of_one_order);

/// A plan change is a new version: conversions before it keep their
/// pricing and explanation; each conversion names the plan, version,
/// rule, tier, inputs and result that priced it.
async fn plan_versions_and_explanations(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let plans_path = format!("/api/v1/programs/{}/commission-plans", s.program_id);
    let (_, plans) = app.get(&plans_path, key).await;
    let v1 = plans["items"][0].clone();
    assert_eq!(v1["version"], 1, "{plans}");
    let o1 = sale(app, &s, "jane", "o1", "79").await;
    let (_, c1) = app.get(&format!("/api/v1/conversions/{o1}"), key).await;
    assert_eq!(
        c1["commission"],
        json!({
            "source": "program_plan",
            "plan_id": v1["id"],
            "plan_version": 1,
            "rule": {"type": "percent", "flat": null, "percent": "10", "max": null},
            "tier": null,
            "inputs": {"event": "sale", "amount": "79.00", "currency": "USD", "exchange_rate": null,
                       "original_amount": null, "original_currency": null, "tier_volume": null},
            "result": {"payout": "7.90", "currency": "USD", "uncapped": null},
            "sentence": "10% of 79.00 USD = 7.90 USD"
        }),
        "{c1}"
    );

    // Bad plans are refused, each part named.
    for (commission, field) in [
        (
            json!({"type": "combined", "value": "2.00"}),
            "commission.percent",
        ),
        (
            json!({"type": "flat", "value": "2.00", "percent": "5"}),
            "commission.percent",
        ),
        (
            json!({"type": "percent", "value": "10", "max": "lots"}),
            "commission.max",
        ),
        (
            json!({"type": "combined", "value": "2.00", "percent": "101"}),
            "commission",
        ),
    ] {
        let (status, p) = app
            .post(&plans_path, key, json!({"commission": commission}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let (_, plans) = app.get(&plans_path, key).await;
    assert_eq!(plans["items"][0]["id"], v1["id"], "nothing changed");

    // Version 2: 2.00 plus 5 %, at most 5.00 per conversion.
    let (status, v2) = app
        .post(
            &plans_path,
            key,
            json!({"commission": {"type": "combined", "value": "2.00", "percent": "5", "max": "5.00"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v2}");
    assert_eq!(v2["version"], 2);
    assert_eq!(
        v2["commission"],
        json!({"type": "combined", "value": "2.00", "percent": "5", "max": "5.00", "tiers": null})
    );
    let o2 = sale(app, &s, "jane", "o2", "79").await;
    let (_, c2) = app.get(&format!("/api/v1/conversions/{o2}"), key).await;
    assert_eq!(c2["payout"], "5.00", "{c2}");
    let pricing = &c2["commission"];
    assert_eq!(pricing["plan_id"], v2["id"]);
    assert_eq!(pricing["plan_version"], 2);
    assert_eq!(
        pricing["rule"],
        json!({"type": "combined", "flat": "2.00", "percent": "5", "max": "5.00"})
    );
    assert_eq!(
        pricing["result"],
        json!({"payout": "5.00", "currency": "USD", "uncapped": "5.95"})
    );
    assert_eq!(
        pricing["sentence"],
        "flat 2.00 USD + 5% of 79.00 USD (3.95 USD) = 5.95 USD, capped at the plan's maximum 5.00 USD"
    );
    // The earlier conversion keeps version 1's pricing.
    let (_, again) = app.get(&format!("/api/v1/conversions/{o1}"), key).await;
    assert_eq!(again["payout"], "7.90");
    assert_eq!(again["commission"], c1["commission"]);

    // An affiliate's own plan overrides the program's, with its own versions.
    let (status, own) = app
        .post(
            &plans_path,
            key,
            json!({"affiliate_id": s.affiliate_id, "commission": {"type": "flat", "value": "3.00"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    assert_eq!(own["version"], 1);
    let o3 = sale(app, &s, "jane", "o3", "79").await;
    let (_, c3) = app.get(&format!("/api/v1/conversions/{o3}"), key).await;
    assert_eq!(c3["payout"], "3.00");
    assert_eq!(c3["commission"]["source"], "affiliate_plan");
    assert_eq!(c3["commission"]["plan_id"], own["id"]);
    // The merchant's payout overrides every plan, and says so.
    let click_id = app.click_id("/api/r/acme/pro?via=jane").await;
    app.postback(&format!(
        "/api/postback/acme/pro?secret={}&click_id={click_id}&amount=79&payout=1.25&txn_id=o4",
        s.secret
    ))
    .await;
    let page = app
        .conversions_until(key, "txn_id=o4", |b| !b["items"][0]["payout"].is_null())
        .await;
    let c4 = &page["items"][0];
    assert_eq!(c4["payout"], "1.25");
    assert_eq!(c4["commission"]["source"], "postback_payout");
    assert!(c4["commission"]["plan_id"].is_null());
}

on_both_databases!(plan_versions_and_explanations);

/// A sale in another currency than its offer's is converted with the
/// tenant's rate valid when it happened, the rate kept on the conversion;
/// without one it stays unattributed, saying so.
async fn foreign_currency_sales_with_and_without_a_rate(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    for (body, field) in [
        (json!({"from": "EUR", "to": "EUR", "rate": "1"}), "to"),
        (json!({"from": "EURO", "to": "USD", "rate": "1.1"}), "from"),
        (json!({"from": "EUR", "to": "USD", "rate": "0"}), "rate"),
        (
            json!({"from": "EUR", "to": "USD", "rate": "1.0000000000001"}),
            "rate",
        ),
    ] {
        let (status, p) = app.post("/api/v1/exchange-rates", key, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let past = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let future = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    for (rate, from) in [("1.085", &past), ("2", &future)] {
        let (status, r) = app
            .post(
                "/api/v1/exchange-rates",
                key,
                json!({"from": "eur", "to": "USD", "rate": rate, "valid_from": from}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        assert_eq!(r["from"], "EUR");
    }
    let (_, list) = app.get("/api/v1/exchange-rates?from=EUR", key).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");

    let click_id = app.click_id("/api/r/acme/pro?via=jane").await;
    // 12.34 EUR at 1.085 = 13.3889 USD: 13.39 USD, 10 % of it 1.34.
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click_id}&amount=12.34&currency=EUR&txn_id=eu1",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = app
        .conversions_until(key, "txn_id=eu1", |b| !b["items"][0]["payout"].is_null())
        .await;
    let c = &page["items"][0];
    assert_eq!(c["amount"], "13.39", "{c}");
    assert_eq!(c["currency"], "USD");
    assert_eq!(c["payout"], "1.34");
    assert_eq!(
        c["commission"]["inputs"],
        json!({"event": "sale", "amount": "13.39", "currency": "USD", "exchange_rate": "1.085",
               "original_amount": "12.34", "original_currency": "EUR", "tier_volume": null})
    );
    // No GBP rate: kept, unattributed, with the reason.
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click_id}&amount=10&currency=GBP&txn_id=uk1",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let row = app
        .processed_postback(body["postback_id"].as_str().expect("postback_id"))
        .await;
    assert_eq!(
        row.reason.as_deref(),
        Some("currency GBP differs from the offer's USD and no exchange rate is configured")
    );
    let (_, page) = app.get("/api/v1/conversions?txn_id=uk1", key).await;
    assert_eq!(page["items"], json!([]));
}

on_both_databases!(foreign_currency_sales_with_and_without_a_rate);

/// Manual adjustments are ledger entries with their reason and key,
/// payable at once, listed with the rest of the ledger.
async fn manual_adjustments_are_booked_and_paid(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let adjust = |amount: &str, reason: &str| {
        json!({"affiliate_id": s.affiliate_id, "program_id": s.program_id,
               "amount": amount, "reason": reason})
    };
    for (body, field) in [
        (adjust("0", "nothing"), "amount"),
        (adjust("1.005", "too fine"), "amount"),
        (adjust("10000000000.01", "too much"), "amount"),
        (adjust("5", " "), "reason"),
        (
            json!({"affiliate_id": "aff_nope", "program_id": s.program_id, "amount": "5", "reason": "x"}),
            "affiliate_id",
        ),
    ] {
        let (status, p) = app.post("/api/v1/ledger/adjustments", key, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let (status, bonus) = app
        .post(
            "/api/v1/ledger/adjustments",
            key,
            adjust("25.00", "launch bonus"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bonus}");
    assert_eq!(bonus["kind"], "adjustment");
    assert_eq!(bonus["amount"], "25.00");
    assert!(bonus["conversion_id"].is_null());
    assert!(
        bonus["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("api_key:")),
        "{bonus}"
    );
    let (status, fix) = app
        .post(
            "/api/v1/ledger/adjustments",
            key,
            adjust("-4.50", "double-counted lead"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{fix}");
    assert!(
        fix["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("-4.50 USD") && e.ends_with(": double-counted lead")),
        "{fix}"
    );
    let (_, list) = app.get("/api/v1/ledger/entries?kind=adjustment", key).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");
    let (status, _) = app.get("/api/v1/ledger/entries?kind=bonus", key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Payable at once: a batch pays their sum.
    let (status, batch) = app.post("/api/v1/payouts", key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    assert_eq!(batch["payouts"][0]["amount"], "20.50", "{batch}");
    assert_eq!(batch["payouts"][0]["entry_count"], 2);
    let other = app.create_tenant("globex").await;
    let (_, list) = app.get("/api/v1/ledger/entries", &other.key).await;
    assert_eq!(list["items"], json!([]));
}

on_both_databases!(manual_adjustments_are_booked_and_paid);

/// A tiered plan: the rate steps up once the affiliate's volume in the
/// tenant's calendar month reaches a tier; the conversions before the
/// crossing keep their rate, and each names its tier and volume.
async fn tiers_cross_mid_period(app: &TestApp) {
    use trcker_domain::tiers::{TierPeriod, TimeZone};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    // The tenant's calendar: a time zone of its own, refused when unknown.
    let (status, p) = app
        .api(
            reqwest::Method::PATCH,
            "/api/v1/tenant",
            Some(key),
            Some(json!({"time_zone": "Mars/Olympus"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["errors"][0]["field"], "time_zone", "{p}");
    let (status, tenant) = app
        .api(
            reqwest::Method::PATCH,
            "/api/v1/tenant",
            Some(key),
            Some(json!({"time_zone": "Pacific/Kiritimati"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tenant}");
    let (_, tenant) = app.get("/api/v1/tenant", key).await;
    assert_eq!(tenant["time_zone"], "Pacific/Kiritimati", "{tenant}");

    let plans_path = format!("/api/v1/programs/{}/commission-plans", s.program_id);
    // Bad tiers are refused, each part named, and change nothing.
    let step = |from: &str| json!({"from": from, "type": "percent", "value": "15"});
    for (tiers, field) in [
        (
            json!({"basis": "clicks", "steps": [step("2")]}),
            "commission.tiers.basis",
        ),
        (
            json!({"basis": "conversions", "period": "year", "steps": [step("2")]}),
            "commission.tiers.period",
        ),
        (
            json!({"basis": "conversions", "steps": [step("two")]}),
            "commission.tiers.steps[0].from",
        ),
        (
            json!({"basis": "revenue", "steps": [step("1.005")]}),
            "commission.tiers.steps[0].from",
        ),
        (
            json!({"basis": "conversions", "steps": [step("3"), {"from": "5", "type": "percent", "value": "120"}]}),
            "commission.tiers.steps[1]",
        ),
        (
            json!({"basis": "conversions", "steps": [step("3"), step("3")]}),
            "commission.tiers.steps",
        ),
        (
            json!({"basis": "conversions", "steps": []}),
            "commission.tiers.steps",
        ),
    ] {
        let (status, p) = app
            .post(
                &plans_path,
                key,
                json!({"commission": {"type": "percent", "value": "10", "tiers": tiers}}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let (_, plans) = app.get(&plans_path, key).await;
    assert_eq!(plans["items"][0]["version"], 1, "nothing changed");

    // 10 % for the month's first 2 sales, 15 % from the 3rd, 2.00 + 20 %
    // from the 4th.
    let (status, plan) = app
        .post(
            &plans_path,
            key,
            json!({"commission": {"type": "percent", "value": "10", "tiers": {
                "basis": "conversions",
                "steps": [
                    {"from": "2", "type": "percent", "value": "15"},
                    {"from": "3", "type": "combined", "value": "2.00", "percent": "20"},
                ]
            }}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    assert_eq!(
        plan["commission"]["tiers"],
        json!({"basis": "conversions", "period": "month", "steps": [
            {"from": "2", "type": "percent", "value": "15", "percent": null},
            {"from": "3", "type": "combined", "value": "2.00", "percent": "20"},
        ]})
    );
    let ids = sales(
        app,
        &s,
        &[("t1", "100"), ("t2", "100"), ("t3", "100"), ("t4", "100")],
    )
    .await;
    let mut got = Vec::new();
    for id in &ids {
        let (_, c) = app.get(&format!("/api/v1/conversions/{id}"), key).await;
        got.push(c);
    }
    let payouts: Vec<&Value> = got.iter().map(|c| &c["payout"]).collect();
    assert_eq!(payouts, ["10.00", "10.00", "15.00", "22.00"]);
    let created: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(got[3]["created_at"].clone()).expect("created_at");
    let zone = TimeZone::parse("Pacific/Kiritimati").expect("zone");
    let (month_start, _) = TierPeriod::Month.bounds(created, zone);
    let pricing = &got[3]["commission"];
    assert_eq!(pricing["plan_id"], plan["id"]);
    assert_eq!(
        pricing["tier"],
        json!({"number": 3, "basis": "conversions", "period": "month",
               "period_start": month_start.to_rfc3339(),
               "time_zone": "Pacific/Kiritimati", "from": "3", "volume": "3"}),
        "{pricing}"
    );
    assert_eq!(pricing["inputs"]["tier_volume"], "3");
    assert_eq!(
        pricing["rule"],
        json!({"type": "combined", "flat": "2.00", "percent": "20", "max": null})
    );
    assert_eq!(
        pricing["sentence"],
        "tier 3 (from 3 conversions; 3 conversions this month before this one): \
         flat 2.00 USD + 20% of 100.00 USD (20.00 USD) = 22.00 USD"
    );
    assert_eq!(got[0]["commission"]["tier"]["number"], 1);
    assert_eq!(got[0]["commission"]["tier"]["volume"], "0");
    assert_eq!(got[2]["commission"]["tier"]["number"], 2);

    // A refund takes its sale out of the volume; nothing priced before
    // is re-priced.
    let click_id = app.click_id("/api/r/acme/pro?via=jane").await;
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click_id}&amount=100&txn_id=t4&status=refunded",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.conversions_until(key, "status=refunded", |b| {
        b["items"].as_array().map(Vec::len) == Some(1)
    })
    .await;
    let t5 = sale(app, &s, "jane", "t5", "50").await;
    let (_, c5) = app.get(&format!("/api/v1/conversions/{t5}"), key).await;
    assert_eq!(c5["payout"], "12.00", "3 before it: tier 3 again: {c5}");
    assert_eq!(c5["commission"]["tier"]["volume"], "3");
    for (id, payout) in ids.iter().zip(["10.00", "10.00", "15.00"]) {
        let (_, c) = app.get(&format!("/api/v1/conversions/{id}"), key).await;
        assert_eq!(c["payout"], payout);
    }

    // On revenue, per affiliate: Max's own plan steps up from 150.00 of
    // sales in the month.
    let max_id = affiliate(app, key, "max", "Max").await;
    let (status, own) = app
        .post(
            &plans_path,
            key,
            json!({"affiliate_id": max_id, "commission": {"type": "flat", "value": "1.00", "tiers": {
                "basis": "revenue",
                "steps": [{"from": "150.00", "type": "flat", "value": "5.00"}]
            }}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    assert_eq!(own["commission"]["tiers"]["steps"][0]["from"], "150.00");
    let mut payouts = Vec::new();
    for (txn, amount) in [("m1", "100"), ("m2", "49.99"), ("m3", "0.01"), ("m4", "10")] {
        let id = sale(app, &s, "max", txn, amount).await;
        let (_, c) = app.get(&format!("/api/v1/conversions/{id}"), key).await;
        payouts.push((
            c["payout"].clone(),
            c["commission"]["tier"]["volume"].clone(),
        ));
    }
    assert_eq!(
        payouts,
        [
            (json!("1.00"), json!("0.00")),
            (json!("1.00"), json!("100.00")),
            (json!("1.00"), json!("149.99")),
            (json!("5.00"), json!("150.00")),
        ]
    );
}

on_both_databases!(tiers_cross_mid_period);

/// Two worker processes pricing one affiliate's tiered sales at once take
/// turns: every sale counts all those priced before it, so the volumes
/// are 0, 1, 2… with none twice, and exactly the sales from the step on
/// get its rate.
async fn tiered_pricing_is_a_sequence_across_workers(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let second = app.start_workers().await;
    let plans_path = format!("/api/v1/programs/{}/commission-plans", s.program_id);
    let (status, plan) = app
        .post(
            &plans_path,
            key,
            json!({"commission": {"type": "flat", "value": "1.00", "tiers": {
                "basis": "conversions",
                "period": "week",
                "steps": [{"from": "15", "type": "flat", "value": "2.00"}]
            }}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let n = 30;
    let mut clicks = Vec::new();
    for _ in 0..n {
        clicks.push(app.click_id("/api/r/acme/pro?via=jane").await);
    }
    let fired = clicks.iter().enumerate().map(|(i, click_id)| {
        let path = format!(
            "/api/postback/acme/pro?secret={}&click_id={click_id}&amount=10&txn_id=w{i}",
            s.secret
        );
        async move { app.postback(&path).await }
    });
    for (status, body) in futures::future::join_all(fired).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let page = app
        .conversions_until(key, "limit=100", |b| {
            b["items"]
                .as_array()
                .is_some_and(|i| i.len() == n && i.iter().all(|c| !c["payout"].is_null()))
        })
        .await;
    let mut volumes: Vec<(u64, String)> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| {
            let tier = &c["commission"]["tier"];
            let volume = tier["volume"].as_str().expect("volume").parse().expect("n");
            let expected = if volume >= 15 { "2.00" } else { "1.00" };
            assert_eq!(c["payout"], expected, "{c}");
            assert_eq!(tier["period"], "week");
            (volume, c["payout"].as_str().expect("payout").to_owned())
        })
        .collect();
    volumes.sort();
    let counted: Vec<u64> = volumes.iter().map(|(v, _)| *v).collect();
    assert_eq!(counted, (0..n as u64).collect::<Vec<_>>());
    second.stop().await;
}

on_both_databases!(tiered_pricing_is_a_sequence_across_workers);
