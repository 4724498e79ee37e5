//! Reading a channel nobody published to stores nothing, on either broker: `history`
//! and `subscribe` of never-published names leave no stream in memory and no key in
//! Redis, and a subscriber of such a channel still recovers what it missed later.

mod support;

use serde_json::{Value, json};
use support::{Encoding, RedisServer, TestResult, TestServer, WsClient};

const READS: usize = 400;

const CONFIG: &str = "[client]\nrate_limit_per_sec = 100000\nrate_limit_burst = 100000\n[namespaces.feed]\nhistory_size = 100\n";

fn redis_config(redis: &RedisServer) -> String {
    format!(
        "{CONFIG}[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"empty\"\n",
        redis.url()
    )
}

/// One anonymous client reads `READS` random never-published channels, with `history`
/// and with `subscribe` + `unsubscribe`; every read answers offset 0.
async fn read_random_channels(server: &TestServer) -> TestResult {
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    for i in 0..READS {
        let channel = format!("feed:never-{i}-{:x}", rand_suffix(i));
        let history = client
            .request("history", json!({"channel": channel}))
            .await?;
        assert_eq!(history["op"], "history", "{history}");
        assert_eq!(history["offset"], 0, "{history}");
        let subscribed = client
            .request("subscribe", json!({"channel": channel}))
            .await?;
        assert_eq!(subscribed["offset"], 0, "{subscribed}");
        client
            .request("unsubscribe", json!({"channel": channel}))
            .await?;
    }
    Ok(())
}

fn rand_suffix(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn memory_streams(server: &TestServer) -> TestResult<usize> {
    match &server.state.broker {
        pushwire::broker::Broker::Memory(broker) => Ok(broker.stream_count()),
        pushwire::broker::Broker::Redis(_) => Err("not the memory broker".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_broker_reads_of_unpublished_channels_store_no_stream() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    read_random_channels(&server).await?;
    assert_eq!(memory_streams(&server)?, 0, "reads created streams");
    server.publish("feed:real", json!(1)).await?;
    assert_eq!(memory_streams(&server)?, 1, "a publication creates one");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_reads_of_unpublished_channels_create_no_keys() -> TestResult {
    let redis = RedisServer::start().await?;
    let node = TestServer::start(&redis_config(&redis)).await?;
    node.wait_ready().await?;
    let before = dbsize(&redis).await?;
    read_random_channels(&node).await?;
    assert_eq!(dbsize(&redis).await?, before, "reads created keys");
    node.publish("feed:real", json!(1)).await?;
    assert!(dbsize(&redis).await? > before, "a publication creates keys");
    Ok(())
}

async fn dbsize(redis: &RedisServer) -> TestResult<u64> {
    Ok(redis.cli(&["DBSIZE"]).await?.trim().parse()?)
}

/// A client that subscribed before the first publication and dropped recovers every
/// message of the stream that publication created; a live one gets them in order.
async fn subscriber_of_an_empty_channel_misses_nothing(server: &TestServer) -> TestResult {
    let (mut live, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    live.request("subscribe", json!({"channel": "feed:fresh"}))
        .await?;
    let (mut early, _) = WsClient::connect(&server.ws_url(), Encoding::Msgpack).await?;
    let reply = early
        .request("subscribe", json!({"channel": "feed:fresh"}))
        .await?;
    assert_eq!(reply["offset"], 0, "{reply}");
    let seen = json!({"offset": 0, "epoch": reply["epoch"].clone()});
    drop(early);
    for n in 1..=3 {
        server.publish("feed:fresh", json!(n)).await?;
    }
    let mut epoch = Value::Null;
    for n in 1..=3 {
        let message = live.recv_message().await?;
        assert_eq!(
            (message["offset"].clone(), message["data"].clone()),
            (json!(n), json!(n))
        );
        epoch = message["epoch"].clone();
    }
    let (mut back, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let reply = back
        .request(
            "subscribe",
            json!({"channel": "feed:fresh", "recover": seen}),
        )
        .await?;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(
        (reply["offset"].clone(), reply["epoch"].clone()),
        (json!(3), epoch)
    );
    for n in 1..=3 {
        assert_eq!(back.recv_message().await?["data"], json!(n));
    }
    // Recovering into a channel that still has no stream is complete too.
    let reply = back
        .request("subscribe", json!({"channel": "feed:still-empty"}))
        .await?;
    let seen = json!({"offset": 0, "epoch": reply["epoch"].clone()});
    let (mut again, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let reply = again
        .request(
            "subscribe",
            json!({"channel": "feed:still-empty", "recover": seen}),
        )
        .await?;
    assert_eq!(reply["recovered"], true, "{reply}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_broker_subscriber_of_an_empty_channel_misses_nothing() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    subscriber_of_an_empty_channel_misses_nothing(&server).await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_subscriber_of_an_empty_channel_misses_nothing() -> TestResult {
    let redis = RedisServer::start().await?;
    let node = TestServer::start(&redis_config(&redis)).await?;
    node.wait_ready().await?;
    subscriber_of_an_empty_channel_misses_nothing(&node).await
}
