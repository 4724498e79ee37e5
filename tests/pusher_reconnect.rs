//! pusher-js (unchanged, in Node) reconnects by itself when the node behind its address
//! goes away and comes back on the same port: after a graceful stop (every Pusher
//! connection is closed with 4200, "reconnect now", which a raw client here checks) and
//! after the node was killed (the connection just drops). Each time pusher-js
//! resubscribes and receives what the `pusher` server SDK triggers after the restart.
//! Every step is awaited on the client's output; nothing sleeps.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::external::{Script, node, run};
use support::{BinaryServer, TestResult, TestServer, WAIT};
use tokio_tungstenite::tungstenite::Message;

/// pusher-js retries a refused connection after 15 s (its ws strategy's first timeout,
/// doubling up to 60 s), so a reconnect that missed the restart takes that long; the
/// bound leaves room for two tries.
const RETRY: Duration = Duration::from_secs(40);

type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const APP: &str = r#"
[[pusher.apps]]
id = "4242"
key = "app-key"
secret = "app-secret-0123456789"
"#;

/// Triggers `headline` `{n}` on `news` through the Node server SDK, at `port`.
async fn trigger(port: u16, n: u64) -> TestResult {
    let config = json!({
        "host": "127.0.0.1",
        "port": port,
        "appId": "4242",
        "key": "app-key",
        "secret": "app-secret-0123456789",
        "calls": [["trigger", "news", "headline", { "n": n }]],
    });
    let output = run(node("pusher_server_sdk.mjs", &[&config.to_string()])?).await?;
    let result: Value = serde_json::from_str(output.trim())?;
    assert_eq!(result["status"], 200, "{result}");
    Ok(())
}

/// The close code a raw Pusher connection gets, reading until the close frame.
async fn close_code(socket: &mut RawSocket) -> TestResult<u16> {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await?
            .ok_or("closed without a close frame")??;
        if let Message::Close(frame) = message {
            return Ok(frame.map_or(1005, |f| u16::from(f.code)));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pusher_js_reconnects_after_a_graceful_stop_and_after_a_kill() -> TestResult {
    let first = TestServer::start(APP).await?;
    let port = first.addr.port();
    let listen = format!("127.0.0.1:{port}");
    let mut client = Script::spawn(node(
        "pusher_js_reconnect.mjs",
        &[&port.to_string(), "app-key"],
    )?)?;
    client.until(|v| v["subscribed"] == 1).await?;
    trigger(port, 1).await?;
    assert_eq!(
        client.until(|v| v.get("headline").is_some()).await?,
        json!({ "headline": { "n": 1 } })
    );

    // Graceful stop: 4200 to every Pusher connection; pusher-js retries at once and keeps
    // retrying while nothing listens.
    let url = format!("ws://{listen}/app/app-key?protocol=7");
    let (mut raw, _) = tokio_tungstenite::connect_async(url).await?;
    first.stop().await?;
    assert_eq!(close_code(&mut raw).await?, 4200);
    client.until(|v| v["state"] == "connecting").await?;
    let second = BinaryServer::start_at(APP, &listen).await?;
    client.until_within(RETRY, |v| v["subscribed"] == 2).await?;
    trigger(port, 2).await?;
    assert_eq!(
        client.until(|v| v.get("headline").is_some()).await?,
        json!({ "headline": { "n": 2 } })
    );

    // Killed: no close frame at all.
    let mut second = second;
    second.child.kill().await?;
    client.until(|v| v["state"] == "connecting").await?;
    let third = TestServer::start(&format!("[server]\nlisten = \"{listen}\"\n{APP}")).await?;
    client.until_within(RETRY, |v| v["subscribed"] == 3).await?;
    trigger(port, 3).await?;
    assert_eq!(
        client.until(|v| v.get("headline").is_some()).await?,
        json!({ "headline": { "n": 3 } })
    );
    client.stop().await?;
    third.stop().await
}
