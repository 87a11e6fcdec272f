//! Who a request comes from, behind the operator's load balancers.
//!
//! The socket's peer is the client unless it is one of the operator's trusted
//! proxies. From a trusted peer, the addresses it forwarded (`Forwarded:
//! for=…`, else `X-Forwarded-For`) are read right to left, each hop trusted
//! in turn, and the first address that is not a trusted proxy is the client.
//! Headers from any other peer are ignored: anyone can send them.

use std::net::IpAddr;

use crate::protection::Cidr;

/// The client's address, from the socket's `peer` and the forwarding headers'
/// values (every `Forwarded` header's, then every `X-Forwarded-For` header's,
/// in the order received).
pub fn client_address(
    peer: IpAddr,
    forwarded: &[&str],
    x_forwarded_for: &[&str],
    trusted: &[Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = if forwarded.is_empty() {
        x_forwarded_for
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|h| parse_host(h.trim()))
            .collect()
    } else {
        forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_host(v.trim().trim_matches('"')))?
                })
            })
            .collect()
    };
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        if !is_trusted(client) {
            break;
        }
        client = hop;
    }
    client
}

/// An address as forwarding headers write it: `203.0.113.7`,
/// `203.0.113.7:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`, `2001:db8::1`.
fn parse_host(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).expect("cidr")).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let got = client_address(ip("198.51.100.9"), &[], &["203.0.113.7"], &trusted);
        assert_eq!(got, ip("198.51.100.9"));
        assert_eq!(
            client_address(ip("10.0.0.2"), &[], &["203.0.113.7"], &[]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn trusted_hops_are_walked_right_to_left() {
        let trusted = cidrs(&["10.0.0.0/8", "192.0.2.0/24"]);
        // A client that spoofs a first entry is still named by the proxies' own hops.
        let got = client_address(
            ip("10.0.0.2"),
            &[],
            &["1.2.3.4, 203.0.113.7", "192.0.2.5"],
            &trusted,
        );
        assert_eq!(got, ip("203.0.113.7"));
        // Every hop trusted: the leftmost is the client.
        let got = client_address(ip("10.0.0.2"), &[], &["192.0.2.5"], &trusted);
        assert_eq!(got, ip("192.0.2.5"));
        // No header: the peer.
        assert_eq!(
            client_address(ip("10.0.0.2"), &[], &[], &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn forwarded_wins_and_its_forms_are_read() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let got = client_address(
            ip("10.0.0.2"),
            &["for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.9"],
            &["203.0.113.7"],
            &trusted,
        );
        assert_eq!(got, ip("2001:db8::1"));
        let got = client_address(ip("10.0.0.2"), &["For=203.0.113.8:80"], &[], &trusted);
        assert_eq!(got, ip("203.0.113.8"));
        // Unreadable hops are skipped.
        let got = client_address(ip("10.0.0.2"), &["for=unknown, for=_hidden"], &[], &trusted);
        assert_eq!(got, ip("10.0.0.2"));
    }
}
