//! History, recovery and presence: a client that drops comes back and gets exactly what
//! it missed, in order, once; on the memory broker and through Redis across nodes.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{BinaryServer, Encoding, RedisServer, TestResult, TestServer, WsClient, fail};

const HISTORY: &str =
    "[namespaces.feed]\nhistory_size = 10000\npresence = true\njoin_leave = true\n";

fn redis_config(redis: &RedisServer, prefix: &str, extra: &str) -> String {
    format!(
        "{HISTORY}{extra}\n[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\nheartbeat_interval_ms = 200\nnode_timeout_ms = 1000\npresence_ttl_secs = 2\n",
        redis.url()
    )
}

/// A subscriber that remembers where it is in a channel's stream.
struct Follower {
    client: WsClient,
    channel: String,
    seen: Vec<u64>,
    epoch: String,
}

impl Follower {
    async fn subscribe(url: &str, encoding: Encoding, channel: &str) -> TestResult<Follower> {
        let (mut client, _) = WsClient::connect(url, encoding).await?;
        let reply = client
            .request("subscribe", json!({"channel": channel}))
            .await?;
        let epoch = reply["epoch"].as_str().ok_or("no epoch")?.to_owned();
        Ok(Follower {
            client,
            channel: channel.to_owned(),
            seen: Vec::new(),
            epoch,
        })
    }

    fn last(&self) -> u64 {
        self.seen.last().copied().unwrap_or(0)
    }

    fn record(&mut self, message: &Value) -> TestResult {
        let offset = message["offset"].as_u64().ok_or("no offset")?;
        // A channel nobody published to has no stream yet: its first message starts the
        // stream's epoch at offset 1, and nothing was missed.
        if self.last() == 0 && offset == 1 {
            self.epoch = message["epoch"].as_str().ok_or("no epoch")?.to_owned();
        }
        if message["epoch"] != self.epoch.as_str() {
            return fail(format!("epoch changed: {message}"));
        }
        self.seen.push(offset);
        Ok(())
    }

    /// Reads messages until `count` were seen in total.
    async fn read_until(&mut self, count: usize) -> TestResult {
        while self.seen.len() < count {
            let message = self.client.recv_message().await?;
            self.record(&message)?;
        }
        Ok(())
    }

    /// Reads what is left before the close; returns the close code.
    async fn drain_to_close(&mut self) -> TestResult<u16> {
        let (code, messages) = self.client.expect_close().await?;
        for message in messages.iter().filter(|m| m["op"] == "message") {
            self.record(message)?;
        }
        Ok(code)
    }

    /// Reconnects to `url` and subscribes with `recover`; returns the reply.
    async fn recover(&mut self, url: &str, encoding: Encoding) -> TestResult<Value> {
        let (mut client, _) = WsClient::connect(url, encoding).await?;
        let recover = json!({"offset": self.last(), "epoch": self.epoch});
        let reply = client
            .request(
                "subscribe",
                json!({"channel": self.channel, "recover": recover}),
            )
            .await?;
        self.client = client;
        Ok(reply)
    }
}

async fn publish_n(node: &TestServer, channel: &str, n: u64, pad: usize) -> TestResult {
    let pad = "p".repeat(pad);
    for seq in 1..=n {
        node.publish(channel, json!({"seq": seq, "pad": pad}))
            .await?;
    }
    Ok(())
}

/// Waits until the node evicted `n` slow consumers (the evicted client is not reading,
/// so this is the only event there is to wait for).
async fn wait_evictions(node: &TestServer, n: u64) -> TestResult {
    let deadline = tokio::time::Instant::now() + support::WAIT * 2;
    while node.state.metrics.slow_consumer_evictions.get() < n {
        if tokio::time::Instant::now() > deadline {
            return fail("no eviction happened");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn evicted_then_recovered(first: &TestServer, second: &TestServer) -> TestResult {
    const N: u64 = 800;
    let mut follower = Follower::subscribe(&first.ws_url(), Encoding::Json, "feed:evict").await?;
    // Big messages at full speed until the follower is evicted, then a steady stream of
    // small ones it can keep up with while it recovers: publishing never pauses.
    let publisher = async {
        let big = "p".repeat(16 * 1024);
        for seq in 1..=N {
            if first.state.metrics.slow_consumer_evictions.get() == 0 {
                first
                    .publish("feed:evict", json!({"seq": seq, "pad": big}))
                    .await?;
            } else {
                first.publish("feed:evict", json!({"seq": seq})).await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    let evicted_and_back = async {
        // Not reading at all until the server gave up on this client.
        wait_evictions(first, 1).await?;
        assert_eq!(follower.drain_to_close().await?, 4008);
        let reply = follower
            .recover(&second.ws_url(), Encoding::Msgpack)
            .await
            .map_err(|e| format!("recover: {e}"))?;
        assert_eq!(reply["recovered"], true, "{reply}");
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    let (published, recovered) = tokio::join!(publisher, evicted_and_back);
    published?;
    recovered?;
    let got = follower.seen.len();
    follower
        .read_until(N as usize)
        .await
        .map_err(|e| format!("catching up from {got} (now {}): {e}", follower.seen.len()))?;
    assert_eq!(
        follower.seen,
        (1..=N).collect::<Vec<_>>(),
        "every message exactly once, in order"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_subscriber_recovers_everything_on_the_memory_broker() -> TestResult {
    let node =
        TestServer::start(&format!("{HISTORY}[client]\nqueue_max_bytes = 1048576\n")).await?;
    evicted_then_recovered(&node, &node).await?;
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_subscriber_recovers_on_another_node_through_redis() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = redis_config(&redis, "evict", "[client]\nqueue_max_bytes = 1048576\n");
    let a = TestServer::start(&config).await?;
    let b = TestServer::start(&config).await?;
    a.wait_ready().await?;
    b.wait_ready().await?;
    evicted_then_recovered(&a, &b).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_recover_on_the_others_with_zero_loss() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = redis_config(&redis, "sigkill", "");
    let mut doomed = BinaryServer::start(&config).await?;
    let survivor = TestServer::start(&config).await?;
    survivor.wait_ready().await?;
    let mut followers = Vec::new();
    for encoding in [Encoding::Json, Encoding::Msgpack] {
        // The doomed node may still be connecting to Redis: retry its subscribe until ready.
        let deadline = tokio::time::Instant::now() + support::WAIT;
        loop {
            match Follower::subscribe(&doomed.ws_url(), encoding, "feed:kill").await {
                Ok(f) => break followers.push(f),
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    const N: u64 = 300;
    let publisher = publish_n(&survivor, "feed:kill", N, 100);
    let kill_and_recover = async {
        for f in &mut followers {
            f.read_until(20).await?;
        }
        doomed.child.start_kill()?;
        doomed.child.wait().await?;
        for f in &mut followers {
            // The socket just ends: read what arrived, then move to the survivor.
            while let Ok(message) = f.client.recv_message().await {
                f.record(&message)?;
            }
            let reply = f.recover(&survivor.ws_url(), Encoding::Json).await?;
            assert_eq!(reply["recovered"], true, "{reply}");
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    let (published, recovered) = tokio::join!(publisher, kill_and_recover);
    published?;
    recovered?;
    for f in &mut followers {
        f.read_until(N as usize).await?;
        assert_eq!(f.seen, (1..=N).collect::<Vec<_>>());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_means_a_new_epoch_and_no_recovery() -> TestResult {
    let mut redis = RedisServer::start().await?;
    let node = TestServer::start(&redis_config(&redis, "epoch", "")).await?;
    node.wait_ready().await?;
    let mut follower = Follower::subscribe(&node.ws_url(), Encoding::Json, "feed:epoch").await?;
    publish_n(&node, "feed:epoch", 5, 10).await?;
    follower.read_until(5).await?;
    redis.restart().await?;
    node.wait_ready().await?;
    let published = node.publish("feed:epoch", json!("new era")).await?;
    assert_ne!(published["epoch"], json!(follower.epoch));
    assert_eq!(published["offset"], 1);
    let reply = follower.recover(&node.ws_url(), Encoding::Json).await?;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_ne!(reply["epoch"], json!(follower.epoch));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_publishing_at_once_make_gapless_offsets() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = redis_config(&redis, "offsets", "");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let node = TestServer::start(&config).await?;
        node.wait_ready().await?;
        nodes.push(node);
    }
    let mut follower = Follower::subscribe(&nodes[0].ws_url(), Encoding::Json, "feed:race").await?;
    const PER_NODE: u64 = 50;
    let results = futures_util::future::join_all(nodes.iter().map(|n| async move {
        let mut offsets = Vec::new();
        for i in 0..PER_NODE {
            offsets.push(
                n.publish("feed:race", json!(i)).await?["offset"]
                    .as_u64()
                    .ok_or("offset")?,
            );
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(offsets)
    }))
    .await;
    let mut all: Vec<u64> = Vec::new();
    for r in results {
        all.extend(r?);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=3 * PER_NODE).collect::<Vec<_>>());
    follower.read_until(3 * PER_NODE as usize).await?;
    assert_eq!(follower.seen, (1..=3 * PER_NODE).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_publish_through_redis_delivers_once() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = redis_config(&redis, "idem", "");
    let a = TestServer::start(&config).await?;
    let b = TestServer::start(&config).await?;
    a.wait_ready().await?;
    b.wait_ready().await?;
    let mut follower = Follower::subscribe(&b.ws_url(), Encoding::Json, "feed:idem").await?;
    let body = json!({"channel": "feed:idem", "data": "once", "idempotency_key": "order-42"});
    let (_, first) = a.post("/api/publish", &body).await?;
    let (_, again) = b.post("/api/publish", &body).await?;
    assert_eq!(first, again);
    a.publish("feed:idem", json!("next")).await?;
    follower.read_until(2).await?;
    assert_eq!(follower.seen, vec![1, 2], "the repeat was not delivered");
    // Without history, idempotency holds too.
    let (mut plain, _) = WsClient::connect(&b.ws_url(), Encoding::Json).await?;
    plain
        .request("subscribe", json!({"channel": "plain"}))
        .await?;
    let body = json!({"channel": "plain", "data": "once", "idempotency_key": "k"});
    a.post("/api/publish", &body).await?;
    a.post("/api/publish", &body).await?;
    a.publish("plain", json!("next")).await?;
    assert_eq!(plain.recv_message().await?["data"], "once");
    assert_eq!(plain.recv_message().await?["data"], "next");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_join_leave_across_nodes_and_after_a_crash() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = redis_config(&redis, "presence", "");
    let a = TestServer::start(&config).await?;
    a.wait_ready().await?;
    let mut doomed = BinaryServer::start(&config).await?;
    let (mut watcher, _) = WsClient::connect(&a.ws_url(), Encoding::Json).await?;
    watcher
        .request("subscribe", json!({"channel": "feed:room"}))
        .await?;
    let joined = watcher.recv_where(|m| m["op"] == "join").await?;
    assert_eq!(joined["channel"], "feed:room");

    let deadline = tokio::time::Instant::now() + support::WAIT;
    let (mut remote, connected) = loop {
        let (mut c, connected) = WsClient::connect(&doomed.ws_url(), Encoding::Msgpack).await?;
        if c.request("subscribe", json!({"channel": "feed:room"}))
            .await?["op"]
            == "subscribed"
        {
            break (c, connected);
        }
        if tokio::time::Instant::now() > deadline {
            return fail("doomed node never became ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let remote_id = connected["client_id"].clone();
    let joined = watcher.recv_where(|m| m["op"] == "join").await?;
    assert_eq!(joined["client_id"], remote_id);

    let presence = watcher
        .request("presence", json!({"channel": "feed:room"}))
        .await?;
    assert_eq!(
        presence["clients"].as_array().map(Vec::len),
        Some(2),
        "{presence}"
    );
    let (_, body) = a.get("/api/presence?channel=feed:room").await?;
    assert_eq!(body["clients"].as_array().map(Vec::len), Some(2), "{body}");

    remote
        .request("unsubscribe", json!({"channel": "feed:room"}))
        .await?;
    let left = watcher.recv_where(|m| m["op"] == "leave").await?;
    assert_eq!(left["client_id"], remote_id);
    remote
        .request("subscribe", json!({"channel": "feed:room"}))
        .await?;
    watcher.recv_where(|m| m["op"] == "join").await?;

    // A crashed node's clients leave presence within presence_ttl_secs (2 s here).
    doomed.child.start_kill()?;
    doomed.child.wait().await?;
    let killed = std::time::Instant::now();
    loop {
        let (_, body) = a.get("/api/presence?channel=feed:room").await?;
        if body["clients"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        if killed.elapsed() > Duration::from_secs(5) {
            return fail(format!("crashed node's client still present: {body}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_join_leave_on_the_memory_broker() -> TestResult {
    let node = TestServer::start(HISTORY).await?;
    let (mut a, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    a.request("subscribe", json!({"channel": "feed:m"})).await?;
    a.recv_where(|m| m["op"] == "join").await?;
    let (mut b, connected) = WsClient::connect(&node.ws_url(), Encoding::Msgpack).await?;
    b.request("subscribe", json!({"channel": "feed:m"})).await?;
    let joined = a.recv_where(|m| m["op"] == "join").await?;
    assert_eq!(joined["client_id"], connected["client_id"]);
    assert_eq!(joined["user"], "");
    let presence = a.request("presence", json!({"channel": "feed:m"})).await?;
    assert_eq!(presence["clients"].as_array().map(Vec::len), Some(2));
    drop(b);
    let left = a.recv_where(|m| m["op"] == "leave").await?;
    assert_eq!(left["client_id"], connected["client_id"]);
    node.stop().await
}
