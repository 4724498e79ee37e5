//! Leaving a channel while publications to it are still on their way through fan-out:
//! nothing of the channel reaches the client after its `unsubscribed` reply, and a
//! client that unsubscribes and subscribes again with `recover` gets every message
//! exactly once (recovered or live, never both).

mod support;

use bytes::Bytes;
use pushwire::protocol::{ChannelName, Payload};
use serde_json::{Value, json};
use support::{Encoding, TestResult, TestServer, WsClient, fail};

const CONFIG: &str = r#"
[client]
queue_max_messages = 1000000
queue_max_bytes = 268435456

[namespaces.chat]

[namespaces.feed]
history_size = 100000
max_recover_messages = 100000
"#;

/// Publications made while the client leaves and comes back.
const FLOOD: u64 = 20_000;

/// Publishes `count` small messages on `channel` in process (as fast as fan-out takes
/// them), then one on `marker`: the client's shard delivers in order, so once the
/// marker arrives, everything published before it has been delivered or dropped.
async fn flood(server: &TestServer, channel: &str, count: u64, marker: &str) -> TestResult {
    let config = server.state.config();
    for (name, n) in [(channel, count), (marker, 1)] {
        let name = ChannelName::parse(name)?;
        let ns = config.namespace_of(&name).cloned().ok_or("no namespace")?;
        for seq in 0..n {
            let data = Payload::from_json_bytes(Bytes::from(json!({ "seq": seq }).to_string()))?;
            server
                .state
                .broker
                .publish(&name, data, &ns, None, None)
                .await?;
        }
    }
    Ok(())
}

/// Reads until the first message of `channel`.
async fn first_message(client: &mut WsClient, channel: &str) -> TestResult<Value> {
    loop {
        let message = client.recv().await?;
        if message["op"] == "message" && message["channel"] == channel {
            return Ok(message);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_arrives_after_unsubscribed() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    for channel in ["chat:flood", "chat:marker"] {
        let reply = client
            .request("subscribe", json!({ "channel": channel }))
            .await?;
        assert_eq!(reply["op"], "subscribed", "{reply}");
    }
    let publisher = flood(&server, "chat:flood", FLOOD, "chat:marker");
    let reader = async {
        first_message(&mut client, "chat:flood").await?;
        client
            .send(json!({ "op": "unsubscribe", "id": 900, "channel": "chat:flood" }))
            .await?;
        let mut left = false;
        let mut after = 0u64;
        loop {
            let message = client.recv().await?;
            match (message["op"].as_str(), message["channel"].as_str()) {
                (Some("unsubscribed"), _) if message["id"] == 900 => left = true,
                (Some("message"), Some("chat:flood")) if left => after += 1,
                (Some("message"), Some("chat:marker")) => return TestResult::Ok(after),
                _ => {}
            }
        }
    };
    let (published, after) = tokio::join!(publisher, reader);
    published?;
    assert_eq!(after?, 0, "messages arrived after `unsubscribed`");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resubscribing_with_recover_delivers_each_message_once() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    for channel in ["feed:flood", "chat:marker"] {
        let reply = client
            .request("subscribe", json!({ "channel": channel }))
            .await?;
        assert_eq!(reply["op"], "subscribed", "{reply}");
    }
    let publisher = flood(&server, "feed:flood", FLOOD, "chat:marker");
    let reader = async {
        let first = first_message(&mut client, "feed:flood").await?;
        let epoch = first["epoch"].clone();
        let recover_from = first["offset"].as_u64().ok_or("no offset")?;
        let mut last = recover_from;
        // Leave and come back in one frame, recovering from the first message: what came
        // after it is replayed once more, then live messages follow, each once.
        client
            .send_batch(&[
                json!({ "op": "unsubscribe", "id": 900, "channel": "feed:flood" }),
                json!({ "op": "subscribe", "id": 901, "channel": "feed:flood",
                        "recover": { "offset": recover_from, "epoch": epoch } }),
            ])
            .await?;
        let mut state = "before";
        loop {
            let message = client.recv().await?;
            match (message["op"].as_str(), message["channel"].as_str()) {
                (Some("unsubscribed"), _) if message["id"] == 900 => state = "left",
                (Some("subscribed"), _) if message["id"] == 901 => {
                    assert_eq!(message["recovered"], true, "{message}");
                    state = "back";
                    last = recover_from;
                }
                (Some("message"), Some("feed:flood")) => {
                    let offset = message["offset"].as_u64().ok_or("no offset")?;
                    match state {
                        "before" if offset == last + 1 => last = offset,
                        "back" if offset == last + 1 => last = offset,
                        _ => {
                            return fail(format!(
                                "offset {offset} after {last} while {state}: {message}"
                            ));
                        }
                    }
                }
                (Some("message"), Some("chat:marker")) => return TestResult::Ok(last),
                _ => {}
            }
        }
    };
    let (published, last) = tokio::join!(publisher, reader);
    published?;
    assert_eq!(last?, FLOOD, "every message once, in order");
    server.stop().await
}
