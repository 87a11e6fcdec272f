//! Trcker's public receiver: click redirects and postbacks.
//!
//! It does no business logic: it parses the request, calls one use case, and
//! answers. Clicks answer 302; postbacks answer JSON, truthfully (`accepted` only
//! once stored; every rejection with its status code and a problem+json body
//! naming each bad field).

use std::sync::Arc;

use poem::http::{HeaderMap, Method, StatusCode, header};
use poem::web::{Data, Path};
use poem::{Body, EndpointExt, Request, Response, Route, get, handler};
use serde_json::json;
use trcker_api::problem::{Code, Problem};
use trcker_domain::FieldError;
use trcker_domain::protection::Cidr;
use trcker_services::StoreError;
use trcker_services::clicks::{ClickError, ClickOutcome, ClickRequest, ClickService, ClickTarget};
use trcker_services::debugger::TEST_FIRE_HEADER;
use trcker_services::guard::AuthFailures;
use trcker_services::intake::{
    IntakeError, IntakeOutcome, IntakeService, PostbackRequest, SignedParts,
};

/// Largest postback body we read.
pub const MAX_POSTBACK_BODY: usize = 64 * 1024;

/// What the receiver's handlers share (one `Arc` cloned into each request).
struct Edge {
    clicks: ClickService,
    intake: IntakeService,
    /// Peers whose forwarding headers name the client (see `client_ip`).
    trusted_proxies: Vec<Cidr>,
    /// Addresses refused for their failed secrets.
    failures: Arc<AuthFailures>,
}

/// Adds the receiver's routes to the server's top-level route. They are
/// mounted there rather than nested: a nested route rewrites each request's
/// URI, and the click redirect is the busiest route of all.
pub fn mount(
    route: Route,
    clicks: ClickService,
    intake: IntakeService,
    trusted_proxies: Vec<Cidr>,
    failures: Arc<AuthFailures>,
) -> Route {
    let edge = Arc::new(Edge {
        clicks,
        intake,
        trusted_proxies,
        failures,
    });
    route
        .at("/api/r/:brand/:offer", get(click).data(edge.clone()))
        .at("/c/:code", get(short_link).data(edge.clone()))
        .at(
            "/api/postback/:brand/:offer",
            get(postback_named).post(postback_named).data(edge.clone()),
        )
        .at(
            "/postback",
            get(postback_short).post(postback_short).data(edge),
        )
}

fn query_pairs(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| url_pairs(q.as_bytes()))
        .unwrap_or_default()
}

fn url_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes).unwrap_or_default()
}

fn plain(status: StatusCode, text: &str) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(text.to_owned())
}

/// The page a shopper sees when a tracking link cannot send them on:
/// small, readable on a phone, no script, never cached or framed.
fn shopper_page(status: StatusCode, title: &str, message: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
         <style>{SHOPPER_STYLE}</style></head>\n\
         <body><main><h1>{title}</h1><p>{message}</p></main></body></html>\n"
    );
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        )
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(html)
}

/// The shopper page's few rules (inline: the page has nothing else to load).
const SHOPPER_STYLE: &str = "body{margin:0;font:17px/1.5 system-ui,-apple-system,\"Segoe UI\",\
    Roboto,sans-serif;color:#1d2430;background:#f6f8fb}main{max-width:32rem;margin:0 auto;\
    padding:2.5rem 1.25rem}h1{font-size:1.35rem;line-height:1.3;margin:0 0 .75rem}";

/// A problem+json answer of the code's status, never cached.
fn problem(code: Code, detail: &str) -> Response {
    Problem::new(code, detail).into_response()
}

/// 422 naming each bad postback parameter.
fn invalid_parameters(fields: Vec<FieldError>) -> Response {
    Problem::fields(
        Code::InvalidParameters,
        "invalid postback parameters",
        fields,
    )
    .into_response()
}

#[handler]
async fn click(
    req: &Request,
    Path((brand, offer)): Path<(String, String)>,
    edge: Data<&Arc<Edge>>,
) -> Response {
    let q = query_pairs(req);
    let partner = q.iter().find(|(k, _)| k == "via").map(|(_, v)| v.clone());
    redirect(
        req,
        &q,
        ClickTarget::Named {
            brand,
            offer,
            partner,
        },
        &edge,
    )
    .await
}

#[handler]
async fn short_link(req: &Request, Path(code): Path<String>, edge: Data<&Arc<Edge>>) -> Response {
    let q = query_pairs(req);
    redirect(req, &q, ClickTarget::Link { code }, &edge).await
}

async fn redirect(
    req: &Request,
    q: &[(String, String)],
    target: ClickTarget,
    edge: &Edge,
) -> Response {
    let get = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let request = ClickRequest {
        target,
        subs: [
            get("sub1"),
            get("sub2"),
            get("sub3"),
            get("sub4"),
            get("sub5"),
        ],
        ip: client_ip(req, &edge.trusted_proxies),
        user_agent: header_str(req.headers(), header::USER_AGENT),
        referrer: header_str(req.headers(), header::REFERER),
    };
    match edge.clicks.click(request).await {
        Ok(ClickOutcome::Redirect { location, .. }) | Ok(ClickOutcome::Fallback { location }) => {
            Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, location)
                .header(header::CACHE_CONTROL, "no-store")
                .finish()
        }
        Err(ClickError::NotFound(what)) => shopper_page(
            StatusCode::NOT_FOUND,
            "This link does not lead anywhere",
            &format!(
                "The link you followed is not valid or no longer active (no {what} here). \
                 If someone shared it with you, ask them for a new one."
            ),
        ),
        Err(ClickError::Busy | ClickError::Store(StoreError::Unavailable)) => shopper_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again in a moment",
            "We could not take you there just now. Reload this page in a few seconds.",
        ),
        Err(e) => {
            tracing::error!(error = %e, "click failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong.\n")
        }
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The client's address, as text for the click and postback rows.
fn client_ip(req: &Request, trusted: &[Cidr]) -> Option<String> {
    trcker_api::client::client_ip(req, trusted).map(|ip| ip.to_string())
}

#[handler]
async fn postback_named(
    req: &Request,
    Path((brand, offer)): Path<(String, String)>,
    body: Body,
    edge: Data<&Arc<Edge>>,
) -> Response {
    postback(req, Some((brand, offer)), body, &edge).await
}

#[handler]
async fn postback_short(req: &Request, body: Body, edge: Data<&Arc<Edge>>) -> Response {
    postback(req, None, body, &edge).await
}

async fn postback(
    req: &Request,
    named: Option<(String, String)>,
    body: Body,
    edge: &Edge,
) -> Response {
    let mut pairs = query_pairs(req);
    let mut raw_body = Vec::new();
    if req.method() == Method::POST {
        match body_pairs(req, body).await {
            Ok((more, bytes)) => {
                pairs.extend(more);
                raw_body = bytes;
            }
            Err(resp) => return resp,
        }
    }
    let header_secret = header_str(
        req.headers(),
        header::HeaderName::from_static("x-postback-secret"),
    );
    let param_secret = pairs
        .iter()
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.clone());
    let (brand, offer) = named
        .map(|(b, o)| (Some(b), Some(o)))
        .unwrap_or((None, None));
    let ip = trcker_api::client::client_ip(req, &edge.trusted_proxies);
    if let Err(secs) = edge.failures.check(ip) {
        metrics::counter!("trcker_postbacks_total", "outcome" => "refused", "code" => Code::TooManyAuthFailures.as_str())
            .increment(1);
        return trcker_api::client::too_many_failures(secs);
    }
    let request = PostbackRequest {
        brand,
        offer,
        secret: header_secret.or(param_secret),
        test_fire_token: header_str(
            req.headers(),
            header::HeaderName::from_static(TEST_FIRE_HEADER),
        ),
        pairs,
        source_ip: ip.map(|ip| ip.to_string()),
        method: req.method().to_string(),
        signed: SignedParts {
            timestamp: header_str(
                req.headers(),
                header::HeaderName::from_static("x-trcker-timestamp"),
            ),
            signature: header_str(
                req.headers(),
                header::HeaderName::from_static("x-trcker-signature"),
            ),
            path: req.uri().path().to_owned(),
            query: req.uri().query().unwrap_or("").to_owned(),
            body: raw_body,
        },
    };
    match edge.intake.intake(request).await {
        Ok(IntakeOutcome::Accepted { postback_id }) => {
            metrics::counter!("trcker_postbacks_total", "outcome" => "accepted").increment(1);
            json_response(json!({"status": "accepted", "postback_id": postback_id}))
        }
        Ok(IntakeOutcome::Duplicate {
            postback_id,
            conversion_id,
        }) => {
            metrics::counter!("trcker_postbacks_total", "outcome" => "duplicate").increment(1);
            json_response(json!({
            "status": "duplicate",
            "postback_id": postback_id,
            "conversion_id": conversion_id,
            "detail": "a postback with this txn_id and status was accepted already; it counts once",
            }))
        }
        Err(e) => {
            if matches!(
                e,
                IntakeError::MissingSecret
                    | IntakeError::WrongSecret
                    | IntakeError::BadTestFireToken
            ) {
                edge.failures.failed(ip);
            }
            refusal(e)
        }
    }
}

/// The answer to a postback that was not taken, counted by its code.
fn refusal(e: IntakeError) -> Response {
    let detail = e.to_string();
    let code = match &e {
        IntakeError::MissingSecret => Code::MissingSecret,
        IntakeError::WrongSecret => Code::InvalidSecret,
        IntakeError::BadTestFireToken => Code::InvalidTestFireToken,
        IntakeError::SecretForOtherOffer => Code::SecretForOtherOffer,
        IntakeError::UnknownBrand => Code::UnknownBrand,
        IntakeError::UnknownOffer => Code::UnknownOffer,
        IntakeError::IpNotAllowed(_) => Code::IpNotAllowed,
        IntakeError::TenantSuspended(_) => Code::TenantSuspended,
        IntakeError::BadSignature(_) => Code::BadSignature,
        IntakeError::ConflictingDuplicate(_) => Code::ConflictingDuplicate,
        IntakeError::RateLimited { .. } => Code::RateLimited,
        IntakeError::Invalid(_) => Code::InvalidParameters,
        IntakeError::Store(StoreError::Unavailable) => Code::StorageUnavailable,
        IntakeError::Store(StoreError::Internal(_)) => Code::Internal,
    };
    metrics::counter!("trcker_postbacks_total", "outcome" => "refused", "code" => code.as_str())
        .increment(1);
    match e {
        IntakeError::RateLimited { retry_after_secs } => {
            let mut resp = problem(
                code,
                "this integration's rate limit is exceeded; retry after the Retry-After seconds",
            );
            if let Ok(v) = header::HeaderValue::from_str(&retry_after_secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        IntakeError::Invalid(fields) => invalid_parameters(fields),
        IntakeError::Store(StoreError::Unavailable) => {
            let mut resp = problem(code, "the postback was not stored; please retry");
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            resp
        }
        IntakeError::Store(StoreError::Internal(msg)) => {
            tracing::error!(error = %msg, "postback intake failed");
            problem(code, "the postback was not stored; please retry")
        }
        _ => problem(code, &detail),
    }
}

fn json_response(v: serde_json::Value) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .content_type("application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(v.to_string())
}

/// Parameters from a form or JSON body; 413 when too large, 400 when unreadable.
async fn body_pairs(
    req: &Request,
    body: Body,
) -> Result<(Vec<(String, String)>, Vec<u8>), Response> {
    if req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_POSTBACK_BODY)
    {
        return Err(too_large());
    }
    let bytes = body
        .into_bytes_limit(MAX_POSTBACK_BODY)
        .await
        .map_err(|_| too_large())?;
    if bytes.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let content_type = req.content_type().unwrap_or("").to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        // Every member in order, a repeated key too: the parameters' parser
        // refuses one given twice with different values, as it does for
        // the query string (a JSON map would keep the last silently).
        let map = match serde_json::from_slice::<JsonMembers>(&bytes) {
            Ok(JsonMembers(Some(members))) => members,
            Ok(JsonMembers(None)) => {
                return Err(problem(
                    Code::InvalidBody,
                    "the JSON body must be an object",
                ));
            }
            Err(e) => {
                return Err(problem(
                    Code::InvalidBody,
                    &format!("the JSON body is not valid JSON: {e}"),
                ));
            }
        };
        let mut pairs = Vec::with_capacity(map.len());
        for (k, v) in map {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => continue,
                _ => {
                    return Err(invalid_parameters(vec![FieldError::new(
                        &k,
                        "must be a string, number or boolean",
                    )]));
                }
            };
            pairs.push((k, s));
        }
        Ok((pairs, bytes.to_vec()))
    } else {
        Ok((url_pairs(&bytes), bytes.to_vec()))
    }
}

/// A JSON document's top-level members in order, repeated keys kept;
/// `None` when it is not an object.
struct JsonMembers(Option<Vec<(String, serde_json::Value)>>);

impl<'de> serde::Deserialize<'de> for JsonMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = JsonMembers;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonMembers, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, serde_json::Value>()? {
                    members.push(member);
                }
                Ok(JsonMembers(Some(members)))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<JsonMembers, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(JsonMembers(None))
            }

            fn visit_bool<E>(self, _: bool) -> Result<JsonMembers, E> {
                Ok(JsonMembers(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<JsonMembers, E> {
                Ok(JsonMembers(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<JsonMembers, E> {
                Ok(JsonMembers(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<JsonMembers, E> {
                Ok(JsonMembers(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<JsonMembers, E> {
                Ok(JsonMembers(None))
            }
            fn visit_unit<E>(self) -> Result<JsonMembers, E> {
                Ok(JsonMembers(None))
            }
        }
        d.deserialize_any(Members)
    }
}

fn too_large() -> Response {
    // The unread body stays on the connection: close it rather than reuse it.
    let mut resp = problem(
        Code::BodyTooLarge,
        &format!("a postback body may be at most {MAX_POSTBACK_BODY} bytes"),
    );
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}
