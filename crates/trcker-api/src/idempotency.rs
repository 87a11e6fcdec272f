//! `Idempotency-Key` on every POST of the admin API (Stripe's convention):
//! the first request with a key runs and its answer is kept a day; a retry
//! with the same key and the same request (method, path, query and body)
//! gets that answer again, marked `Idempotent-Replayed: true`; the same key
//! with another request answers 422 `idempotency-key-reused`, and while the
//! first is still running 409 `idempotency-key-in-use`. Of concurrent
//! requests with one key exactly one runs. An answer of 5xx is not kept,
//! so a retry runs again.

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use trcker_domain::secret::digest;
use trcker_services::idempotency::{IdempotencyService, Replay, valid_key};
use trcker_services::tenants::TenantService;

use crate::error::ApiError;
use crate::problem::Code;

/// The request header that carries the key.
pub const HEADER: &str = "idempotency-key";
/// The answer header that marks a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

pub struct Idempotent {
    pub tenants: TenantService,
    pub keys: IdempotencyService,
}

impl<E: Endpoint> Middleware<E> for Idempotent {
    type Output = IdempotentEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        IdempotentEndpoint {
            ep,
            tenants: self.tenants.clone(),
            keys: self.keys.clone(),
        }
    }
}

pub struct IdempotentEndpoint<E> {
    ep: E,
    tenants: TenantService,
    keys: IdempotencyService,
}

impl<E: Endpoint> IdempotentEndpoint<E> {
    async fn pass(&self, req: Request) -> poem::Result<Response> {
        self.ep.call(req).await.map(IntoResponse::into_response)
    }
}

impl<E: Endpoint> Endpoint for IdempotentEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        if req.method() != Method::POST {
            return self.pass(req).await;
        }
        let Some(key) = req.headers().get(HEADER) else {
            return self.pass(req).await;
        };
        let key = key
            .to_str()
            .ok()
            .filter(|k| valid_key(k))
            .map(str::to_owned);
        // Whose key it is; an unauthenticated request is refused by its
        // operation as usual (also when its Idempotency-Key is bad: who may
        // not call comes first).
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let Some(caller) = (match token {
            Some(t) => self.tenants.authenticate(&t).await.ok(),
            None => None,
        }) else {
            return self.pass(req).await;
        };
        let Some(key) = key else {
            return Ok(ApiError::new(
                Code::IdempotencyKeyInvalid,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
            .into_response());
        };
        let body = req.take_body().into_bytes().await?;
        let mut request = Vec::with_capacity(body.len() + 128);
        request.extend_from_slice(req.method().as_str().as_bytes());
        request.push(b' ');
        request.extend_from_slice(req.uri().path().as_bytes());
        request.push(b'?');
        request.extend_from_slice(req.uri().query().unwrap_or("").as_bytes());
        request.push(b'\n');
        request.extend_from_slice(&body);
        let fingerprint = digest(&request);
        req.set_body(body);
        let claim = match self.keys.claim(&caller, &key, &fingerprint).await {
            Ok(claim) => claim,
            Err(e) => return Ok(ApiError::from(e).into_response()),
        };
        match claim {
            Replay::Run => {}
            Replay::Answer(row) => {
                let status = row
                    .status
                    .and_then(|s| u16::try_from(s).ok())
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::OK);
                let mut resp = Response::builder()
                    .status(status)
                    .header(REPLAYED, "true")
                    .body(row.body.unwrap_or_default());
                if let Some(ct) = row
                    .content_type
                    .and_then(|c| HeaderValue::from_str(&c).ok())
                {
                    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                return Ok(resp);
            }
            Replay::Running => {
                return Ok(ApiError::new(
                    Code::IdempotencyKeyInUse,
                    "a request with this Idempotency-Key is still running; retry in a moment",
                )
                .into_response());
            }
            Replay::Mismatch => {
                return Ok(ApiError::new(
                    Code::IdempotencyKeyReused,
                    "this Idempotency-Key was used for another request (method, path or body); use a new key for a new request",
                )
                .into_response());
            }
        }
        let mut resp = match self.ep.call(req).await {
            Ok(r) => r.into_response(),
            Err(e) => crate::error::catch_all(e).await,
        };
        if resp.status().is_server_error() {
            if let Err(e) = self.keys.release(&caller, &key).await {
                tracing::warn!(error = %e, "idempotency key not released");
            }
            return Ok(resp);
        }
        let bytes = resp.take_body().into_bytes().await?;
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Err(e) = self
            .keys
            .answer(&caller, &key, resp.status().as_u16(), content_type, text)
            .await
        {
            // The change was made: answer it; a retry will see the key
            // still running and, after a while, run again.
            tracing::error!(error = %e, "idempotency key's answer not kept");
        }
        resp.set_body(bytes);
        Ok(resp)
    }
}
