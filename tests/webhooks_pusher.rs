//! Pusher webhooks are what the Pusher server SDKs expect: a body signed with
//! `X-Pusher-Key` and `X-Pusher-Signature`, checked here by the `pusher` npm SDK's own
//! `webhook({headers, rawBody}).isValid()` (tests/clients/pusher_webhook_verify.mjs), sent
//! to the endpoints of `[[pusher.apps.webhooks]]` filtered by their `events`; and the
//! events real pusher-js sessions cause (member_added / member_removed per user,
//! client_event with socket_id and user_id, cache_miss).

mod support;

use serde_json::{Value, json};
use support::external::{Script, node as node_script, run};
use support::webhook_receiver::WebhookReceiver;
use support::{TestResult, TestServer, fail};

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
    session.stop().await?;
    // Alice's connection ended: her last connection left.
    let gone = verified_events(&mut hooks, KEY, SECRET, 1).await?;
    assert_eq!(
        gone,
        vec![json!({"name": "member_removed", "channel": "presence-room", "user_id": "alice"})]
    );
    node.stop().await
}
