//! Postback intake and the pipeline behind it, over real HTTP, on both databases.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{AffiliateServer, Setup, TestApp};
use crate::on_both_databases;

async fn postback_forms_and_rejections(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let c1 = app.click_id("/api/r/acme/pro?via=jane").await;
    let c2 = app.click_id("/api/r/acme/pro?via=jane").await;
    let c3 = app.click_id("/api/r/acme/pro?via=jane").await;

    // Short form, secret in the header, POST form body with aliases.
    let resp = app
        .http
        .post(app.url("/postback"))
        .header("X-Postback-Secret", &s.secret)
        .form(&[("clickid", c1.as_str()), ("sum", "20"), ("order_id", "A-1")])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<serde_json::Value>().await.expect("json")["status"],
        "accepted"
    );
    // Named form, POST JSON body; the header wins over a wrong secret in the body.
    let resp = app
        .http
        .post(app.url("/api/postback/acme/pro"))
        .header("X-Postback-Secret", &s.secret)
        .json(&json!({"click_id": c2, "amount": 12.5, "txn_id": "A-2", "secret": "wrong"}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    // Payout override.
    let (status, _) = app
        .postback(&format!(
            "/postback?secret={}&click_id={c3}&amount=100&payout=3.33&txn_id=A-3",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK);

    let key = &s.tenant.key;
    let page = app
        .conversions_until(key, "", |b| {
            b["items"]
                .as_array()
                .is_some_and(|i| i.len() == 3 && i.iter().all(|c| c["payout"].is_string()))
        })
        .await;
    let by_txn = |t: &str| {
        page["items"]
            .as_array()
            .and_then(|i| i.iter().find(|c| c["txn_id"] == t).cloned())
            .expect(t)
    };
    assert_eq!(by_txn("A-1")["payout"], "2.00");
    assert_eq!(by_txn("A-2")["amount"], "12.50");
    assert_eq!(by_txn("A-2")["payout"], "1.25");
    assert_eq!(by_txn("A-3")["payout"], "3.33");
    // Pagination by cursor.
    let (_, p1) = app.get("/api/v1/conversions?limit=2", key).await;
    assert_eq!(p1["items"].as_array().map(Vec::len), Some(2));
    let cursor = p1["next_cursor"].as_str().expect("cursor");
    let (_, p2) = app
        .get(&format!("/api/v1/conversions?limit=2&cursor={cursor}"), key)
        .await;
    assert_eq!(p2["items"].as_array().map(Vec::len), Some(1));
    assert!(p2["next_cursor"].is_null());

    // Each bad field is named; nothing is accepted.
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id=abc&amount=ten&currency=dollars&status=paid",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for f in ["click_id", "txn_id", "amount", "currency", "status"] {
        assert!(fields.contains(&f), "{f} not named: {body}");
    }
    // Too much precision is an error, not a rounding.
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={c1}&amount=1.999&txn_id=B-1",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "amount");
    // Oversized body: 413.
    let resp = app
        .http
        .post(app.url("/api/postback/acme/pro"))
        .header("X-Postback-Secret", &s.secret)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("txn_id=x&pad={}", "a".repeat(70 * 1024)))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Broken JSON: 400.
    let resp = app
        .http
        .post(app.url("/api/postback/acme/pro"))
        .header("X-Postback-Secret", &s.secret)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, all) = app.get("/api/v1/conversions", key).await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(3));
}
on_both_databases!(postback_forms_and_rejections);

async fn refund_reverses_the_commission(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let base = format!(
        "/api/postback/acme/pro?secret={}&click_id={click}&amount=79&txn_id=order_1",
        s.secret
    );
    assert_eq!(app.postback(&base).await.0, StatusCode::OK);
    let page = app
        .conversions_until(&s.tenant.key, "txn_id=order_1", |b| {
            b["items"][0]["payout"] == "7.90"
        })
        .await;
    let conversion_id = page["items"][0]["id"].as_str().expect("id").to_owned();
    assert!(jane.next().await.contains("payout=7.90"));
    assert_eq!(app.ledger_sum(&s.tenant.id, &conversion_id).await, (790, 1));

    let (status, body) = app.postback(&format!("{base}&status=refunded")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "accepted");
    app.conversions_until(&s.tenant.key, "txn_id=order_1", |b| {
        b["items"][0]["status"] == "refunded"
    })
    .await;
    // Jane's URL has no {status}: she is not told of the refund as if it
    // were a second sale. The ledger nets to exactly zero.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (sum, n) = app.ledger_sum(&s.tenant.id, &conversion_id).await;
        if n == 2 {
            assert_eq!(sum, 0);
            jane.assert_quiet(Duration::from_millis(500)).await;
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reversal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same refund again is a duplicate and reverses nothing twice.
    let (_, body) = app.postback(&format!("{base}&status=refunded")).await;
    assert_eq!(body["status"], "duplicate");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.ledger_sum(&s.tenant.id, &conversion_id).await, (0, 2));
}
on_both_databases!(refund_reverses_the_commission);

/// The commission step runs inside the attribute job; when it fails there (a
/// plan that cannot be applied), it is queued as a job of its own and retried
/// until it books the commission, once.
async fn a_failed_commission_step_is_queued_and_retried(app: &TestApp) {
    use trcker_storage::entities::commission_plan;
    use trcker_storage::sea_orm::sea_query::Expr;
    use trcker_storage::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let conn = app.services().store.conn.clone();
    let set_plan_value = |value: String| {
        let conn = conn.clone();
        let tenant = s.tenant.id.clone();
        async move {
            commission_plan::Entity::update_many()
                .col_expr(commission_plan::Column::Value, Expr::value(value))
                .filter(commission_plan::Column::TenantId.eq(tenant))
                .exec(&conn)
                .await
                .expect("plan")
                .rows_affected
        }
    };
    let plans = commission_plan::Entity::find()
        .filter(commission_plan::Column::TenantId.eq(s.tenant.id.clone()))
        .all(&conn)
        .await
        .expect("plans");
    assert_eq!(plans.len(), 1, "{plans:?}");
    assert_eq!(set_plan_value("not a rate".into()).await, 1);

    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=80&txn_id=cf-1",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pb = app
        .processed_postback(body["postback_id"].as_str().expect("id"))
        .await;
    assert_eq!(pb.state.as_str(), "processed", "{:?}", pb.reason);
    let conversion_id = pb.conversion_id.expect("conversion");
    // The affiliate hears of the conversion (the step schedules its
    // notification whatever its plan), and nothing is booked yet.
    let heard = jane.next().await;
    assert!(heard.contains(&format!("cid={click}")), "{heard}");
    assert_eq!(
        app.ledger_sum(&s.tenant.id, conversion_id.as_str()).await,
        (0, 0)
    );

    // Mended, the plan applies at the queued job's next try.
    assert_eq!(set_plan_value(plans[0].value.clone()).await, 1);
    app.conversions_until(&s.tenant.key, "txn_id=cf-1", |b| {
        b["items"][0]["payout"] == "8.00"
    })
    .await;
    assert_eq!(
        app.ledger_sum(&s.tenant.id, conversion_id.as_str()).await,
        (800, 1)
    );
    jane.assert_quiet(Duration::from_millis(500)).await;
}
on_both_databases!(a_failed_commission_step_is_queued_and_retried);

async fn concurrent_identical_postbacks_count_once(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let url = app.url(&format!(
        "/api/postback/acme/pro?secret={}&click_id={click}&amount=79&txn_id=storm",
        s.secret
    ));
    let mut handles = Vec::new();
    for _ in 0..100 {
        let http = app.http.clone();
        let url = url.clone();
        handles.push(tokio::spawn(async move {
            let resp = http.get(url).send().await.expect("send");
            (
                resp.status(),
                resp.json::<serde_json::Value>().await.expect("json"),
            )
        }));
    }
    let mut accepted = 0;
    for h in handles {
        let (status, body) = h.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{body}");
        match body["status"].as_str() {
            Some("accepted") => accepted += 1,
            Some("duplicate") => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(accepted, 1);
    let page = app
        .conversions_until(&s.tenant.key, "txn_id=storm", |b| {
            b["items"][0]["payout"] == "7.90"
        })
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let id = page["items"][0]["id"].as_str().expect("id");
    assert_eq!(app.ledger_sum(&s.tenant.id, id).await, (790, 1));
    jane.next().await;
    jane.assert_quiet(Duration::from_millis(800)).await;
}
on_both_databases!(concurrent_identical_postbacks_count_once);

async fn unattributed_postbacks_are_kept_not_converted(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    // A well-formed click id, an hour old, that was never issued.
    let an_hour_ago = (chrono::Utc::now().timestamp_millis() - 3_600_000) as u64;
    let unknown = trcker_domain::ClickId::generate(an_hour_ago).into_string();
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={unknown}&amount=5&txn_id=lost-1",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let postback_id = body["postback_id"].as_str().expect("id").to_owned();
    // It stays in the inbox with its reason, and no conversion is made.
    let row = app.processed_postback(&postback_id).await;
    assert_eq!(row.state.as_str(), "unattributed");
    assert!(
        row.reason
            .as_deref()
            .is_some_and(|r| r.contains("unknown click id")),
        "{:?}",
        row.reason
    );
    assert!(
        !row.raw_params.contains(&s.secret),
        "the secret must be redacted in the log"
    );
    let (_, page) = app
        .get("/api/v1/conversions?txn_id=lost-1", &s.tenant.key)
        .await;
    assert_eq!(page["items"], json!([]));
    jane.assert_quiet(Duration::from_millis(300)).await;
}
on_both_databases!(unattributed_postbacks_are_kept_not_converted);

async fn a_second_worker_process_shares_the_queue(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let workers = app.start_workers().await;
    let n = 60;
    let mut clicks = Vec::new();
    for _ in 0..n {
        clicks.push(app.click_id("/api/r/acme/pro?via=jane").await);
    }
    let mut handles = Vec::new();
    for (i, click) in clicks.iter().enumerate() {
        let http = app.http.clone();
        let url = app.url(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=10&txn_id=t{i}",
            s.secret
        ));
        handles.push(tokio::spawn(async move {
            http.get(url).send().await.expect("send").status()
        }));
    }
    for h in handles {
        assert_eq!(h.await.expect("task"), StatusCode::OK);
    }
    let page = app
        .conversions_until(&s.tenant.key, "limit=200", |b| {
            b["items"]
                .as_array()
                .is_some_and(|i| i.len() == n && i.iter().all(|c| c["payout"] == "1.00"))
        })
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(n));
    for _ in 0..n {
        jane.next().await;
    }
    jane.assert_quiet(Duration::from_millis(500)).await;
    let conn = &app.services().store.conn;
    use trcker_storage::entities::ledger_entry;
    use trcker_storage::sea_orm::{EntityTrait, PaginatorTrait};
    assert_eq!(
        ledger_entry::Entity::find()
            .count(conn)
            .await
            .expect("count"),
        n as u64
    );
    workers.stop().await;
}
on_both_databases!(a_second_worker_process_shares_the_queue);

async fn integration_protections(app: &TestApp) {
    use trcker_domain::protection::{sign, signed_message};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let path = format!("/api/v1/integrations/{}", s.integration_id);
    let patch =
        |body: serde_json::Value| app.api(reqwest::Method::PATCH, &path, Some(key), Some(body));
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let pb = |txn: &str| {
        format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=10&txn_id={txn}",
            s.secret
        )
    };

    // Bad settings are refused, each named, and change nothing.
    let (status, body) =
        patch(json!({"ip_allowlist": ["10.0.0.0/8", "nope"], "rate_limit_per_minute": -5})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["ip_allowlist[1]", "rate_limit_per_minute"]);
    assert_eq!(app.postback(&pb("p0")).await.0, StatusCode::OK);

    // IP allow-list: we come from 127.0.0.1.
    let (status, body) = patch(json!({"ip_allowlist": ["10.0.0.0/8", "2001:db8::/32"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ip_allowlist"], json!(["10.0.0.0/8", "2001:db8::/32"]));
    let (status, body) = app.postback(&pb("p1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "ip-not-allowed", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("127.0.0.1"))
    );
    patch(json!({"ip_allowlist": ["127.0.0.0/8"]})).await;
    assert_eq!(app.postback(&pb("p1")).await.0, StatusCode::OK);

    // Signatures: required, checked against the request, with a replay window.
    patch(json!({"require_signature": true, "ip_allowlist": []})).await;
    let (status, body) = app.postback(&pb("p2")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "bad-signature", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("requires a signature"))
    );
    let signing_key = trcker_domain::secret::hash_secret(&s.secret);
    let url = pb("p2");
    let (path_only, query) = url.split_once('?').expect("query");
    let signed_get = |ts: i64, query: &str| {
        let sig = sign(
            signing_key.as_bytes(),
            &signed_message(&ts.to_string(), "GET", path_only, query, b""),
        );
        app.http
            .get(app.url(&format!("{path_only}?{query}")))
            .header("X-Trcker-Timestamp", ts.to_string())
            .header("X-Trcker-Signature", sig)
            .send()
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        signed_get(now, query).await.expect("send").status(),
        StatusCode::OK
    );
    assert_eq!(
        signed_get(now - 600, query).await.expect("send").status(),
        StatusCode::FORBIDDEN
    );
    // A signature over other parameters does not fit this request.
    let sig = sign(
        signing_key.as_bytes(),
        &signed_message(&now.to_string(), "GET", path_only, query, b""),
    );
    let tampered = app
        .http
        .get(app.url(&format!(
            "{path_only}?{}",
            query.replace("amount=10", "amount=1000")
        )))
        .header("X-Trcker-Timestamp", now.to_string())
        .header("X-Trcker-Signature", sig)
        .send()
        .await
        .expect("send");
    assert_eq!(tampered.status(), StatusCode::FORBIDDEN);
    // Signed POST with a JSON body.
    let body = serde_json::to_vec(&json!({"click_id": click, "amount": "10", "txn_id": "p3"}))
        .expect("json");
    let post_path = "/api/postback/acme/pro";
    let sig = sign(
        signing_key.as_bytes(),
        &signed_message(&now.to_string(), "POST", post_path, "", &body),
    );
    let resp = app
        .http
        .post(app.url(post_path))
        .header("X-Postback-Secret", &s.secret)
        .header("content-type", "application/json")
        .header("X-Trcker-Timestamp", now.to_string())
        .header("X-Trcker-Signature", sig)
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);

    // Rate limit: 429 with Retry-After.
    patch(json!({"require_signature": false, "rate_limit_per_minute": 2})).await;
    let mut codes = Vec::new();
    for i in 0..3 {
        let resp = app
            .http
            .get(app.url(&pb(&format!("r{i}"))))
            .send()
            .await
            .expect("send");
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .expect("header")
                .parse()
                .expect("seconds");
            assert!((1..=60).contains(&retry));
        }
        codes.push(resp.status());
    }
    // Two a minute: the third within the minute is refused.
    assert_eq!(
        codes,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    patch(json!({"rate_limit_per_minute": 0})).await;

    // Aliases, then revocation.
    patch(json!({"param_aliases": {"ref": "click_id", "oid": "txn_id"}})).await;
    let (status, _) = app
        .postback(&format!(
            "/postback?secret={}&ref={click}&oid=alias-1&amount=5",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.conversions_until(key, "txn_id=alias-1", |b| {
        b["items"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    let (status, body) = patch(json!({"status": "revoked"})).await;
    assert_eq!(body["status"], "revoked", "{body}");
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.postback(&pb("p9")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "invalid-secret", "{body}");
    // Every refusal is in the postback log with its reason.
    let (_, log) = app.get(&format!("{path}/postbacks?limit=200"), key).await;
    let forbidden = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["http_status"] == 403)
        .count();
    assert!(forbidden >= 4, "{log}");
}
on_both_databases!(integration_protections);

async fn status_rules_and_conflicting_repeats(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let base = format!(
        "/api/postback/acme/pro?secret={}&click_id={click}&amount=79&txn_id=o1",
        s.secret
    );
    assert_eq!(app.postback(&base).await.0, StatusCode::OK);
    app.conversions_until(&s.tenant.key, "txn_id=o1", |b| {
        b["items"][0]["payout"] == "7.90"
    })
    .await;

    // The same txn_id and status with another amount is no retry: 409, and nothing changes.
    let (status, body) = app.postback(&base.replace("amount=79", "amount=80")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "conflicting-duplicate", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("amount")),
        "{body}"
    );

    // approved -> refunded is allowed; refunded -> approved is refused with the reason.
    assert_eq!(
        app.postback(&format!("{base}&status=refunded")).await.0,
        StatusCode::OK
    );
    app.conversions_until(&s.tenant.key, "txn_id=o1", |b| {
        b["items"][0]["status"] == "refunded"
    })
    .await;
    let (status, body) = app.postback(&format!("{base}&status=pending")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "status");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is refunded; it cannot become pending"))
    );
    let (_, page) = app
        .get("/api/v1/conversions?txn_id=o1", &s.tenant.key)
        .await;
    assert_eq!(page["items"][0]["status"], "refunded");
    assert_eq!(page["items"][0]["amount"], "79.00");
}
on_both_databases!(status_rules_and_conflicting_repeats);

/// An accepted postback row as the inbox stores it, not yet attributed.
fn stored_postback(
    s: &Setup,
    tenant: &trcker_storage::TenantId,
    pairs: &[(&str, &str)],
) -> trcker_storage::entities::postback::Model {
    let get = |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_owned());
    let txn = get("txn_id").expect("txn_id");
    let status = get("status").unwrap_or_else(|| "approved".into());
    trcker_storage::entities::postback::Model {
        id: trcker_storage::ids::PostbackId::generate(),
        tenant_id: tenant.clone(),
        created_at: chrono::Utc::now(),
        integration_id: s.integration_id.as_str().into(),
        program_id: s.program_id.as_str().into(),
        txn_id: Some(txn.clone()),
        status_param: Some(status.clone()),
        dedupe_key: Some(format!("{}\u{1f}{txn}\u{1f}{status}", s.program_id)),
        raw_params: serde_json::to_string(pairs).expect("json"),
        source_ip: Some("127.0.0.1".into()),
        method: "GET".into(),
        http_status: 200,
        outcome: trcker_storage::entities::postback::Outcome::Accepted,
        reason: None,
        state: trcker_storage::entities::postback::State::Received,
        conversion_id: None,
        duplicate_of: None,
        is_test: false,
        processed_at: None,
    }
}

/// A postback stored but never queued (the process died between the commit and
/// the enqueue) is picked up by the inbox sweeper.
async fn the_sweeper_queues_a_stored_postback_that_has_no_job(app: &TestApp) {
    use trcker_storage::sea_orm::{ActiveModelTrait, IntoActiveModel};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let tenant = app.tenant_id("acme").await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let row = stored_postback(
        &s,
        &tenant,
        &[
            ("click_id", click.as_str()),
            ("amount", "79"),
            ("txn_id", "orphan-1"),
        ],
    );
    row.into_active_model()
        .reset_all()
        .insert(&app.services().store.conn)
        .await
        .expect("insert");
    let page = app
        .conversions_until(&s.tenant.key, "txn_id=orphan-1", |b| {
            b["items"][0]["payout"] == "7.90"
        })
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert!(jane.next().await.contains("payout=7.90"));
}
on_both_databases!(the_sweeper_queues_a_stored_postback_that_has_no_job);

/// One attribute job carries a batch: two statuses of one transaction are
/// taken in order (the second moves the conversion the first made), a
/// postback that cannot be attributed is kept with its reason beside the
/// others, and every conversion gets one commission and its notifications.
async fn one_job_attributes_a_batch_in_order(app: &TestApp) {
    use trcker_services::pipeline::attribute::AttributeJob;
    use trcker_storage::sea_orm::{ActiveModelTrait, IntoActiveModel};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let tenant = app.tenant_id("acme").await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let other = app.click_id("/api/r/acme/pro?via=jane").await;
    let rows = [
        stored_postback(
            &s,
            &tenant,
            &[
                ("click_id", click.as_str()),
                ("amount", "79"),
                ("txn_id", "b-1"),
                ("status", "pending"),
            ],
        ),
        stored_postback(
            &s,
            &tenant,
            &[
                ("click_id", click.as_str()),
                ("amount", "79"),
                ("txn_id", "b-1"),
                ("status", "approved"),
            ],
        ),
        stored_postback(
            &s,
            &tenant,
            &[
                ("click_id", other.as_str()),
                ("amount", "50"),
                ("txn_id", "b-2"),
                ("currency", "EUR"),
            ],
        ),
        stored_postback(
            &s,
            &tenant,
            &[
                ("click_id", other.as_str()),
                ("amount", "20"),
                ("txn_id", "b-3"),
            ],
        ),
    ];
    let services = app.services();
    for row in &rows {
        row.clone()
            .into_active_model()
            .reset_all()
            .insert(&services.store.conn)
            .await
            .expect("insert");
    }
    services
        .queue
        .push(&AttributeJob {
            postback_ids: rows.iter().map(|r| r.id.clone()).collect(),
            ..AttributeJob::one(tenant.clone(), "")
        })
        .await
        .expect("push");
    let mut done = Vec::new();
    for row in &rows {
        done.push(app.processed_postback(row.id.as_str()).await);
    }
    assert_eq!(done[0].state.as_str(), "processed", "{:?}", done[0].reason);
    assert_eq!(done[1].state.as_str(), "processed");
    assert_eq!(done[0].conversion_id, done[1].conversion_id);
    assert!(
        done[1]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("moved from pending to approved"),
        "{:?}",
        done[1].reason
    );
    assert_eq!(done[2].state.as_str(), "unattributed");
    assert!(
        done[2]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("currency EUR"),
        "{:?}",
        done[2].reason
    );
    assert_eq!(done[3].state.as_str(), "processed");
    let b1 = done[0].conversion_id.clone().expect("conversion");
    let page = app
        .conversions_until(&s.tenant.key, "txn_id=b-1", |b| {
            b["items"][0]["status"] == "approved" && b["items"][0]["payout"] == "7.90"
        })
        .await;
    assert_eq!(page["items"][0]["id"], b1.as_str());
    app.conversions_until(&s.tenant.key, "txn_id=b-3", |b| {
        b["items"][0]["payout"] == "2.00"
    })
    .await;
    assert_eq!(app.ledger_sum(&s.tenant.id, b1.as_str()).await, (790, 1));
    // b-1 made (pending) and b-3: one call each, in any order. Jane's URL
    // has no {status}, so b-1's approval is not told to her as a second sale.
    let heard = [jane.next().await, jane.next().await];
    let calls = |cid: &str| {
        heard
            .iter()
            .filter(|u| u.contains(&format!("cid={cid}")))
            .count()
    };
    assert_eq!(calls(&click), 1, "{heard:?}");
    assert_eq!(calls(&other), 1, "{heard:?}");
    jane.assert_quiet(Duration::from_millis(500)).await;
}
on_both_databases!(one_job_attributes_a_batch_in_order);

/// Pushing a job whose idempotency key exists is a no-op on both databases (the
/// sweepers and re-run jobs rely on it).
async fn pushing_a_job_twice_is_harmless(app: &TestApp) {
    use trcker_services::pipeline::attribute::AttributeJob;
    let services = app.services();
    // A tenant with no such postbacks: the jobs run and change nothing.
    app.create_tenant("nobody").await;
    let tenant = app.tenant_id("nobody").await;
    let job = |id: &str| AttributeJob::one(tenant.clone(), id);
    services
        .queue
        .push(&job("pbk_a"))
        .await
        .expect("first push");
    services
        .queue
        .push(&job("pbk_a"))
        .await
        .expect("the same again");
    services
        .queue
        .push_all(&[job("pbk_a"), job("pbk_b")])
        .await
        .expect("a mix of old and new");
    services.pipeline.sweep().await.expect("a sweep");
    let conn = &services.store.conn;
    let jobs = if services.store.is_postgres() {
        "apalis.jobs"
    } else {
        "Jobs"
    };
    for key in ["pbk_a", "pbk_b"] {
        use trcker_storage::sea_orm::{ConnectionTrait, Statement};
        let sql = format!("SELECT COUNT(*) AS n FROM {jobs} WHERE idempotency_key = '{key}'");
        let n: i64 = conn
            .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
            .await
            .expect("query")
            .expect("a row")
            .try_get("", "n")
            .expect("count");
        assert_eq!(n, 1, "jobs keyed {key}");
    }
}
on_both_databases!(pushing_a_job_twice_is_harmless);

/// A job lost inside a live process (its worker fetched it, then broke and was
/// restarted under the same name, which keeps heartbeating) is handed back
/// after the stuck limit, runs again, and changes nothing.
async fn a_job_stuck_in_a_live_worker_is_handed_back(app: &TestApp) {
    use trcker_storage::sea_orm::{ConnectionTrait, Statement};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=79&txn_id=o1",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pb = body["postback_id"]
        .as_str()
        .expect("postback id")
        .to_owned();
    let row = app.processed_postback(&pb).await;
    let conversion = row.conversion_id.expect("conversion");
    jane.next().await;

    let services = app.services();
    let conn = &services.store.conn;
    let (jobs, workers, ago) = if services.store.is_postgres() {
        (
            "apalis.jobs",
            "apalis.workers",
            "NOW() - interval '120 seconds'",
        )
    } else {
        ("Jobs", "Workers", "strftime('%s', 'now') - 120")
    };
    let status_of_job = || {
        let sql = format!("SELECT status FROM {jobs} WHERE idempotency_key = '{pb}'");
        async move {
            conn.query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
                .await
                .expect("query")
                .expect("the attribute job")
                .try_get::<String>("", "status")
                .expect("status")
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of_job().await != "Done" {
        assert!(
            Instant::now() < deadline,
            "the attribute job never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The job is marked running, two minutes ago, by a worker that is alive.
    let moved = conn
        .execute_unprepared(&format!(
            "UPDATE {jobs} SET status = 'Running', done_at = NULL, lock_at = {ago}, \
             lock_by = (SELECT id FROM {workers} WHERE id LIKE '%-attribute' LIMIT 1) \
             WHERE idempotency_key = '{pb}'"
        ))
        .await
        .expect("update");
    assert_eq!(moved.rows_affected(), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while status_of_job().await != "Done" {
        assert!(
            Instant::now() < deadline,
            "a job stuck in a live worker was never handed back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.ledger_sum(&s.tenant.id, conversion.as_str()).await,
        (790, 1)
    );
    jane.assert_quiet(Duration::from_millis(500)).await;
}
on_both_databases!(a_job_stuck_in_a_live_worker_is_handed_back);

/// A worker that stops heartbeating inside a live process (its loop wedged;
/// nothing failed, so apalis's monitor sees nothing) is noticed by the
/// watchdog: the process starts its workers again, under new names, and goes
/// on attributing.
async fn a_wedged_worker_is_replaced(app: &TestApp) {
    use trcker_storage::sea_orm::{ConnectionTrait, Statement};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let services = app.services();
    let conn = &services.store.conn;
    let (workers, ago) = if services.store.is_postgres() {
        ("apalis.workers", "NOW() - interval '120 seconds'")
    } else {
        ("Workers", "strftime('%s', 'now') - 120")
    };
    let names = || async {
        let sql = format!("SELECT id FROM {workers} WHERE id LIKE '%-commission'");
        conn.query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
            .await
            .expect("workers")
            .into_iter()
            .map(|r| r.try_get::<String>("", "id").expect("id"))
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = names().await;
    while before.is_empty() {
        assert!(Instant::now() < deadline, "no commission worker registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
        before = names().await;
    }
    // The commission worker looks silent for two minutes, whatever its
    // heartbeat says, until another one appears.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        conn.execute_unprepared(&format!(
            "UPDATE {workers} SET last_seen = {ago} WHERE id = '{}'",
            before[0]
        ))
        .await
        .expect("update");
        if names().await.iter().any(|n| !before.contains(n)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wedged worker was never replaced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    let (status, body) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=79&txn_id=w1",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.conversions_until(&s.tenant.key, "txn_id=w1", |b| {
        b["items"][0]["payout"] == "7.90"
    })
    .await;
    assert!(jane.next().await.contains("payout=7.90"));
}
on_both_databases!(a_wedged_worker_is_replaced);
