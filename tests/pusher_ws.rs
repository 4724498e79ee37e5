//! The Pusher WebSocket endpoint (`/app/{key}`) driven by the official pusher-js client,
//! unchanged, with channel and user auth signed by the `pusher` server SDK: public,
//! private, client events (to others, never to the sender), presence (here-list,
//! member_added, member_removed), sign-in and `#server-to-user-{id}`; plus the close codes
//! a raw client sees for an unknown app and an unsupported protocol.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use pushwire::hub::NamedEvent;
use pushwire::protocol::Payload;
use pushwire::pusher::channel;
use support::external::{Script, node};
use support::{TestResult, TestServer, WAIT, fail};

const APPS: &str = r#"
[[pusher.apps]]
id = "4242"
key = "app-key"
secret = "app-secret-that-is-long-enough-0123456789"
client_events = true
"#;

/// Publishes `event` on app 4242's channel `name` the way the HTTP API does.
async fn trigger(server: &TestServer, name: &str, event: &str, data: &str) -> TestResult {
    let (hub, kind) = channel::to_hub("4242", name)?;
    let payload = Payload::Json(Bytes::from(serde_json::to_string(data)?));
    let named = NamedEvent {
        name: Arc::from(event),
        user_id: None,
    };
    let ns = channel::namespace_config(kind);
    server
        .state
        .broker
        .publish_event(&hub, payload, named, None, &ns)
        .await?;
    Ok(())
}

#[tokio::test]
async fn pusher_js_public_private_client_events_presence_and_signin() -> TestResult {
    let server = TestServer::start(APPS).await?;
    let port = server.addr.port().to_string();
    let secret = "app-secret-that-is-long-enough-0123456789";
    let mut script = Script::spawn(node(
        "pusher_js_session.mjs",
        &[&port, "4242", "app-key", secret],
    )?)?;
    let connected = script.json().await?;
    for socket_id in connected["connected"].as_array().ok_or("no socket ids")? {
        let id = socket_id.as_str().unwrap_or_default();
        let (high, low) = id.split_once('.').ok_or("socket_id without a dot")?;
        if high.is_empty() || !high.bytes().chain(low.bytes()).all(|b| b.is_ascii_digit()) {
            return fail(format!("socket_id {id:?} is not \\d+.\\d+"));
        }
    }
    script.until(|v| v["ready"] == "public").await?;
    trigger(&server, "news;1", "greet", r#"{"hello":"world"}"#).await?;
    assert_eq!(script.json().await?["public"]["hello"], "world");
    assert_eq!(script.json().await?["client_event"]["from"], "alice");
    assert_eq!(script.json().await?["echoed_to_sender"], 0);
    let here = script.json().await?;
    assert_eq!(here["here_alice"], serde_json::json!(["alice"]));
    let here = script.json().await?;
    assert_eq!(here["here_bob"], serde_json::json!(["alice", "bob"]));
    assert_eq!(here["count"], 2);
    let added = script.json().await?;
    assert_eq!(added["member_added"]["id"], "bob");
    assert_eq!(added["member_added"]["info"]["name"], "BOB");
    assert_eq!(script.json().await?["member_removed"]["id"], "bob");
    script.until(|v| v["ready"] == "signin").await?;
    trigger(&server, "#server-to-user-alice", "notice", r#"{"n":1}"#).await?;
    assert_eq!(script.json().await?["to_user"]["n"], 1);
    script.success().await?;
    server.stop().await
}

/// The first frame and the close code of a raw connection to `path`.
async fn refused(server: &TestServer, path: &str) -> TestResult<(serde_json::Value, u16)> {
    let url = format!("ws://{}{path}", server.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let mut error = serde_json::Value::Null;
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await?
            .ok_or("closed without a close frame")??;
        match message {
            tokio_tungstenite::tungstenite::Message::Text(text) => {
                error = serde_json::from_str(&text)?;
            }
            tokio_tungstenite::tungstenite::Message::Close(Some(frame)) => {
                return Ok((error, u16::from(frame.code)));
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn unknown_apps_and_protocols_are_refused_with_pushers_codes() -> TestResult {
    let server = TestServer::start(APPS).await?;
    let (error, code) = refused(&server, "/app/nope?protocol=7").await?;
    assert_eq!(
        (error["event"].as_str(), code),
        (Some("pusher:error"), 4001)
    );
    assert_eq!(error["data"]["code"], 4001);
    let (_, code) = refused(&server, "/app/app-key?protocol=4").await?;
    assert_eq!(code, 4007);
    server.stop().await
}

#[tokio::test]
async fn a_server_side_unsubscribe_sends_pusher_js_nothing_it_cannot_read() -> TestResult {
    let server = TestServer::start(APPS).await?;
    let port = server.addr.port().to_string();
    let mut script = Script::spawn(node("pusher_js_raw_messages.mjs", &[&port, "app-key"])?)?;
    let ready = script.json().await?;
    let socket_id = ready["socket_id"].as_str().ok_or("no socket_id")?;
    let client_id = pushwire::pusher::identity::parse_socket_id(socket_id)
        .ok_or("bad socket_id")?
        .to_string();
    // The HTTP API names native channels only (a Pusher channel's hub name has a `~`), so
    // the broker's server-side unsubscribe is called as the API route calls it.
    let (news, _) = channel::to_hub("4242", "news")?;
    let selector = pushwire::hub::ClientSelector::ClientId(client_id);
    let unsubscribed = server
        .state
        .broker
        .unsubscribe(&server.state.hub, &selector, &news)
        .await?;
    assert_eq!(unsubscribed, 1);
    // Everything pusher-js decodes up to the next event of the channel it still follows
    // is a Pusher event: no frame of pushwire's native protocol (event-less) among them.
    trigger(&server, "other", "headline", "after").await?;
    loop {
        let line = script.json().await?;
        let event = line["message"]["event"].as_str().ok_or(format!("{line}"))?;
        if event == "headline" {
            assert_eq!(line["message"]["channel"], "other", "{line}");
            break;
        }
    }
    script.stop().await?;
    server.stop().await
}
