//! Notification endpoints over real HTTP: webhooks signed per Standard
//! Webhooks (checked with the official `standardwebhooks` crate, rotation
//! overlap included), postbacks by GET and POST, events an affiliate's
//! tracker can tell apart, per-program overrides, and every rejection.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use standardwebhooks::Webhook;

use crate::harness::{AffiliateServer, Setup, TestApp};
use crate::on_both_databases;

async fn create_endpoint(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, ep) = app.post("/api/v1/endpoints", key, body).await;
    assert_eq!(status, StatusCode::CREATED, "{ep}");
    ep
}

/// A sale through the quickstart setup's link and integration.
async fn sale(app: &TestApp, s: &Setup, slug: &str, extra: &str) -> String {
    let click = app.click_id(&format!("/api/r/{slug}/pro?via=jane")).await;
    let (status, body) = app
        .postback(&format!(
            "/api/postback/{slug}/pro?secret={}&click_id={click}&amount=79&txn_id=o-{click}{extra}",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    click
}

async fn refund(app: &TestApp, s: &Setup, slug: &str, click: &str) {
    let (status, body) = app
        .postback(&format!(
            "/api/postback/{slug}/pro?secret={}&click_id={click}&amount=79&txn_id=o-{click}&status=refunded",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn webhooks_are_signed_per_standard_webhooks(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let hook = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let ep = create_endpoint(
        app,
        key,
        json!({"affiliate_id": s.affiliate_id, "kind": "webhook", "url": format!("{}/hook", hook.url)}),
    )
    .await;
    let secret = ep["secret"].as_str().expect("secret shown once").to_owned();
    assert!(secret.starts_with("whsec_"), "{ep}");
    assert_eq!(ep["method"], "POST");
    assert_eq!(
        ep["events"],
        json!(["created", "approved", "rejected", "reversed", "paid"])
    );
    let id = ep["id"].as_str().expect("id").to_owned();
    let (_, again) = app.get(&format!("/api/v1/endpoints/{id}"), key).await;
    assert!(
        again.get("secret").is_none(),
        "the secret is shown once: {again}"
    );

    let click = sale(app, &s, "acme", "").await;
    let got = hook.next_request().await;
    assert_eq!(got.method, "POST");
    assert_eq!(got.uri, "/hook");
    assert_eq!(
        got.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let verifier = Webhook::new(&secret).expect("secret");
    verifier
        .verify(got.body.as_bytes(), &got.headers)
        .expect("the official verifier accepts the delivery");
    let event: Value = serde_json::from_str(&got.body).expect("json");
    assert_eq!(event["type"], "conversion.created", "{event}");
    assert_eq!(event["data"]["click_id"], click.as_str());
    assert_eq!(event["data"]["payout"], "7.90");
    assert_eq!(event["data"]["status"], "approved");
    assert_eq!(event["data"]["test"], false);
    let webhook_id = got.headers["webhook-id"].to_str().expect("id").to_owned();
    assert!(webhook_id.starts_with("dlv_"), "{webhook_id}");

    // What the verifier refuses: another secret, an empty one, a tampered
    // body, a truncated signature, `v1,` alone, a stale timestamp.
    let other = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
    assert!(other.verify(got.body.as_bytes(), &got.headers).is_err());
    let empty = Webhook::new("whsec_").expect("empty secret");
    assert!(empty.verify(got.body.as_bytes(), &got.headers).is_err());
    assert!(
        verifier
            .verify(got.body.replace("7.90", "79.00").as_bytes(), &got.headers)
            .is_err()
    );
    let signature = got.headers["webhook-signature"]
        .to_str()
        .expect("sig")
        .to_owned();
    for forged in [&signature[..signature.len() - 4], "v1,"] {
        let mut headers = got.headers.clone();
        headers.insert("webhook-signature", forged.parse().expect("header"));
        assert!(
            verifier.verify(got.body.as_bytes(), &headers).is_err(),
            "{forged}"
        );
    }
    let mut stale = got.headers.clone();
    let old = chrono::Utc::now().timestamp() - 3600;
    stale.insert(
        "webhook-timestamp",
        old.to_string().parse().expect("header"),
    );
    assert!(verifier.verify(got.body.as_bytes(), &stale).is_err());

    // A rotation with an overlap: both secrets sign, each verifies.
    let (status, rotated) = app
        .post(
            &format!("/api/v1/endpoints/{id}/rotate-secret"),
            key,
            json!({"overlap_hours": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("new secret").to_owned();
    assert_ne!(new_secret, secret);
    assert!(rotated["previous_secret_until"].is_string(), "{rotated}");
    sale(app, &s, "acme", "").await;
    let got = hook.next_request().await;
    let signatures = got.headers["webhook-signature"].to_str().expect("sig");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    for s in [&secret, &new_secret] {
        Webhook::new(s)
            .expect("secret")
            .verify(got.body.as_bytes(), &got.headers)
            .expect("both secrets verify during the overlap");
    }
    // Without an overlap the old secret stops at once.
    let (_, rotated) = app
        .post(
            &format!("/api/v1/endpoints/{id}/rotate-secret"),
            key,
            json!({"overlap_hours": 0}),
        )
        .await;
    let newest = rotated["secret"].as_str().expect("secret").to_owned();
    sale(app, &s, "acme", "").await;
    let got = hook.next_request().await;
    assert!(
        Webhook::new(&new_secret)
            .expect("secret")
            .verify(got.body.as_bytes(), &got.headers)
            .is_err()
    );
    Webhook::new(&newest)
        .expect("secret")
        .verify(got.body.as_bytes(), &got.headers)
        .expect("the newest secret verifies");
}
on_both_databases!(webhooks_are_signed_per_standard_webhooks);

/// The quickstart's refund must not reach a status-blind template as if it
/// were a second sale; a template with `{status}`, a reversal URL or a
/// webhook tells the refund apart.
async fn refunds_reach_only_trackers_that_tell_them_apart(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let aware = AffiliateServer::start(200).await;
    let hook = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let (_, list) = app
        .get(
            &format!("/api/v1/endpoints?affiliate_id={}", s.affiliate_id),
            key,
        )
        .await;
    assert_eq!(list["items"][0]["events"], json!(["created"]), "{list}");
    create_endpoint(
        app,
        key,
        json!({"affiliate_id": s.affiliate_id, "kind": "postback",
               "url": format!("{}/s?cid={{click_id}}&status={{status}}&test={{test}}", aware.url)}),
    )
    .await;
    create_endpoint(
        app,
        key,
        json!({"affiliate_id": s.affiliate_id, "kind": "postback",
               "url": format!("{}/sale?cid={{click_id}}", hook.url),
               "reversal_url": format!("{}/refund?cid={{click_id}}", hook.url)}),
    )
    .await;
    let click = sale(app, &s, "acme", "").await;
    assert_eq!(jane.next().await, format!("/pb?cid={click}&payout=7.90"));
    assert_eq!(
        aware.next().await,
        format!("/s?cid={click}&status=approved&test=0")
    );
    assert_eq!(hook.next().await, format!("/sale?cid={click}"));
    refund(app, &s, "acme", &click).await;
    assert_eq!(
        aware.next().await,
        format!("/s?cid={click}&status=refunded&test=0")
    );
    assert_eq!(hook.next().await, format!("/refund?cid={click}"));
    jane.assert_quiet(Duration::from_millis(1500)).await;
}
on_both_databases!(refunds_reach_only_trackers_that_tell_them_apart);

/// POST postbacks send their body template (form or JSON) every attempt;
/// an endpoint for one program replaces the general one for it; test
/// conversions reach only endpoints that take them.
async fn post_bodies_overrides_and_test_conversions(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let posted = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    // Jane's general endpoint is replaced for program pro by a JSON POST.
    create_endpoint(
        app,
        key,
        json!({"affiliate_id": s.affiliate_id, "program_id": s.program_id, "kind": "postback",
               "url": format!("{}/json", posted.url), "method": "POST", "body_format": "json",
               "body_template": "{\"cid\": \"{click_id}\", \"payout\": {payout}, \"sub\": \"{sub1}\"}",
               "send_test": false}),
    )
    .await;
    let click = app.click_id("/api/r/acme/pro?via=jane&sub1=a%22b").await;
    let (status, _) = app
        .postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=79&txn_id=j1",
            s.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = posted.next_request().await;
    assert_eq!(got.method, "POST");
    assert_eq!(
        got.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = serde_json::from_str(&got.body).expect("the body is JSON");
    assert_eq!(body, json!({"cid": click, "payout": 7.90, "sub": "a\"b"}));
    // A test conversion skips the endpoint that does not take tests.
    let (status, trace) = app
        .post(
            &format!("/api/v1/integrations/{}/test-fire", s.integration_id),
            key,
            json!({"affiliate_id": s.affiliate_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{trace}");
    assert_eq!(trace["complete"], true, "{trace}");
    assert_eq!(trace["notifications"], json!([]), "{trace}");
    jane.assert_quiet(Duration::from_millis(500)).await;

    // A form POST to a second program's conversions falls back to Jane's
    // general endpoint (no override there).
    let form = create_endpoint(
        app,
        key,
        json!({"affiliate_id": s.affiliate_id, "kind": "postback", "url": format!("{}/form", posted.url),
               "method": "POST", "body_template": "cid={click_id}&amount={amount}&status={status}"}),
    )
    .await;
    assert_eq!(form["body_format"], "form");
    let (status, program) = app
        .post(
            "/api/v1/programs",
            key,
            json!({"name":"Lite","slug":"lite","destination_url":"https://shop.example/lite",
                   "currency":"USD","commission":{"type":"flat","value":"2"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{program}");
    let (_, integration) = app
        .post(
            "/api/v1/integrations",
            key,
            json!({"name": "Lite shop", "program_id": program["id"]}),
        )
        .await;
    let click = app.click_id("/api/r/acme/lite?via=jane").await;
    let (status, _) = app
        .postback(&format!(
            "/api/postback/acme/lite?secret={}&click_id={click}&amount=10&txn_id=l1",
            integration["secret"].as_str().expect("secret")
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jane.next().await, format!("/pb?cid={click}&payout=2.00"));
    let got = posted.next_request().await;
    assert_eq!(got.uri, "/form");
    assert_eq!(
        got.body,
        format!("cid={click}&amount=10.00&status=approved")
    );
    assert_eq!(
        got.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-www-form-urlencoded")
    );
}
on_both_databases!(post_bodies_overrides_and_test_conversions);

async fn endpoints_listed_changed_deleted_and_refused(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let other = app.create_tenant("other").await;
    let key = &s.tenant.key;
    let aff = s.affiliate_id.as_str();
    for (body, field) in [
        (
            json!({"affiliate_id": aff, "kind": "email", "url": "https://t.example/"}),
            "kind",
        ),
        (
            json!({"affiliate_id": aff, "kind": "postback", "url": "ftp://t.example/"}),
            "url",
        ),
        (
            json!({"affiliate_id": "aff_01jz0000000000000000000000", "kind": "webhook", "url": "https://t.example/"}),
            "affiliate_id",
        ),
        (
            json!({"kind": "postback", "url": "https://t.example/"}),
            "affiliate_id",
        ),
        (
            json!({"affiliate_id": aff, "kind": "webhook", "url": "https://t.example/", "method": "GET"}),
            "method",
        ),
        (
            json!({"affiliate_id": aff, "kind": "webhook", "url": "https://t.example/", "reversal_url": "https://t.example/r"}),
            "reversal_url",
        ),
        (
            json!({"affiliate_id": aff, "kind": "postback", "url": "https://t.example/", "method": "POST"}),
            "body_template",
        ),
        (
            json!({"affiliate_id": aff, "kind": "postback", "url": "https://t.example/", "method": "POST",
                "body_format": "json", "body_template": "{\"cid\": {click_id"}),
            "body_template",
        ),
        (
            json!({"affiliate_id": aff, "kind": "postback", "url": "https://t.example/", "body_template": "a=b"}),
            "body_template",
        ),
        (
            json!({"affiliate_id": aff, "kind": "postback", "url": "https://t.example/", "events": ["refunded"]}),
            "events",
        ),
        (
            json!({"affiliate_id": aff, "kind": "postback", "url": "https://t.example/", "events": []}),
            "events",
        ),
        (
            json!({"affiliate_id": aff, "kind": "postback", "url": "https://t.example/", "method": "PUT"}),
            "method",
        ),
    ] {
        let (status, problem) = app.post("/api/v1/endpoints", key, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    let (_, page) = app.get("/api/v1/endpoints", key).await;
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(1),
        "nothing was made: {page}"
    );

    // The tenant's own webhook, and pages over more endpoints than one page.
    let tenant_hook = create_endpoint(
        app,
        key,
        json!({"kind": "webhook", "url": "https://hooks.acme.example/trcker"}),
    )
    .await;
    assert_eq!(tenant_hook["affiliate_id"], Value::Null);
    for i in 0..3 {
        create_endpoint(
            app,
            key,
            json!({"affiliate_id": aff, "kind": "postback",
                   "url": format!("https://t{i}.example/pb?s={{status}}")}),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/endpoints?limit=2&cursor={c}"),
            None => "/api/v1/endpoints?limit=2".to_owned(),
        };
        let (status, page) = app.get(&path, key).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    let (_, webhooks) = app.get("/api/v1/endpoints?kind=webhook", key).await;
    assert_eq!(webhooks["items"].as_array().map(Vec::len), Some(1));
    let (status, bad) = app.get("/api/v1/endpoints?kind=email", key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");

    // Changes: a bad one changes nothing; a good one is audited.
    let id = seen[0].clone();
    let (status, _) = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/v1/endpoints/{id}"),
            Some(key),
            Some(json!({"url": "not a url"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, changed) = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/v1/endpoints/{id}"),
            Some(key),
            Some(json!({"events": ["created", "reversed"], "send_test": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["events"], json!(["created", "reversed"]));
    assert_eq!(changed["send_test"], false);
    let (_, audit) = app
        .get("/api/v1/audit-log?action=endpoint.update", key)
        .await;
    assert_eq!(audit["items"][0]["resource_id"], id.as_str(), "{audit}");

    // Another tenant sees none of it.
    let (status, _) = app
        .get(&format!("/api/v1/endpoints/{id}"), &other.key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, none) = app.get("/api/v1/endpoints", &other.key).await;
    assert_eq!(none["items"], json!([]));

    // A postback endpoint has no secret to rotate; deleting is final.
    let (status, problem) = app
        .post(
            &format!("/api/v1/endpoints/{id}/rotate-secret"),
            key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, _) = app
        .api(
            reqwest::Method::DELETE,
            &format!("/api/v1/endpoints/{id}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = app.get(&format!("/api/v1/endpoints/{id}"), key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["code"], "endpoint-not-found", "{problem}");
}
on_both_databases!(endpoints_listed_changed_deleted_and_refused);

/// Polls an admin API resource until `pred` holds.
async fn read_until(app: &TestApp, key: &str, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = app.get(path, key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if pred(&body) {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "never: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn endpoint_until(
    app: &TestApp,
    key: &str,
    id: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    read_until(app, key, &format!("/api/v1/endpoints/{id}"), pred).await
}

/// A 410 disables an endpoint at once; `endpoint_failure_limit` failures in
/// a row (3 here) disable it too; a disabled endpoint is called no more
/// until it is enabled again.
async fn failing_endpoints_are_disabled_and_enabled_again(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let gone = AffiliateServer::start(410).await;
    let failing = AffiliateServer::start(500).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let aff = s.affiliate_id.as_str();
    let gone_ep = create_endpoint(
        app,
        key,
        json!({"affiliate_id": aff, "kind": "postback", "url": format!("{}/g?cid={{click_id}}&s={{status}}", gone.url)}),
    )
    .await;
    let failing_ep = create_endpoint(
        app,
        key,
        json!({"affiliate_id": aff, "kind": "webhook", "url": format!("{}/hook", failing.url)}),
    )
    .await;
    let (gone_id, failing_id) = (
        gone_ep["id"].as_str().expect("id").to_owned(),
        failing_ep["id"].as_str().expect("id").to_owned(),
    );
    let click = sale(app, &s, "acme", "").await;
    assert!(gone.next().await.contains(&click));
    let ep = endpoint_until(app, key, &gone_id, |e| e["disabled_at"].is_string()).await;
    assert_eq!(
        ep["disabled_reason"], "the endpoint answered 410 Gone",
        "{ep}"
    );
    failing.next().await;
    jane.next().await;
    for _ in 0..2 {
        sale(app, &s, "acme", "").await;
        failing.next().await;
        jane.next().await;
    }
    let ep = endpoint_until(app, key, &failing_id, |e| e["disabled_at"].is_string()).await;
    assert_eq!(ep["disabled_reason"], "3 failed attempts in a row", "{ep}");
    assert_eq!(ep["consecutive_failures"], 3, "{ep}");
    // Disabled: the next sale reaches Jane's other endpoint only.
    let click = sale(app, &s, "acme", "").await;
    assert!(jane.next().await.contains(&click));
    gone.assert_quiet(Duration::from_millis(700)).await;
    failing.assert_quiet(Duration::from_millis(100)).await;
    // Enabled again, it is called again (and its run starts over).
    let (status, ep) = app
        .post(
            &format!("/api/v1/endpoints/{failing_id}/enable"),
            key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ep}");
    assert_eq!(ep["disabled_at"], Value::Null);
    assert_eq!(ep["consecutive_failures"], 0);
    sale(app, &s, "acme", "").await;
    failing.next().await;
    let ep = endpoint_until(app, key, &failing_id, |e| e["consecutive_failures"] == 1).await;
    assert_eq!(ep["disabled_at"], Value::Null, "{ep}");
}

/// An app whose endpoints are disabled after 3 failures in a row.
async fn limited(pg: Option<crate::harness::PgDatabase>) -> crate::harness::TestApp {
    crate::harness::spawn_configured(pg, |c| c.endpoint_failure_limit = 3).await
}

on_both_databases!(
    failing_endpoints_are_disabled_and_enabled_again,
    super::limited
);

async fn delivery_until(
    app: &TestApp,
    key: &str,
    id: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    read_until(app, key, &format!("/api/v1/deliveries/{id}"), pred).await
}

fn time_of(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

/// How far past its next attempt's time a stored delivery is, by the real
/// clock, as a clock offset that makes it due (one second more).
fn offset_to_due(d: &Value) -> chrono::Duration {
    time_of(&d["delivery"]["next_attempt_at"]) - chrono::Utc::now() + chrono::Duration::seconds(1)
}

/// An affiliate's webhook fails its first three attempts, and the worker
/// process is stopped and a new one started after each. The schedule is the
/// stored one: a new worker tries nothing before the stored time and tries
/// once its clock passes it. Every attempt is in the log with its status,
/// every try carries the same `webhook-id`, and the event is delivered
/// exactly once.
async fn retries_keep_their_schedule_across_worker_restarts(app: &TestApp) {
    use trcker_services::pipeline::notify::RETRY_SCHEDULE_SECS;
    const FAILURES: usize = 3;
    let jane = AffiliateServer::start(200).await;
    let hook = AffiliateServer::start(503).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    create_endpoint(
        app,
        key,
        json!({"affiliate_id": s.affiliate_id, "kind": "webhook", "url": format!("{}/hook", hook.url)}),
    )
    .await;
    let mut workers = app.start_workers().await;
    let click = sale(app, &s, "acme", "").await;
    assert!(jane.next().await.contains(&click));
    let first = hook.next_request().await;
    let id = first.headers["webhook-id"].to_str().expect("id").to_owned();
    let mut ahead = chrono::Duration::zero();
    for failed in 1..=FAILURES {
        let d = delivery_until(app, key, &id, |d| d["delivery"]["attempts"] == failed).await;
        assert_eq!(d["delivery"]["status"], "pending", "{d}");
        let attempt = &d["attempts"][failed - 1];
        assert_eq!(attempt["status_code"], 503, "{d}");
        assert_eq!(attempt["error_class"], "http_status", "{d}");
        // The next attempt is stored at the schedule's delay (within its jitter).
        let delay = (time_of(&d["delivery"]["next_attempt_at"]) - time_of(&attempt["at"]))
            .num_milliseconds() as f64
            / 1000.0;
        let planned = RETRY_SCHEDULE_SECS[failed - 1] as f64;
        assert!(
            (planned * 0.9 - 0.01..=planned * 1.1 + 0.01).contains(&delay),
            "retry {failed} after {delay} s, not about {planned} s: {d}"
        );
        if failed == FAILURES {
            hook.answer(200);
        }
        // A new worker process, its clock where the last one's was: nothing
        // is due yet, so nothing is tried.
        workers.stop().await;
        workers = app.start_workers().await;
        let clock = &workers.services.settings.clock;
        clock.advance(ahead);
        hook.assert_quiet(Duration::from_millis(2500)).await;
        // Once the clock passes the stored time, the next attempt is made.
        let due = offset_to_due(&d);
        clock.advance(due - ahead);
        ahead = due;
        let again = hook.next_request().await;
        assert_eq!(again.headers["webhook-id"].to_str().expect("id"), id);
        assert_eq!(again.body, first.body, "the same event on every try");
    }
    let d = delivery_until(app, key, &id, |d| d["delivery"]["status"] == "delivered").await;
    let codes: Vec<&Value> = d["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(
        codes,
        [&json!(503), &json!(503), &json!(503), &json!(200)],
        "{d}"
    );
    assert_eq!(d["attempts"][FAILURES]["error_class"], Value::Null, "{d}");
    assert_eq!(d["delivery"]["next_attempt_at"], Value::Null, "{d}");
    // Delivered once: a day later nothing more comes, after another restart too.
    workers.stop().await;
    let workers = app.start_workers().await;
    workers
        .services
        .settings
        .clock
        .advance(ahead + chrono::Duration::days(1));
    hook.assert_quiet(Duration::from_millis(2500)).await;
    workers.stop().await;
}

on_both_databases!(
    retries_keep_their_schedule_across_worker_restarts,
    crate::harness::spawn_web
);

/// Runs the retry schedule of deliveries that keep failing to its end,
/// moving the app's clock past each retry's time: every try is made and
/// logged, then each delivery is dead-lettered.
async fn exhaust_retries(app: &TestApp, key: &str, hook: &AffiliateServer, ids: &[&str]) {
    use trcker_services::pipeline::notify::RETRY_SCHEDULE_SECS;
    let clock = app.services().settings.clock.clone();
    for (retry, secs) in RETRY_SCHEDULE_SECS.iter().enumerate() {
        // Past the longest jittered delay, from the last of the tries before.
        clock.advance(chrono::Duration::seconds(secs + secs / 10 + 1));
        for _ in ids {
            let got = hook.next_request().await;
            let id = got.headers["webhook-id"].to_str().expect("id");
            assert!(ids.contains(&id), "{id}");
        }
        for id in ids {
            delivery_until(app, key, id, |d| d["delivery"]["attempts"] == retry + 2).await;
        }
    }
    for id in ids {
        let d = delivery_until(app, key, id, |d| d["delivery"]["status"] == "dead").await;
        assert_eq!(
            d["attempts"].as_array().map(Vec::len),
            Some(RETRY_SCHEDULE_SECS.len() + 1),
            "{d}"
        );
        assert_eq!(d["delivery"]["next_attempt_at"], Value::Null, "{d}");
    }
}

/// Every attempt is in the delivery log; a dead delivery replayed through
/// the API is a new attempt of the same delivery (the same `webhook-id`);
/// a test event answers with its attempt at once.
async fn delivery_log_replay_and_send_test(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let hook = AffiliateServer::start(503).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let ep = create_endpoint(
        app,
        key,
        json!({"affiliate_id": s.affiliate_id, "kind": "webhook", "url": format!("{}/hook?token=abc", hook.url)}),
    )
    .await;
    let secret = ep["secret"].as_str().expect("secret").to_owned();
    let ep_id = ep["id"].as_str().expect("id").to_owned();
    sale(app, &s, "acme", "").await;
    let first = hook.next_request().await;
    let webhook_id = first.headers["webhook-id"].to_str().expect("id").to_owned();
    let d = delivery_until(app, key, &webhook_id, |d| d["delivery"]["attempts"] == 1).await;
    assert_eq!(d["delivery"]["status"], "pending", "{d}");
    assert!(d["delivery"]["next_attempt_at"].is_string(), "{d}");
    assert_eq!(d["delivery"]["event"], "created");
    assert_eq!(d["delivery"]["url"], format!("{}/hook?token=***", hook.url));
    let attempt = &d["attempts"][0];
    assert_eq!(attempt["status_code"], 503, "{d}");
    assert_eq!(attempt["error_class"], "http_status");
    assert_eq!(attempt["method"], "POST");
    assert_eq!(attempt["response_excerpt"], "ok");
    assert_eq!(attempt["url"], format!("{}/hook?token=***", hook.url));
    let (_, page) = app
        .get(
            &format!("/api/v1/deliveries?endpoint_id={ep_id}&status=pending"),
            key,
        )
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let (status, problem) = app
        .post(
            &format!("/api/v1/deliveries/{webhook_id}/replay"),
            key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "delivery-pending");

    // Another sale fails too; both run their schedule out and are
    // dead-lettered, then replayed once the receiver is back.
    sale(app, &s, "acme", "").await;
    let second = hook.next_request().await;
    let second_id = second.headers["webhook-id"]
        .to_str()
        .expect("id")
        .to_owned();
    delivery_until(app, key, &second_id, |d| d["delivery"]["attempts"] == 1).await;
    exhaust_retries(app, key, &hook, &[&webhook_id, &second_id]).await;
    hook.answer(200);
    let (status, replayed) = app
        .post(
            &format!("/api/v1/deliveries/{webhook_id}/replay"),
            key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    let again = hook.next_request().await;
    assert_eq!(
        again.headers["webhook-id"].to_str().expect("id"),
        webhook_id
    );
    assert_eq!(again.body, first.body, "the same event");
    Webhook::new(&secret)
        .expect("secret")
        .verify(again.body.as_bytes(), &again.headers)
        .expect("signed anew");
    let d = delivery_until(app, key, &webhook_id, |d| {
        d["delivery"]["status"] == "delivered"
    })
    .await;
    let tries = trcker_services::pipeline::notify::RETRY_SCHEDULE_SECS.len() + 1;
    assert_eq!(
        d["attempts"].as_array().map(Vec::len),
        Some(tries + 1),
        "{d}"
    );
    assert_eq!(d["attempts"][tries]["status_code"], 200);
    assert_eq!(d["attempts"][tries]["error_class"], Value::Null);

    // Every dead delivery since a time, in one call (the first is delivered).
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, done) = app
        .post(
            "/api/v1/deliveries/replay",
            key,
            json!({"since": since, "endpoint_id": ep_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done, json!({"replayed": 1, "more": false}));
    assert_eq!(
        hook.next_request().await.headers["webhook-id"]
            .to_str()
            .expect("id"),
        second_id
    );
    delivery_until(app, key, &second_id, |d| {
        d["delivery"]["status"] == "delivered"
    })
    .await;

    // A test event, answered with its attempt.
    let (status, tried) = app
        .post(&format!("/api/v1/endpoints/{ep_id}/test"), key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{tried}");
    assert_eq!(tried["delivered"], true, "{tried}");
    assert_eq!(tried["status_code"], 200);
    let got = hook.next_request().await;
    Webhook::new(&secret)
        .expect("secret")
        .verify(got.body.as_bytes(), &got.headers)
        .expect("a test event is signed as every delivery");
    let event: Value = serde_json::from_str(&got.body).expect("json");
    assert_eq!(event["data"]["test"], true, "{event}");
    hook.answer(502);
    let (_, tried) = app
        .post(&format!("/api/v1/endpoints/{ep_id}/test"), key, json!({}))
        .await;
    assert_eq!(tried["delivered"], false, "{tried}");
    assert_eq!(tried["status_code"], 502);
    assert_eq!(tried["error_class"], "http_status");

    // Rejections.
    let (status, problem) = app
        .get("/api/v1/deliveries/dlv_01jz0000000000000000000000", key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["code"], "delivery-not-found");
    let (status, _) = app.get("/api/v1/deliveries?status=lost", key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.post("/api/v1/deliveries/replay", key, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let other = app.create_tenant("other").await;
    let (status, _) = app
        .get(&format!("/api/v1/deliveries/{webhook_id}"), &other.key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
on_both_databases!(delivery_log_replay_and_send_test);

/// Marking a payout paid tells the affiliate's endpoints that ask for
/// `paid`, once per conversion it covers; a status-blind URL hears nothing.
async fn a_paid_payout_is_an_event(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let hook = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    create_endpoint(
        app,
        key,
        json!({"affiliate_id": s.affiliate_id, "kind": "webhook", "url": format!("{}/hook", hook.url),
               "events": ["paid"]}),
    )
    .await;
    let click = sale(app, &s, "acme", "").await;
    jane.next().await;
    app.conversions_until(key, "status=approved", |b| {
        !b["items"][0]["payout"].is_null()
    })
    .await;
    let (status, batch) = app.post("/api/v1/payouts", key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let payout = batch["payouts"][0]["id"]
        .as_str()
        .expect("payout")
        .to_owned();
    hook.assert_quiet(Duration::from_millis(300)).await;
    let (status, paid) = app
        .post(
            &format!("/api/v1/payouts/{payout}/mark-paid"),
            key,
            json!({"reference": "SEPA-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let got = hook.next_request().await;
    let event: Value = serde_json::from_str(&got.body).expect("json");
    assert_eq!(event["type"], "conversion.paid", "{event}");
    assert_eq!(event["data"]["click_id"], click.as_str());
    read_until(app, key, "/api/v1/deliveries?status=delivered", |log| {
        log["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|d| d["event"] == "paid"))
    })
    .await;
    jane.assert_quiet(Duration::from_millis(500)).await;
    hook.assert_quiet(Duration::from_millis(100)).await;
}
on_both_databases!(a_paid_payout_is_an_event);
