//! The affiliate portal: server-rendered pages (askama), per tenant, under
//! `/portal/{brand}`. Works without JavaScript and on a phone.
//!
//! Sessions are private cookies (encrypted and authenticated, HttpOnly,
//! SameSite=Lax) holding the tenant, the affiliate and an expiry; the key is
//! derived from the operator token's hash, so every node of an installation
//! shares it.

use askama::Template;
use chrono::{DateTime, Utc};
use poem::http::{HeaderValue, StatusCode, header};
use poem::middleware::CookieJarManager;
use poem::web::cookie::{Cookie, CookieJar, CookieKey, SameSite};
use poem::web::{Data, Form, Html, Path, Query};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trcker_domain::protection::Cidr;
use trcker_services::StoreError;
use trcker_services::portal::{
    Balance, ConversionFilter, ConversionLine, CoveredEntry, MIN_PASSWORD_LEN, PayoutLine,
    PortalError, PortalService, PortalUser,
};

const SESSION_COOKIE: &str = "trcker_portal";
const SESSION_DAYS: i64 = 14;
/// The browser's form token: every form carries it back, and a form post
/// without the one in this cookie changes nothing (another site can make a
/// browser post, but can neither read this cookie nor the page's token).
const CSRF_COOKIE: &str = "trcker_portal_csrf";

/// How the portal seals and flags its cookies.
#[derive(Clone)]
struct PortalKey {
    key: CookieKey,
    /// `Secure` cookies: the public URL is https.
    secure: bool,
}

/// The proxies whose forwarding headers name the client (for the sign-in
/// limits per address).
#[derive(Clone)]
struct TrustedProxies(Vec<Cidr>);

/// Where the installation is reached from outside: the base of the links
/// an affiliate shares.
#[derive(Clone)]
struct PublicUrl(String);

/// The portal's one stylesheet (pages carry no inline style: the
/// Content-Security-Policy allows none).
const STYLESHEET: &str = include_str!("../../../templates/portal/portal.css");

/// What every portal answer carries: no script at all, styles and images only
/// from the portal, forms only to it, never framed, no referrer (an
/// invitation link holds its token in the path).
const SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

/// The portal's routes, to be nested at `/portal` of `public_url`. Sessions
/// are sealed with a key derived from `operator_token_hash`.
pub fn routes(
    portal: PortalService,
    operator_token_hash: &str,
    public_url: &str,
    trusted_proxies: Vec<Cidr>,
) -> impl Endpoint + use<> {
    let digest =
        Sha256::digest(format!("trcker portal sessions\0{operator_token_hash}").as_bytes());
    let key = CookieKey::derive_from(&digest);
    Route::new()
        .at("/:brand", get(earnings))
        .at("/:brand/", get(earnings))
        .at("/:brand/portal.css", get(stylesheet))
        .at("/:brand/login", get(login_page).post(login))
        .at("/:brand/logout", poem::post(logout))
        .at("/:brand/password", get(password_page).post(change_password))
        .at("/:brand/links", get(links))
        .at("/:brand/payouts", get(payouts))
        .at("/:brand/payouts/:id", get(payout))
        .at("/:brand/conversions", get(conversions))
        .at("/:brand/conversions.csv", get(conversions_csv))
        .at("/:brand/invite/:token", get(invite_page).post(invite))
        .data(portal)
        .data(PortalKey {
            key,
            secure: public_url.starts_with("https://"),
        })
        .data(TrustedProxies(trusted_proxies))
        .data(PublicUrl(public_url.trim_end_matches('/').to_owned()))
        .with(CookieJarManager::new())
        .around(secured)
}

/// Adds [`SECURITY_HEADERS`] to every answer, and answers an unknown page
/// with the portal's own "not found" page.
async fn secured<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let brand = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut resp = match next.call(req).await {
        Ok(resp) => resp.into_response(),
        Err(e) if e.status() == StatusCode::NOT_FOUND => {
            render(&NotFoundPage { base: base(&brand) }, StatusCode::NOT_FOUND)
        }
        Err(e) => e.into_response(),
    };
    for (name, value) in SECURITY_HEADERS {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    Ok(resp)
}

#[handler]
fn stylesheet() -> Response {
    Response::builder()
        .content_type("text/css; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(STYLESHEET)
}

#[derive(Serialize, Deserialize)]
struct Session {
    t: String,
    a: String,
    /// The affiliate's session epoch when it was made.
    e: i64,
    exp: i64,
}

#[derive(Template)]
#[template(path = "portal/login.html")]
struct LoginPage<'a> {
    tenant_name: &'a str,
    base: String,
    csrf: String,
    email: &'a str,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/invite.html")]
struct InvitePage<'a> {
    tenant_name: &'a str,
    base: String,
    csrf: String,
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
    csrf: String,
    affiliate_name: &'a str,
    balances: Vec<Balance>,
    clicks: u64,
    conversions: u64,
    recent: Vec<ConversionLine>,
}

#[derive(Template)]
#[template(path = "portal/payouts.html")]
struct PayoutsPage<'a> {
    tenant_name: &'a str,
    base: String,
    csrf: String,
    affiliate_name: &'a str,
    time_zone: &'static str,
    /// Payouts made and not yet paid.
    on_the_way: Vec<PayoutLine>,
    balances: Vec<Balance>,
    payouts: Vec<PayoutLine>,
}

#[derive(Template)]
#[template(path = "portal/payout.html")]
struct PayoutPage<'a> {
    tenant_name: &'a str,
    base: String,
    csrf: String,
    affiliate_name: &'a str,
    time_zone: &'static str,
    payout: PayoutLine,
    entries: Vec<CoveredEntry>,
}

/// A status in the filter's choice.
struct StatusChoice {
    name: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "portal/conversions.html")]
struct ConversionsPage<'a> {
    tenant_name: &'a str,
    base: String,
    csrf: String,
    affiliate_name: &'a str,
    time_zone: &'static str,
    error: Option<String>,
    statuses: Vec<StatusChoice>,
    /// Her offers: (slug, name).
    offers: Vec<(String, String)>,
    offer: String,
    from: String,
    to: String,
    /// The filter as a query string, for the other pages and the CSV.
    query: String,
    lines: Vec<ConversionLine>,
    total: u64,
    page: u64,
    pages: u64,
}

#[derive(Template)]
#[template(path = "portal/links.html")]
struct LinksPage<'a> {
    tenant_name: &'a str,
    base: String,
    csrf: String,
    affiliate_name: &'a str,
    error: Option<String>,
    offers: Vec<OfferView>,
}

/// An offer as the links page shows it.
struct OfferView {
    name: String,
    slug: String,
    currency: String,
    terms: Vec<String>,
    hold_days: i32,
    attribution_window_days: i32,
    /// Her tracking link for the offer.
    link: String,
    /// The sub-IDs in the builder (those asked for, for this offer).
    sub1: String,
    sub2: String,
    sub3: String,
    /// Her link with those sub-IDs, once asked for.
    built: Option<String>,
    /// Her short links, whole.
    short_links: Vec<String>,
    coupons: Vec<String>,
}

#[derive(Template)]
#[template(path = "portal/password.html")]
struct PasswordPage<'a> {
    tenant_name: &'a str,
    base: String,
    csrf: String,
    min_len: usize,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/not_found.html")]
struct NotFoundPage {
    base: String,
}

#[derive(Template)]
#[template(path = "portal/closed.html")]
struct ClosedPage {
    base: String,
}

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

fn failure(brand: &str, e: PortalError) -> Response {
    match e {
        PortalError::UnknownPortal => {
            render(&NotFoundPage { base: base(brand) }, StatusCode::NOT_FOUND)
        }
        PortalError::Suspended => render(&ClosedPage { base: base(brand) }, StatusCode::FORBIDDEN),
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

/// A cookie of the portal of `brand`: HttpOnly, SameSite=Lax, for the
/// portal's paths only, `Secure` behind https.
fn portal_cookie(
    key: &PortalKey,
    brand: &str,
    name: &'static str,
    value: impl Serialize,
) -> Cookie {
    let mut cookie = Cookie::new(name, value);
    cookie.set_http_only(true);
    cookie.set_same_site(SameSite::Lax);
    cookie.set_path(base(brand));
    cookie.set_secure(key.secure);
    cookie
}

fn set_session(jar: &CookieJar, key: &PortalKey, brand: &str, user: &PortalUser) {
    let session = Session {
        t: user.tenant_id.to_string(),
        a: user.affiliate.id.to_string(),
        e: user.affiliate.session_epoch,
        exp: (Utc::now() + chrono::Duration::days(SESSION_DAYS)).timestamp(),
    };
    let mut cookie = portal_cookie(key, brand, SESSION_COOKIE, &session);
    cookie.set_max_age(std::time::Duration::from_secs(
        (SESSION_DAYS * 86400) as u64,
    ));
    jar.private_with_key(&key.key).add(cookie);
}

/// The browser's form token, made (and set in its cookie) on its first page.
fn form_token(jar: &CookieJar, key: &PortalKey, brand: &str) -> String {
    let private = jar.private_with_key(&key.key);
    if let Some(token) = private
        .get(CSRF_COOKIE)
        .and_then(|c| c.value::<String>().ok())
        .filter(|t| t.len() == 32)
    {
        return token;
    }
    let token = trcker_domain::secret::random_alnum(32);
    private.add(portal_cookie(key, brand, CSRF_COOKIE, &token));
    token
}

/// Whether a posted form carries the browser's form token.
fn form_token_ok(jar: &CookieJar, key: &PortalKey, sent: &str) -> bool {
    jar.private_with_key(&key.key)
        .get(CSRF_COOKIE)
        .and_then(|c| c.value::<String>().ok())
        .is_some_and(|t| {
            t.len() == 32
                && t.len() == sent.len()
                && t.bytes()
                    .zip(sent.bytes())
                    .fold(0u8, |d, (a, b)| d | (a ^ b))
                    == 0
        })
}

/// The answer to a form posted without the browser's form token.
fn stale_form() -> Response {
    plain(
        StatusCode::FORBIDDEN,
        "This form has expired or did not come from this portal; nothing was changed. \
         Go back, reload the page and try again.",
    )
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
    key: &PortalKey,
    brand: &str,
) -> Result<Option<PortalUser>, PortalError> {
    let Some(cookie) = jar.private_with_key(&key.key).get(SESSION_COOKIE) else {
        return Ok(None);
    };
    let Ok(session) = cookie.value::<Session>() else {
        return Ok(None);
    };
    if DateTime::from_timestamp(session.exp, 0).is_none_or(|exp| exp < Utc::now()) {
        return Ok(None);
    }
    portal
        .session_user(brand, &session.t, &session.a, session.e)
        .await
}

/// A signed-in page's affiliate, with what every such page carries: the
/// portal's brand and base path, and the browser's form token. Without a
/// valid session the request is answered with the way to the sign-in page.
struct SignedIn {
    user: PortalUser,
    brand: String,
    csrf: String,
}

impl<'a> poem::FromRequest<'a> for SignedIn {
    async fn from_request(req: &'a Request, _: &mut poem::RequestBody) -> poem::Result<Self> {
        let brand = req.raw_path_param("brand").unwrap_or_default().to_owned();
        let (Some(portal), Some(key)) = (req.data::<PortalService>(), req.data::<PortalKey>())
        else {
            return Err(poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR));
        };
        let jar = req.cookie();
        match signed_in(portal, jar, key, &brand).await {
            Ok(user) => Ok(SignedIn {
                csrf: form_token(jar, key, &brand),
                user,
                brand,
            }),
            Err(resp) => Err(poem::Error::from_response(resp)),
        }
    }
}

/// The signed-in affiliate, or the answer instead: to the sign-in page
/// without a valid session.
async fn signed_in(
    portal: &PortalService,
    jar: &CookieJar,
    key: &PortalKey,
    brand: &str,
) -> Result<PortalUser, Response> {
    match current_user(portal, jar, key, brand).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(redirect(&format!("{}/login", base(brand)))),
        Err(e) => Err(failure(brand, e)),
    }
}

#[handler]
async fn earnings(me: SignedIn, portal: Data<&PortalService>) -> Response {
    let SignedIn { user, brand, csrf } = me;
    match portal.earnings(&user).await {
        Ok(e) => render(
            &EarningsPage {
                tenant_name: &user.tenant_name,
                base: base(&brand),
                csrf,
                affiliate_name: &user.affiliate.name,
                balances: e.balances,
                clicks: e.clicks_30_days,
                conversions: e.conversions_30_days,
                recent: e.recent,
            },
            StatusCode::OK,
        ),
        Err(e) => failure(&brand, e),
    }
}

#[handler]
async fn login_page(
    Path(brand): Path<String>,
    jar: &CookieJar,
    key: Data<&PortalKey>,
    portal: Data<&PortalService>,
) -> Response {
    match portal.tenant_name(&brand).await {
        Ok(name) => render(
            &LoginPage {
                tenant_name: &name,
                base: base(&brand),
                csrf: form_token(jar, &key, &brand),
                email: "",
                error: None,
            },
            StatusCode::OK,
        ),
        Err(e) => failure(&brand, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginForm {
    csrf: String,
    email: String,
    password: String,
}

#[handler]
async fn login(
    req: &Request,
    Path(brand): Path<String>,
    Form(form): Form<LoginForm>,
    jar: &CookieJar,
    key: Data<&PortalKey>,
    trusted: Data<&TrustedProxies>,
    portal: Data<&PortalService>,
) -> Response {
    let name = match portal.tenant_name(&brand).await {
        Ok(n) => n,
        Err(e) => return failure(&brand, e),
    };
    if !form_token_ok(jar, &key, &form.csrf) {
        return stale_form();
    }
    let from = trcker_api::client::client_ip(req, &trusted.0.0);
    let refused = |e: PortalError, status| {
        let mut resp = render(
            &LoginPage {
                tenant_name: &name,
                base: base(&brand),
                csrf: form_token(jar, &key, &brand),
                email: &form.email,
                error: Some(e.to_string()),
            },
            status,
        );
        if let PortalError::TooManyAttempts { retry_after_secs } = e
            && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    };
    match portal
        .login(&brand, &form.email, &form.password, from)
        .await
    {
        Ok(user) => {
            set_session(jar, &key, &brand, &user);
            redirect(&base(&brand))
        }
        Err(e @ PortalError::WrongPassword) => refused(e, StatusCode::UNAUTHORIZED),
        Err(e @ PortalError::AffiliatePaused) => refused(e, StatusCode::FORBIDDEN),
        Err(e @ PortalError::TooManyAttempts { .. }) => refused(e, StatusCode::TOO_MANY_REQUESTS),
        Err(e) => failure(&brand, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenOnly {
    csrf: String,
}

/// Signs out: every session of the affiliate ends, not only this browser's.
#[handler]
async fn logout(
    Path(brand): Path<String>,
    Form(form): Form<TokenOnly>,
    jar: &CookieJar,
    key: Data<&PortalKey>,
    portal: Data<&PortalService>,
) -> Response {
    if !form_token_ok(jar, &key, &form.csrf) {
        return stale_form();
    }
    match current_user(&portal, jar, &key, &brand).await {
        Ok(Some(user)) => {
            if let Err(e) = portal.end_sessions(&user).await {
                return failure(&brand, e);
            }
        }
        Ok(None) => {}
        Err(e) => return failure(&brand, e),
    }
    clear_session(jar, &brand);
    redirect(&format!("{}/login", base(&brand)))
}

#[handler]
async fn invite_page(
    Path((brand, token)): Path<(String, String)>,
    jar: &CookieJar,
    key: Data<&PortalKey>,
    portal: Data<&PortalService>,
) -> Response {
    let name = match portal.tenant_name(&brand).await {
        Ok(n) => n,
        Err(e) => return failure(&brand, e),
    };
    match portal.invite_valid(&brand, &token).await {
        Ok(valid) => render(
            &InvitePage {
                tenant_name: &name,
                base: base(&brand),
                csrf: form_token(jar, &key, &brand),
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
        Err(e) => failure(&brand, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InviteForm {
    csrf: String,
    password: String,
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
        Err(e) => return failure(&brand, e),
    };
    if !form_token_ok(jar, &key, &form.csrf) {
        return stale_form();
    }
    let page = |valid: bool, error: String, status| {
        render(
            &InvitePage {
                tenant_name: &name,
                base: base(&brand),
                csrf: form_token(jar, &key, &brand),
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
            set_session(jar, &key, &brand, &user);
            redirect(&base(&brand))
        }
        Err(PortalError::Invalid(invalid)) => page(
            true,
            fields_message(&invalid),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(e @ PortalError::InvalidInvite) => page(false, e.to_string(), StatusCode::NOT_FOUND),
        Err(e) => failure(&brand, e),
    }
}

/// What was wrong with a form's fields, as one sentence.
fn fields_message(invalid: &trcker_services::Invalid) -> String {
    invalid
        .0
        .iter()
        .map(|f| format!("{} {}", f.field, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

#[handler]
async fn password_page(me: SignedIn) -> Response {
    let SignedIn { user, brand, csrf } = me;
    render(
        &PasswordPage {
            tenant_name: &user.tenant_name,
            base: base(&brand),
            csrf,
            min_len: MIN_PASSWORD_LEN,
            error: None,
        },
        StatusCode::OK,
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PasswordForm {
    csrf: String,
    current: String,
    password: String,
    confirm: String,
}

/// Changes the password: this browser stays signed in (a new session),
/// every other session of the affiliate ends.
#[handler]
async fn change_password(
    req: &Request,
    Path(brand): Path<String>,
    Form(form): Form<PasswordForm>,
    jar: &CookieJar,
    key: Data<&PortalKey>,
    trusted: Data<&TrustedProxies>,
    portal: Data<&PortalService>,
) -> Response {
    if !form_token_ok(jar, &key, &form.csrf) {
        return stale_form();
    }
    let user = match signed_in(&portal, jar, &key, &brand).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let from = trcker_api::client::client_ip(req, &trusted.0.0);
    let page = |error: String, status| {
        render(
            &PasswordPage {
                tenant_name: &user.tenant_name,
                base: base(&brand),
                csrf: form_token(jar, &key, &brand),
                min_len: MIN_PASSWORD_LEN,
                error: Some(error),
            },
            status,
        )
    };
    match portal
        .change_password(&user, &form.current, &form.password, &form.confirm, from)
        .await
    {
        Ok(user) => {
            set_session(jar, &key, &brand, &user);
            redirect(&base(&brand))
        }
        Err(PortalError::Invalid(invalid)) => {
            page(fields_message(&invalid), StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(e @ PortalError::TooManyAttempts { .. }) => {
            page(e.to_string(), StatusCode::TOO_MANY_REQUESTS)
        }
        Err(PortalError::SessionEnded) => {
            clear_session(jar, &brand);
            redirect(&format!("{}/login", base(&brand)))
        }
        Err(e) => failure(&brand, e),
    }
}

/// The sub-ID builder's question: an offer and up to three sub-IDs.
#[derive(Deserialize, Default)]
#[serde(default)]
struct LinkBuilder {
    offer: String,
    sub1: String,
    sub2: String,
    sub3: String,
}

/// Her offers, their terms and her links; the builder (a GET form, so it
/// works without JavaScript) renders her link with sub-IDs.
#[handler]
async fn links(
    Path(brand): Path<String>,
    Query(ask): Query<LinkBuilder>,
    jar: &CookieJar,
    key: Data<&PortalKey>,
    site: Data<&PublicUrl>,
    portal: Data<&PortalService>,
) -> Response {
    use trcker_domain::destination::encode_component;
    let user = match signed_in(&portal, jar, &key, &brand).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let offers = match portal.offers(&user).await {
        Ok(o) => o,
        Err(e) => return failure(&brand, e),
    };
    let subs = [
        ("sub1", &ask.sub1),
        ("sub2", &ask.sub2),
        ("sub3", &ask.sub3),
    ];
    let error = subs
        .iter()
        .find(|(_, v)| trcker_domain::fields::SubId::parse(v.trim()).is_err())
        .map(|(name, _)| format!("{name} must be at most 255 characters"));
    let site = &site.0.0;
    let offers = offers
        .into_iter()
        .map(|o| {
            let link = format!(
                "{site}/api/r/{}/{}?via={}",
                encode_component(&brand),
                encode_component(&o.slug),
                encode_component(&user.affiliate.slug)
            );
            let asked = ask.offer == o.slug && error.is_none();
            let built = asked.then(|| {
                subs.iter()
                    .filter(|(_, v)| !v.trim().is_empty())
                    .fold(link.clone(), |url, (name, v)| {
                        format!("{url}&{name}={}", encode_component(v.trim()))
                    })
            });
            let sub = |v: &String| {
                if ask.offer == o.slug {
                    v.clone()
                } else {
                    String::new()
                }
            };
            OfferView {
                sub1: sub(&ask.sub1),
                sub2: sub(&ask.sub2),
                sub3: sub(&ask.sub3),
                built,
                link,
                short_links: o
                    .short_links
                    .iter()
                    .map(|code| format!("{site}/c/{}", encode_component(code)))
                    .collect(),
                name: o.name,
                slug: o.slug,
                currency: o.currency,
                terms: o.terms,
                hold_days: o.hold_days,
                attribution_window_days: o.attribution_window_days,
                coupons: o.coupons,
            }
        })
        .collect();
    render(
        &LinksPage {
            tenant_name: &user.tenant_name,
            base: base(&brand),
            csrf: form_token(jar, &key, &brand),
            affiliate_name: &user.affiliate.name,
            error: error.clone(),
            offers,
        },
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
    )
}

/// The conversions list's question, as the filter form sends it.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ConversionQuery {
    status: String,
    offer: String,
    from: String,
    to: String,
    page: String,
}

impl ConversionQuery {
    /// The filter it asks for, or what is wrong with it.
    fn filter(&self) -> Result<ConversionFilter, String> {
        let day = |name: &str, v: &str| {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map(Some)
                .map_err(|_| format!("{name} must be a day such as 2026-12-31"))
        };
        let status = match self.status.trim() {
            "" => None,
            s => {
                Some(trcker_domain::ConversionStatus::parse(s).map_err(|e| format!("status {e}"))?)
            }
        };
        let (from, to) = (day("from", &self.from)?, day("to", &self.to)?);
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err("from must not be after to".into());
        }
        Ok(ConversionFilter {
            status,
            offer: Some(self.offer.trim().to_owned()).filter(|o| !o.is_empty()),
            from,
            to,
        })
    }

    /// The page asked for (1 when none).
    fn page(&self) -> Result<u64, String> {
        match self.page.trim() {
            "" => Ok(1),
            p => p
                .parse::<u64>()
                .ok()
                .filter(|p| *p >= 1)
                .ok_or_else(|| "page must be a whole number from 1".to_owned()),
        }
    }

    /// The filter as a query string (without the page).
    fn query(&self) -> String {
        use trcker_domain::destination::encode_component as e;
        format!(
            "status={}&offer={}&from={}&to={}",
            e(self.status.trim()),
            e(self.offer.trim()),
            e(self.from.trim()),
            e(self.to.trim())
        )
    }
}

/// Her conversions, filtered and a page at a time.
#[handler]
async fn conversions(
    me: SignedIn,
    Query(ask): Query<ConversionQuery>,
    portal: Data<&PortalService>,
) -> Response {
    let SignedIn { user, brand, csrf } = me;
    let offers = match portal.offer_choices(&user).await {
        Ok(o) => o,
        Err(e) => return failure(&brand, e),
    };
    let asked = ask.filter().and_then(|f| Ok((f, ask.page()?)));
    let (list, error) = match asked {
        Ok((filter, page)) => match portal.conversions(&user, &filter, page).await {
            Ok(list) => (Some(list), None),
            Err(PortalError::Invalid(invalid)) => (None, Some(fields_message(&invalid))),
            Err(e) => return failure(&brand, e),
        },
        Err(message) => (None, Some(message)),
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let (lines, total, page, pages) = list.map_or((Vec::new(), 0, 1, 1), |l| {
        (l.lines, l.total, l.page, l.pages)
    });
    render(
        &ConversionsPage {
            tenant_name: &user.tenant_name,
            base: base(&brand),
            csrf,
            affiliate_name: &user.affiliate.name,
            time_zone: user.time_zone.name(),
            error,
            statuses: ["pending", "approved", "rejected", "refunded", "chargeback"]
                .into_iter()
                .map(|name| StatusChoice {
                    name,
                    selected: ask.status.trim() == name,
                })
                .collect(),
            offers,
            offer: ask.offer.trim().to_owned(),
            from: ask.from.trim().to_owned(),
            to: ask.to.trim().to_owned(),
            query: ask.query(),
            lines,
            total,
            page,
            pages,
        },
        status,
    )
}

/// Her conversions that the filter keeps, as a CSV file.
#[handler]
async fn conversions_csv(
    me: SignedIn,
    Query(ask): Query<ConversionQuery>,
    portal: Data<&PortalService>,
) -> Response {
    let SignedIn { user, brand, .. } = me;
    let filter = match ask.filter() {
        Ok(f) => f,
        Err(message) => return plain(StatusCode::UNPROCESSABLE_ENTITY, &message),
    };
    match portal.conversions_csv(&user, &filter).await {
        Ok(csv) => Response::builder()
            .content_type("text/csv; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            .header(
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"conversions.csv\"",
            )
            .body(csv),
        Err(PortalError::Invalid(invalid)) => {
            plain(StatusCode::UNPROCESSABLE_ENTITY, &fields_message(&invalid))
        }
        Err(e) => failure(&brand, e),
    }
}

/// Her payouts, and what goes into the next one.
#[handler]
async fn payouts(me: SignedIn, portal: Data<&PortalService>) -> Response {
    let SignedIn { user, brand, csrf } = me;
    let (payouts, balances) = match (portal.payouts(&user).await, portal.balances(&user).await) {
        (Ok(p), Ok(e)) => (p, e),
        (Err(e), _) | (_, Err(e)) => return failure(&brand, e),
    };
    render(
        &PayoutsPage {
            tenant_name: &user.tenant_name,
            base: base(&brand),
            csrf,
            affiliate_name: &user.affiliate.name,
            time_zone: user.time_zone.name(),
            on_the_way: payouts
                .iter()
                .filter(|p| p.status == "pending")
                .cloned()
                .collect(),
            balances,
            payouts,
        },
        StatusCode::OK,
    )
}

/// One of her payouts and the entries it covers.
#[handler]
async fn payout(
    me: SignedIn,
    Path((_, id)): Path<(String, String)>,
    portal: Data<&PortalService>,
) -> Response {
    let SignedIn { user, brand, csrf } = me;
    match portal.payout(&user, &id).await {
        Ok(Some((payout, entries))) => render(
            &PayoutPage {
                tenant_name: &user.tenant_name,
                base: base(&brand),
                csrf,
                affiliate_name: &user.affiliate.name,
                time_zone: user.time_zone.name(),
                payout,
                entries,
            },
            StatusCode::OK,
        ),
        Ok(None) => render(&NotFoundPage { base: base(&brand) }, StatusCode::NOT_FOUND),
        Err(e) => failure(&brand, e),
    }
}
