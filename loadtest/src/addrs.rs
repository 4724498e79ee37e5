//! Where connections go and where they come from: the target node list and the source
//! address pool.
//!
//! Every connection binds its socket to a source address before connecting, spread
//! round-robin over the pool (`--source-ips 127.0.0.2-127.0.0.50`, a count such as `49`
//! meaning 127.0.0.2 and up, a comma list, `auto` or `none`). Each source address has its own
//! ephemeral port range, so tens of thousands of connections to one `ip:port` never run out
//! of ports. Targets are `ws://` URLs, used round-robin when there are several (one per node).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::http::Uri;

/// The first address of the default loopback pool; 127.0.0.1 is left to everything else.
const FIRST_LOOPBACK_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// How many loopback sources `auto` uses: enough for 20,000 connections per address
/// at 49 addresses, far more than one machine can hold.
const AUTO_LOOPBACK_SOURCES: u32 = 49;
/// Upper bound on a pool, to catch typos such as `127.0.0.2-127.1.0.0`.
const MAX_POOL: u32 = 65_536;

/// One node to connect to: its URL as given and the socket address it resolved to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

impl Target {
    /// Parses and resolves a `ws://host:port/path` URL.
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some(other) => bail!("unsupported scheme {other:?} in {url:?} (only ws://)"),
            None => bail!("URL {url:?} has no scheme; use ws://host:port/ws"),
        }
        let host = uri.host().context("URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}:{port}"))?
            .next()
            .with_context(|| format!("{host}:{port} resolved to nothing"))?;
        Ok(Target {
            url: url.to_string(),
            addr,
        })
    }
}

/// Resolves every URL of a list given as repeated flags and/or comma-separated values.
pub async fn resolve_targets(urls: &[String]) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for url in urls
        .iter()
        .flat_map(|u| u.split(','))
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        targets.push(Target::resolve(url).await?);
    }
    ensure!(!targets.is_empty(), "no --url given");
    Ok(targets)
}

/// The source address pool as written on the command line, before it meets the targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// Loopback pool when every target is loopback, else no binding.
    Auto,
    /// Let the kernel choose (no bind before connect).
    None,
    List(Vec<IpAddr>),
}

impl std::str::FromStr for SourceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<SourceSpec> {
        let s = s.trim();
        match s {
            "auto" => return Ok(SourceSpec::Auto),
            "none" | "" => return Ok(SourceSpec::None),
            _ => {}
        }
        if let Ok(count) = s.parse::<u32>() {
            ensure!(
                (1..=MAX_POOL).contains(&count),
                "source address count {count} out of range"
            );
            return Ok(SourceSpec::List(v4_range(FIRST_LOOPBACK_SOURCE, count)?));
        }
        let mut pool = Vec::new();
        for part in s.split(',').map(str::trim) {
            match part.split_once('-') {
                Some((lo, hi)) => pool.extend(parse_range(lo.trim(), hi.trim())?),
                None => pool.push(
                    part.parse()
                        .with_context(|| format!("bad address {part:?}"))?,
                ),
            }
            ensure!(
                pool.len() as u32 <= MAX_POOL,
                "source address pool larger than {MAX_POOL}"
            );
        }
        Ok(SourceSpec::List(pool))
    }
}

impl SourceSpec {
    /// The concrete pool for these targets.
    pub fn resolve(&self, targets: &[Target]) -> anyhow::Result<Vec<IpAddr>> {
        Ok(match self {
            SourceSpec::None => Vec::new(),
            SourceSpec::List(pool) => pool.clone(),
            SourceSpec::Auto if targets.iter().all(|t| t.addr.ip().is_loopback()) => {
                v4_range(FIRST_LOOPBACK_SOURCE, AUTO_LOOPBACK_SOURCES)?
            }
            SourceSpec::Auto => Vec::new(),
        })
    }
}

/// The source address for connection number `index`, or `None` to let the kernel choose.
pub fn source_for(pool: &[IpAddr], index: usize) -> Option<IpAddr> {
    (!pool.is_empty()).then(|| pool[index % pool.len()])
}

fn parse_range(lo: &str, hi: &str) -> anyhow::Result<Vec<IpAddr>> {
    let lo: Ipv4Addr = lo
        .parse()
        .with_context(|| format!("bad range start {lo:?}"))?;
    let hi: Ipv4Addr = hi
        .parse()
        .with_context(|| format!("bad range end {hi:?}"))?;
    let (a, b) = (u32::from(lo), u32::from(hi));
    ensure!(a <= b, "address range {lo}-{hi} runs backwards");
    ensure!(
        b - a < MAX_POOL,
        "address range {lo}-{hi} larger than {MAX_POOL}"
    );
    v4_range(lo, b - a + 1)
}

fn v4_range(first: Ipv4Addr, count: u32) -> anyhow::Result<Vec<IpAddr>> {
    let start = u32::from(first);
    let end = start
        .checked_add(count)
        .context("address range overflows")?;
    Ok((start..end)
        .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ips(spec: &str) -> Vec<IpAddr> {
        match spec.parse::<SourceSpec>().unwrap() {
            SourceSpec::List(pool) => pool,
            other => panic!("expected a list, got {other:?}"),
        }
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn dash_range_is_inclusive() {
        let pool = ips("127.0.0.2-127.0.0.50");
        assert_eq!(pool.len(), 49);
        assert_eq!(pool[0], v4(127, 0, 0, 2));
        assert_eq!(pool[48], v4(127, 0, 0, 50));
    }

    #[test]
    fn ranges_cross_octet_boundaries() {
        let pool = ips("127.0.0.254-127.0.1.1");
        assert_eq!(
            pool,
            [
                v4(127, 0, 0, 254),
                v4(127, 0, 0, 255),
                v4(127, 0, 1, 0),
                v4(127, 0, 1, 1)
            ]
        );
    }

    #[test]
    fn a_count_starts_at_127_0_0_2() {
        assert_eq!(
            ips("3"),
            [v4(127, 0, 0, 2), v4(127, 0, 0, 3), v4(127, 0, 0, 4)]
        );
    }

    #[test]
    fn lists_mix_single_addresses_and_ranges() {
        assert_eq!(
            ips("10.0.0.1, 10.0.0.5-10.0.0.6"),
            [v4(10, 0, 0, 1), v4(10, 0, 0, 5), v4(10, 0, 0, 6)]
        );
    }

    #[test]
    fn keywords_and_errors() {
        assert_eq!("auto".parse::<SourceSpec>().unwrap(), SourceSpec::Auto);
        assert_eq!("none".parse::<SourceSpec>().unwrap(), SourceSpec::None);
        for bad in [
            "127.0.0.9-127.0.0.2",
            "127.0.0.1-nope",
            "0",
            "300.0.0.1",
            "127.0.0.2-128.0.0.2",
        ] {
            assert!(
                bad.parse::<SourceSpec>().is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn round_robin_over_the_pool() {
        let pool = ips("2");
        assert_eq!(source_for(&pool, 0), Some(v4(127, 0, 0, 2)));
        assert_eq!(source_for(&pool, 3), Some(v4(127, 0, 0, 3)));
        assert_eq!(source_for(&[], 3), None);
    }

    #[tokio::test]
    async fn auto_uses_loopback_sources_only_for_loopback_targets() {
        let local = resolve_targets(&["ws://127.0.0.1:8080/ws".into()])
            .await
            .unwrap();
        assert_eq!(SourceSpec::Auto.resolve(&local).unwrap().len(), 49);
        let remote = vec![Target {
            url: "ws://x/ws".into(),
            addr: "10.1.2.3:80".parse().unwrap(),
        }];
        assert!(SourceSpec::Auto.resolve(&remote).unwrap().is_empty());
        assert!(
            resolve_targets(&["http://127.0.0.1/ws".into()])
                .await
                .is_err()
        );
        let two = resolve_targets(&["ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws".into()])
            .await
            .unwrap();
        assert_eq!(two[1].addr.port(), 2);
    }
}
