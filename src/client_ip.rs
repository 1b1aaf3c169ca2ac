//! Which address a request comes from: the socket's peer, unless the peer is a configured
//! trusted proxy, in which case `X-Forwarded-For` is read from the right, skipping trusted
//! hops, so a client cannot choose its own address by sending the header itself.

use http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Whether `peer` is one of the trusted proxies.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|n| n.contains(&peer))
}

/// The client address of a request that arrived from `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut candidate = peer;
    // Several header lines form one list, in order (RFC 9110 §5.3).
    // Split the raw bytes: one non-ASCII element must not hide the hops a proxy appended
    // to the same line.
    let hops: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .collect();
    for hop in hops.iter().rev() {
        let Some(ip) = std::str::from_utf8(hop)
            .ok()
            .and_then(|h| parse_hop(h.trim()))
        else {
            // Garbage where an address should be: believe no further than the last good hop.
            return candidate;
        };
        if !is_trusted(&ip) {
            return ip;
        }
        candidate = ip;
    }
    candidate
}

/// One `X-Forwarded-For` element: an address, or an address with a port (some proxies add
/// one, IPv6 then in brackets).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            if let Ok(v) = v.parse() {
                h.append("x-forwarded-for", v);
            }
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|n| n.parse().ok()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_sends() {
        let h = headers(&["1.2.3.4"]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
        assert_eq!(
            client_ip(ip("9.9.9.9"), &h, &nets(&["10.0.0.0/8"])),
            ip("9.9.9.9")
        );
    }

    #[test]
    fn trusted_hops_are_skipped_from_the_right() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client prepended a spoofed address; the first untrusted from the right wins.
        let h = headers(&["6.6.6.6, 1.2.3.4, 10.0.0.7"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("1.2.3.4"));
        // Split over two header lines, same list.
        let h = headers(&["6.6.6.6", "1.2.3.4"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("1.2.3.4"));
        // Every hop trusted: the leftmost one.
        let h = headers(&["10.1.1.1, 10.2.2.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.1.1.1"));
        // No header at all: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn garbage_stops_the_walk_and_ports_are_dropped() {
        let trusted = nets(&["10.0.0.0/8", "::1/128"]);
        let h = headers(&["1.2.3.4, not-an-ip, 10.0.0.9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.9"));
        // A non-ASCII element stops the walk there, not before the proxy's own hop.
        let mut h = HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_bytes(b"\xc3\xa9, 1.2.3.4") {
            h.append("x-forwarded-for", v);
        }
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("1.2.3.4"));
        let h = headers(&["[2001:db8::1]:443, 5.6.7.8:1234"]);
        assert_eq!(client_ip(ip("::1"), &h, &trusted), ip("5.6.7.8"));
        // IPv4-mapped IPv6 peers are the IPv4 address.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &headers(&["7.7.7.7"]), &trusted),
            ip("7.7.7.7")
        );
    }
}
