//! The two ways an upgrade is answered: the server's own read of the first request head
//! (an upgrade at `/ws` or `/app/{key}` in one small head), and hyper with the router for
//! everything else (a long head, a second request on a keep-alive connection); and the
//! session's reads behind them (frames longer than one read ask, several frames in one
//! write). Raw TCP, so the bytes on the wire are exactly what a test says.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::{TestResult, TestServer, WAIT, fail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const CONNECT: &[u8] = br#"{"op":"connect","id":1}"#;

fn upgrade_head(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A client's text frame (masked, as RFC 6455 requires of clients).
fn client_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81];
    match u16::try_from(payload.len()) {
        Ok(len) if len < 126 => frame.push(0x80 | len as u8),
        Ok(len) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&len.to_be_bytes());
        }
        Err(_) => panic!("test frames stay under 64 KiB"),
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads a response head; returns it and whatever came after it.
async fn read_head(stream: &mut TcpStream) -> TestResult<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end + 4].to_vec())?;
            return Ok((head, buf[end + 4..].to_vec()));
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .map_err(|_| "no response head")??;
        if n == 0 {
            return fail(format!(
                "closed before a head: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Checks a 101 answer and returns the WebSocket that follows it.
async fn switched(mut stream: TcpStream) -> TestResult<WebSocketStream<TcpStream>> {
    let (head, rest) = read_head(&mut stream).await?;
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        lower.contains(&format!(
            "sec-websocket-accept: {}",
            derive_accept_key(KEY.as_bytes()).to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(lower.contains("upgrade: websocket"), "{head}");
    Ok(WebSocketStream::from_partially_read(stream, rest, Role::Client, None).await)
}

async fn next_json(socket: &mut WebSocketStream<TcpStream>) -> TestResult<Value> {
    let message = tokio::time::timeout(WAIT, socket.next())
        .await
        .map_err(|_| "no message")?
        .ok_or("closed")??;
    match message {
        Message::Text(text) => Ok(serde_json::from_str(&text)?),
        other => fail(format!("unexpected {other:?}")),
    }
}

async fn connect_op(socket: &mut WebSocketStream<TcpStream>) -> TestResult<Value> {
    socket
        .send(Message::text(std::str::from_utf8(CONNECT)?))
        .await?;
    next_json(socket).await
}

/// Sends an upgrade to `/ws` with a `connect` frame in the same write; expects the 101
/// and `connected`.
async fn connect_right_behind_the_head(mut stream: TcpStream) -> TestResult {
    let mut bytes = upgrade_head("/ws", "").into_bytes();
    bytes.extend(client_text_frame(CONNECT));
    stream.write_all(&bytes).await?;
    let mut socket = switched(stream).await?;
    assert_eq!(next_json(&mut socket).await?["op"], "connected");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_sent_right_behind_the_head_is_read() -> TestResult {
    let server = TestServer::start("").await?;
    let stream = TcpStream::connect(server.addr).await?;
    connect_right_behind_the_head(stream).await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_in_pieces_is_answered() -> TestResult {
    let server = TestServer::start("").await?;
    let mut stream = TcpStream::connect(server.addr).await?;
    stream.set_nodelay(true)?;
    let head = upgrade_head("/ws?x=1", "");
    // Pieces cut through the request line and the final empty line. The pauses only make
    // separate reads likely; the answer must be the same either way.
    for piece in head.as_bytes().chunks(7) {
        stream.write_all(piece).await?;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let mut socket = switched(stream).await?;
    assert_eq!(connect_op(&mut socket).await?["op"], "connected");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_too_long_for_the_fast_path_goes_through_hyper() -> TestResult {
    let server = TestServer::start("").await?;
    let mut stream = TcpStream::connect(server.addr).await?;
    let cookie = format!("Cookie: session={}\r\n", "a".repeat(12 * 1024));
    stream
        .write_all(upgrade_head("/ws", &cookie).as_bytes())
        .await?;
    let mut socket = switched(stream).await?;
    assert_eq!(connect_op(&mut socket).await?["op"], "connected");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_after_a_keep_alive_request_goes_through_the_router() -> TestResult {
    let server = TestServer::start("").await?;
    let mut stream = TcpStream::connect(server.addr).await?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let (head, rest) = read_head(&mut stream).await?;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or("no content-length")?;
    let mut body = rest;
    while body.len() < length {
        let mut chunk = [0u8; 256];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return fail("closed in the body");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(body.len(), length, "nothing but the body came");
    connect_right_behind_the_head(stream).await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_the_fast_path_get_the_routers_answers() -> TestResult {
    let server = TestServer::start("[client]\nallowed_origins = [\"https://a.example\"]\n").await?;
    let cases = [
        (
            upgrade_head("/ws", "").replace("Version: 13", "Version: 8"),
            "400",
        ),
        (
            upgrade_head("/ws", "Origin: https://evil.example\r\n"),
            "403",
        ),
        (
            upgrade_head("/ws", "Sec-WebSocket-Protocol: mqtt\r\n"),
            "400",
        ),
    ];
    for (request, status) in cases {
        let mut stream = TcpStream::connect(server.addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let (head, _) = read_head(&mut stream).await?;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request}\n=> {head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
    }
    // Nothing refused holds a pending-connection slot.
    assert_eq!(server.state.limits.pending_count(), 0);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_upgrade_on_the_fast_path_reaches_its_app() -> TestResult {
    let server = TestServer::start(
        "[[pusher.apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n",
    )
    .await?;
    for (path, expect) in [
        (
            "/app/app-key?protocol=7&client=js",
            "pusher:connection_established",
        ),
        ("/app/other-key?protocol=7", "pusher:error"),
        ("/app/app-key?protocol=3", "pusher:error"),
    ] {
        let mut stream = TcpStream::connect(server.addr).await?;
        stream.write_all(upgrade_head(path, "").as_bytes()).await?;
        let mut socket = switched(stream).await?;
        let event = next_json(&mut socket).await?;
        assert_eq!(event["event"], expect, "{path}: {event}");
    }
    // Counted like the router counts the upgrades it answers.
    let metrics = server.metrics_text().await?;
    assert!(
        metrics.contains(r#"pushwire_api_requests_total{route="pusher_ws",status="101"} 3"#),
        "{metrics}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_answers_no_upgrade() -> TestResult {
    let port = support::redis_server::free_port()?;
    let server = TestServer::start(&format!(
        "[server]\nmetrics_listen = \"127.0.0.1:{port}\"\n\
         [[pusher.apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n"
    ))
    .await?;
    for path in ["/ws", "/app/app-key?protocol=7"] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(upgrade_head(path, "").as_bytes()).await?;
        let (head, _) = read_head(&mut stream).await?;
        assert!(head.starts_with("HTTP/1.1 404 "), "{path}: {head}");
    }
    assert_eq!(server.state.hub.connection_count(), 0);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_frames_and_frames_sent_together_are_read_whole_and_in_order() -> TestResult {
    let server = TestServer::start("").await?;
    let mut stream = TcpStream::connect(server.addr).await?;
    stream.write_all(upgrade_head("/ws", "").as_bytes()).await?;
    let mut socket = switched(stream).await?;
    let socket_ref = socket.get_mut();
    // Longer than the session's first read ask (128 bytes), shorter and longer than its
    // read-ahead (2 KiB), and all in one write behind a `connect` with padding.
    let pad = "p".repeat(600);
    let mut bytes = client_text_frame(
        format!(r#"{{"op":"connect","id":1,"data":{{"pad":"{pad}"}}}}"#).as_bytes(),
    );
    for (id, len) in [(2, 10), (3, 1_000), (4, 5_000)] {
        let request = format!(
            r#"{{"op":"subscribe","id":{id},"channel":"c{id}","pad":"{}"}}"#,
            "q".repeat(len)
        );
        bytes.extend(client_text_frame(request.as_bytes()));
    }
    socket_ref.write_all(&bytes).await?;
    // Replies may share a frame, one JSON message per line.
    let mut replies = Vec::new();
    while replies.len() < 4 {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .map_err(|_| "no reply")?
            .ok_or("closed")??;
        for line in message.to_text()?.lines() {
            replies.push(serde_json::from_str::<Value>(line)?);
        }
    }
    assert_eq!(replies[0]["op"], "connected", "{replies:?}");
    for (reply, id) in replies[1..].iter().zip([2, 3, 4]) {
        assert_eq!(reply["id"], id, "{reply}");
        assert_eq!(reply["op"], "subscribed", "{reply}");
    }
    server.stop().await
}
