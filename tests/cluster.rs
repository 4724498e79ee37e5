//! Several nodes relayed through a real Redis behave like one server: every client on
//! every node gets every publication exactly once, in one order; Redis can die and come
//! back without a restart of anything else.

mod support;

use std::collections::HashMap;

use serde_json::{Value, json};
use support::{Encoding, RedisServer, TestResult, TestServer, WsClient, fail};

fn node_config(redis: &RedisServer, prefix: &str) -> String {
    format!(
        r#"
[broker]
kind = "redis"
[redis]
url = "{}"
key_prefix = "{prefix}"
unsubscribe_delay_ms = 100
heartbeat_interval_ms = 200
node_timeout_ms = 1000
probe_interval_ms = 500
[namespaces.feed]
history_size = 1000
"#,
        redis.url()
    )
}

async fn start_nodes(
    redis: &RedisServer,
    prefix: &str,
    count: usize,
) -> TestResult<Vec<TestServer>> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        let node = TestServer::start(&node_config(redis, prefix)).await?;
        node.wait_ready().await?;
        nodes.push(node);
    }
    Ok(nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_on_every_node_gets_every_publication_once_in_order() -> TestResult {
    let redis = RedisServer::start().await?;
    let nodes = start_nodes(&redis, "relay", 3).await?;
    let mut clients = Vec::new();
    for node in &nodes {
        for encoding in [Encoding::Json, Encoding::Msgpack] {
            let (mut client, _) = WsClient::connect(&node.ws_url(), encoding).await?;
            client
                .request("subscribe", json!({"channel": "news"}))
                .await?;
            clients.push(client);
        }
    }
    const PER_NODE: u64 = 40;
    let publishers = nodes.iter().enumerate().map(|(n, node)| async move {
        for seq in 0..PER_NODE {
            node.publish("news", json!({"node": n, "seq": seq})).await?;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    for result in futures_util::future::join_all(publishers).await {
        result?;
    }
    let mut orders = Vec::new();
    for client in &mut clients {
        let mut seen = Vec::new();
        for _ in 0..3 * PER_NODE {
            let data = client.recv_message().await?["data"].clone();
            seen.push((
                data["node"].as_u64().ok_or("node")?,
                data["seq"].as_u64().ok_or("seq")?,
            ));
        }
        let mut per_publisher: HashMap<u64, Vec<u64>> = HashMap::new();
        for (node, seq) in &seen {
            per_publisher.entry(*node).or_default().push(*seq);
        }
        for n in 0..3 {
            assert_eq!(
                per_publisher.get(&n),
                Some(&(0..PER_NODE).collect::<Vec<_>>()),
                "publisher {n}"
            );
        }
        orders.push(seen);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "every client sees one channel order"
    );
    // Nothing more arrives: exactly once.
    server_publish_marker(&nodes[0]).await?;
    for client in &mut clients {
        assert_eq!(client.recv_message().await?["data"], json!("marker"));
    }
    Ok(())
}

async fn server_publish_marker(node: &TestServer) -> TestResult {
    node.publish("news", json!("marker")).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_churn_leaves_no_stale_redis_subscriptions() -> TestResult {
    let redis = RedisServer::start().await?;
    let nodes = start_nodes(&redis, "churn", 2).await?;
    let (mut keeper, _) = WsClient::connect(&nodes[0].ws_url(), Encoding::Json).await?;
    keeper
        .request("subscribe", json!({"channel": "churn-kept"}))
        .await?;
    for round in 0..5 {
        for node in &nodes {
            let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
            for i in 0..10 {
                client
                    .request("subscribe", json!({"channel": format!("churn-{i}")}))
                    .await?;
                node.publish(&format!("churn-{i}"), json!(round)).await?;
            }
            for i in 0..10 {
                if i % 2 == 0 {
                    client
                        .request("unsubscribe", json!({"channel": format!("churn-{i}")}))
                        .await?;
                }
            }
            drop(client);
        }
    }
    // After the unsubscribe delay only the kept channel stays subscribed, on one node.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let channels = redis.cli(&["PUBSUB", "CHANNELS", "churn:t:*"]).await?;
        let channels: Vec<&str> = channels.lines().filter(|l| !l.is_empty()).collect();
        if channels == ["churn:t:{churn-kept}"] {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return fail(format!("stale subscriptions: {channels:?}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let numsub = redis
        .cli(&["PUBSUB", "NUMSUB", "churn:t:{churn-kept}"])
        .await?;
    assert_eq!(numsub.lines().nth(1), Some("1"), "{numsub}");
    nodes[1].publish("churn-kept", json!("still")).await?;
    assert_eq!(keeper.recv_message().await?["data"], "still");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_and_returning_keeps_connections_and_resumes_delivery() -> TestResult {
    let mut redis = RedisServer::start().await?;
    let nodes = start_nodes(&redis, "failover", 2).await?;
    let (mut a, _) = WsClient::connect(&nodes[0].ws_url(), Encoding::Json).await?;
    let (mut b, _) = WsClient::connect(&nodes[1].ws_url(), Encoding::Msgpack).await?;
    for client in [&mut a, &mut b] {
        client
            .request("subscribe", json!({"channel": "live"}))
            .await?;
    }
    nodes[0].publish("live", json!("before")).await?;
    assert_eq!(a.recv_message().await?["data"], "before");
    assert_eq!(b.recv_message().await?["data"], "before");

    redis.kill();
    let killed = std::time::Instant::now();
    for node in &nodes {
        node.wait_ready_is(503).await?;
    }
    assert!(
        killed.elapsed() < std::time::Duration::from_secs(5),
        "/ready took {:?}",
        killed.elapsed()
    );
    let (status, body) = nodes[0]
        .post("/api/publish", &json!({"channel": "live", "data": "lost"}))
        .await?;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], 100);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("redis")),
        "{body}"
    );
    // The client connections stay open; a client publish gets error 100.
    let reply = a.request("subscribe", json!({"channel": "other"})).await?;
    assert_eq!(reply["code"], 100, "{reply}");

    redis.restart().await?;
    let restarted = std::time::Instant::now();
    for node in &nodes {
        node.wait_ready().await?;
    }
    nodes[1].publish("live", json!("after")).await?;
    assert_eq!(a.recv_message().await?["data"], "after");
    assert_eq!(b.recv_message().await?["data"], "after");
    assert!(
        restarted.elapsed() < std::time::Duration::from_secs(5),
        "resumed after {:?}",
        restarted.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_is_cluster_wide() -> TestResult {
    let redis = RedisServer::start().await?;
    let nodes = start_nodes(&redis, "info", 3).await?;
    let (mut client, _) = WsClient::connect(&nodes[2].ws_url(), Encoding::Json).await?;
    client.request("subscribe", json!({"channel": "x"})).await?;
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let (_, body) = nodes[0].get("/api/info").await?;
        let list = body["nodes"].as_array().cloned().unwrap_or_default();
        let connections: u64 = list.iter().filter_map(|n| n["connections"].as_u64()).sum();
        if list.len() == 3 && connections == 1 {
            let names: Vec<&Value> = list.iter().map(|n| &n["name"]).collect();
            assert!(
                names
                    .iter()
                    .all(|n| n.as_str().is_some_and(|s| !s.is_empty()))
            );
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return fail(format!("cluster view incomplete: {body}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_disconnect_and_unsubscribe_reach_every_node() -> TestResult {
    let redis = RedisServer::start().await?;
    let nodes = start_nodes(&redis, "api", 3).await?;
    let mut clients = Vec::new();
    for node in &nodes {
        let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
        client
            .request("subscribe", json!({"channel": "room-1"}))
            .await?;
        client
            .request("subscribe", json!({"channel": "room-2"}))
            .await?;
        clients.push(client);
    }
    // Wait until every node sees the other two (heartbeats), then ask one of them.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while nodes[0].get("/api/info").await?.1["nodes"]
        .as_array()
        .map(Vec::len)
        != Some(3)
    {
        if tokio::time::Instant::now() > deadline {
            return fail("nodes never saw each other");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, body) = nodes[1].get("/api/channels?prefix=room").await?;
    assert_eq!(
        body,
        json!({"channels": [{"channel": "room-1", "subscribers": 3}, {"channel": "room-2", "subscribers": 3}]})
    );
    let (status, body) = nodes[2]
        .post(
            "/api/unsubscribe",
            &json!({"user": "", "channel": "room-2"}),
        )
        .await?;
    assert_eq!((status, body), (200, json!({"unsubscribed": 3})));
    for client in &mut clients {
        assert_eq!(
            client.recv().await?,
            json!({"op": "unsubscribed", "id": 0, "channel": "room-2"})
        );
    }
    let (status, body) = nodes[0]
        .post(
            "/api/disconnect",
            &json!({"user": "", "reason": "maintenance"}),
        )
        .await?;
    assert_eq!((status, body), (200, json!({"disconnected": 3})));
    for client in &mut clients {
        assert_eq!(client.expect_close().await?.0, 4011);
    }
    Ok(())
}

/// Starts a 3-master Redis Cluster and returns its nodes.
async fn redis_cluster() -> TestResult<Vec<RedisServer>> {
    Ok(support::redis_server::redis_cluster(0).await?.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_mode_relays_over_sharded_pubsub() -> TestResult {
    let masters = redis_cluster().await?;
    let seeds: Vec<String> = masters.iter().map(|m| format!("\"{}\"", m.url())).collect();
    let config = format!(
        "[broker]\nkind = \"redis\"\n[redis]\ncluster = true\ncluster_nodes = [{}]\nkey_prefix = \"sharded\"\nunsubscribe_delay_ms = 100\nheartbeat_interval_ms = 200\n[namespaces.feed]\nhistory_size = 100\n",
        seeds.join(", ")
    );
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let node = TestServer::start(&config).await?;
        node.wait_ready().await?;
        nodes.push(node);
    }
    let channels = ["alpha", "beta", "feed:gamma", "delta"];
    let mut clients = Vec::new();
    for node in &nodes {
        let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Msgpack).await?;
        for channel in channels {
            client
                .request("subscribe", json!({"channel": channel}))
                .await?;
        }
        clients.push(client);
    }
    for (i, node) in nodes.iter().enumerate() {
        for channel in channels {
            node.publish(channel, json!({"from": i, "channel": channel}))
                .await?;
        }
    }
    for client in &mut clients {
        let mut got = Vec::new();
        for _ in 0..channels.len() * nodes.len() {
            let message = client.recv_message().await?;
            got.push((
                message["channel"].as_str().unwrap_or_default().to_owned(),
                message["data"]["from"].as_u64(),
            ));
        }
        for channel in channels {
            let from: Vec<Option<u64>> = got
                .iter()
                .filter(|(c, _)| c == channel)
                .map(|(_, f)| *f)
                .collect();
            assert_eq!(from, vec![Some(0), Some(1), Some(2)], "{channel}");
        }
    }
    // The topics are shard channels spread over the masters, not classic channels.
    let mut shard_channels = Vec::new();
    for master in &masters {
        let listed = master
            .cli(&["PUBSUB", "SHARDCHANNELS", "sharded:t:*"])
            .await?;
        shard_channels.extend(listed.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        assert!(
            master
                .cli(&["PUBSUB", "CHANNELS", "sharded:t:*"])
                .await?
                .trim()
                .is_empty()
        );
    }
    shard_channels.sort();
    assert_eq!(
        shard_channels,
        vec![
            "sharded:t:{alpha}",
            "sharded:t:{beta}",
            "sharded:t:{delta}",
            "sharded:t:{feed:gamma}"
        ]
    );
    drop(clients);
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let mut left = 0;
        for master in &masters {
            left += master
                .cli(&["PUBSUB", "SHARDCHANNELS", "sharded:t:*"])
                .await?
                .lines()
                .filter(|l| !l.is_empty())
                .count();
        }
        if left == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return fail(format!("{left} shard channels still subscribed"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_while_redis_is_down_and_serves_once_it_is_up() -> TestResult {
    let port = support::redis_server::free_port()?;
    let config = format!(
        "[broker]\nkind = \"redis\"\n[redis]\nurl = \"redis://127.0.0.1:{port}\"\nkey_prefix = \"late\"\nconnect_timeout_ms = 300\n"
    );
    let node = TestServer::start(&config).await?;
    let response = node.http().get(node.http_url("/ready")).send().await?;
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await?;
    assert!(
        body["reason"].as_str().is_some_and(|r| r.contains("redis")),
        "{body}"
    );
    let (status, body) = node
        .post("/api/publish", &json!({"channel": "news", "data": 1}))
        .await?;
    assert_eq!((status, body["error"]["code"].clone()), (503, json!(100)));

    let _redis = RedisServer::start_on(port).await?;
    node.wait_ready().await?;
    let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "news"}))
        .await?;
    node.publish("news", json!("finally")).await?;
    assert_eq!(client.recv_message().await?["data"], "finally");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pubsub_connection_is_replaced_and_resubscribed() -> TestResult {
    let redis = RedisServer::start().await?;
    let nodes = start_nodes(&redis, "pskill", 1).await?;
    let node = &nodes[0];
    let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "news"}))
        .await?;
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).await?;
    assert!(
        killed.trim().parse::<u32>().is_ok_and(|n| n >= 1),
        "{killed}"
    );
    // Redis counts the replacement connection's subscriptions again once it is back.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while redis
        .cli(&["PUBSUB", "NUMSUB", "pskill:t:{news}"])
        .await?
        .lines()
        .nth(1)
        != Some("1")
    {
        if tokio::time::Instant::now() > deadline {
            return fail("the topic was never subscribed again");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    node.publish("news", json!("after")).await?;
    assert_eq!(client.recv_message().await?["data"], "after");
    assert!(node.state.metrics.redis_reconnects.get() >= 1);
    Ok(())
}

/// A TCP proxy to Redis whose Redis-to-client direction can be stalled: connections
/// stay open but nothing arrives, the way a pub/sub connection can go silent after a
/// failover.
struct SilentProxy {
    port: u16,
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SilentProxy {
    async fn start(upstream: u16) -> TestResult<SilentProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let silent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = silent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(
                    async move { tokio::io::copy(&mut client_read, &mut server_write).await },
                );
                let flag = flag.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let Ok(n) = server_read.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        // While silent, what Redis sends is held back (a stalled path,
                        // not a broken one): the socket stays up and nothing arrives.
                        while flag.load(std::sync::atomic::Ordering::SeqCst) {
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(SilentProxy { port, silent })
    }

    fn set_silent(&self, silent: bool) {
        self.silent
            .store(silent, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_stalled_pubsub_connection_is_detected_by_probes_and_replaced() -> TestResult {
    let redis = RedisServer::start().await?;
    let proxy = SilentProxy::start(redis.port).await?;
    let config = format!(
        "[broker]\nkind = \"redis\"\n[redis]\nurl = \"redis://127.0.0.1:{}\"\nkey_prefix = \"silent\"\npubsub_connections = 1\nprobe_interval_ms = 300\ncommand_timeout_ms = 500\nconnect_timeout_ms = 500\n",
        proxy.port
    );
    let node = TestServer::start(&config).await?;
    node.wait_ready().await?;
    let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "news"}))
        .await?;
    node.publish("news", json!("before")).await?;
    assert_eq!(client.recv_message().await?["data"], "before");

    proxy.set_silent(true);
    // Nothing was closed; only the missing probe can tell. Wait for the node to notice.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while node
        .state
        .metrics
        .redis_errors
        .with_label_values(&["pubsub"])
        .get()
        == 0
    {
        if tokio::time::Instant::now() > deadline {
            return fail("the silent pub/sub connection was never detected");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    proxy.set_silent(false);
    node.wait_ready().await?;
    // A publication made directly on Redis (not through the node) must arrive: the
    // replacement connection is subscribed.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while node.state.metrics.redis_reconnects.get() == 0 {
        if tokio::time::Instant::now() > deadline {
            return fail("the pub/sub connection was never replaced");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    node.publish("news", json!("after")).await?;
    assert_eq!(client.recv_message().await?["data"], "after");
    Ok(())
}
