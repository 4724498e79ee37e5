//! A session under sustained writes still reads: while its queue never runs empty (every
//! message the client reads is replaced by a new one), a request the client sends is
//! read and answered, behind what was queued before it.

mod support;

use bytes::Bytes;
use pushwire::hub::Publication;
use pushwire::protocol::{ChannelName, Payload};
use serde_json::json;
use support::{Encoding, TestResult, TestServer, WsClient, fail};

const CONFIG: &str = r#"
[server]
socket_send_buffer_bytes = 4096

[client]
queue_max_messages = 1000000
queue_max_bytes = 536870912

[namespaces.chat]
"#;

/// Messages queued before the request: more than the socket buffers on both sides hold.
const PREFILL: usize = 4_000;
/// Messages the client reads (each replaced by a new one) before the test gives up.
const CAP: usize = 40_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_read_while_the_queue_keeps_refilling() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let reply = client
        .request("subscribe", json!({ "channel": "chat:load" }))
        .await?;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    let channel = ChannelName::parse("chat:load")?;
    let pad = "x".repeat(4096);
    let data = Payload::from_json_bytes(Bytes::from(json!({ "pad": pad }).to_string()))?;
    let publish = || {
        server
            .state
            .hub
            .dispatch(Publication::new(channel.clone(), data.clone(), None))
    };
    for _ in 0..PREFILL {
        publish().await;
    }
    client
        .send(json!({ "op": "subscribe", "id": 777, "channel": "chat:other" }))
        .await?;
    for read in 0..CAP {
        let message = client.recv().await?;
        if message["id"] == 777 {
            assert_eq!(message["op"], "subscribed", "{message}");
            assert!(read >= PREFILL / 2, "answered after {read} messages only");
            drop(client);
            return server.stop().await;
        }
        if message["op"] == "message" {
            publish().await;
        }
    }
    fail(format!(
        "the request was not answered while {CAP} messages were written"
    ))
}
