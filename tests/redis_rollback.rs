//! Redis going back in time: restarted from an older snapshot, it hands out offsets that
//! were already delivered. Live subscribers on every node keep receiving (the stream
//! moves to a new epoch), and a client recovering across the rollback is told
//! `recovered: false` rather than given messages that are not the ones it missed.

mod support;

use serde_json::{Value, json};
use support::{Encoding, RedisServer, TestResult, TestServer, WsClient};

fn node_config(redis: &RedisServer) -> String {
    format!(
        "[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"rollback\"\nheartbeat_interval_ms = 200\nprobe_interval_ms = 500\n[namespaces.feed]\nhistory_size = 100\n",
        redis.url()
    )
}

/// Reads `count` messages; returns their (offset, epoch, data).
async fn read(client: &mut WsClient, count: usize) -> TestResult<Vec<(u64, String, Value)>> {
    let mut got = Vec::new();
    for _ in 0..count {
        let message = client.recv_message().await?;
        got.push((
            message["offset"].as_u64().ok_or("no offset")?,
            message["epoch"].as_str().ok_or("no epoch")?.to_owned(),
            message["data"].clone(),
        ));
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_from_an_older_snapshot_subscribers_keep_receiving() -> TestResult {
    let mut redis = RedisServer::start().await?;
    let nodes = [
        TestServer::start(&node_config(&redis)).await?,
        TestServer::start(&node_config(&redis)).await?,
    ];
    for node in &nodes {
        node.wait_ready().await?;
    }
    let mut live = Vec::new();
    for (node, encoding) in nodes.iter().zip([Encoding::Json, Encoding::Msgpack]) {
        let (mut client, _) = WsClient::connect(&node.ws_url(), encoding).await?;
        client
            .request("subscribe", json!({"channel": "feed:r"}))
            .await?;
        live.push(client);
    }
    for n in 1..=5 {
        nodes[0].publish("feed:r", json!(n)).await?;
    }
    assert_eq!(redis.cli(&["SAVE"]).await?.trim(), "OK");
    for n in 6..=10 {
        nodes[0].publish("feed:r", json!(n)).await?;
    }
    let mut old_epoch = String::new();
    for client in &mut live {
        let got = read(client, 10).await?;
        let offsets: Vec<u64> = got.iter().map(|(o, _, _)| *o).collect();
        assert_eq!(offsets, (1..=10).collect::<Vec<_>>());
        old_epoch = got[9].1.clone();
    }

    redis.restart().await?;
    for node in &nodes {
        node.wait_ready().await?;
    }
    // Redis is back at offset 5 of the old epoch. Publications 11-15 reach every live
    // subscriber, under a new epoch, in order, once.
    for n in 11..=15 {
        nodes[1].publish("feed:r", json!(n)).await?;
    }
    let mut new_epoch = String::new();
    for client in &mut live {
        let got = read(client, 5).await?;
        let data: Vec<Value> = got.iter().map(|(_, _, d)| d.clone()).collect();
        assert_eq!(data, (11..=15).map(|n| json!(n)).collect::<Vec<_>>());
        assert!(got.iter().all(|(_, e, _)| *e != old_epoch), "{got:?}");
        assert!(
            got.windows(2)
                .all(|w| w[0].1 == w[1].1 && w[1].0 == w[0].0 + 1),
            "{got:?}"
        );
        new_epoch = got[4].1.clone();
    }
    assert!(
        nodes
            .iter()
            .any(|n| n.state.metrics.redis_stream_rollbacks.get() >= 1)
    );

    // A client that left at offset 10 of the old epoch missed 11-15, which Redis now
    // numbers 6-10: it is told so.
    let (mut back, _) = WsClient::connect(&nodes[0].ws_url(), Encoding::Json).await?;
    let reply = back
        .request(
            "subscribe",
            json!({"channel": "feed:r", "recover": {"offset": 10, "epoch": old_epoch}}),
        )
        .await?;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(reply["epoch"], json!(new_epoch), "{reply}");
    // One that followed the new epoch recovers as usual.
    nodes[0].publish("feed:r", json!(16)).await?;
    for client in &mut live {
        assert_eq!(read(client, 1).await?[0].2, json!(16));
    }
    let (mut other, _) = WsClient::connect(&nodes[1].ws_url(), Encoding::Json).await?;
    let reply = other
        .request(
            "subscribe",
            json!({"channel": "feed:r", "recover": {"offset": 10, "epoch": new_epoch}}),
        )
        .await?;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(other.recv_message().await?["data"], json!(16));
    Ok(())
}
