//! A client that stops reading is evicted with 4008 once its queue overflows, and nobody
//! else loses or reorders a single message because of it.

mod support;

use serde_json::json;
use support::{Encoding, TestResult, TestServer, WsClient, fail};

const MESSAGES: u64 = 1000;
const PAD: usize = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_evicted_while_others_get_everything_in_order() -> TestResult {
    let server = TestServer::start("[client]\nqueue_max_bytes = 262144\n").await?;
    let (mut slow, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    slow.request("subscribe", json!({"channel": "firehose"}))
        .await?;
    let mut readers = Vec::new();
    for encoding in [Encoding::Json, Encoding::Msgpack, Encoding::Json] {
        let (mut client, _) = WsClient::connect(&server.ws_url(), encoding).await?;
        client
            .request("subscribe", json!({"channel": "firehose"}))
            .await?;
        readers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            while seqs.len() < MESSAGES as usize {
                let message = client.recv_message().await?;
                seqs.push(message["data"]["seq"].as_u64().ok_or("no seq")?);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(seqs)
        }));
    }
    // The slow client reads nothing while everything is published.
    let pad = "p".repeat(PAD);
    for seq in 0..MESSAGES {
        server
            .publish("firehose", json!({"seq": seq, "pad": pad}))
            .await?;
    }
    for reader in readers {
        let seqs = reader.await??;
        assert_eq!(
            seqs,
            (0..MESSAGES).collect::<Vec<_>>(),
            "a healthy subscriber lost or reordered messages"
        );
    }
    let (code, seen) = slow.expect_close().await?;
    assert_eq!(code, 4008);
    let Some(last) = seen.last() else {
        return fail("no disconnect before the close");
    };
    assert_eq!(
        last,
        &json!({"op": "disconnect", "code": 4008, "reason": "slow consumer", "reconnect": true})
    );
    let delivered: Vec<u64> = seen
        .iter()
        .filter_map(|m| m["data"]["seq"].as_u64())
        .collect();
    assert!(
        delivered.len() < MESSAGES as usize,
        "the slow client was not cut off"
    );
    assert_eq!(
        delivered,
        (0..delivered.len() as u64).collect::<Vec<_>>(),
        "what it got was in order"
    );
    assert_eq!(server.state.metrics.slow_consumer_evictions.get(), 1);
    server.stop().await
}

/// `server.socket_send_buffer_bytes` bounds what a client that stops reading holds in the
/// node's kernel send buffer, so its queue overflows (4008) after about queue + buffer
/// bytes instead of after the megabytes an autotuned send buffer absorbs first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_socket_send_buffer_gets_a_stalled_client_evicted_sooner() -> TestResult {
    const MESSAGE_BYTES: usize = 8 * 1024;
    const MAX_MESSAGES: usize = 512;
    const BOUND: usize = 1 << 20;
    let server = TestServer::start(
        "[server]\nsocket_send_buffer_bytes = 16384\n[client]\nqueue_max_bytes = 65536\n\
         [api]\nmax_publish_bytes = 16384\n",
    )
    .await?;
    let (mut stalled, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    stalled
        .request("subscribe", json!({"channel": "firehose"}))
        .await?;
    // The client reads nothing from here on; the publisher counts what it sent until the
    // node reports the eviction.
    let pad = "p".repeat(MESSAGE_BYTES);
    let mut published = 0;
    for seq in 0..MAX_MESSAGES {
        server
            .publish("firehose", json!({"seq": seq, "pad": pad}))
            .await?;
        published += MESSAGE_BYTES;
        if server.state.metrics.slow_consumer_evictions.get() == 1 {
            break;
        }
    }
    assert_eq!(
        server.state.metrics.slow_consumer_evictions.get(),
        1,
        "not evicted after {published} bytes"
    );
    assert!(
        published <= BOUND,
        "evicted only after {published} bytes (bound {BOUND})"
    );
    let (code, _) = stalled.expect_close().await?;
    assert_eq!(code, 4008);
    server.stop().await
}
