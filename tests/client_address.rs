//! Client addresses and unauthenticated connections: one address cannot take every
//! pending place (a per-address cap, on by default, answers its extra upgrades with HTTP
//! 429 while other addresses still connect), and `Forwarded` / `X-Forwarded-For` name
//! the client only when the peer is one of `server.trusted_proxies`.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;
use support::{Encoding, TestResult, TestServer, WsClient, fail};
use tokio_tungstenite::tungstenite;

const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Opens a WebSocket from `source` with `headers`, without sending `connect`.
async fn open(
    server: &TestServer,
    source: IpAddr,
    headers: &[(&'static str, &str)],
) -> TestResult<WsClient> {
    WsClient::open_with(&server.ws_url(), Encoding::Json, headers, Some(source)).await
}

/// The HTTP status of a refused upgrade.
async fn refused_status(
    server: &TestServer,
    source: IpAddr,
    headers: &[(&'static str, &str)],
) -> TestResult<u16> {
    match open(server, source, headers).await {
        Ok(_) => fail(format!(
            "the upgrade from {source} {headers:?} was accepted"
        )),
        Err(err) => match err.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Http(response)) => Ok(response.status().as_u16()),
            _ => fail(format!("expected an HTTP refusal, got {err}")),
        },
    }
}

fn trips(server: &TestServer, kind: &str) -> u64 {
    server
        .state
        .metrics
        .limit_trips
        .with_label_values(&[kind])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_lock_out_new_clients_by_default() -> TestResult {
    // Default limits: the node-wide pending cap (10,000) is far away.
    let server = TestServer::start("").await?;
    let mut waiting = Vec::new();
    for _ in 0..100 {
        waiting.push(open(&server, HOME, &[]).await?);
    }
    assert_eq!(refused_status(&server, HOME, &[]).await?, 429);
    assert_eq!(trips(&server, "pending_connections_per_ip"), 1);
    // Another address is not affected.
    let mut other = open(&server, OTHER, &[]).await?;
    assert_eq!(
        other.request("connect", json!({})).await?["op"],
        "connected"
    );
    // A waiting client that connects gives its pending place back to its address.
    let mut first = waiting.swap_remove(0);
    assert_eq!(
        first.request("connect", json!({})).await?["op"],
        "connected"
    );
    let mut late = open(&server, HOME, &[]).await?;
    assert_eq!(late.request("connect", json!({})).await?["op"], "connected");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client() -> TestResult {
    let server = TestServer::start(
        "[server]\nmax_pending_connections_per_ip = 1\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    )
    .await?;
    let client = ("x-forwarded-for", "203.0.113.7");
    let mut first = open(&server, HOME, &[client]).await?;
    let forwarded: IpAddr = "203.0.113.7".parse()?;
    assert_eq!(server.state.limits.ip_count(forwarded), 1);
    assert_eq!(server.state.limits.ip_count(HOME), 0);
    // The same client again is over its own cap; other clients behind the proxy are not.
    assert_eq!(refused_status(&server, HOME, &[client]).await?, 429);
    let _second = open(&server, HOME, &[("x-forwarded-for", "203.0.113.8")]).await?;
    let _third = open(&server, HOME, &[("forwarded", "for=\"203.0.113.9:4711\"")]).await?;
    // A spoofed first entry does not help: the proxy's own (last) entry counts.
    assert_eq!(
        refused_status(
            &server,
            HOME,
            &[("x-forwarded-for", "198.51.100.1, 203.0.113.7")]
        )
        .await?,
        429
    );
    assert_eq!(
        first.request("connect", json!({})).await?["op"],
        "connected"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_choose_its_address() -> TestResult {
    let server = TestServer::start(
        "[server]\nmax_pending_connections_per_ip = 1\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    )
    .await?;
    let _first = open(&server, OTHER, &[("x-forwarded-for", "203.0.113.10")]).await?;
    assert_eq!(server.state.limits.ip_count(OTHER), 1);
    assert_eq!(server.state.limits.ip_count("203.0.113.10".parse()?), 0);
    // A fresh header per upgrade does not get 127.0.0.2 past its cap.
    for headers in [
        [("x-forwarded-for", "203.0.113.11")],
        [("forwarded", "for=203.0.113.12")],
    ] {
        assert_eq!(refused_status(&server, OTHER, &headers).await?, 429);
    }
    server.stop().await
}
