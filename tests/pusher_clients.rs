//! Official Pusher front-end clients, unchanged, against real nodes, with events
//! triggered through the official `pusher` npm server SDK: Laravel Echo in Node (public
//! `channel().listen('.Event')`, `private()`, `join().here/joining/leaving`, with both the
//! `reverb` and the `pusher` broadcaster), pusher-js's browser build in real Chromium, and
//! Echo on two nodes through a real Redis (the trigger through one node, the client on
//! the other, presence across both), and pysher (the Python WebSocket client).

mod support;

use serde_json::{Value, json};
use support::external::{Script, node, python, run};
use support::{RedisServer, TestResult, TestServer};

const APP_ID: &str = "4242";
const KEY: &str = "app-key";
const SECRET: &str = "app-secret-0123456789";

fn app_config() -> String {
    format!("[[pusher.apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n")
}

/// Makes one call through the Node server SDK; returns the response body (200 only).
async fn sdk(server: &TestServer, call: Value) -> TestResult<Value> {
    let config = json!({
        "host": "127.0.0.1",
        "port": server.addr.port(),
        "appId": APP_ID,
        "key": KEY,
        "secret": SECRET,
        "calls": [call],
    });
    let output = run(node("pusher_server_sdk.mjs", &[&config.to_string()])?).await?;
    let result: Value = serde_json::from_str(output.trim())?;
    assert_eq!(result["status"], 200, "{result}");
    Ok(result["body"].clone())
}

/// Triggers `event` with `data` on `channel` through the Node server SDK.
async fn trigger(server: &TestServer, channel: &str, event: &str, data: Value) -> TestResult {
    sdk(server, json!(["trigger", channel, event, data])).await?;
    Ok(())
}

/// Starts Echo as `user`, on the public channel `orders`, `private-chat` and
/// `presence-room`, listening for `.OrderShipped`.
fn echo(server: &TestServer, broadcaster: &str, user: &str) -> TestResult<Script> {
    let config = json!({
        "host": "127.0.0.1",
        "port": server.addr.port(),
        "appId": APP_ID,
        "key": KEY,
        "secret": SECRET,
        "broadcaster": broadcaster,
        "user": user,
        "public": "orders",
        "private": "chat",
        "presence": "room",
        "event": "OrderShipped",
    });
    Script::spawn(node("echo_client.mjs", &[&config.to_string()])?)
}

/// Reads lines until every channel has reported `subscribed`, returning the `here`.
async fn until_subscribed(client: &mut Script) -> TestResult<Value> {
    let mut subscribed = Vec::new();
    let mut here = Value::Null;
    while subscribed.len() < 3 || here.is_null() {
        let line = client.json().await?;
        match line["kind"].as_str() {
            Some("subscribed") => subscribed.push(line["channel"].clone()),
            Some("here") => here = line["users"].clone(),
            Some("error") => return support::fail(format!("subscription error: {line}")),
            _ => {}
        }
    }
    Ok(here)
}

fn shipped(channel: &str, id: u64) -> Value {
    json!({ "kind": "event", "channel": channel, "data": { "order": id } })
}

async fn echo_listens_and_tracks_presence(broadcaster: &str) -> TestResult {
    let server = TestServer::start(&app_config()).await?;
    let mut ann = echo(&server, broadcaster, "ann")?;
    assert_eq!(until_subscribed(&mut ann).await?, json!(["User ann"]));
    let mut ben = echo(&server, broadcaster, "ben")?;
    assert_eq!(
        until_subscribed(&mut ben).await?,
        json!(["User ann", "User ben"])
    );
    assert_eq!(
        ann.json().await?,
        json!({ "kind": "joining", "channel": "presence-room", "user": "User ben" })
    );
    for (n, channel) in ["orders", "private-chat", "presence-room"]
        .iter()
        .enumerate()
    {
        trigger(&server, channel, "OrderShipped", json!({ "order": n })).await?;
        for client in [&mut ann, &mut ben] {
            assert_eq!(client.json().await?, shipped(channel, n as u64));
        }
    }
    drop(ben);
    assert_eq!(
        ann.json().await?,
        json!({ "kind": "leaving", "channel": "presence-room", "user": "User ben" })
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laravel_echo_with_the_reverb_broadcaster() -> TestResult {
    echo_listens_and_tracks_presence("reverb").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laravel_echo_with_the_pusher_broadcaster() -> TestResult {
    echo_listens_and_tracks_presence("pusher").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pusher_js_in_chromium_receives_an_sdk_triggered_event() -> TestResult {
    let server = TestServer::start(&app_config()).await?;
    let config = json!({
        "host": "127.0.0.1",
        "port": server.addr.port(),
        "key": KEY,
        "channel": "browser-news",
        "event": "headline",
    });
    let mut browser = Script::spawn(node("pusher_js_browser.mjs", &[&config.to_string()])?)?;
    assert_eq!(browser.json().await?, json!({ "kind": "subscribed" }));
    trigger(
        &server,
        "browser-news",
        "headline",
        json!({ "title": "hello" }),
    )
    .await?;
    assert_eq!(
        browser.json().await?,
        json!({ "kind": "event", "data": { "title": "hello" } })
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_on_two_nodes_through_redis() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = format!(
        "[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"pusherecho\"\n{}",
        redis.url(),
        app_config()
    );
    let one = TestServer::start(&config).await?;
    let two = TestServer::start(&config).await?;
    one.wait_ready().await?;
    two.wait_ready().await?;
    let mut ann = echo(&one, "reverb", "ann")?;
    assert_eq!(until_subscribed(&mut ann).await?, json!(["User ann"]));
    let mut ben = echo(&two, "reverb", "ben")?;
    assert_eq!(
        until_subscribed(&mut ben).await?,
        json!(["User ann", "User ben"]),
        "here lists the member on the other node"
    );
    assert_eq!(
        ann.json().await?,
        json!({ "kind": "joining", "channel": "presence-room", "user": "User ben" })
    );
    // The HTTP API sees both members and both subscriptions, from either node.
    for node in [&one, &two] {
        let users = json!(["get", { "path": "/channels/presence-room/users" }]);
        assert_eq!(
            sdk(node, users).await?,
            json!({ "users": [{ "id": "ann" }, { "id": "ben" }] })
        );
        let info = json!(["get", {
            "path": "/channels/presence-room",
            "params": { "info": "user_count,subscription_count" },
        }]);
        assert_eq!(
            sdk(node, info).await?,
            json!({ "occupied": true, "user_count": 2, "subscription_count": 2 })
        );
    }
    trigger(&two, "private-chat", "OrderShipped", json!({ "order": 7 })).await?;
    assert_eq!(ann.json().await?, shipped("private-chat", 7));
    assert_eq!(ben.json().await?, shipped("private-chat", 7));
    drop(ben);
    assert_eq!(
        ann.json().await?,
        json!({ "kind": "leaving", "channel": "presence-room", "user": "User ben" })
    );
    Ok(())
}

/// Triggers through the Python server SDK (`pusher` on PyPI).
async fn python_trigger(
    server: &TestServer,
    channel: &str,
    event: &str,
    data: Value,
) -> TestResult {
    let config = json!({
        "host": "127.0.0.1",
        "port": server.addr.port(),
        "appId": APP_ID,
        "key": KEY,
        "secret": SECRET,
        "calls": [["trigger", channel, event, data]],
    });
    let output = run(python("pusher_server_sdk.py", &[&config.to_string()])?).await?;
    let result: Value = serde_json::from_str(output.trim())?;
    assert_eq!(result["status"], 200, "{result}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pysher_subscribes_public_private_and_presence() -> TestResult {
    let server = TestServer::start(&format!("{}client_events = true\n", app_config())).await?;
    let port = server.addr.port().to_string();
    let mut py = Script::spawn(python("pysher_session.py", &[&port, KEY, SECRET])?)?;
    let connected = py.json().await?;
    let socket_id = connected["connected"].as_str().unwrap_or_default();
    assert!(
        socket_id.split_once('.').is_some_and(|(a, b)| {
            [a, b]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
        }),
        "{connected}"
    );
    assert_eq!(py.json().await?, json!({ "ready": "public" }));
    python_trigger(&server, "news", "headline", json!({ "title": "hi" })).await?;
    assert_eq!(py.json().await?, json!({ "public": { "title": "hi" } }));
    assert_eq!(py.json().await?, json!({ "ready": "private" }));
    python_trigger(&server, "private-py", "notice", json!({ "n": 1 })).await?;
    assert_eq!(py.json().await?, json!({ "private": { "n": 1 } }));
    assert_eq!(py.json().await?, json!({ "forged": 401 }));
    assert_eq!(
        py.json().await?,
        json!({ "here_alice": {
            "ids": ["alice"], "hash": { "alice": { "name": "Alice" } }, "count": 1
        } })
    );
    assert_eq!(py.json().await?, json!({ "here_bob": ["alice", "bob"] }));
    assert_eq!(
        py.json().await?,
        json!({ "member_added": { "user_id": "bob", "user_info": { "name": "Bob" } } })
    );
    assert_eq!(
        py.json().await?,
        json!({ "client_event": { "from": "bob" } })
    );
    assert_eq!(
        py.json().await?,
        json!({ "member_removed": { "user_id": "bob" } })
    );
    py.success().await
}
