//! The affiliate portal's sign-in and earnings pages over HTTP.

use reqwest::StatusCode;

use crate::harness::{AffiliateServer, TestApp};
use crate::on_both_databases;

async fn affiliate_signs_in_and_sees_earnings(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    app.postback(&format!(
        "/api/postback/acme/pro?secret={}&click_id={click}&amount=79&txn_id=o1",
        s.secret
    ))
    .await;
    app.conversions_until(&s.tenant.key, "txn_id=o1", |b| {
        b["items"][0]["payout"] == "7.90"
    })
    .await;

    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    // Not signed in: to the sign-in page.
    let resp = browser
        .get(app.url("/portal/acme"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.url().path(), "/portal/acme/login");
    // The invitation sets the password; a short one is refused, with a message.
    let resp = browser.get(&s.invite_url).send().await.expect("invite");
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = browser
        .post(&s.invite_url)
        .form(&[("password", "short"), ("confirm", "short")])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains("at least 10 characters")
    );
    let resp = browser
        .post(&s.invite_url)
        .form(&[
            ("password", "correct horse battery"),
            ("confirm", "correct horse battery"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.url().path(), "/portal/acme");
    let html = resp.text().await.unwrap_or_default();
    assert!(html.contains("Your earnings"), "{html}");
    assert!(
        html.contains(r#"data-testid="approved-USD">7.90 USD"#),
        "{html}"
    );
    assert!(html.contains("Pro plan"));
    // The invitation works once.
    let resp = browser.get(&s.invite_url).send().await.expect("invite");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Sign out, then a wrong password is refused and the right one works.
    browser
        .post(app.url("/portal/acme/logout"))
        .send()
        .await
        .expect("logout");
    let resp = browser
        .get(app.url("/portal/acme"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.url().path(), "/portal/acme/login");
    let resp = browser
        .post(app.url("/portal/acme/login"))
        .form(&[
            ("email", "jane@example.com"),
            ("password", "wrong password!"),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains("wrong email or password")
    );
    let resp = browser
        .post(app.url("/portal/acme/login"))
        .form(&[
            ("email", "JANE@example.com"),
            ("password", "correct horse battery"),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(resp.url().path(), "/portal/acme");
    // A session is for its own portal only. The browser scopes the cookie to
    // /portal/acme, so send Jane's session cookie to another tenant's portal
    // by hand: it is a valid session (acme's portal takes it) that globex's
    // must refuse.
    app.create_tenant("globex").await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = plain
        .post(app.url("/portal/acme/login"))
        .form(&[
            ("email", "jane@example.com"),
            ("password", "correct horse battery"),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("trcker_portal="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let with_session = |path: &str| {
        plain
            .get(app.url(path))
            .header("cookie", session.clone())
            .send()
    };
    let resp = with_session("/portal/acme").await.expect("get");
    assert_eq!(resp.status(), StatusCode::OK, "the session is valid");
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains("Your earnings")
    );
    let resp = with_session("/portal/globex").await.expect("get");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/portal/globex/login");
    let resp = browser
        .get(app.url("/portal/nope/login"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
on_both_databases!(affiliate_signs_in_and_sees_earnings);
