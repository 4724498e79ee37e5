//! The client address that per-IP limits count and logs show: the TCP peer, or, when the
//! peer is one of `server.trusted_proxies`, the address that proxy reports in
//! `Forwarded` (RFC 7239) or `X-Forwarded-For`. A header from any other peer is ignored,
//! since a client can write whatever it likes there.
//!
//! The forwarding chain is read from the right (the hop closest to us): trusted proxies
//! are skipped, and the first address that is not one is the client. A chain made only of
//! trusted proxies yields its leftmost entry; a chain with a malformed entry, or none at
//! all, yields the peer itself.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Parses a `server.trusted_proxies` entry: a CIDR network or a single address.
pub fn parse_network(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The configured trusted proxies (entries that do not parse were refused by `validate`).
pub fn trusted_networks(entries: &[String]) -> Vec<IpNet> {
    entries.iter().filter_map(|e| parse_network(e)).collect()
}

/// The client's address for a request from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(chain) = forwarded_for(headers).or_else(|| x_forwarded_for(headers)) else {
        return peer;
    };
    chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or_else(|| chain.first())
        .copied()
        .unwrap_or(peer)
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The `for=` addresses of every `Forwarded` header, in order; `None` when there is no
/// such header or an entry is not an address (`for=unknown`, an obfuscated name).
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut chain = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let value = value.to_str().ok()?;
        for element in value.split(',') {
            let Some(node) = element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then_some(value.trim())
            }) else {
                continue;
            };
            chain.push(parse_node(node.trim_matches('"'))?);
        }
    }
    (!chain.is_empty()).then_some(chain)
}

/// The entries of every `X-Forwarded-For` header, in order.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut chain = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        for entry in value.to_str().ok()?.split(',') {
            chain.push(parse_node(entry.trim())?);
        }
    }
    (!chain.is_empty()).then_some(chain)
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711` or `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse::<IpAddr>().ok().map(canonical);
    }
    let (ip, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn headers_count_only_from_trusted_peers() {
        let trusted = trusted_networks(&["10.0.0.0/8".into(), "192.0.2.7".into()]);
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_ip(ip("10.1.2.3"), &xff, &trusted), ip("203.0.113.9"));
        assert_eq!(
            client_ip(ip("192.0.2.7"), &xff, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("192.0.2.8"), &xff, &trusted), ip("192.0.2.8"));
        assert_eq!(client_ip(ip("10.1.2.3"), &xff, &[]), ip("10.1.2.3"));
    }

    #[test]
    fn the_chain_is_read_from_the_nearest_hop() {
        let trusted = trusted_networks(&["10.0.0.0/8".into()]);
        // The client wrote a fake first entry; our proxies appended the real one.
        let xff = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &xff, &trusted), ip("203.0.113.9"));
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.3, 10.0.0.2")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &all_trusted, &trusted),
            ip("10.0.0.3")
        );
        let garbage = headers(&[("x-forwarded-for", "203.0.113.9, nonsense")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &garbage, &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_wins_and_accepts_ports_and_ipv6() {
        let trusted = trusted_networks(&["10.0.0.0/8".into()]);
        let both = headers(&[
            (
                "forwarded",
                "for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.2",
            ),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &both, &trusted),
            ip("2001:db8::1")
        );
        let v4 = headers(&[("forwarded", "for=198.51.100.4:80;by=10.0.0.1")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &v4, &trusted), ip("198.51.100.4"));
        let mapped = ip("::ffff:10.0.0.1");
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_ip(mapped, &xff, &trusted), ip("203.0.113.9"));
        assert!(parse_network("not-a-net").is_none());
    }
}
