//! Goals with their own commissions, per-affiliate plans, coupons, currencies,
//! test postbacks and re-attribution, over real HTTP on both databases.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{AffiliateServer, TestApp};
use crate::on_both_databases;

async fn postback_state(app: &TestApp, id: &str) -> (String, String) {
    let row = app.processed_postback(id).await;
    (row.state.to_string(), row.reason.unwrap_or_default())
}

fn conversion<'a>(page: &'a Value, txn: &str) -> &'a Value {
    page["items"]
        .as_array()
        .and_then(|i| i.iter().find(|c| c["txn_id"] == txn))
        .unwrap_or(&Value::Null)
}

async fn goals_coupons_and_reattribution(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let plans = format!("/api/v1/programs/{}/commission-plans", s.program_id);

    // Bad plans are refused, each field named.
    let (status, body) = app
        .post(&plans, key, json!({"event": "Big Sale!", "affiliate_id": "aff_nope", "commission": {"type": "tiered", "value": "1"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["affiliate_id", "event", "commission"]);
    // A lead pays a flat 2.00; Jane's own sale plan pays 20%.
    let (status, lead) = app
        .post(
            &plans,
            key,
            json!({"event": "lead", "commission": {"type": "flat", "value": "2"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lead}");
    assert_eq!(
        lead["commission"],
        json!({"type": "flat", "value": "2.00", "percent": null, "max": null, "tiers": null})
    );
    let (status, _) = app
        .post(&plans, key, json!({"affiliate_id": s.affiliate_id, "commission": {"type": "percent", "value": "20"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, list) = app.get(&plans, key).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3), "{list}");

    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let pb = |extra: &str| {
        format!(
            "/api/postback/acme/pro?secret={}&click_id={click}{extra}",
            s.secret
        )
    };
    for extra in [
        "&txn_id=L1&event=lead",
        "&txn_id=S1&amount=100",
        "&txn_id=T1&amount=10&test=1",
    ] {
        assert_eq!(app.postback(&pb(extra)).await.0, StatusCode::OK, "{extra}");
    }
    // An event without a plan is not a goal: kept unattributed, with why.
    let (status, install) = app.postback(&pb("&txn_id=I1&event=install&amount=5")).await;
    assert_eq!(status, StatusCode::OK, "{install}");
    let row = app
        .processed_postback(install["postback_id"].as_str().expect("postback_id"))
        .await;
    assert!(
        row.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("event 'install' is not a goal of this offer")),
        "{:?}",
        row.reason
    );
    let page = app
        .conversions_until(key, "limit=50", |b| {
            b["items"]
                .as_array()
                .is_some_and(|i| i.len() == 3 && i.iter().all(|c| c["payout"].is_string()))
        })
        .await;
    assert_eq!(conversion(&page, "L1")["payout"], "2.00");
    assert_eq!(conversion(&page, "L1")["event"], "lead");
    assert_eq!(conversion(&page, "S1")["payout"], "20.00");
    assert_eq!(
        conversion(&page, "S1")["commission_explanation"],
        "20% of 100.00 USD = 20.00 USD (affiliate's own plan)"
    );
    assert_eq!(conversion(&page, "T1")["is_test"], true);
    assert_eq!(conversion(&page, "S1")["is_test"], false);

    // Coupons attribute without a click.
    let (status, coupon) = app
        .post(
            "/api/v1/coupons",
            key,
            json!({"program_id": s.program_id, "affiliate_id": s.affiliate_id, "code": "SPRING"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{coupon}");
    let (status, _) = app
        .post(
            "/api/v1/coupons",
            key,
            json!({"program_id": s.program_id, "affiliate_id": s.affiliate_id, "code": "SPRING"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let coupon_pb = |code: &str, txn: &str| {
        format!(
            "/api/postback/acme/pro?secret={}&coupon_code={code}&amount=50&txn_id={txn}",
            s.secret
        )
    };
    assert_eq!(
        app.postback(&coupon_pb("SPRING", "C1")).await.0,
        StatusCode::OK
    );
    let page = app
        .conversions_until(key, "txn_id=C1", |b| b["items"][0]["payout"].is_string())
        .await;
    assert_eq!(page["items"][0]["affiliate_id"], s.affiliate_id.as_str());
    assert_eq!(page["items"][0]["coupon_code"], "SPRING");
    assert!(page["items"][0]["click_id"].is_null());

    // An unknown coupon is kept with its reason, and attributed once the coupon exists.
    let (_, body) = app.postback(&coupon_pb("AUTUMN", "C2")).await;
    let pending_id = body["postback_id"].as_str().expect("id").to_owned();
    let (state, reason) = postback_state(app, &pending_id).await;
    assert_eq!(state, "unattributed");
    assert!(reason.contains("unknown coupon code AUTUMN"), "{reason}");
    let (status, _) = app
        .post(
            &format!("/api/v1/postbacks/{pending_id}/reattribute"),
            key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(postback_state(app, &pending_id).await.0, "unattributed");
    app.post(
        "/api/v1/coupons",
        key,
        json!({"program_id": s.program_id, "affiliate_id": s.affiliate_id, "code": "AUTUMN"}),
    )
    .await;
    let (status, body) = app
        .post(
            &format!("/api/v1/postbacks/{pending_id}/reattribute"),
            key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.conversions_until(key, "txn_id=C2", |b| b["items"][0]["payout"] == "10.00")
        .await;
    // Only unattributed postbacks; only one's own.
    let (status, _) = app
        .post(
            &format!("/api/v1/postbacks/{pending_id}/reattribute"),
            key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let other = app.create_tenant("globex").await;
    let (status, _) = app
        .post(
            &format!("/api/v1/postbacks/{pending_id}/reattribute"),
            &other.key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Another currency than the program's is refused with its reason, not converted at a guess.
    let (_, body) = app.postback(&pb("&txn_id=E1&amount=10&currency=EUR")).await;
    let (state, reason) = postback_state(app, body["postback_id"].as_str().expect("id")).await;
    assert_eq!(state, "unattributed");
    assert!(
        reason.contains("currency EUR differs from the offer's USD"),
        "{reason}"
    );
}
on_both_databases!(goals_coupons_and_reattribution);

/// Arbitrary postbacks never panic the receiver and are never accepted without
/// a valid secret.
async fn arbitrary_postbacks_without_a_secret_are_never_accepted(app: &TestApp) {
    use rand::Rng;
    use trcker_services::intake::{IntakeOutcome, PostbackRequest};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let services = app.services();
    let names = [
        "click_id", "txn_id", "amount", "payout", "currency", "event", "status", "test", "secret",
        "sum", "x", "",
    ];
    let mut rng = rand::rng();
    let random_string = |rng: &mut rand::rngs::ThreadRng| -> String {
        let len = rng.random_range(0..70);
        (0..len)
            .map(|_| char::from_u32(rng.random_range(0x20..0x3000)).unwrap_or('?'))
            .collect()
    };
    for i in 0..300 {
        let mut pairs = Vec::new();
        for _ in 0..rng.random_range(0..10) {
            let name = names[rng.random_range(0..names.len())].to_owned();
            let value = match rng.random_range(0..4) {
                0 => click.clone(),
                1 => format!("{}", rng.random_range(0..100000)),
                _ => random_string(&mut rng),
            };
            pairs.push((name, value));
        }
        // Sometimes a wrong secret of the right shape, sometimes none.
        let secret = match i % 3 {
            0 => None,
            1 => Some(trcker_domain::secret::new_postback_secret()),
            _ => Some(random_string(&mut rng)),
        };
        let outcome = services
            .intake
            .intake(PostbackRequest {
                brand: (i % 2 == 0).then(|| "acme".into()),
                offer: (i % 2 == 0).then(|| "pro".into()),
                secret,
                pairs,
                method: "GET".into(),
                ..Default::default()
            })
            .await;
        assert!(
            !matches!(
                outcome,
                Ok(IntakeOutcome::Accepted { .. }) | Ok(IntakeOutcome::Duplicate { .. })
            ),
            "accepted without a valid secret: {outcome:?}"
        );
    }
    // The real secret still works afterwards.
    let (status, _) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&txn_id=ok",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
}
on_both_databases!(arbitrary_postbacks_without_a_secret_are_never_accepted);

/// The tenant-wide postback log with filters, and re-attribution of every
/// unattributed postback a filter names once their cause is fixed.
async fn unattributed_postbacks_listed_and_reattributed_by_filter(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let pb = |q: &str| format!("/api/postback/acme/pro?secret={}{q}", s.secret);
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let mut unattributed = Vec::new();
    for code in ["X1", "X2", "X3"] {
        let (_, body) = app
            .postback(&pb(&format!("&coupon_code={code}&amount=50&txn_id={code}")))
            .await;
        unattributed.push(body["postback_id"].as_str().expect("id").to_owned());
    }
    // A click id of the right shape that no click has.
    let mut unknown = click.clone();
    let last = if unknown.ends_with('0') { "1" } else { "0" };
    unknown.replace_range(unknown.len() - 1.., last);
    let (_, lost) = app
        .postback(&pb(&format!("&click_id={unknown}&amount=5&txn_id=L1")))
        .await;
    let lost = lost["postback_id"].as_str().expect("id").to_owned();
    assert_eq!(
        app.postback(&pb(&format!("&click_id={click}&amount=10&txn_id=OK")))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.postback(&pb("&click_id=x&amount=ten&txn_id=BAD"))
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    for id in unattributed.iter().chain([&lost]) {
        app.processed_postback(id).await;
    }

    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| p["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let list = |query: String| async move {
        let (status, page) = app.get(&format!("/api/v1/postbacks{query}"), key).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        page
    };
    let page = list("?state=unattributed".into()).await;
    let mut expected: Vec<String> = unattributed.iter().chain([&lost]).cloned().collect();
    expected.reverse();
    assert_eq!(ids(&page), expected);
    let page = list("?reason=unknown%20coupon".into()).await;
    assert_eq!(ids(&page).len(), 3, "{page}");
    let page = list("?outcome=rejected".into()).await;
    assert_eq!(page["items"][0]["http_status"], 422, "{page}");
    assert_eq!(ids(&page).len(), 1);
    let page = list(format!("?integration_id={}&test=true", s.integration_id)).await;
    assert!(ids(&page).is_empty(), "{page}");
    // Every postback once, over pages of two.
    let mut all = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = list(query.clone()).await;
        all.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(all.len(), 6, "{all:?}");
    for bad in [
        "?outcome=lost",
        "?state=gone",
        "?integration_id=nope",
        "?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
        "?cursor=nope",
    ] {
        let (status, p) = app.get(&format!("/api/v1/postbacks{bad}"), key).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {p}");
    }

    // Another tenant sees none of them and re-attributes none.
    let globex = app.create_tenant("globex").await;
    let (_, theirs) = app.get("/api/v1/postbacks", &globex.key).await;
    assert_eq!(theirs["items"], json!([]));
    let (status, done) = app
        .post("/api/v1/postbacks/reattribute", &globex.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["requeued"], json!([]));
    // A read key may not.
    let (_, read) = app
        .post(
            "/api/v1/api-keys",
            key,
            json!({"name": "r", "scope": "read"}),
        )
        .await;
    let (status, _) = app
        .post(
            "/api/v1/postbacks/reattribute",
            read["token"].as_str().expect("token"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The coupons exist now: those three, and only they, are attributed.
    for code in ["X1", "X2", "X3"] {
        let (status, c) = app
            .post(
                "/api/v1/coupons",
                key,
                json!({"program_id": s.program_id, "affiliate_id": s.affiliate_id, "code": code}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{c}");
    }
    let (status, done) = app
        .post(
            "/api/v1/postbacks/reattribute",
            key,
            json!({"reason": "unknown coupon", "integration_id": s.integration_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["requeued"], json!(unattributed), "{done}");
    assert_eq!(done["more"], false);
    for txn in ["X1", "X2", "X3"] {
        app.conversions_until(key, &format!("txn_id={txn}"), |b| {
            b["items"][0]["payout"] == "5.00"
        })
        .await;
    }
    assert_eq!(postback_state(app, &lost).await.0, "unattributed");
    // Again: nothing left that matches.
    let (_, again) = app
        .post(
            "/api/v1/postbacks/reattribute",
            key,
            json!({"reason": "unknown coupon"}),
        )
        .await;
    assert_eq!(again["requeued"], json!([]), "{again}");
}

on_both_databases!(unattributed_postbacks_listed_and_reattributed_by_filter);

/// A sale by Jane of `amount`, priced; its payout.
async fn priced_sale(app: &TestApp, s: &crate::harness::Setup, txn: &str, amount: &str) -> Value {
    app.sale(s, "/api/r/acme/pro?via=jane", txn, amount, "")
        .await["payout"]
        .clone()
}

/// A plan is read by its id, and an override or a goal is archived: new
/// sales fall back to the program's plan, the priced ones keep their price;
/// the program's own sale plan, and a plan no longer in force, are not
/// archived.
async fn plans_are_read_and_archived(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let plans = format!("/api/v1/programs/{}/commission-plans", s.program_id);
    let (status, own) = app
        .post(
            &plans,
            key,
            json!({"affiliate_id": s.affiliate_id, "commission": {"type": "percent", "value": "20"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    let own_id = own["id"].as_str().expect("id").to_owned();
    assert_eq!(priced_sale(app, &s, "p1", "100").await, "20.00");

    let (status, read) = app
        .get(&format!("/api/v1/commission-plans/{own_id}"), key)
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["affiliate_id"], s.affiliate_id.as_str(), "{read}");
    assert!(read["retired_at"].is_null(), "{read}");

    // Archived: Jane's next sale is priced by the program's 10 %.
    let archive = format!("/api/v1/commission-plans/{own_id}/archive");
    let (status, archived) = app.post(&archive, key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{archived}");
    assert!(archived["retired_at"].is_string(), "{archived}");
    assert_eq!(priced_sale(app, &s, "p2", "100").await, "10.00");
    let (_, first) = app.get("/api/v1/conversions?txn_id=p1", key).await;
    assert_eq!(first["items"][0]["payout"], "20.00", "{first}");
    let (_, listed) = app.get(&plans, key).await;
    assert!(
        listed["items"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["id"] != own_id.as_str())),
        "{listed}"
    );

    // Refusals change nothing and say why.
    let (status, p) = app.post(&archive, key, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["code"], "commission-plan-not-archivable", "{p}");
    let program_plan = listed["items"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|p| p["affiliate_id"].is_null() && p["event"] == "sale")
        })
        .and_then(|p| p["id"].as_str())
        .expect("the program's sale plan")
        .to_owned();
    let (status, p) = app
        .post(
            &format!("/api/v1/commission-plans/{program_plan}/archive"),
            key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("own sale plan")),
        "{p}"
    );
    assert_eq!(priced_sale(app, &s, "p3", "100").await, "10.00");
    for path in [
        "/api/v1/commission-plans/pln_unknown".to_owned(),
        "/api/v1/commission-plans/pln_unknown/archive".to_owned(),
    ] {
        let (status, p) = if path.ends_with("archive") {
            app.post(&path, key, json!({})).await
        } else {
            app.get(&path, key).await
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
        assert_eq!(p["code"], "commission-plan-not-found", "{p}");
    }
    // The audit log keeps the archiving.
    let (_, audit) = app
        .get(
            &format!("/api/v1/audit-log?resource_id={own_id}&action=commission_plan.archive"),
            key,
        )
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
}
on_both_databases!(plans_are_read_and_archived);
