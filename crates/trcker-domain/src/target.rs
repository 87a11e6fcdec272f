//! Outgoing targets (affiliate postback URLs, webhooks) and the SSRF rule: we
//! never call loopback, private, link-local or otherwise internal addresses unless
//! the operator has allowed it (`TRCKER_ALLOW_PRIVATE_TARGETS=true`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("must be an absolute http or https URL")]
    Scheme,
    #[error("is not a valid URL: {0}")]
    Syntax(String),
    #[error("must name a host")]
    Host,
}

/// Checks a URL template (macros allowed) is an absolute http(s) URL with a host.
pub fn parse_target_template(template: &str) -> Result<Url, TargetError> {
    // Macros are replaced by a neutral value only to check the shape.
    let probe = crate::destination::expand(template, |_| Some("x"));
    let url = Url::parse(&probe).map_err(|e| TargetError::Syntax(e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(TargetError::Scheme);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(TargetError::Host);
    }
    Ok(url)
}

/// Whether an address is reachable from the public internet (the only kind we
/// call by default).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
        || o[0] >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 can reach private v4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_targets_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn templates() {
        assert!(
            parse_target_template("https://jane.example/pb?cid={click_id}&payout={payout}").is_ok()
        );
        assert_eq!(
            parse_target_template("ftp://x.example/"),
            Err(TargetError::Scheme)
        );
        assert!(parse_target_template("not a url").is_err());
    }
}
