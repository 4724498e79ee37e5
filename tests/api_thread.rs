//! The HTTP API's own thread (`server.api_thread`): publications posted through it reach
//! subscribers whether it is on or off, and a keep-alive connection that started with an
//! API request (so moved to that thread) can still upgrade to a WebSocket session.

mod support;

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use support::{Encoding, TestResult, TestServer, WsClient, api_key, fail};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_reach_subscribers_with_the_api_thread_on_and_off() -> TestResult {
    for setting in ["true", "false"] {
        let server = TestServer::start(&format!("[server]\napi_thread = {setting}\n")).await?;
        let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
        client
            .request("subscribe", json!({ "channel": "news" }))
            .await?;
        for n in 0..3 {
            server.publish("news", json!({ "n": n })).await?;
        }
        for n in 0..3 {
            let message = client.recv_message().await?;
            assert_eq!(message["data"], json!({ "n": n }), "api_thread = {setting}");
        }
    }
    Ok(())
}

/// Reads one HTTP/1.1 response head (and its `content-length` body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> TestResult<String> {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    while !buffer.ends_with(b"\r\n\r\n") {
        if tokio::time::timeout(WAIT, stream.read(&mut byte)).await?? == 0 {
            return fail(format!(
                "closed after {:?}",
                String::from_utf8_lossy(&buffer)
            ));
        }
        buffer.push(byte[0]);
    }
    let head = String::from_utf8(buffer)?;
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>())
        })
        .transpose()?
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(WAIT, stream.read_exact(&mut body)).await??;
    Ok(head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_began_with_an_api_request_can_upgrade() -> TestResult {
    let server = TestServer::start("[server]\napi_thread = true\n").await?;
    let mut stream = TcpStream::connect(server.addr).await?;
    let info = format!(
        "GET /api/info HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\n\r\n",
        api_key()
    );
    stream.write_all(info.as_bytes()).await?;
    let head = read_response(&mut stream).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let upgrade = "GET /ws HTTP/1.1\r\nhost: test\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
                   sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    stream.write_all(upgrade.as_bytes()).await?;
    let head = read_response(&mut stream).await?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    let mut socket = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    socket
        .send(Message::text(
            json!({ "op": "connect", "id": 1 }).to_string(),
        ))
        .await?;
    let reply = loop {
        let Some(frame) = tokio::time::timeout(WAIT, socket.next()).await? else {
            return fail("closed before connected");
        };
        if let Message::Text(text) = frame? {
            let value: Value = serde_json::from_str(&text)?;
            // A batch frame is an array of messages.
            let first = value.as_array().and_then(|a| a.first().cloned());
            break first.unwrap_or(value);
        }
    };
    assert_eq!(reply["op"], "connected", "{reply}");
    Ok(())
}
