//! The relay between Redis and the hub when messages go missing: publications made while
//! a node's pub/sub connection was down arrive as soon as it is back (not with the next
//! publication), but only up to `redis.gap_fill_max_messages` (a longer gap is left to
//! client recovery), and what the hand-off buffer drops is bounded in bytes and counted.

mod support;

use serde_json::json;
use support::{Encoding, RedisServer, TestResult, TestServer, WsClient, fail};

fn node_config(redis_url: &str, extra: &str) -> String {
    let probe = if extra.contains("probe_interval_ms") {
        ""
    } else {
        "probe_interval_ms = 300\n"
    };
    format!(
        "[broker]\nkind = \"redis\"\n[redis]\nurl = \"{redis_url}\"\nkey_prefix = \"gaps\"\npubsub_connections = 1\n{probe}{extra}\n[namespaces.feed]\nhistory_size = 100\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_made_while_pubsub_was_down_arrive_when_it_is_back() -> TestResult {
    let redis = RedisServer::start().await?;
    // Node `a` connects as its own Redis user, so its pub/sub can be cut alone.
    let created = redis
        .cli(&[
            "ACL",
            "SETUSER",
            "a",
            "on",
            ">secret-a",
            "~*",
            "&*",
            "+@all",
        ])
        .await?;
    assert_eq!(created.trim(), "OK");
    let a_url = format!("redis://a:secret-a@127.0.0.1:{}", redis.port);
    let a = TestServer::start(&node_config(&a_url, "")).await?;
    let b = TestServer::start(&node_config(&redis.url(), "")).await?;
    a.wait_ready().await?;
    b.wait_ready().await?;
    let (mut client, _) = WsClient::connect(&a.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "feed:gap"}))
        .await?;
    b.publish("feed:gap", json!(1)).await?;
    assert_eq!(client.recv_message().await?["data"], json!(1));

    // Redis drops `a`'s pub/sub connection and refuses its subscriptions meanwhile.
    redis.cli(&["ACL", "SETUSER", "a", "resetchannels"]).await?;
    a.wait_ready_is(503).await?;
    for n in 2..=4 {
        b.publish("feed:gap", json!(n)).await?;
    }
    redis.cli(&["ACL", "SETUSER", "a", "allchannels"]).await?;
    a.wait_ready().await?;
    // No further publication: the node looked at the end of the stream by itself.
    for n in 2..=4 {
        let message = client.recv_message().await?;
        assert_eq!(
            (message["data"].clone(), message["offset"].clone()),
            (json!(n), json!(n))
        );
    }
    b.publish("feed:gap", json!(5)).await?;
    assert_eq!(client.recv_message().await?["data"], json!(5));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handoff_buffer_is_bounded_in_bytes_and_counts_every_drop() -> TestResult {
    let redis = RedisServer::start().await?;
    let node = TestServer::start(&node_config(&redis.url(), "handoff_buffer_bytes = 4096")).await?;
    node.wait_ready().await?;
    let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "news"}))
        .await?;
    let metrics = &node.state.metrics;
    let trips = || {
        metrics
            .limit_trips
            .with_label_values(&["relay_handoff"])
            .get()
    };
    assert_eq!((metrics.relay_dropped.get(), trips()), (0, 0));
    // Bigger than the whole buffer: dropped on the relay, and counted.
    node.publish("news", json!("x".repeat(8192))).await?;
    node.publish("news", json!("small")).await?;
    assert_eq!(client.recv_message().await?["data"], json!("small"));
    if metrics.relay_dropped.get() != 1 || trips() != 1 {
        return fail(format!(
            "dropped {} / trips {}",
            metrics.relay_dropped.get(),
            trips()
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_redis_refused_does_not_tear_down_a_working_pubsub_connection() -> TestResult {
    let redis = RedisServer::start().await?;
    let node = TestServer::start(&node_config(
        &redis.url(),
        "probe_interval_ms = 300\nheartbeat_interval_ms = 50\nnode_timeout_ms = 1000",
    ))
    .await?;
    node.wait_ready().await?;
    let metrics = &node.state.metrics;
    let errors = |op: &str| metrics.redis_errors.with_label_values(&[op]).get();
    let reconnects_before = metrics.redis_reconnects.get();
    let pubsub_before = errors("pubsub");
    // Redis refuses every PUBLISH (probes and heartbeats); pub/sub itself is fine.
    redis
        .cli(&["ACL", "SETUSER", "default", "-publish"])
        .await?;
    let control_before = errors("control");
    // Thirty refused heartbeats later (five probe intervals)...
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while errors("control") < control_before + 30 {
        if tokio::time::Instant::now() > deadline {
            return fail("publishes were never refused");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // ...the pub/sub connection was never declared dead.
    assert_eq!(errors("pubsub"), pubsub_before);
    assert_eq!(metrics.redis_reconnects.get(), reconnects_before);
    redis
        .cli(&["ACL", "SETUSER", "default", "+publish"])
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_longer_than_gap_fill_max_messages_is_left_to_client_recovery() -> TestResult {
    let redis = RedisServer::start().await?;
    let created = redis
        .cli(&[
            "ACL",
            "SETUSER",
            "a",
            "on",
            ">secret-a",
            "~*",
            "&*",
            "+@all",
        ])
        .await?;
    assert_eq!(created.trim(), "OK");
    let a_url = format!("redis://a:secret-a@127.0.0.1:{}", redis.port);
    let a = TestServer::start(&node_config(&a_url, "gap_fill_max_messages = 3")).await?;
    let b = TestServer::start(&node_config(&redis.url(), "")).await?;
    a.wait_ready().await?;
    b.wait_ready().await?;
    let (mut client, _) = WsClient::connect(&a.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "feed:long"}))
        .await?;
    let first = b.publish("feed:long", json!(1)).await?;
    assert_eq!(client.recv_message().await?["data"], json!(1));

    // Ten publications while `a`'s pub/sub is cut: more than the node may fill.
    redis.cli(&["ACL", "SETUSER", "a", "resetchannels"]).await?;
    a.wait_ready_is(503).await?;
    for n in 2..=11 {
        b.publish("feed:long", json!(n)).await?;
    }
    redis.cli(&["ACL", "SETUSER", "a", "allchannels"]).await?;
    a.wait_ready().await?;
    b.publish("feed:long", json!(12)).await?;
    // Not filled: the next message shows the gap in its offset, and the trip is counted.
    let next = client.recv_message().await?;
    assert_eq!(
        (next["data"].clone(), next["offset"].clone()),
        (json!(12), json!(12))
    );
    let metrics = a.metrics_text().await?;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("pushwire_limit_trips_total{kind=\"relay_gap_fill\"}")
            && !l.ends_with(" 0")),
        "no relay_gap_fill trip counted"
    );
    // The client recovers the gap itself.
    let (mut back, _) = WsClient::connect(&a.ws_url(), Encoding::Json).await?;
    let reply = back
        .request(
            "subscribe",
            json!({"channel": "feed:long", "recover": {"offset": 1, "epoch": first["epoch"]}}),
        )
        .await?;
    assert_eq!(reply["recovered"], true, "{reply}");
    for n in 2..=12 {
        assert_eq!(back.recv_message().await?["data"], json!(n));
    }
    Ok(())
}
