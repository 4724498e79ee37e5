//! Occupancy webhooks across nodes through a real Redis: `channel_occupied` when a channel
//! gets its first subscriber on any node and `channel_vacated` only when the last one on
//! any node has left, each sent once by one node; a crashed node's channels get vacated.

mod support;

use serde_json::json;
use support::webhook_receiver::WebhookReceiver;
use support::{BinaryServer, Encoding, RedisServer, TestResult, TestServer, WsClient};

fn node_config(redis: &RedisServer, prefix: &str, hooks: &WebhookReceiver) -> String {
    format!(
        r#"
[broker]
kind = "redis"
[redis]
url = "{}"
key_prefix = "{prefix}"
unsubscribe_delay_ms = 100
heartbeat_interval_ms = 200
node_timeout_ms = 3000
probe_interval_ms = 500
[webhooks]
urls = ["{}"]
secret = "cluster-secret"
hold_ms = 300
batch_wait_ms = 10
"#,
        redis.url(),
        hooks.url()
    )
}

fn named(name: &str, channel: &str) -> (String, String) {
    (name.to_owned(), channel.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacated_only_after_the_last_subscriber_on_any_node_left() -> TestResult {
    let redis = RedisServer::start().await?;
    let mut hooks = WebhookReceiver::start().await?;
    let config = node_config(&redis, "occ", &hooks);
    let one = TestServer::start(&config).await?;
    let two = TestServer::start(&config).await?;
    one.wait_ready().await?;
    two.wait_ready().await?;
    let (mut a, _) = WsClient::connect(&one.ws_url(), Encoding::Json).await?;
    let (mut b, _) = WsClient::connect(&two.ws_url(), Encoding::Json).await?;
    a.request("subscribe", json!({"channel": "shared"})).await?;
    assert_eq!(
        hooks.next_named().await?,
        named("channel_occupied", "shared")
    );
    b.request("subscribe", json!({"channel": "shared"})).await?;
    a.request("unsubscribe", json!({"channel": "shared"}))
        .await?;
    // A marker past the hold of anything node one might (wrongly) have sent.
    b.request("subscribe", json!({"channel": "marker"})).await?;
    assert_eq!(
        hooks.next_named().await?,
        named("channel_occupied", "marker")
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    b.request("unsubscribe", json!({"channel": "shared"}))
        .await?;
    assert_eq!(
        hooks.next_named().await?,
        named("channel_vacated", "shared")
    );
    // A return on another node within the hold cancels the vacated cluster-wide.
    b.request("unsubscribe", json!({"channel": "marker"}))
        .await?;
    let reply = a.request("subscribe", json!({"channel": "marker"})).await?;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    a.request("subscribe", json!({"channel": "after"})).await?;
    assert_eq!(
        hooks.next_named().await?,
        named("channel_occupied", "after")
    );
    one.stop().await?;
    two.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_of_a_crashed_node_are_vacated_by_another() -> TestResult {
    let redis = RedisServer::start().await?;
    let mut hooks = WebhookReceiver::start().await?;
    let config = node_config(&redis, "crash", &hooks);
    let survivor = TestServer::start(&config).await?;
    survivor.wait_ready().await?;
    let mut doomed = BinaryServer::start(&config).await?;
    let (mut a, _) = WsClient::connect(&doomed.ws_url(), Encoding::Json).await?;
    a.request("subscribe", json!({"channel": "orphan"})).await?;
    assert_eq!(
        hooks.next_named().await?,
        named("channel_occupied", "orphan")
    );
    let (mut b, _) = WsClient::connect(&survivor.ws_url(), Encoding::Json).await?;
    b.request("subscribe", json!({"channel": "kept"})).await?;
    b.request("subscribe", json!({"channel": "orphan"})).await?;
    assert_eq!(hooks.next_named().await?, named("channel_occupied", "kept"));
    b.request("unsubscribe", json!({"channel": "orphan"}))
        .await?;
    doomed.child.kill().await?;
    // Nobody unsubscribed on the dead node: the survivor notices its alive key expired.
    assert_eq!(
        hooks.next_named().await?,
        named("channel_vacated", "orphan")
    );
    b.request("unsubscribe", json!({"channel": "kept"})).await?;
    assert_eq!(hooks.next_named().await?, named("channel_vacated", "kept"));
    survivor.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pusher_channels_of_a_crashed_node_are_vacated_too() -> TestResult {
    let redis = RedisServer::start().await?;
    let mut hooks = WebhookReceiver::start().await?;
    // What a node that died holding a subscriber of app 4242's `presence-room` leaves in
    // Redis: it is in the channel's occupancy set and its channel index, its alive key
    // has expired. App channels live in the hub as `pusher~{app}~{name}`, which is not a
    // native channel name.
    let hub_channel = "pusher~4242~presence-room";
    redis.cli(&["SADD", "ghost:onodes", "dead-node"]).await?;
    redis
        .cli(&["SADD", "ghost:on:dead-node", hub_channel])
        .await?;
    let occupancy = format!("ghost:o:{{{hub_channel}}}");
    redis.cli(&["SADD", &occupancy, "dead-node"]).await?;
    let config = format!(
        r#"
[broker]
kind = "redis"
[redis]
url = "{}"
key_prefix = "ghost"
heartbeat_interval_ms = 200
node_timeout_ms = 3000
[webhooks]
hold_ms = 300
batch_wait_ms = 10
[[pusher.apps]]
id = "4242"
key = "app-key"
secret = "app-secret-app-secret-app-secret-0"
[[pusher.apps.webhooks]]
url = "{}"
"#,
        redis.url(),
        hooks.url()
    );
    let survivor = TestServer::start(&config).await?;
    survivor.wait_ready().await?;
    assert_eq!(
        hooks.next_named().await?,
        named("channel_vacated", "presence-room")
    );
    assert_eq!(redis.cli(&["SCARD", &occupancy]).await?.trim(), "0");
    survivor.stop().await
}
