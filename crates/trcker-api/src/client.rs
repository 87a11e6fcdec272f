//! Who sent a request, and refusing addresses that keep failing to
//! authenticate (`trcker_services::guard`).

use std::net::IpAddr;
use std::sync::Arc;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use trcker_domain::client::client_address;
use trcker_domain::protection::Cidr;
use trcker_services::guard::AuthFailures;

use crate::problem::{Code, Problem};

/// The client's address: the socket's peer, or, from a trusted proxy, the
/// address its forwarding headers name (`trcker_domain::client`).
pub fn client_ip(req: &Request, trusted: &[Cidr]) -> Option<IpAddr> {
    let poem::Addr::SocketAddr(peer) = req.remote_addr().0 else {
        return None;
    };
    if trusted.is_empty() {
        return Some(peer.ip());
    }
    let values = |name: &str| -> Vec<&str> {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    Some(client_address(
        peer.ip(),
        &values("forwarded"),
        &values("x-forwarded-for"),
        trusted,
    ))
}

/// The answer to an address refused for its failures: 429 with `Retry-After`.
pub fn too_many_failures(retry_after_secs: u64) -> Response {
    let mut resp = Problem::new(
        Code::TooManyAuthFailures,
        format!(
            "too many failed authentications from this address; retry after {retry_after_secs} seconds"
        ),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Around the admin API: refuses an address with too many failed
/// authentications, and counts every 401 it gets.
pub struct AuthGuard {
    pub failures: Arc<AuthFailures>,
    pub trusted_proxies: Vec<Cidr>,
}

impl<E: Endpoint> Middleware<E> for AuthGuard {
    type Output = Guarded<E>;

    fn transform(&self, ep: E) -> Self::Output {
        Guarded {
            ep,
            failures: self.failures.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

pub struct Guarded<E> {
    ep: E,
    failures: Arc<AuthFailures>,
    trusted_proxies: Vec<Cidr>,
}

impl<E: Endpoint> Endpoint for Guarded<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let ip = client_ip(&req, &self.trusted_proxies);
        if let Err(secs) = self.failures.check(ip) {
            return Ok(too_many_failures(secs));
        }
        let resp = match self.ep.call(req).await {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        };
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.failures.failed(ip);
        }
        Ok(resp)
    }
}
