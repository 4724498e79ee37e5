//! The cluster view is complete as soon as the nodes are up: a node says hello when it
//! joins the control topic and the others answer at once, so `/api/info` on every node
//! lists every node long before the first heartbeat interval is over.

mod support;

use std::time::Duration;

use support::{RedisServer, TestResult, TestServer, fail};

/// Heartbeats far apart (three times the test's wait): only the hello and its answers
/// can make the view complete in time.
const HEARTBEAT_MS: u64 = 30_000;

fn node_config(redis: &RedisServer) -> String {
    format!(
        "[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"view\"\nheartbeat_interval_ms = {HEARTBEAT_MS}\nnode_timeout_ms = {}\n",
        redis.url(),
        HEARTBEAT_MS * 3
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_lists_every_node_right_after_they_are_ready() -> TestResult {
    let redis = RedisServer::start().await?;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let node = TestServer::start(&node_config(&redis)).await?;
        node.wait_ready().await?;
        nodes.push(node);
    }
    let deadline = tokio::time::Instant::now() + support::WAIT;
    for node in &nodes {
        loop {
            let (_, body) = node.get("/api/info").await?;
            let listed = body["nodes"].as_array().map_or(0, Vec::len);
            if listed == 3 {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return fail(format!("cluster view incomplete: {body}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}
