//! An app's `max_connections` counts its connections on every node: a connection beyond
//! it is closed with Pusher's 4004 (over quota, do not reconnect) after a `pusher:error`
//! saying so, whichever node it reaches; a place freed on one node is usable on another.
//! Two nodes share their counts through the Redis heartbeats (real redis-server).

mod support;

use futures_util::StreamExt;
use pushwire::broker::Broker;
use serde_json::Value;
use support::{RedisServer, TestResult, TestServer, WAIT, fail};
use tokio_tungstenite::tungstenite::Message;

type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const APP: &str = r#"
[[pusher.apps]]
id = "4242"
key = "app-key"
secret = "app-secret-0123456789"
max_connections = 2
"#;

/// What a new connection to `server` gets: `Ok(socket)` once established, or `Err` with
/// the close code (and the `pusher:error` code before it).
async fn connect(server: &TestServer) -> TestResult<Result<RawSocket, (u16, Value)>> {
    let url = format!("ws://{}/app/app-key?protocol=7", server.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let mut error = Value::Null;
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await?
            .ok_or("closed without a close frame")??;
        match message {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text)?;
                match frame["event"].as_str() {
                    Some("pusher:connection_established") => return Ok(Ok(socket)),
                    Some("pusher:error") => error = frame["data"]["code"].clone(),
                    _ => {}
                }
            }
            Message::Close(frame) => {
                return Ok(Err((frame.map_or(1005, |f| u16::from(f.code)), error)));
            }
            _ => {}
        }
    }
}

async fn refused(server: &TestServer) -> TestResult {
    match connect(server).await? {
        Err((4004, code)) if code == 4004 => Ok(()),
        Err(other) => fail(format!("expected 4004, got {other:?}")),
        Ok(_) => fail("a connection over the app's quota was accepted"),
    }
}

async fn accepted(server: &TestServer) -> TestResult<RawSocket> {
    match connect(server).await? {
        Ok(socket) => Ok(socket),
        Err(refusal) => fail(format!("refused: {refusal:?}")),
    }
}

/// Waits until `server` has heard that the other node holds `n` of the app's connections
/// (the other node's next heartbeat).
async fn others_hold(server: &TestServer, n: usize) -> TestResult {
    let Broker::Redis(broker) = &server.state.broker else {
        return fail("not a Redis node");
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while broker.others_count("pusher~4242") != n {
        if tokio::time::Instant::now() > deadline {
            return fail(format!("the other node's count never became {n}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_closes_the_connection_over_quota_with_4004() -> TestResult {
    let server = TestServer::start(APP).await?;
    let first = accepted(&server).await?;
    let _second = accepted(&server).await?;
    refused(&server).await?;
    assert!(
        server
            .metrics_text()
            .await?
            .contains("kind=\"pusher_app_connections\"")
    );
    drop(first);
    // The freed place is taken as soon as the server has seen the close.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match connect(&server).await? {
            Ok(_) => break,
            Err(_) if tokio::time::Instant::now() < deadline => {}
            Err(refusal) => return fail(format!("the freed place stayed taken: {refusal:?}")),
        }
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_apps_quota_through_redis() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = format!(
        "[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"pusherquota\"\n\
         heartbeat_interval_ms = 100\nnode_timeout_ms = 1000\n{APP}",
        redis.url()
    );
    let one = TestServer::start(&config).await?;
    let two = TestServer::start(&config).await?;
    one.wait_ready().await?;
    two.wait_ready().await?;
    let _on_one = accepted(&one).await?;
    others_hold(&two, 1).await?;
    let on_two = accepted(&two).await?;
    others_hold(&one, 1).await?;
    // Two connections in the cluster: a third is refused on either node.
    refused(&one).await?;
    refused(&two).await?;
    // A place freed on node two is usable on node one once one has heard of it.
    drop(on_two);
    others_hold(&one, 0).await?;
    let _again = accepted(&one).await?;
    others_hold(&two, 2).await?;
    refused(&two).await?;
    one.stop().await?;
    two.stop().await
}
