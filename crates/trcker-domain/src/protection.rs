//! Optional protections of a postback integration: an IP allow-list (CIDR, IPv4
//! and IPv6) and an HMAC-SHA256 signature with a timestamp and replay window.
//!
//! Signature scheme (`v1`):
//! - the merchant sends `X-Trcker-Timestamp: <unix seconds>` and
//!   `X-Trcker-Signature: v1=<lower-case hex HMAC-SHA256>`;
//! - the signed message is `<timestamp>.<METHOD>.<path>.<query>.<body>`: the
//!   request's method in upper case, its path, its raw query string (without
//!   `?`; empty when none) and its raw body (empty for GET), joined by `.`;
//! - the key is the lower-case hex SHA-256 of the integration's secret (so the
//!   merchant needs nothing but the secret, and Trcker needs only its hash);
//! - a timestamp more than 300 seconds from Trcker's clock is refused (replay).

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signature's timestamp may be from our clock.
pub const REPLAY_WINDOW_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `203.0.113.0/24`, `2001:db8::/32`, or a single address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}' has an invalid prefix length (0 to {max})"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                (u32::from(net) & mask) == (u32::from(ip) & mask)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                (u128::from(net) & mask) == (u128::from(ip) & mask)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `ip` is allowed by the list (an empty list allows everyone).
pub fn allowed(list: &[Cidr], ip: Option<IpAddr>) -> bool {
    list.is_empty() || ip.is_some_and(|ip| list.iter().any(|c| c.contains(ip)))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "this integration requires a signature: send X-Trcker-Timestamp and X-Trcker-Signature"
    )]
    Missing,
    #[error("X-Trcker-Timestamp must be Unix seconds")]
    Timestamp,
    #[error(
        "the signature's timestamp is more than {REPLAY_WINDOW_SECS} seconds from now (replay?)"
    )]
    Expired,
    #[error("the signature does not match the request")]
    Mismatch,
}

/// The message a signature covers.
pub fn signed_message(
    timestamp: &str,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m = format!(
        "{timestamp}.{}.{path}.{query}.",
        method.to_ascii_uppercase()
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

/// `v1=<hex>` for a message under `key`.
pub fn sign(key: &[u8], message: &[u8]) -> String {
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header against the request.
pub fn verify(
    key: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    message_without_ts: impl FnOnce(&str) -> Vec<u8>,
    now_unix: i64,
) -> Result<(), SignatureError> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let t: i64 = ts.trim().parse().map_err(|_| SignatureError::Timestamp)?;
    if (now_unix - t).abs() > REPLAY_WINDOW_SECS {
        return Err(SignatureError::Expired);
    }
    let expected = sign(key, &message_without_ts(ts.trim()));
    // Several signatures may be sent, space-separated (key rotation).
    if sig
        .split_whitespace()
        .any(|s| crate::secret::secrets_equal(s, &expected))
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let net = Cidr::parse("203.0.113.0/24").expect("cidr");
        assert!(net.contains("203.0.113.7".parse().expect("ip")));
        assert!(net.contains("::ffff:203.0.113.7".parse().expect("ip")));
        assert!(!net.contains("203.0.114.1".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(v6.contains("2001:db8::1".parse().expect("ip")));
        assert!(!v6.contains("2001:db9::1".parse().expect("ip")));
        assert!(
            Cidr::parse("10.0.0.1")
                .expect("single")
                .contains("10.0.0.1".parse().expect("ip"))
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
        assert!(allowed(&[], None));
        assert!(!allowed(&[net], None));
    }

    /// The worked example of docs/postback-integration.md.
    #[test]
    fn worked_example() {
        let key = crate::secret::hash_secret("s3cr3t");
        let msg = signed_message(
            "1795460000",
            "get",
            "/api/postback/acme/pro",
            "click_id=abc&txn_id=o1&amount=79",
            b"",
        );
        assert_eq!(
            String::from_utf8_lossy(&msg),
            "1795460000.GET./api/postback/acme/pro.click_id=abc&txn_id=o1&amount=79."
        );
        let sig = sign(key.as_bytes(), &msg);
        assert!(sig.starts_with("v1=") && sig.len() == 67);
        let check = |ts: &str, s: &str, now| {
            verify(
                key.as_bytes(),
                Some(ts),
                Some(s),
                |t| {
                    signed_message(
                        t,
                        "GET",
                        "/api/postback/acme/pro",
                        "click_id=abc&txn_id=o1&amount=79",
                        b"",
                    )
                },
                now,
            )
        };
        assert_eq!(check("1795460000", &sig, 1795460100), Ok(()));
        assert_eq!(
            check("1795460000", &sig, 1795460400),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            check("1795460001", &sig, 1795460100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(check("soon", &sig, 0), Err(SignatureError::Timestamp));
        assert_eq!(
            verify(b"k", None, Some("x"), |_| Vec::new(), 0),
            Err(SignatureError::Missing)
        );
    }
}
