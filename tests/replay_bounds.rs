//! What recovery may queue for one client: a client that never reads and asks for the
//! same recovery a hundred times in one frame holds at most twice `queue_max_bytes`; a
//! client that reads recovers several channels in one frame, each in full; a recovery
//! larger than the queue can ever hold answers `recovered: false` and live delivery
//! goes on.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Encoding, TestResult, TestServer, WsClient, fail};

const QUEUE_MAX_BYTES: usize = 1 << 20;

fn config() -> String {
    format!(
        "[server]\nsocket_send_buffer_bytes = 4096\n\
         [client]\nqueue_max_bytes = {QUEUE_MAX_BYTES}\nwrite_timeout_secs = 1\n\
         rate_limit_per_sec = 0\n\
         [namespaces.feed]\nhistory_size = 1000\n"
    )
}

/// Publishes `count` messages of about `size` bytes on `channel`; returns its epoch.
async fn fill(server: &TestServer, channel: &str, count: usize, size: usize) -> TestResult<String> {
    let pad = "p".repeat(size);
    let mut epoch = String::new();
    for seq in 0..count {
        let reply = server
            .publish(channel, json!({ "seq": seq, "pad": pad }))
            .await?;
        epoch = reply["epoch"].as_str().ok_or("no epoch")?.to_owned();
    }
    Ok(epoch)
}

fn recover_from_start(id: u64, channel: &str, epoch: &str) -> Value {
    json!({ "op": "subscribe", "id": id, "channel": channel,
            "recover": { "offset": 0, "epoch": epoch } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_at_most_twice_its_queue() -> TestResult {
    let server = TestServer::start(&config()).await?;
    // 100 messages of 8 KiB: each recovery fits, a hundred of them would not.
    let epoch = fill(&server, "feed:big", 100, 8 * 1024).await?;
    let (mut hostile, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let mut frame = Vec::new();
    for pair in 0..100 {
        frame.push(recover_from_start(10 + 2 * pair, "feed:big", &epoch));
        frame.push(json!({ "op": "unsubscribe", "id": 11 + 2 * pair, "channel": "feed:big" }));
    }
    hostile.send_batch(&frame).await?;
    // Never reads again. Sample what the node queues for it until the write timeout
    // ends the connection.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let mut peak = 0;
    while server.state.hub.connection_count() > 0 {
        let queued: usize = server
            .state
            .hub
            .all_clients()
            .iter()
            .map(|c| c.queued_bytes())
            .sum();
        peak = peak.max(queued);
        if tokio::time::Instant::now() > deadline {
            return fail(format!("still connected; {queued} bytes queued"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        peak <= 2 * QUEUE_MAX_BYTES + 1024,
        "one client held {peak} bytes, more than twice queue_max_bytes"
    );
    drop(hostile);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_client_recovers_channels_that_fit_one_at_a_time() -> TestResult {
    let server = TestServer::start(&config()).await?;
    let channels = ["feed:a", "feed:b", "feed:c", "feed:d"];
    let mut frame = Vec::new();
    for (id, channel) in (1..).zip(channels) {
        // 1.5 MiB each: more than the live bound, and two would not fit together.
        let epoch = fill(&server, channel, 96, 16 * 1024).await?;
        frame.push(recover_from_start(100 + id, channel, &epoch));
    }
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    client.send_batch(&frame).await?;
    let mut recovered = 0;
    let mut replies = 0;
    while replies < channels.len() || recovered < 96 * channels.len() {
        let message = client.recv().await?;
        match message["op"].as_str() {
            Some("subscribed") => {
                assert_eq!(message["recovered"], true, "{message}");
                replies += 1;
            }
            Some("message") => recovered += 1,
            _ => return fail(format!("unexpected {message}")),
        }
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_larger_than_the_queue_answers_not_recovered() -> TestResult {
    let server = TestServer::start(&config()).await?;
    // 3 MiB: more than twice queue_max_bytes.
    let epoch = fill(&server, "feed:huge", 96, 32 * 1024).await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    client
        .send(recover_from_start(5, "feed:huge", &epoch))
        .await?;
    let reply = client.recv().await?;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(reply["offset"], 96, "{reply}");
    server.publish("feed:huge", json!("live")).await?;
    let live = client.recv().await?;
    assert_eq!(
        (live["op"].as_str(), live["offset"].as_u64()),
        (Some("message"), Some(97))
    );
    let tripped = server
        .state
        .metrics
        .limit_trips
        .with_label_values(&["recover_bytes"])
        .get();
    assert_eq!(tripped, 1);
    server.stop().await
}
