//! Pusher webhooks are what the Pusher server SDKs expect: a body signed with
//! `X-Pusher-Key` and `X-Pusher-Signature`, checked here by the `pusher` npm SDK's own
//! `webhook({headers, rawBody}).isValid()` (tests/clients/pusher_webhook_verify.mjs), sent
//! to the endpoints of `[[pusher.apps.webhooks]]` filtered by their `events`; and the
//! events real pusher-js sessions cause (member_added / member_removed per user,
//! client_event with socket_id and user_id, cache_miss), also for a member whose node
//! was killed (removed by another node once its presence entry expired).

mod support;

use serde_json::{Value, json};
use support::external::{Script, node as node_script, run};
use support::webhook_receiver::WebhookReceiver;
use support::{BinaryServer, RedisServer, TestResult, TestServer, fail};

use pushwire::webhook::{Target, WebhookEvent};

const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pusher_sdk_validates_our_webhooks() -> TestResult {
    let mut hooks = WebhookReceiver::start().await?;
    let config = format!(
        r#"
[webhooks]
batch_wait_ms = 200
[[pusher.apps]]
id = "4242"
key = "{KEY}"
secret = "{SECRET}"
[[pusher.apps.webhooks]]
url = "{url}"
events = ["channel_occupied", "member_added", "client_event"]
[[pusher.apps]]
id = "7"
key = "other-key"
secret = "other-secret"
"#,
        url = hooks.url()
    );
    let node = TestServer::start(&config).await?;
    let webhooks = &node.state.webhooks;
    let app = Target::Pusher("4242".into());
    // Not in the endpoint's `events`: filtered out.
    webhooks.emit(&app, WebhookEvent::cache_miss("cache-x"));
    webhooks.emit(&app, WebhookEvent::channel_occupied("presence-room"));
    webhooks.emit(&app, WebhookEvent::member_added("presence-room", "42"));
    webhooks.emit(
        &app,
        WebhookEvent::client_event(
            "presence-room",
            "client-typing",
            "{\"a\":1}",
            "1.2",
            Some("42"),
        ),
    );
    // Another app's events do not reach this app's endpoint.
    webhooks.emit(
        &Target::Pusher("7".into()),
        WebhookEvent::channel_occupied("x"),
    );
    let events = verified_events(&mut hooks, KEY, SECRET, 3).await?;
    assert_eq!(
        events,
        vec![
            json!({"name": "channel_occupied", "channel": "presence-room"}),
            json!({"name": "member_added", "channel": "presence-room", "user_id": "42"}),
            json!({"name": "client_event", "channel": "presence-room", "event": "client-typing",
                   "data": "{\"a\":1}", "socket_id": "1.2", "user_id": "42"}),
        ]
    );
    node.stop().await
}

/// Reads webhook requests until `count` events arrived, each body checked by the `pusher`
/// npm SDK's `webhook().isValid()` (and refused with a wrong secret); returns the events.
async fn verified_events(
    hooks: &mut WebhookReceiver,
    key: &str,
    secret: &str,
    count: usize,
) -> TestResult<Vec<Value>> {
    let mut events = Vec::new();
    while events.len() < count {
        let received = hooks.request().await?;
        let headers: serde_json::Map<String, Value> = received
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), Value::from(v.to_str().ok()?))))
            .collect();
        let body = String::from_utf8(received.body.to_vec())?;
        let headers = Value::Object(headers).to_string();
        let out = run(node_script(
            "pusher_webhook_verify.mjs",
            &[key, secret, &headers, &body],
        )?)
        .await?;
        let verdict: Value = serde_json::from_str(out.trim())?;
        if verdict["valid"] != true || verdict["valid_with_wrong_secret"] != false {
            return fail(format!("SDK verdict {verdict} on {body} with {headers}"));
        }
        events.extend(verdict["events"].as_array().cloned().unwrap_or_default());
    }
    Ok(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pusher_js_sessions_cause_member_client_and_cache_miss_webhooks() -> TestResult {
    let mut hooks = WebhookReceiver::start().await?;
    let config = format!(
        r#"
[webhooks]
batch_wait_ms = 50
hold_ms = 200
[[pusher.apps]]
id = "4242"
key = "{KEY}"
secret = "{SECRET}"
client_events = true
[[pusher.apps.webhooks]]
url = "{url}"
events = ["member_added", "member_removed", "client_event", "cache_miss"]
"#,
        url = hooks.url()
    );
    let node = TestServer::start(&config).await?;
    let port = node.addr.port().to_string();
    let mut session = Script::spawn(node_script(
        "pusher_js_webhook_events.mjs",
        &[&port, "4242", KEY, SECRET],
    )?)?;
    let alice = session.json().await?["alice"]
        .as_str()
        .ok_or("no socket id")?
        .to_owned();
    assert_eq!(session.json().await?, json!({ "done": true }));
    // Alice's two arrivals, then bob's, alice's client event, bob's departure (held
    // `hold_ms`, so it comes last). Events of one session step are ordered; the emitters
    // (broker and session) are not ordered with each other, so compare sorted.
    let mut events = verified_events(&mut hooks, KEY, SECRET, 5).await?;
    assert_eq!(
        events.pop(),
        Some(json!({"name": "member_removed", "channel": "presence-room", "user_id": "bob"}))
    );
    let mut expected = vec![
        json!({"name": "member_added", "channel": "presence-room", "user_id": "alice"}),
        json!({"name": "cache_miss", "channel": "cache-empty"}),
        json!({"name": "member_added", "channel": "presence-room", "user_id": "bob"}),
        json!({"name": "client_event", "channel": "presence-room", "event": "client-typing",
               "data": "{\"from\":\"alice\"}", "socket_id": alice, "user_id": "alice"}),
    ];
    let key = |v: &Value| v.to_string();
    events.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(events, expected);
    // The app's own webhook counter saw them (counted once the endpoint answered).
    let sent = r#"pushwire_pusher_webhook_events_total{app="4242",outcome="sent"}"#;
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let text = node.metrics_text().await?;
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(sent))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if value >= 5.0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return fail(format!("{sent} stayed at {value}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    session.stop().await?;
    // Alice's connection ended: her last connection left.
    let gone = verified_events(&mut hooks, KEY, SECRET, 1).await?;
    assert_eq!(
        gone,
        vec![json!({"name": "member_removed", "channel": "presence-room", "user_id": "alice"})]
    );
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_on_a_crashed_node_is_removed_after_the_presence_ttl() -> TestResult {
    let redis = RedisServer::start().await?;
    let mut hooks = WebhookReceiver::start().await?;
    let config = format!(
        r#"
[broker]
kind = "redis"
[redis]
url = "{redis}"
key_prefix = "pushercrash"
heartbeat_interval_ms = 200
node_timeout_ms = 1000
presence_ttl_secs = 2
[webhooks]
batch_wait_ms = 20
hold_ms = 100
[[pusher.apps]]
id = "4242"
key = "{KEY}"
secret = "{SECRET}"
[[pusher.apps.webhooks]]
url = "{url}"
events = ["member_added", "member_removed"]
"#,
        redis = redis.url(),
        url = hooks.url()
    );
    let survivor = TestServer::start(&config).await?;
    survivor.wait_ready().await?;
    let mut doomed = BinaryServer::start(&config).await?;
    let (alice_port, bob_port) = (survivor.addr.port(), doomed.addr.port());
    let mut pair = Script::spawn(node_script(
        "pusher_js_presence_pair.mjs",
        &[
            &alice_port.to_string(),
            &bob_port.to_string(),
            "4242",
            KEY,
            SECRET,
        ],
    )?)?;
    assert_eq!(pair.json().await?, json!({ "here": ["alice"] }));
    assert_eq!(pair.json().await?, json!({ "member_added": "bob" }));
    let added =
        |user: &str| json!({"name": "member_added", "channel": "presence-room", "user_id": user});
    let mut arrivals = verified_events(&mut hooks, KEY, SECRET, 2).await?;
    arrivals.sort_by_key(|v| v.to_string());
    assert_eq!(arrivals, vec![added("alice"), added("bob")]);
    // No unsubscribe, no close: bob's node is gone, and his presence entry expires.
    doomed.child.kill().await?;
    assert_eq!(
        pair.json().await?,
        json!({ "member_removed": "bob", "members": ["alice"] })
    );
    pair.success().await?;
    // Bob's removal, and alice's once her script ended.
    let removed =
        |user: &str| json!({"name": "member_removed", "channel": "presence-room", "user_id": user});
    let mut departures = verified_events(&mut hooks, KEY, SECRET, 2).await?;
    departures.sort_by_key(|v| v.to_string());
    assert_eq!(departures, vec![removed("alice"), removed("bob")]);
    survivor.stop().await
}

type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next frame of `socket` whose `event` is `event`.
async fn frame(socket: &mut RawSocket, event: &str) -> TestResult<Value> {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(support::WAIT, socket.next())
            .await?
            .ok_or("closed")??;
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text)?;
            if value["event"] == event {
                return Ok(value);
            }
        }
    }
}

/// A raw Pusher connection to `server` subscribed to `presence-room` as `user`, signed
/// with pushwire's own signer (checked against the SDKs' in src/pusher/signature_tests.rs).
async fn member(server: &TestServer, user: &str) -> TestResult<RawSocket> {
    use futures_util::SinkExt;
    let url = format!("ws://{}/app/{KEY}?protocol=7", server.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let established = frame(&mut socket, "pusher:connection_established").await?;
    let data: Value = serde_json::from_str(established["data"].as_str().ok_or("no data")?)?;
    let socket_id = data["socket_id"].as_str().ok_or("no socket_id")?;
    let app = server.state.pusher.by_id("4242").ok_or("no app")?;
    let channel_data = json!({ "user_id": user }).to_string();
    let auth = pushwire::pusher::signature::channel_auth(
        app,
        socket_id,
        "presence-room",
        Some(&channel_data),
    );
    let subscribe = json!({"event": "pusher:subscribe", "data": {
        "channel": "presence-room", "auth": auth, "channel_data": channel_data,
    }});
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            subscribe.to_string(),
        ))
        .await?;
    frame(&mut socket, "pusher_internal:subscription_succeeded").await?;
    Ok(socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_on_another_node_within_the_hold_sends_nothing() -> TestResult {
    let redis = RedisServer::start().await?;
    let mut hooks = WebhookReceiver::start().await?;
    let config = format!(
        r#"
[broker]
kind = "redis"
[redis]
url = "{redis}"
key_prefix = "pusherhold"
[webhooks]
batch_wait_ms = 20
hold_ms = 500
[[pusher.apps]]
id = "4242"
key = "{KEY}"
secret = "{SECRET}"
[[pusher.apps.webhooks]]
url = "{url}"
events = ["member_added", "member_removed"]
"#,
        redis = redis.url(),
        url = hooks.url()
    );
    let one = TestServer::start(&config).await?;
    let two = TestServer::start(&config).await?;
    one.wait_ready().await?;
    two.wait_ready().await?;
    let event =
        |name: &str, user: &str| json!({"name": name, "channel": "presence-room", "user_id": user});
    let alice = member(&one, "alice").await?;
    assert_eq!(
        verified_events(&mut hooks, KEY, SECRET, 1).await?,
        vec![event("member_added", "alice")]
    );
    // Alice reconnects to the other node, as pusher-js behind a load balancer may.
    drop(alice);
    let alice = member(&two, "alice").await?;
    // Bob's arrival comes next: nothing about alice was sent in between, neither her
    // removal (held, then cancelled by her return) nor a second arrival.
    let _bob = member(&one, "bob").await?;
    assert_eq!(
        verified_events(&mut hooks, KEY, SECRET, 1).await?,
        vec![event("member_added", "bob")]
    );
    drop(alice);
    assert_eq!(
        verified_events(&mut hooks, KEY, SECRET, 1).await?,
        vec![event("member_removed", "alice")]
    );
    one.stop().await?;
    two.stop().await
}
