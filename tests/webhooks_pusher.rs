//! Pusher webhooks are what the Pusher server SDKs expect: a body signed with
//! `X-Pusher-Key` and `X-Pusher-Signature`, checked here by the `pusher` npm SDK's own
//! `webhook({headers, rawBody}).isValid()` (tests/clients/pusher_webhook_verify.mjs), sent
//! to the endpoints of `[[pusher.apps.webhooks]]` filtered by their `events`.

mod support;

use serde_json::{Value, json};
use support::external::{node as node_script, run};
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
    let mut events = Vec::new();
    while events.len() < 3 {
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
            &[KEY, SECRET, &headers, &body],
        )?)
        .await?;
        let verdict: Value = serde_json::from_str(out.trim())?;
        if verdict["valid"] != true || verdict["valid_with_wrong_secret"] != false {
            return fail(format!("SDK verdict {verdict} on {body} with {headers}"));
        }
        events.extend(verdict["events"].as_array().cloned().unwrap_or_default());
    }
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
