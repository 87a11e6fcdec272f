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
use trcker_services::ServiceError;
use trcker_services::Services;
use trcker_services::clicks::{ClickOutcome, ClickRequest, ClickTarget};
use trcker_services::postbacks::{IntakeError, IntakeOutcome, PostbackRequest, SignedParts};

/// Largest postback body we read.
pub const MAX_POSTBACK_BODY: usize = 64 * 1024;

/// Adds the receiver's routes to the server's top-level route. They are
/// mounted there rather than nested: a nested route rewrites each request's
/// URI, and the click redirect is the busiest route of all.
pub fn mount(route: Route, services: Services) -> Route {
    // One `Arc` to clone per request (the data is cloned into each request;
    // `Services` itself holds a dozen shared handles).
    let services = Arc::new(services);
    route
        .at("/api/r/:brand/:offer", get(click).data(services.clone()))
        .at("/c/:code", get(short_link).data(services.clone()))
        .at(
            "/api/postback/:brand/:offer",
            get(postback_named)
                .post(postback_named)
                .data(services.clone()),
        )
        .at(
            "/postback",
            get(postback_short).post(postback_short).data(services),
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

/// An RFC 9457 problem document.
fn problem(
    status: StatusCode,
    code: &str,
    detail: &str,
    errors: Option<serde_json::Value>,
) -> Response {
    let mut body = json!({
        "type": format!("urn:trcker:problem:{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    if let Some(errors) = errors {
        body["errors"] = errors;
    }
    Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body.to_string())
}

#[handler]
async fn click(
    req: &Request,
    Path((brand, offer)): Path<(String, String)>,
    services: Data<&Arc<Services>>,
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
        &services,
    )
    .await
}

#[handler]
async fn short_link(
    req: &Request,
    Path(code): Path<String>,
    services: Data<&Arc<Services>>,
) -> Response {
    let q = query_pairs(req);
    redirect(req, &q, ClickTarget::Link { code }, &services).await
}

async fn redirect(
    req: &Request,
    q: &[(String, String)],
    target: ClickTarget,
    services: &Services,
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
        ip: if services.settings.ip_retention_days == 0 {
            None
        } else {
            remote_ip(req)
        },
        user_agent: header_str(req.headers(), header::USER_AGENT),
        referrer: header_str(req.headers(), header::REFERER),
    };
    match services.click(request).await {
        Ok(ClickOutcome::Redirect { location, .. }) | Ok(ClickOutcome::Fallback { location }) => {
            Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, location)
                .header(header::CACHE_CONTROL, "no-store")
                .finish()
        }
        Err(ServiceError::NotFound(what)) => plain(
            StatusCode::NOT_FOUND,
            &format!(
                "This tracking link is not valid (no {what} here). Check the link you followed.\n"
            ),
        ),
        Err(ServiceError::Unavailable) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable, please try again.\n",
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

fn remote_ip(req: &Request) -> Option<String> {
    match req.remote_addr().0 {
        poem::Addr::SocketAddr(a) => Some(a.ip().to_string()),
        _ => None,
    }
}

#[handler]
async fn postback_named(
    req: &Request,
    Path((brand, offer)): Path<(String, String)>,
    body: Body,
    services: Data<&Arc<Services>>,
) -> Response {
    postback(req, Some((brand, offer)), body, &services).await
}

#[handler]
async fn postback_short(req: &Request, body: Body, services: Data<&Arc<Services>>) -> Response {
    postback(req, None, body, &services).await
}

async fn postback(
    req: &Request,
    named: Option<(String, String)>,
    body: Body,
    services: &Services,
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
    let request = PostbackRequest {
        brand,
        offer,
        secret: header_secret.or(param_secret),
        test_fire_token: header_str(
            req.headers(),
            header::HeaderName::from_static(trcker_services::debugger::TEST_FIRE_HEADER),
        ),
        pairs,
        source_ip: remote_ip(req),
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
    match services.intake_postback(request).await {
        Ok(IntakeOutcome::Accepted { postback_id }) => {
            json_response(json!({"status": "accepted", "postback_id": postback_id}))
        }
        Ok(IntakeOutcome::Duplicate {
            postback_id,
            conversion_id,
        }) => json_response(json!({
            "status": "duplicate",
            "postback_id": postback_id,
            "conversion_id": conversion_id,
            "detail": "a postback with this txn_id and status was accepted already; it counts once",
        })),
        Err(IntakeError::Conflict(why)) => {
            problem(StatusCode::CONFLICT, "conflicting-duplicate", &why, None)
        }
        Err(IntakeError::Forbidden(why)) => problem(StatusCode::FORBIDDEN, "forbidden", &why, None),
        Err(IntakeError::RateLimited { retry_after_secs }) => {
            let mut resp = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "this integration's rate limit is exceeded; retry after the Retry-After seconds",
                None,
            );
            if let Ok(v) = header::HeaderValue::from_str(&retry_after_secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Err(IntakeError::Unauthorized(why)) => {
            problem(StatusCode::UNAUTHORIZED, "invalid-secret", why, None)
        }
        Err(IntakeError::NotFound(what)) => problem(
            StatusCode::NOT_FOUND,
            "unknown-offer",
            &format!("unknown {what} in the postback URL"),
            None,
        ),
        Err(IntakeError::Invalid(fields)) => {
            let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
            let errors = fields
                .iter()
                .map(|f| json!({"field": f.field, "message": f.message}))
                .collect::<Vec<_>>();
            problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-parameters",
                &format!("invalid postback parameters: {}", names.join(", ")),
                Some(serde_json::Value::Array(errors)),
            )
        }
        Err(IntakeError::Unavailable) => {
            let mut resp = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage-unavailable",
                "the postback was not stored; please retry",
                None,
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            resp
        }
        Err(IntakeError::Internal(e)) => {
            tracing::error!(error = %e, "postback intake failed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the postback was not stored; please retry",
                None,
            )
        }
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
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            problem(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                &format!("the JSON body is not valid JSON: {e}"),
                None,
            )
        })?;
        let serde_json::Value::Object(map) = value else {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "the JSON body must be an object",
                None,
            ));
        };
        let mut pairs = Vec::with_capacity(map.len());
        for (k, v) in map {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => continue,
                _ => {
                    return Err(problem(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid-parameters",
                        &format!("invalid postback parameters: {k}"),
                        Some(
                            json!([{"field": k, "message": "must be a string, number or boolean"}]),
                        ),
                    ));
                }
            };
            pairs.push((k, s));
        }
        Ok((pairs, bytes.to_vec()))
    } else {
        Ok((url_pairs(&bytes), bytes.to_vec()))
    }
}

fn too_large() -> Response {
    // The unread body stays on the connection: close it rather than reuse it.
    let mut resp = problem(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        &format!("a postback body may be at most {MAX_POSTBACK_BODY} bytes"),
        None,
    );
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}
