//! The affiliate portal: server-rendered pages (askama), per tenant, under
//! `/portal/{brand}`. Works without JavaScript and on a phone.
//!
//! Sessions are private cookies (encrypted and authenticated, HttpOnly,
//! SameSite=Lax) holding the tenant, the affiliate and an expiry; the key is
//! derived from the operator token's hash, so every node of an installation
//! shares it.

use askama::Template;
use chrono::{DateTime, Utc};
use poem::http::{StatusCode, header};
use poem::middleware::CookieJarManager;
use poem::web::cookie::{Cookie, CookieJar, CookieKey, SameSite};
use poem::web::{Data, Form, Html, Path};
use poem::{Endpoint, EndpointExt, IntoResponse, Response, Route, get, handler};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trcker_services::StoreError;
use trcker_services::portal::{
    Balance, ConversionLine, MIN_PASSWORD_LEN, PortalError, PortalService, PortalUser,
};

const SESSION_COOKIE: &str = "trcker_portal";
const SESSION_DAYS: i64 = 14;

#[derive(Clone)]
struct PortalKey(CookieKey);

/// The portal's routes, to be nested at `/portal`. Sessions are sealed with a
/// key derived from `operator_token_hash`.
pub fn routes(portal: PortalService, operator_token_hash: &str) -> impl Endpoint + use<> {
    let digest =
        Sha256::digest(format!("trcker portal sessions\0{operator_token_hash}").as_bytes());
    let key = CookieKey::derive_from(&digest);
    Route::new()
        .at("/:brand", get(earnings))
        .at("/:brand/", get(earnings))
        .at("/:brand/login", get(login_page).post(login))
        .at("/:brand/logout", poem::post(logout))
        .at("/:brand/invite/:token", get(invite_page).post(invite))
        .data(portal)
        .data(PortalKey(key))
        .with(CookieJarManager::new())
}

#[derive(Serialize, Deserialize)]
struct Session {
    t: String,
    a: String,
    exp: i64,
}

#[derive(Template)]
#[template(path = "portal/login.html")]
struct LoginPage<'a> {
    tenant_name: &'a str,
    base: String,
    email: &'a str,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/invite.html")]
struct InvitePage<'a> {
    tenant_name: &'a str,
    base: String,
    token: &'a str,
    valid: bool,
    min_len: usize,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/earnings.html")]
struct EarningsPage<'a> {
    tenant_name: &'a str,
    base: String,
    affiliate_name: &'a str,
    balances: Vec<Balance>,
    clicks: u64,
    conversions: u64,
    recent: Vec<ConversionLine>,
}

#[derive(Template)]
#[template(path = "portal/not_found.html")]
struct NotFoundPage;

#[derive(Template)]
#[template(path = "portal/closed.html")]
struct ClosedPage;

fn render(t: &impl Template, status: StatusCode) -> Response {
    match t.render() {
        Ok(html) => Html(html)
            .with_status(status)
            .with_header(header::CACHE_CONTROL, "no-store")
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "portal template failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong.")
        }
    }
}

fn plain(status: StatusCode, msg: &str) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{msg}\n"))
}

fn redirect(to: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .finish()
}

fn failure(e: PortalError) -> Response {
    match e {
        PortalError::UnknownPortal => render(&NotFoundPage, StatusCode::NOT_FOUND),
        PortalError::Suspended => render(&ClosedPage, StatusCode::FORBIDDEN),
        PortalError::Store(StoreError::Unavailable) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable, please try again.",
        ),
        other => {
            tracing::error!(error = %other, "portal failure");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong.")
        }
    }
}

fn base(brand: &str) -> String {
    format!("/portal/{brand}")
}

fn set_session(jar: &CookieJar, key: &CookieKey, brand: &str, user: &PortalUser) {
    let session = Session {
        t: user.tenant_id.to_string(),
        a: user.affiliate.id.to_string(),
        exp: (Utc::now() + chrono::Duration::days(SESSION_DAYS)).timestamp(),
    };
    let mut cookie = Cookie::new(SESSION_COOKIE, &session);
    cookie.set_http_only(true);
    cookie.set_same_site(SameSite::Lax);
    cookie.set_path(base(brand));
    cookie.set_max_age(std::time::Duration::from_secs(
        (SESSION_DAYS * 86400) as u64,
    ));
    jar.private_with_key(key).add(cookie);
}

fn clear_session(jar: &CookieJar, brand: &str) {
    let mut cookie = Cookie::named(SESSION_COOKIE);
    cookie.set_path(base(brand));
    cookie.make_removal();
    jar.add(cookie);
}

async fn current_user(
    portal: &PortalService,
    jar: &CookieJar,
    key: &CookieKey,
    brand: &str,
) -> Result<Option<PortalUser>, PortalError> {
    let Some(cookie) = jar.private_with_key(key).get(SESSION_COOKIE) else {
        return Ok(None);
    };
    let Ok(session) = cookie.value::<Session>() else {
        return Ok(None);
    };
    if DateTime::from_timestamp(session.exp, 0).is_none_or(|exp| exp < Utc::now()) {
        return Ok(None);
    }
    portal.session_user(brand, &session.t, &session.a).await
}

#[handler]
async fn earnings(
    Path(brand): Path<String>,
    jar: &CookieJar,
    key: Data<&PortalKey>,
    portal: Data<&PortalService>,
) -> Response {
    let user = match current_user(&portal, jar, &key.0.0, &brand).await {
        Ok(Some(u)) => u,
        Ok(None) => return redirect(&format!("{}/login", base(&brand))),
        Err(e) => return failure(e),
    };
    match portal.earnings(&user).await {
        Ok(e) => render(
            &EarningsPage {
                tenant_name: &user.tenant_name,
                base: base(&brand),
                affiliate_name: &user.affiliate.name,
                balances: e.balances,
                clicks: e.clicks_30_days,
                conversions: e.conversions_30_days,
                recent: e.recent,
            },
            StatusCode::OK,
        ),
        Err(e) => failure(e),
    }
}

#[handler]
async fn login_page(Path(brand): Path<String>, portal: Data<&PortalService>) -> Response {
    match portal.tenant_name(&brand).await {
        Ok(name) => render(
            &LoginPage {
                tenant_name: &name,
                base: base(&brand),
                email: "",
                error: None,
            },
            StatusCode::OK,
        ),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

#[handler]
async fn login(
    Path(brand): Path<String>,
    Form(form): Form<LoginForm>,
    jar: &CookieJar,
    key: Data<&PortalKey>,
    portal: Data<&PortalService>,
) -> Response {
    let name = match portal.tenant_name(&brand).await {
        Ok(n) => n,
        Err(e) => return failure(e),
    };
    match portal.login(&brand, &form.email, &form.password).await {
        Ok(user) => {
            set_session(jar, &key.0.0, &brand, &user);
            redirect(&base(&brand))
        }
        Err(e @ PortalError::WrongPassword) => render(
            &LoginPage {
                tenant_name: &name,
                base: base(&brand),
                email: &form.email,
                error: Some(e.to_string()),
            },
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => failure(e),
    }
}

#[handler]
async fn logout(Path(brand): Path<String>, jar: &CookieJar) -> Response {
    clear_session(jar, &brand);
    redirect(&format!("{}/login", base(&brand)))
}

#[handler]
async fn invite_page(
    Path((brand, token)): Path<(String, String)>,
    portal: Data<&PortalService>,
) -> Response {
    let name = match portal.tenant_name(&brand).await {
        Ok(n) => n,
        Err(e) => return failure(e),
    };
    match portal.invite_valid(&brand, &token).await {
        Ok(valid) => render(
            &InvitePage {
                tenant_name: &name,
                base: base(&brand),
                token: &token,
                valid,
                min_len: MIN_PASSWORD_LEN,
                error: None,
            },
            if valid {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            },
        ),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
struct InviteForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

#[handler]
async fn invite(
    Path((brand, token)): Path<(String, String)>,
    Form(form): Form<InviteForm>,
    jar: &CookieJar,
    key: Data<&PortalKey>,
    portal: Data<&PortalService>,
) -> Response {
    let name = match portal.tenant_name(&brand).await {
        Ok(n) => n,
        Err(e) => return failure(e),
    };
    let page = |valid: bool, error: String, status| {
        render(
            &InvitePage {
                tenant_name: &name,
                base: base(&brand),
                token: &token,
                valid,
                min_len: MIN_PASSWORD_LEN,
                error: Some(error),
            },
            status,
        )
    };
    match portal
        .accept_invite(&brand, &token, &form.password, &form.confirm)
        .await
    {
        Ok(user) => {
            set_session(jar, &key.0.0, &brand, &user);
            redirect(&base(&brand))
        }
        Err(PortalError::Invalid(invalid)) => {
            let msg = invalid
                .0
                .iter()
                .map(|f| format!("{} {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ");
            page(true, msg, StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(e @ PortalError::InvalidInvite) => page(false, e.to_string(), StatusCode::NOT_FOUND),
        Err(e) => failure(e),
    }
}
