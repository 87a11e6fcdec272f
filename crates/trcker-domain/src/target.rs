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

/// Why an address is never called (unless private targets are allowed), or
/// `None` for an address of the public internet.
///
/// IPv6 forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`,
/// translated `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4
/// `2002:aabb:ccdd::`) are judged by the IPv4 address they carry. The
/// deprecated IPv4-compatible `::a.b.c.d`, local-use NAT64 `64:ff9b:1::/48`,
/// the IETF protocol block `2001::/23` (Teredo `2001::/32` among them: it
/// tunnels to an address of the relay's choosing) and the discard prefix
/// `100::/64` are refused whole.
pub fn forbidden(ip: IpAddr) -> Option<Forbidden> {
    let class = match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }?;
    Some(Forbidden { ip, class })
}

/// Whether an address is reachable from the public internet (the only kind we
/// call by default).
pub fn is_public(ip: IpAddr) -> bool {
    forbidden(ip).is_none()
}

/// An address Trcker does not call, and the kind of address it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub ip: IpAddr,
    pub class: &'static str,
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {} address (private targets are not allowed)",
            self.ip, self.class
        )
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(if ip.is_unspecified() || o[0] == 0 {
        "an unspecified or \"this network\""
    } else if ip.is_loopback() {
        "a loopback"
    } else if ip.is_private() {
        "a private"
    } else if o[0] == 169 && o[1] == 254 && o[2] == 169 && o[3] == 254 {
        "a cloud metadata"
    } else if ip.is_link_local() {
        "a link-local"
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        "a carrier-grade NAT"
    } else if ip.is_multicast() {
        "a multicast"
    } else if ip.is_broadcast() || o[0] >= 240 {
        "a reserved"
    } else if ip.is_documentation() {
        "a documentation"
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        "a benchmarking"
    } else if (o[0] == 192 && o[1] == 0 && o[2] == 0) || (o[0] == 192 && o[1] == 88 && o[2] == 99) {
        "a protocol assignment"
    } else {
        return None;
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let carried = |v4: Ipv4Addr, form: &'static str| v4_class(v4).map(|_| form);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return carried(v4, "an IPv4-mapped form of a non-public");
    }
    Some(if ip.is_unspecified() {
        "an unspecified"
    } else if ip.is_loopback() {
        "a loopback"
    } else if s[..6] == [0; 6] {
        "an IPv4-compatible"
    } else if s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return carried(
            embedded(s[6], s[7]),
            "an IPv4-translated form of a non-public",
        );
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return carried(embedded(s[6], s[7]), "a NAT64 form of a non-public");
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        "a local-use NAT64"
    } else if s[0] == 0x2002 {
        return carried(embedded(s[1], s[2]), "a 6to4 form of a non-public");
    } else if s[0] == 0x2001 && s[1] < 0x200 {
        "an IETF protocol (Teredo, benchmarking, ORCHID)"
    } else if s[0] == 0x100 && s[1..4] == [0; 3] {
        "a discard-only"
    } else if ip.is_multicast() {
        "a multicast"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "a unique local (private)"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "a link-local"
    } else if (s[0] & 0xffc0) == 0xfec0 {
        "a site-local"
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] & 0xfff0) == 0x3ff0 {
        "a documentation"
    } else {
        return None;
    })
}

/// The address a URL names literally (any IPv4 spelling: decimal, octal, hex
/// and shortened forms are read as the address they mean), or `None` for a
/// host name.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// A URL as the delivery log shows it: the values of query parameters whose
/// names suggest a secret (`key`, `token`, `secret`, `password`, `auth`,
/// `sig`…) and any user information are replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return url.to_owned();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username("***");
        let _ = parsed.set_password(None);
    }
    let secretive = |name: &str| {
        let n = name.to_ascii_lowercase();
        [
            "key", "token", "secret", "password", "passwd", "auth", "sig", "hash",
        ]
        .iter()
        .any(|w| n.contains(w))
    };
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if secretive(&k) {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Refuses a target template whose host is a literal non-public address.
pub fn check_literal_target(template: &str) -> Result<(), Forbidden> {
    match parse_target_template(template)
        .ok()
        .as_ref()
        .and_then(literal_ip)
        .and_then(forbidden)
    {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_forbidden_form_is_refused() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "192.0.0.8",
            "192.88.99.1",
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2002:c0a8:101::",
            "2001::7f00:1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "100::1",
            "100::ffff:1",
            "fec0::1",
            "fd00::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "ff05::2",
            "2001:db8::1",
            "3fff::1",
        ] {
            let parsed: IpAddr = ip.parse().expect("ip");
            assert!(forbidden(parsed).is_some(), "{ip} must be refused");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "2a00:1450:4001:82b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "100:0:0:1::1",
        ] {
            let parsed: IpAddr = ip.parse().expect("ip");
            assert_eq!(forbidden(parsed), None, "{ip} is public");
        }
    }

    #[test]
    fn every_ipv4_spelling_is_read_as_its_address() {
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://0x7f000001/",
            "http://127.1/",
            "http://127.0.1/",
            "http://017700000001/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://[::127.0.0.1]/",
        ] {
            let parsed = Url::parse(url).expect("url");
            let ip = literal_ip(&parsed).expect("literal");
            assert!(forbidden(ip).is_some(), "{url} is {ip}");
            assert!(check_literal_target(url).is_err(), "{url}");
        }
        assert_eq!(
            check_literal_target("https://jane.example/pb?c={click_id}"),
            Ok(())
        );
        assert_eq!(check_literal_target("http://8.8.8.8/pb"), Ok(()));
        let refused = check_literal_target("http://0x7f.1/pb").expect_err("loopback");
        assert_eq!(
            refused.to_string(),
            "127.0.0.1 is a loopback address (private targets are not allowed)"
        );
    }

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
    fn secrets_are_redacted_from_logged_urls() {
        assert_eq!(
            redact_url("https://u:p@t.example/pb?cid=1&api_key=abc&Token=x&payout=5.00"),
            "https://***@t.example/pb?cid=1&api_key=***&Token=***&payout=5.00"
        );
        assert_eq!(redact_url("https://t.example/pb"), "https://t.example/pb");
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
