//! Connection limits: per IP address, per user and per node (close 4010), WebSockets
//! waiting to send `connect` (HTTP 503 beyond the limit), the HTTP handshake time
//! (slowloris), and a metric for every limit that trips.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use pushwire::auth::{mint_hs256, unix_now};
use serde_json::{Value, json};
use support::{Encoding, TestResult, TestServer, WAIT, WsClient, fail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;

const SECRET: &str = "limits-secret-0123456789abcdefghi";

fn token(user: &str) -> TestResult<Value> {
    let claims = json!({ "sub": user, "exp": unix_now() + 600 });
    Ok(json!({ "token": mint_hs256(SECRET, &claims)? }))
}

fn trips(server: &TestServer, kind: &str) -> u64 {
    server
        .state
        .metrics
        .limit_trips
        .with_label_values(&[kind])
        .get()
}

/// Waits until `done` holds for the server's own state (an event the test cannot await).
async fn until(what: &str, done: impl Fn() -> bool) -> TestResult {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        if tokio::time::Instant::now() > deadline {
            return fail(format!("timed out waiting until {what}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Expects the connection to be closed with 4010 and a `disconnect` that says reconnect.
async fn expect_4010(client: &mut WsClient) -> TestResult {
    let (code, seen) = client.expect_close().await?;
    assert_eq!(code, 4010);
    let last = seen.last().cloned().unwrap_or(Value::Null);
    assert_eq!(
        (
            last["op"].clone(),
            last["code"].clone(),
            last["reconnect"].clone()
        ),
        (json!("disconnect"), json!(4010), json!(true))
    );
    Ok(())
}

/// The HTTP status of a refused WebSocket upgrade.
fn upgrade_status(result: TestResult<WsClient>) -> TestResult<u16> {
    match result {
        Ok(_) => fail("the upgrade was accepted"),
        Err(err) => match err.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Http(response)) => Ok(response.status().as_u16()),
            _ => fail(format!("expected an HTTP refusal, got {err}")),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_are_limited() -> TestResult {
    let server = TestServer::start("[client]\nmax_connections_per_ip = 2\n").await?;
    let url = server.ws_url();
    let home = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    // The limit counts every WebSocket from the address, connected or not.
    let (mut first, _) = WsClient::connect(&url, Encoding::Json).await?;
    let _second = WsClient::open_with(&url, Encoding::Json, &[], Some(home)).await?;
    let mut third = WsClient::open_with(&url, Encoding::Json, &[], Some(home)).await?;
    expect_4010(&mut third).await?;
    assert_eq!(trips(&server, "connections_per_ip"), 1);
    let mut elsewhere = WsClient::open_with(&url, Encoding::Msgpack, &[], Some(other)).await?;
    let reply = elsewhere.request("connect", json!({})).await?;
    assert_eq!(reply["op"], "connected");
    // A connection that ends gives its place back.
    first.socket.close(None).await?;
    until("the closed connection is released", || {
        server.state.limits.ip_count(home) == 1
    })
    .await?;
    let mut again = WsClient::open_with(&url, Encoding::Json, &[], Some(home)).await?;
    assert_eq!(
        again.request("connect", json!({})).await?["op"],
        "connected"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_are_limited() -> TestResult {
    let config = format!(
        "[client]\nmax_connections_per_user = 2\n[auth]\ntoken_hmac_secret = \"{SECRET}\"\n"
    );
    let server = TestServer::start(&config).await?;
    let url = server.ws_url();
    let (mut alice_one, _) = WsClient::connect_with(&url, Encoding::Json, token("alice")?).await?;
    let (_alice_two, _) = WsClient::connect_with(&url, Encoding::Msgpack, token("alice")?).await?;
    let mut alice_three = WsClient::open(&url, Encoding::Json).await?;
    let mut connect = json!({ "op": "connect", "id": 1 });
    connect["token"] = token("alice")?["token"].clone();
    alice_three.send(connect).await?;
    expect_4010(&mut alice_three).await?;
    assert_eq!(trips(&server, "connections_per_user"), 1);
    // Other users, and anonymous clients, are not affected.
    let (_bob, _) = WsClient::connect_with(&url, Encoding::Json, token("bob")?).await?;
    for _ in 0..3 {
        WsClient::connect(&url, Encoding::Json).await?;
    }
    alice_one.socket.close(None).await?;
    until("alice's closed connection is released", || {
        server.state.limits.user_count("alice") == 1
    })
    .await?;
    let (_alice_again, reply) =
        WsClient::connect_with(&url, Encoding::Json, token("alice")?).await?;
    assert_eq!(reply["user"], "alice");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_node_are_limited() -> TestResult {
    let server = TestServer::start("[server]\nmax_connections = 2\n").await?;
    let url = server.ws_url();
    let (_one, _) = WsClient::connect(&url, Encoding::Json).await?;
    let (_two, _) = WsClient::connect(&url, Encoding::Json).await?;
    let mut three = WsClient::open(&url, Encoding::Json).await?;
    three.send(json!({ "op": "connect", "id": 1 })).await?;
    expect_4010(&mut three).await?;
    assert_eq!(trips(&server, "connections_per_node"), 1);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_waiting_for_connect_are_limited() -> TestResult {
    let server = TestServer::start("[server]\nmax_pending_connections = 2\n").await?;
    let url = server.ws_url();
    let mut waiting = WsClient::open(&url, Encoding::Json).await?;
    let _also_waiting = WsClient::open(&url, Encoding::Json).await?;
    assert_eq!(server.state.limits.pending_count(), 2);
    let status = upgrade_status(WsClient::open(&url, Encoding::Json).await)?;
    assert_eq!(status, 503);
    assert_eq!(trips(&server, "pending_connections"), 1);
    // Once a waiting client connects, it no longer counts as pending.
    assert_eq!(
        waiting.request("connect", json!({})).await?["op"],
        "connected"
    );
    assert_eq!(server.state.limits.pending_count(), 1);
    let mut late = WsClient::open(&url, Encoding::Json).await?;
    assert_eq!(late.request("connect", json!({})).await?["op"], "connected");
    assert_eq!(server.state.limits.pending_count(), 1);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_cut_off() -> TestResult {
    let server = TestServer::start("[server]\nhandshake_timeout_secs = 1\n").await?;
    // Opened before the slow clients: WebSockets are not bound by the handshake timeout.
    let (mut connected, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let started = Instant::now();
    let mut half = TcpStream::connect(server.addr).await?;
    half.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
        .await?;
    let mut silent = TcpStream::connect(server.addr).await?;
    for stream in [&mut half, &mut silent] {
        let mut buf = Vec::new();
        // Ends with EOF (or a reset) once the server gives up; anything it says first
        // (a 408) is fine.
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut buf))
            .await
            .map_err(|_| "the slow client was not cut off")?;
        if let Err(err) = read {
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "cut off after {elapsed:?}"
    );
    assert!(trips(&server, "handshake_timeout") >= 2);
    let reply = connected
        .request("subscribe", json!({ "channel": "news" }))
        .await?;
    assert_eq!(reply["op"], "subscribed");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_and_channel_limits_count_their_trips() -> TestResult {
    let config = "[client]\nmax_frame_bytes = 1024\nmax_channels = 1\n\
                  [api]\nmax_publish_bytes = 256\n\
                  [namespaces.chat]\nallow_publish = \"all\"\n";
    let server = TestServer::start(config).await?;
    let url = server.ws_url();
    let (mut client, _) = WsClient::connect(&url, Encoding::Json).await?;
    client
        .request("subscribe", json!({ "channel": "one" }))
        .await?;
    let reply = client
        .request("subscribe", json!({ "channel": "two" }))
        .await?;
    assert_eq!(reply["code"], 106);
    assert_eq!(trips(&server, "channels_per_connection"), 1);
    let data = "x".repeat(512);
    let reply = client
        .request("publish", json!({ "channel": "chat:x", "data": data }))
        .await?;
    assert_eq!(reply["code"], 106);
    assert_eq!(trips(&server, "message_size"), 1);
    let (status, body) = server
        .post(
            "/api/publish",
            &json!({ "channel": "news", "data": "y".repeat(512) }),
        )
        .await?;
    assert_eq!((status, body["error"]["code"].clone()), (413, json!(106)));
    assert_eq!(trips(&server, "publish_body_size"), 1);
    client
        .send(json!({ "op": "publish", "id": 9, "channel": "chat:x", "data": "z".repeat(4096) }))
        .await?;
    assert_eq!(client.expect_close().await?.0, 1009);
    assert_eq!(trips(&server, "frame_size"), 1);
    server.stop().await
}
