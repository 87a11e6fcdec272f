//! The affiliate portal's sign-in and earnings pages over HTTP.

use reqwest::StatusCode;

use crate::harness::{AffiliateServer, TestApp, browser, post_portal_form};
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

    let browser = browser(true);
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
    let invite = |fields: &'static [(&'static str, &'static str)]| {
        post_portal_form(&browser, &s.invite_url, &s.invite_url, fields)
    };
    let resp = invite(&[("password", "short"), ("confirm", "short")]).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains("at least 10 characters")
    );
    let resp = invite(&[
        ("password", "correct horse battery"),
        ("confirm", "correct horse battery"),
    ])
    .await;
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
    let home = app.url("/portal/acme");
    let login = app.url("/portal/acme/login");
    post_portal_form(&browser, &home, &app.url("/portal/acme/logout"), &[]).await;
    let resp = browser
        .get(app.url("/portal/acme"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.url().path(), "/portal/acme/login");
    let resp = log_in(&browser, app, "jane@example.com", "wrong password!").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains("wrong email or password")
    );
    let resp = log_in(&browser, app, "JANE@example.com", "correct horse battery").await;
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
    let resp = post_portal_form(
        &crate::harness::browser(false),
        &login,
        &login,
        &[
            ("email", "jane@example.com"),
            ("password", "correct horse battery"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = session_cookie(&resp);
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

/// A browser (cookies kept) signed in as Jane of `s`, her invitation
/// accepted with `password`.
async fn signed_in(s: &crate::harness::Setup, password: &str) -> reqwest::Client {
    let browser = browser(true);
    let resp = post_portal_form(
        &browser,
        &s.invite_url,
        &s.invite_url,
        &[("password", password), ("confirm", password)],
    )
    .await;
    assert_eq!(resp.url().path(), "/portal/acme", "signed in");
    browser
}

/// A sign-in attempt on acme's portal from a fresh browser: its status and page.
async fn sign_in(
    app: &TestApp,
    email: &str,
    password: &str,
) -> (StatusCode, String, Option<String>) {
    let login = app.url("/portal/acme/login");
    let resp = post_portal_form(
        &browser(true),
        &login,
        &login,
        &[("email", email), ("password", password)],
    )
    .await;
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, resp.text().await.unwrap_or_default(), retry)
}

/// The median time of `n` sign-ins with `email` and a wrong password.
async fn median_sign_in(app: &TestApp, email: &str, n: usize) -> std::time::Duration {
    let mut took = Vec::new();
    for _ in 0..n {
        let started = std::time::Instant::now();
        let (status, _, _) = sign_in(app, email, "not the password").await;
        took.push(started.elapsed());
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{email}");
    }
    took.sort();
    took[n / 2]
}

async fn sign_in_is_limited_and_tells_nothing_by_its_time(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    signed_in(&s, "correct horse battery").await;

    // A paused affiliate with the right password is told so.
    let path = format!("/api/v1/affiliates/{}", s.affiliate_id);
    let set_status = |status: &'static str| {
        app.api(
            reqwest::Method::PATCH,
            &path,
            Some(&s.tenant.key),
            Some(serde_json::json!({ "status": status })),
        )
    };
    assert_eq!(set_status("paused").await.0, StatusCode::OK);
    let (status, page, _) = sign_in(app, "jane@example.com", "correct horse battery").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("paused"), "{page}");
    assert_eq!(set_status("active").await.0, StatusCode::OK);

    // An unknown email costs the same password check as a registered one
    // (without it: about a millisecond against tens).
    let registered = median_sign_in(app, "jane@example.com", 3).await;
    let unknown = median_sign_in(app, "nobody@example.com", 3).await;
    assert!(
        unknown * 3 >= registered && registered * 3 >= unknown,
        "a wrong password took {registered:?} for a registered email, {unknown:?} for an unknown one"
    );

    // Per account: ten wrong passwords in a row (three above), then even the
    // right one is refused, with a clear message and when to retry.
    for _ in 0..7 {
        let (status, _, _) = sign_in(app, "jane@example.com", "wrong password!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, page, retry) = sign_in(app, "jane@example.com", "correct horse battery").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.contains("too many sign-in attempts"), "{page}");
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((1..=900).contains(&retry), "{retry}");

    // Per address: twenty failures from it (thirteen so far), whatever the
    // emails, and the address is refused for every account.
    for i in 0..7 {
        let (status, _, _) = sign_in(app, &format!("guess{i}@example.com"), "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, page, _) = sign_in(app, "someone@example.com", "guess").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.contains("too many sign-in attempts"), "{page}");
}
on_both_databases!(sign_in_is_limited_and_tells_nothing_by_its_time);

/// Checks the headers every portal answer carries, and that a page has
/// nothing inline for them to refuse.
fn assert_secured(path: &str, resp: &reqwest::Response) {
    let h = |name: &str| crate::harness::header_of(resp, name);
    let csp = h("content-security-policy");
    for part in [
        "default-src 'none'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "{path}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    assert_eq!(h("x-frame-options"), "DENY", "{path}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
    assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
}

async fn every_portal_page_is_served_with_security_headers(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let jane_browser = signed_in(&s, "correct horse battery").await;
    let invite_path = s.invite_url.split_once("/portal").expect("path").1;
    for (client, path, status) in [
        (&plain, "/portal/acme/login".to_owned(), StatusCode::OK),
        (&plain, "/portal/acme".to_owned(), StatusCode::SEE_OTHER),
        (&jane_browser, "/portal/acme".to_owned(), StatusCode::OK),
        (
            &jane_browser,
            "/portal/acme/links".to_owned(),
            StatusCode::OK,
        ),
        (
            &jane_browser,
            "/portal/acme/conversions".to_owned(),
            StatusCode::OK,
        ),
        (
            &jane_browser,
            "/portal/acme/payouts".to_owned(),
            StatusCode::OK,
        ),
        (
            &jane_browser,
            "/portal/acme/password".to_owned(),
            StatusCode::OK,
        ),
        (
            &plain,
            format!("/portal{invite_path}"),
            StatusCode::NOT_FOUND,
        ),
        (
            &plain,
            "/portal/nope/login".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        (
            &plain,
            "/portal/acme/no-such-page".to_owned(),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let resp = client.get(app.url(&path)).send().await.expect("get");
        assert_eq!(resp.status(), status, "{path}");
        assert_secured(&path, &resp);
        let html = resp.text().await.unwrap_or_default();
        for inline in ["<style", "style=", "<script", "javascript:"] {
            assert!(!html.contains(inline), "{path} has {inline}: {html}");
        }
        if status != StatusCode::SEE_OTHER {
            let brand = path.split('/').nth(2).unwrap_or_default();
            let link = format!(r#"href="/portal/{brand}/portal.css""#);
            assert!(html.contains(&link), "{path}: {html}");
        }
    }
    // The styled "not found" page of an unknown address within a portal.
    let resp = plain
        .get(app.url("/portal/acme/no-such-page"))
        .send()
        .await
        .expect("get");
    assert!(resp.text().await.unwrap_or_default().contains("Not found"));
    // A wrong sign-in answers with them too.
    let login = app.url("/portal/acme/login");
    let resp = post_portal_form(
        &browser(true),
        &login,
        &login,
        &[("email", "jane@example.com"), ("password", "nope")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_secured("POST /portal/acme/login", &resp);
    // The stylesheet.
    let resp = plain
        .get(app.url("/portal/acme/portal.css"))
        .send()
        .await
        .expect("css");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/css")
    );
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains(":focus-visible")
    );
}
on_both_databases!(every_portal_page_is_served_with_security_headers);

/// The session cookie a sign-in set (as `name=value`).
fn session_cookie(resp: &reqwest::Response) -> String {
    let cookie = set_cookie(resp, "trcker_portal=");
    cookie.split(';').next().unwrap_or_default().to_owned()
}

async fn forms_need_their_token_and_sign_out_ends_every_session(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let password = "correct horse battery";
    let fields = [("password", password), ("confirm", password)];

    // The invitation posted without the page's token, with a made-up one, or
    // with another browser's: refused, and the invitation is unchanged.
    let a = crate::harness::browser(false);
    let token = crate::harness::form_token_at(&a, &s.invite_url).await;
    let other = crate::harness::browser(false);
    let others = crate::harness::form_token_at(&other, &s.invite_url).await;
    assert_ne!(token, others);
    let made_up = "x".repeat(32);
    for sent in [
        None,
        Some(made_up.as_str()),
        Some(others.as_str()),
        Some(""),
    ] {
        let mut form = fields.to_vec();
        if let Some(t) = sent {
            form.push(("csrf", t));
        }
        let resp = a
            .post(&s.invite_url)
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{sent:?}");
        assert!(
            resp.text()
                .await
                .unwrap_or_default()
                .contains("nothing was changed"),
            "{sent:?}"
        );
    }
    let resp = a.get(&s.invite_url).send().await.expect("page");
    assert_eq!(resp.status(), StatusCode::OK, "the invitation still works");
    let mut form = fields.to_vec();
    form.push(("csrf", &token));
    let resp = a
        .post(&s.invite_url)
        .form(&form)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let first_session = session_cookie(&resp);

    // A second device signs in too.
    let b = crate::harness::browser(false);
    let resp = log_in(&b, app, "jane@example.com", password).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let home = app.url("/portal/acme");
    for c in [&a, &b] {
        assert_eq!(
            c.get(&home).send().await.expect("home").status(),
            StatusCode::OK
        );
    }

    // Sign-out without the token changes nothing.
    let resp = a
        .post(app.url("/portal/acme/logout"))
        .form(&[("csrf", "")])
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        a.get(&home).send().await.expect("home").status(),
        StatusCode::OK
    );

    // Signing out on one device ends every session: the other device's, and
    // the old cookie sent again by hand.
    let resp = post_portal_form(&a, &home, &app.url("/portal/acme/logout"), &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    for c in [&a, &b] {
        let resp = c.get(&home).send().await.expect("home");
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()["location"], "/portal/acme/login");
    }
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(&home)
        .header("cookie", first_session)
        .send()
        .await
        .expect("home");
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "the old cookie is refused"
    );
    // Signing in again works.
    let resp = log_in(&b, app, "jane@example.com", password).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        b.get(&home).send().await.expect("home").status(),
        StatusCode::OK
    );
}
on_both_databases!(forms_need_their_token_and_sign_out_ends_every_session);

async fn an_expired_invitation_is_refused_and_a_new_one_works(app: &TestApp) {
    use trcker_storage::entities::affiliate;
    use trcker_storage::sea_orm::sea_query::Expr;
    use trcker_storage::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let page = app.http.get(&s.invite_url).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK, "a new invitation works");
    // Eight days later.
    affiliate::Entity::update_many()
        .col_expr(
            affiliate::Column::InviteExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::days(1)),
        )
        .filter(affiliate::Column::Id.eq(s.affiliate_id.clone()))
        .exec(&app.services().store.conn)
        .await
        .expect("age the invitation");
    let b = browser(true);
    let resp = b.get(&s.invite_url).send().await.expect("page");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let html = resp.text().await.unwrap_or_default();
    assert!(html.contains("has expired"), "{html}");
    // Posting the form (its token from the sign-in page) changes nothing.
    let resp = post_portal_form(
        &b,
        &app.url("/portal/acme/login"),
        &s.invite_url,
        &[
            ("password", "correct horse battery"),
            ("confirm", "correct horse battery"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // The program invites her again: the new link works for 7 days.
    let (status, again) = app
        .post(
            &format!("/api/v1/affiliates/{}/invite", s.affiliate_id),
            &s.tenant.key,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let second = again["invite_url"].as_str().expect("invite_url").to_owned();
    let resp = post_portal_form(
        &b,
        &second,
        &second,
        &[
            ("password", "correct horse battery"),
            ("confirm", "correct horse battery"),
        ],
    )
    .await;
    assert_eq!(resp.url().path(), "/portal/acme", "signed in");
}
on_both_databases!(an_expired_invitation_is_refused_and_a_new_one_works);

/// The portal's cookies as set on the sign-in page and at sign-in: HttpOnly,
/// SameSite=Lax, for the portal's path only, sealed (no readable value), and
/// `Secure` only when the public URL is https.
async fn cookies_carry_their_flags(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    signed_in(&s, "correct horse battery").await;
    let b = crate::harness::browser(false);
    let login = app.url("/portal/acme/login");
    let page = b.get(&login).send().await.expect("page");
    let form_cookie = set_cookie(&page, "trcker_portal_csrf=");
    let resp = log_in(&b, app, "jane@example.com", "correct horse battery").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&resp, "trcker_portal=");
    for cookie in [&form_cookie, &session] {
        for flag in ["HttpOnly", "SameSite=Lax", "Path=/portal/acme"] {
            assert!(cookie.contains(flag), "{flag}: {cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain http: {cookie}");
        assert!(
            !cookie.contains("jane") && !cookie.contains("aff_"),
            "{cookie}"
        );
    }
    assert!(session.contains("Max-Age="), "{session}");

    let secure = crate::harness::spawn_configured(None, |c| {
        c.public_url = Some("https://partners.example".into());
    })
    .await;
    secure.create_tenant("acme").await;
    let page = crate::harness::browser(false)
        .get(secure.url("/portal/acme/login"))
        .send()
        .await
        .expect("page");
    let cookie = set_cookie(&page, "trcker_portal_csrf=");
    assert!(cookie.contains("Secure"), "https: {cookie}");
    secure.stop().await;
}
on_both_databases!(cookies_carry_their_flags);

/// The Set-Cookie header of `resp` that starts with `prefix`.
fn set_cookie(resp: &reqwest::Response, prefix: &str) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} cookie"))
        .to_owned()
}

/// Posts acme's sign-in form with `browser` (which keeps cookies).
async fn log_in(
    browser: &reqwest::Client,
    app: &TestApp,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let login = app.url("/portal/acme/login");
    post_portal_form(
        browser,
        &login,
        &login,
        &[("email", email), ("password", password)],
    )
    .await
}

async fn changing_the_password_ends_the_other_sessions(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let (old, new) = ("correct horse battery", "another long passphrase");
    let a = signed_in(&s, old).await;
    let b = browser(true);
    assert_eq!(
        log_in(&b, app, "jane@example.com", old).await.url().path(),
        "/portal/acme"
    );
    let (home, page) = (app.url("/portal/acme"), app.url("/portal/acme/password"));
    let html = html_of(&a, &home).await;
    assert!(html.contains(r#"href="/portal/acme/password""#), "{html}");

    // Refused, with a message, and nothing changes: a wrong current
    // password, a short or mistyped new one, no form token.
    for (fields, says) in [
        (
            [
                ("current", "not it at all"),
                ("password", new),
                ("confirm", new),
            ],
            "is not your current password",
        ),
        (
            [
                ("current", old),
                ("password", "short"),
                ("confirm", "short"),
            ],
            "at least 10 characters",
        ),
        (
            [
                ("current", old),
                ("password", new),
                ("confirm", "another long passphrasf"),
            ],
            "does not match",
        ),
    ] {
        let resp = post_portal_form(&a, &page, &page, &fields).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{says}");
        let html = resp.text().await.unwrap_or_default();
        assert!(html.contains(says), "{says}: {html}");
    }
    let resp = a
        .post(&page)
        .form(&[("current", old), ("password", new), ("confirm", new)])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "no form token");
    assert_eq!(
        b.get(&home).send().await.expect("home").url().path(),
        "/portal/acme"
    );

    // Changed: this browser stays signed in, the other is signed out, and
    // only the new password signs in.
    let resp = post_portal_form(
        &a,
        &page,
        &page,
        &[("current", old), ("password", new), ("confirm", new)],
    )
    .await;
    assert_eq!(resp.url().path(), "/portal/acme");
    assert_eq!(
        a.get(&home).send().await.expect("home").url().path(),
        "/portal/acme"
    );
    assert_eq!(
        b.get(&home).send().await.expect("home").url().path(),
        "/portal/acme/login"
    );
    let (status, _, _) = sign_in(app, "jane@example.com", old).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let c = browser(true);
    assert_eq!(
        log_in(&c, app, "jane@example.com", new).await.url().path(),
        "/portal/acme"
    );
    // Signed out, the page sends her to sign in.
    let resp = browser(true).get(&page).send().await.expect("page");
    assert_eq!(resp.url().path(), "/portal/acme/login");
}
on_both_databases!(changing_the_password_ends_the_other_sessions);

/// The value of the readonly field `testid` on a page, unescaped.
fn field_value(html: &str, testid: &str) -> Option<String> {
    let tag_start = html.find(&format!(r#"data-testid="{testid}""#))?;
    let tag = &html[html[..tag_start].rfind('<')?..];
    let value = tag.split_once(r#"value=""#)?.1.split('"').next()?;
    Some(value.replace("&amp;", "&").replace("&#38;", "&"))
}

async fn links_show_terms_and_build_a_link_with_sub_ids(app: &TestApp) {
    use trcker_storage::entities::click;
    use trcker_storage::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let b = signed_in(&s, "correct horse battery").await;
    let page = app.url("/portal/acme/links");
    let html = html_of(&b, &page).await;
    assert!(html.contains("Pro plan"), "{html}");
    assert!(html.contains("10% of the sale"), "{html}");
    let plain_link = field_value(&html, "link-pro").expect("her link");
    assert_eq!(plain_link, app.url("/api/r/acme/pro?via=jane"));

    // The builder is a form: its answer is the link with the sub-IDs.
    let resp = b
        .get(&page)
        .query(&[
            ("offer", "pro"),
            ("sub1", "spring 2026"),
            ("sub2", ""),
            ("sub3", "a&b"),
        ])
        .send()
        .await
        .expect("build");
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap_or_default();
    let built = field_value(&html, "built-pro").expect("built link");
    assert_eq!(built, format!("{plain_link}&sub1=spring%202026&sub3=a%26b"));
    // Following it records a click with those sub-IDs.
    let (status, location) = app.click(built.trim_start_matches(&app.url(""))).await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(location.expect("location").contains("click_id="));
    // (Clicks are written in the background, within moments.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let clicks = click::Entity::find()
            .filter(click::Column::Sub1.eq("spring 2026"))
            .filter(click::Column::Sub3.eq("a&b"))
            .all(&app.services().store.conn)
            .await
            .expect("clicks");
        if clicks.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} clicks",
            clicks.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A sub-ID too long is refused with a message, and nothing is built.
    let long = "x".repeat(256);
    let resp = b
        .get(&page)
        .query(&[("offer", "pro"), ("sub1", long.as_str())])
        .send()
        .await
        .expect("build");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap_or_default();
    assert!(
        html.contains("sub1 must be at most 255 characters"),
        "{html}"
    );
    assert!(field_value(&html, "built-pro").is_none());
    // Signed out, the page sends her to sign in.
    let resp = browser(true).get(&page).send().await.expect("links");
    assert_eq!(resp.url().path(), "/portal/acme/login");
}
on_both_databases!(links_show_terms_and_build_a_link_with_sub_ids);

/// How many conversion rows a conversions page shows.
fn rows(html: &str) -> usize {
    html.matches(r#"data-testid="conversion""#).count()
}

async fn conversions_filter_page_and_download(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let b = signed_in(&s, "correct horse battery").await;
    app.sale(&s, "/api/r/acme/pro?via=jane", "o1", "79", "")
        .await;
    app.sale(&s, "/api/r/acme/pro?via=jane", "o2", "50", "")
        .await;
    app.sale(
        &s,
        "/api/r/acme/pro?via=jane",
        "o2",
        "50",
        "&status=refunded",
    )
    .await;
    // Held for three days from now on: pending, with the day it is approved.
    let (status, _) = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/v1/programs/{}", s.program_id),
            Some(key),
            Some(serde_json::json!({"hold_days": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.sale(&s, "/api/r/acme/pro?via=jane", "o3", "20", "")
        .await;
    let click = app.click_id("/api/r/acme/pro?via=jane").await;
    for i in 4..=53 {
        app.postback(&format!(
            "/api/postback/acme/pro?secret={}&click_id={click}&amount=10&txn_id=o{i}",
            s.secret
        ))
        .await;
    }
    // Another affiliate's conversion is never hers.
    add_bob(app, key).await;
    app.sale(&s, "/api/r/acme/pro?via=bob", "b1", "99", "")
        .await;
    app.conversions_until(key, "limit=200", |b| {
        b["items"].as_array().map_or(0, Vec::len) == 54
            && b["items"]
                .as_array()
                .is_some_and(|items| items.iter().all(|c| !c["payout"].is_null()))
    })
    .await;

    let list = |query: &str| {
        let url = app.url(&format!("/portal/acme/conversions?{query}"));
        let b = b.clone();
        async move {
            let resp = b.get(url).send().await.expect("conversions");
            (resp.status(), resp.text().await.unwrap_or_default())
        }
    };
    let (status, html) = list("").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("53 conversions · page 1 of 2"), "{html}");
    assert_eq!(rows(&html), 50);
    assert!(html.contains(r#"rel="next""#));
    assert!(
        html.contains("Date (UTC)"),
        "dates are labelled with the zone"
    );
    let (_, html) = list("page=2").await;
    assert_eq!(rows(&html), 3);
    assert!(html.contains(r#"rel="prev""#));

    // The refunded one shows its reversal beside the commission, and its
    // explanation as text.
    let (_, html) = list("status=refunded").await;
    assert!(html.contains("1 conversions"), "{html}");
    assert!(
        html.contains(r#"<option value="refunded" selected>"#),
        "{html}"
    );
    assert_eq!(rows(&html), 1);
    assert!(html.contains("-5.00 USD"), "{html}");
    assert!(html.contains("10%"), "the explanation: {html}");
    // The held one says when it is approved.
    let (_, html) = list("status=pending&offer=pro").await;
    let day = (chrono::Utc::now() + chrono::Duration::days(3)).date_naive();
    assert!(html.contains(&format!("approved on {day}")), "{html}");
    // Days on the tenant's calendar, both ends included.
    let today = chrono::Utc::now().date_naive();
    let (_, html) = list(&format!("from={today}&to={today}")).await;
    assert!(html.contains("53 conversions"), "{html}");
    let (_, html) = list(&format!("to={}", today.pred_opt().expect("day"))).await;
    assert!(html.contains("No conversion matches"), "{html}");

    // Bad filters: a clear message and no list.
    for (query, says) in [
        ("status=bogus", "status must be one of"),
        ("from=2026-13-01", "from must be a day"),
        ("from=2026-12-02&to=2026-12-01", "from must not be after to"),
        ("offer=nope", "offer is not an offer of this program"),
        ("page=0", "page must be a whole number"),
    ] {
        let (status, html) = list(query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert!(html.contains(says), "{query}: {html}");
        assert_eq!(rows(&html), 0, "{query}");
    }

    // The CSV of a filtered list.
    let resp = b
        .get(app.url("/portal/acme/conversions.csv?status=refunded"))
        .send()
        .await
        .expect("csv");
    assert_eq!(resp.status(), StatusCode::OK);
    let header = |name: &str| crate::harness::header_of(&resp, name);
    assert!(header("content-type").starts_with("text/csv"));
    assert!(header("content-disposition").contains("conversions.csv"));
    let csv = resp.text().await.unwrap_or_default();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[0].starts_with("date (UTC),offer,event,status,sale,currency,commission,reversal"),
        "{csv}"
    );
    assert!(
        lines[1].contains(",refunded,50.00,USD,5.00,-5.00,"),
        "{csv}"
    );
    let all = html_of(&b, &app.url("/portal/acme/conversions.csv")).await;
    assert_eq!(all.lines().count(), 54, "53 and the header");
    let resp = b
        .get(app.url("/portal/acme/conversions.csv?status=bogus"))
        .send()
        .await
        .expect("csv");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Signed out: to the sign-in page.
    let resp = browser(true)
        .get(app.url("/portal/acme/conversions.csv"))
        .send()
        .await
        .expect("csv");
    assert_eq!(resp.url().path(), "/portal/acme/login");
}
on_both_databases!(conversions_filter_page_and_download);

async fn payouts_show_history_cover_and_the_next_one(app: &TestApp) {
    let jane = AffiliateServer::start(200).await;
    let s = app.quickstart_setup("acme", &jane.url).await;
    let key = &s.tenant.key;
    let b = signed_in(&s, "correct horse battery").await;
    let page = app.url("/portal/acme/payouts");
    let html = html_of(&b, &page).await;
    assert!(html.contains("Nothing to pay out yet"), "{html}");
    assert!(html.contains("No payout yet"), "{html}");

    app.sale(&s, "/api/r/acme/pro?via=jane", "p1", "79", "")
        .await;
    app.sale(&s, "/api/r/acme/pro?via=jane", "p2", "21", "")
        .await;
    let html = html_of(&b, &page).await;
    assert!(
        html.contains("Approved and not yet paid out: <b>10.00 USD</b>"),
        "{html}"
    );

    // The program makes a payout: it is on its way, and covers both entries.
    let (status, batch) = app
        .post("/api/v1/payouts", key, serde_json::json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let id = batch["payouts"][0]["id"]
        .as_str()
        .expect("payout id")
        .to_owned();
    let html = html_of(&b, &page).await;
    assert!(html.contains("On its way: <b>10.00 USD</b>"), "{html}");
    assert_eq!(html.matches(r#"data-testid="payout""#).count(), 1);
    let detail = app.url(&format!("/portal/acme/payouts/{id}"));
    let html = html_of(&b, &detail).await;
    assert_eq!(html.matches(r#"data-testid="entry""#).count(), 2, "{html}");
    assert!(
        html.contains("7.90 USD") && html.contains("2.10 USD"),
        "{html}"
    );

    // Paid with a reference: the history says so.
    let (status, _) = app
        .post(
            &format!("/api/v1/payouts/{id}/mark-paid"),
            key,
            serde_json::json!({"reference": "SEPA-7"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let html = html_of(&b, &page).await;
    assert!(
        html.contains("paid on") && html.contains("SEPA-7"),
        "{html}"
    );
    assert!(!html.contains("On its way"), "{html}");

    // Another affiliate's payout, or none at all, is not found.
    add_bob(app, key).await;
    app.sale(&s, "/api/r/acme/pro?via=bob", "pb", "50", "")
        .await;
    let (_, batch) = app
        .post("/api/v1/payouts", key, serde_json::json!({}))
        .await;
    let bobs = batch["payouts"][0]["id"]
        .as_str()
        .expect("bob's payout")
        .to_owned();
    for other in [bobs.as_str(), "pay_01m85158m2en7kg83kd5r0qmtm"] {
        let resp = b
            .get(app.url(&format!("/portal/acme/payouts/{other}")))
            .send()
            .await
            .expect("payout");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{other}");
    }
    let resp = browser(true).get(&detail).send().await.expect("payout");
    assert_eq!(resp.url().path(), "/portal/acme/login");
}
on_both_databases!(payouts_show_history_cover_and_the_next_one);

/// The page at `url` as `browser` sees it.
async fn html_of(browser: &reqwest::Client, url: &str) -> String {
    browser
        .get(url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .unwrap_or_default()
}

/// A second affiliate of acme, Bob (slug `bob`).
async fn add_bob(app: &TestApp, key: &str) {
    let (status, body) = app
        .post(
            "/api/v1/affiliates",
            key,
            serde_json::json!({"name":"Bob","email":"bob@example.com","slug":"bob"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
