//! Redis Cluster: the node's sharded pub/sub is one link per master, and each of them is
//! probed on its own. A master whose pub/sub goes silent (its writes paused with `CLIENT
//! PAUSE WRITE`: nothing published there reaches anyone, while commands elsewhere and
//! `PING` still work) makes the node notice and reconnect, whichever master it is.

mod support;

use std::time::Duration;

use serde_json::json;
use support::observability::Exposition;
use support::redis_server::redis_cluster;
use support::{Encoding, RedisServer, TestResult, TestServer, WsClient, fail};

/// Failed pub/sub connections counted by the node so far.
async fn pubsub_errors(node: &TestServer) -> TestResult<f64> {
    let metrics = Exposition::parse(&node.metrics_text().await?)?;
    Ok(metrics.sum("pushwire_redis_errors_total", &["op=\"pubsub\""]))
}

/// The node's probe topics a master has subscribers for.
async fn probe_topics_on(master: &RedisServer) -> TestResult<Vec<String>> {
    let listed = master
        .cli(&["PUBSUB", "SHARDCHANNELS", "pr:probe:*"])
        .await?;
    Ok(listed.lines().map(str::to_owned).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_master_is_probed_and_a_silent_one_is_noticed() -> TestResult {
    let (masters, _) = redis_cluster(0).await?;
    let seeds: Vec<String> = masters.iter().map(|m| format!("\"{}\"", m.url())).collect();
    let config = format!(
        "[broker]\nkind = \"redis\"\n[redis]\ncluster = true\ncluster_nodes = [{}]\nkey_prefix = \"pr\"\nprobe_interval_ms = 300\ncommand_timeout_ms = 500\n",
        seeds.join(", ")
    );
    let node = TestServer::start(&config).await?;
    node.wait_ready().await?;

    // Every master carries one of the node's probe topics.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    for master in &masters {
        while probe_topics_on(master).await?.is_empty() {
            if tokio::time::Instant::now() > deadline {
                return fail(format!("no probe topic on master {}", master.addr()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Silence each master in turn: the node notices every one of them.
    for master in &masters {
        let before = pubsub_errors(&node).await?;
        assert_eq!(
            master
                .cli(&["CLIENT", "PAUSE", "60000", "WRITE"])
                .await?
                .trim(),
            "OK"
        );
        let deadline = tokio::time::Instant::now() + support::WAIT;
        while pubsub_errors(&node).await? <= before {
            if tokio::time::Instant::now() > deadline {
                master.cli(&["CLIENT", "UNPAUSE"]).await?;
                return fail(format!(
                    "the node never noticed that master {} went silent",
                    master.addr()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(master.cli(&["CLIENT", "UNPAUSE"]).await?.trim(), "OK");
        node.wait_ready().await?;
    }

    // Afterwards publications on channels of every master reach a subscriber again.
    let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    let channels: Vec<String> = (0..12).map(|n| format!("probe-check-{n}")).collect();
    for channel in &channels {
        client
            .request("subscribe", json!({"channel": channel}))
            .await?;
    }
    for (n, channel) in channels.iter().enumerate() {
        let deadline = tokio::time::Instant::now() + support::WAIT;
        loop {
            let (status, body) = node
                .post("/api/publish", &json!({"channel": channel, "data": n}))
                .await?;
            if status == 200 {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return fail(format!("publish kept failing: {status} {body}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let message = client.recv_message().await?;
        assert_eq!(message["channel"], channel.as_str(), "{message}");
    }
    Ok(())
}
