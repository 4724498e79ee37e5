//! Redis Cluster with replicas: every master fails over to its replica (`CLUSTER
//! FAILOVER`) while publications go on. Delivery continues on every node, and a client
//! recovering from a position before the failover gets every message after it.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Encoding, TestResult, TestServer, WsClient, fail};

/// Publishes through the API, retrying while the cluster moves (503).
async fn publish_retrying(node: &TestServer, channel: &str, data: Value) -> TestResult {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let (status, body) = node
            .post("/api/publish", &json!({"channel": channel, "data": data}))
            .await?;
        if status == 200 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return fail(format!("publish kept failing: {status} {body}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until the message with `data == last` arrives; returns every data value seen.
async fn read_through(client: &mut WsClient, last: u64) -> TestResult<Vec<u64>> {
    let mut seen = Vec::new();
    loop {
        let message = client.recv_message().await?;
        let n = message["data"].as_u64().ok_or("no data")?;
        seen.push(n);
        if n == last {
            return Ok(seen);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_of_every_master_loses_nothing_after_recovery() -> TestResult {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("pushwire=debug")
        .try_init();
    let (masters, replicas) = support::redis_server::redis_cluster(1).await?;
    assert_eq!((masters.len(), replicas.len()), (3, 3));
    let seeds: Vec<String> = masters
        .iter()
        .chain(&replicas)
        .map(|m| format!("\"{}\"", m.url()))
        .collect();
    let config = format!(
        "[broker]\nkind = \"redis\"\n[redis]\ncluster = true\ncluster_nodes = [{}]\nkey_prefix = \"fo\"\nprobe_interval_ms = 500\ncommand_timeout_ms = 1000\n[namespaces.feed]\nhistory_size = 1000\n",
        seeds.join(", ")
    );
    let nodes = [
        TestServer::start(&config).await?,
        TestServer::start(&config).await?,
    ];
    for node in &nodes {
        node.wait_ready().await?;
    }
    let mut clients = Vec::new();
    for (node, encoding) in nodes.iter().zip([Encoding::Json, Encoding::Msgpack]) {
        let (mut client, _) = WsClient::connect(&node.ws_url(), encoding).await?;
        client
            .request("subscribe", json!({"channel": "feed:fo"}))
            .await?;
        clients.push(client);
    }
    for n in 1..=20u64 {
        publish_retrying(&nodes[(n % 2) as usize], "feed:fo", json!(n)).await?;
    }
    for m in &masters {
        eprintln!(
            "DBG {} {:?}",
            m.addr(),
            m.cli(&["PUBSUB", "SHARDCHANNELS", "*"]).await?
        );
    }
    let mut before = (0, String::new());
    for client in &mut clients {
        read_through(client, 20).await?;
    }
    let (_, history) = nodes[0]
        .get("/api/history?channel=feed:fo&limit=1000")
        .await?;
    before.0 = history["offset"].as_u64().ok_or("no offset")?;
    before.1 = history["epoch"].as_str().ok_or("no epoch")?.to_owned();
    assert_eq!(before.0, 20);

    for replica in &replicas {
        assert_eq!(replica.cli(&["CLUSTER", "FAILOVER"]).await?.trim(), "OK");
    }
    for n in 21..=60u64 {
        publish_retrying(&nodes[(n % 2) as usize], "feed:fo", json!(n)).await?;
    }
    let deadline = tokio::time::Instant::now() + support::WAIT;
    for replica in &replicas {
        while !replica.cli(&["ROLE"]).await?.starts_with("master") {
            if tokio::time::Instant::now() > deadline {
                return fail("a replica never took over");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Delivery continues on both nodes.
    publish_retrying(&nodes[0], "feed:fo", json!(61)).await?;
    for client in &mut clients {
        let seen = read_through(client, 61).await?;
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "out of order: {seen:?}"
        );
    }
    // Recovery from before the failover has every message since, once, in order.
    for node in &nodes {
        let (mut back, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
        let reply = back
            .request(
                "subscribe",
                json!({"channel": "feed:fo", "recover": {"offset": before.0, "epoch": before.1}}),
            )
            .await?;
        assert_eq!(reply["recovered"], true, "{reply}");
        assert_eq!(reply["offset"], 61, "{reply}");
        let mut data = Vec::new();
        for _ in 21..=61 {
            data.push(
                back.recv_message().await?["data"]
                    .as_u64()
                    .ok_or("no data")?,
            );
        }
        assert_eq!(data, (21..=61).collect::<Vec<_>>());
    }
    Ok(())
}
