//! The connection lifecycle: upgrade, `connect`, and every close code the handshake and
//! framing rules can produce.

mod support;

use serde_json::json;
use support::{Encoding, TestResult, TestServer, WsClient, fail};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_replies_connected_in_both_encodings() -> TestResult {
    let server =
        TestServer::start("[client]\nping_interval_secs = 7\npong_timeout_secs = 3\n").await?;
    for encoding in [Encoding::Json, Encoding::Msgpack] {
        let (_client, reply) = WsClient::connect(&server.ws_url(), encoding).await?;
        assert_eq!(reply["op"], "connected");
        assert_eq!(reply["id"], 1);
        assert_eq!(reply["client_id"].as_str().map(str::len), Some(16));
        assert_eq!(reply["node"], json!(server.state.node.name));
        assert_eq!(reply["ping_interval"], 7);
        assert_eq!(reply["pong_timeout"], 3);
        assert!(
            reply.get("user").is_none(),
            "anonymous has no user: {reply}"
        );
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_subprotocol_means_json_and_unknown_ones_get_400() -> TestResult {
    let server = TestServer::start("").await?;
    let (mut socket, response) = tokio_tungstenite::connect_async(server.ws_url()).await?;
    assert!(response.headers().get("sec-websocket-protocol").is_none());
    use futures_util::SinkExt;
    socket
        .send(Message::text(r#"{"op":"connect","id":1}"#))
        .await?;
    use futures_util::StreamExt;
    let reply = socket.next().await.ok_or("no reply")??;
    assert!(reply.to_text()?.contains("\"connected\""));

    let response = server
        .http()
        .get(server.http_url("/ws"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Protocol", "mqtt, stomp")
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["error"]["code"], 107);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("pushwire.v1.json")
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connect_within_timeout_closes_4004() -> TestResult {
    let server = TestServer::start("[client]\nconnect_timeout_secs = 1\n").await?;
    let mut client = WsClient::open(&server.ws_url(), Encoding::Json).await?;
    let (code, seen) = client.expect_close().await?;
    assert_eq!(code, 4004);
    assert_eq!(
        seen.last().map(|m| m["op"].clone()),
        Some(json!("disconnect"))
    );
    assert_eq!(seen.last().map(|m| m["code"].clone()), Some(json!(4004)));
    assert_eq!(
        seen.last().map(|m| m["reconnect"].clone()),
        Some(json!(true))
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_other_than_connect_closes_4000() -> TestResult {
    let server = TestServer::start("").await?;
    let mut client = WsClient::open(&server.ws_url(), Encoding::Json).await?;
    client
        .send(json!({"op": "subscribe", "id": 1, "channel": "news"}))
        .await?;
    let (code, seen) = client.expect_close().await?;
    assert_eq!(code, 4000);
    assert_eq!(
        seen.last().map(|m| m["reconnect"].clone()),
        Some(json!(false))
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_4000_in_both_encodings() -> TestResult {
    let server = TestServer::start("").await?;
    let cases = [
        (Encoding::Json, Message::text("{not json")),
        (Encoding::Json, Message::text("[1,2,3]")),
        (Encoding::Json, Message::text(r#"{"id":5}"#)),
        (Encoding::Msgpack, Message::binary(vec![0xc1u8])),
        (Encoding::Msgpack, Message::binary(vec![0x01u8])),
    ];
    for (encoding, frame) in cases {
        let (mut client, _) = WsClient::connect(&server.ws_url(), encoding).await?;
        client.send_raw(frame.clone()).await?;
        let (code, _) = client.expect_close().await?;
        assert_eq!(code, 4000, "{frame:?}");
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_is_107_and_unknown_op_is_104() -> TestResult {
    let server = TestServer::start("").await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let reply = client.request("connect", json!({})).await?;
    assert_eq!(
        (reply["op"].clone(), reply["code"].clone()),
        (json!("error"), json!(107))
    );
    let reply = client.request("teleport", json!({})).await?;
    assert_eq!(
        (reply["op"].clone(), reply["code"].clone()),
        (json!("error"), json!(104))
    );
    // The connection stays open after request errors.
    let reply = client
        .request("subscribe", json!({"channel": "news"}))
        .await?;
    assert_eq!(reply["op"], "subscribed");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_max_frame_bytes_close_1009() -> TestResult {
    let server = TestServer::start("[client]\nmax_frame_bytes = 1024\n").await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let big = json!({"op": "publish", "id": 2, "channel": "news", "data": "x".repeat(4096)});
    client.send(big).await?;
    let (code, seen) = client.expect_close().await?;
    assert_eq!(code, 1009);
    assert_eq!(seen.last().map(|m| m["code"].clone()), Some(json!(1009)));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_is_answered_and_unregisters() -> TestResult {
    let server = TestServer::start("").await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "news"}))
        .await?;
    assert_eq!(server.state.hub.connection_count(), 1);
    client.socket.close(None).await?;
    use futures_util::StreamExt;
    while let Some(Ok(message)) = tokio::time::timeout(support::WAIT, client.socket.next()).await? {
        if message.is_close() {
            break;
        }
    }
    // The session unregisters right after the close handshake; wait for it by polling the
    // server's own state (an event we cannot await from outside).
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while server.state.hub.connection_count() != 0 || server.state.hub.channel_count() != 0 {
        if tokio::time::Instant::now() > deadline {
            return fail("client still registered after close");
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_sent_and_a_missing_pong_closes_4005() -> TestResult {
    let server =
        TestServer::start("[client]\nping_interval_secs = 1\npong_timeout_secs = 1\n").await?;
    let (mut polite, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let (mut silent, _) = WsClient::connect(&server.ws_url(), Encoding::Msgpack).await?;
    let silent_side = async {
        let ping = silent.recv_where(|m| m["op"] == "ping").await?;
        assert_eq!(ping, json!({"op": "ping"}));
        silent.expect_close().await
    };
    // The polite client keeps reading (and answering pings) while the silent one times out.
    let (code, _) = tokio::select! {
        closed = silent_side => closed?,
        read = polite.recv() => return fail(format!("polite client got {read:?}")),
    };
    assert_eq!(code, 4005);
    let reply = polite
        .request("subscribe", json!({"channel": "still-here"}))
        .await?;
    assert_eq!(reply["op"], "subscribed");
    server.stop().await
}

/// RFC 6455 5.5.1: a close the client starts is answered with a close frame (the client
/// sees a clean close, not a dropped connection), before the server closes the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_from_the_client_is_answered_with_a_close_frame() -> TestResult {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let server = TestServer::start("").await?;
    let (mut socket, _) = tokio_tungstenite::connect_async(server.ws_url()).await?;
    socket
        .send(Message::text(r#"{"op":"connect","id":1}"#))
        .await?;
    let reply = socket.next().await.ok_or("no reply")??;
    assert!(reply.to_text()?.contains("\"connected\""));
    socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await?;
    match socket.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
        other => return fail(format!("expected the close echoed, got {other:?}")),
    }
    server.stop().await
}
