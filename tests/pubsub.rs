//! Subscribing, unsubscribing and receiving publications: every op's reply, both
//! encodings and mixed, batches in and out, and the request errors of PROTOCOL.md.

mod support;

use serde_json::json;
use support::{Encoding, TestResult, TestServer, WsClient};

const CONFIG: &str = r#"
[namespaces.chat]
allow_publish = "all"
[namespaces.feed]
history_size = 100
[namespaces.members]
allow_subscribe = "authenticated"
allow_publish = "authenticated"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_publication_reaches_subscribers_of_both_encodings() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut json_client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let (mut msgpack_client, _) = WsClient::connect(&server.ws_url(), Encoding::Msgpack).await?;
    for client in [&mut json_client, &mut msgpack_client] {
        let reply = client
            .request("subscribe", json!({"channel": "news"}))
            .await?;
        assert_eq!(
            reply,
            json!({"op": "subscribed", "id": 2, "channel": "news"})
        );
    }
    let reply = server
        .publish("news", json!({"hello": "world", "n": [1, 2.5, null]}))
        .await?;
    assert_eq!(reply, json!({}), "no offset on a channel without history");
    for client in [&mut json_client, &mut msgpack_client] {
        let message = client.recv_message().await?;
        assert_eq!(
            message,
            json!({"op": "message", "channel": "news", "data": {"hello": "world", "n": [1, 2.5, null]}})
        );
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_publish_crosses_encodings_both_ways() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut json_client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let (mut msgpack_client, _) = WsClient::connect(&server.ws_url(), Encoding::Msgpack).await?;
    json_client
        .request("subscribe", json!({"channel": "chat:room"}))
        .await?;
    msgpack_client
        .request("subscribe", json!({"channel": "chat:room"}))
        .await?;

    let reply = json_client
        .request(
            "publish",
            json!({"channel": "chat:room", "data": {"from": "json"}}),
        )
        .await?;
    assert_eq!(reply, json!({"op": "published", "id": 3}));
    assert_eq!(
        msgpack_client.recv_message().await?["data"],
        json!({"from": "json"})
    );
    assert_eq!(
        json_client.recv_message().await?["data"],
        json!({"from": "json"})
    );

    let reply = msgpack_client
        .request(
            "publish",
            json!({"channel": "chat:room", "data": {"from": "msgpack"}}),
        )
        .await?;
    assert_eq!(reply["op"], "published");
    assert_eq!(
        json_client.recv_message().await?["data"],
        json!({"from": "msgpack"})
    );
    assert_eq!(
        msgpack_client.recv_message().await?["data"],
        json!({"from": "msgpack"})
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_binary_reaches_json_clients_as_data_b64() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut json_client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let (mut msgpack_client, _) = WsClient::connect(&server.ws_url(), Encoding::Msgpack).await?;
    json_client
        .request("subscribe", json!({"channel": "chat:bin"}))
        .await?;
    msgpack_client
        .request("subscribe", json!({"channel": "chat:bin"}))
        .await?;
    // A hand-built MessagePack publish whose data is bin8 [1, 2, 3].
    let mut frame = Vec::new();
    rmp::encode::write_map_len(&mut frame, 4)?;
    for (k, v) in [("op", "publish"), ("channel", "chat:bin")] {
        rmp::encode::write_str(&mut frame, k)?;
        rmp::encode::write_str(&mut frame, v)?;
    }
    rmp::encode::write_str(&mut frame, "id")?;
    rmp::encode::write_uint(&mut frame, 9)?;
    rmp::encode::write_str(&mut frame, "data")?;
    rmp::encode::write_bin(&mut frame, &[1, 2, 3])?;
    msgpack_client
        .send_raw(tokio_tungstenite::tungstenite::Message::binary(frame))
        .await?;
    let message = json_client.recv_message().await?;
    assert_eq!(
        message,
        json!({"op": "message", "channel": "chat:bin", "data_b64": "AQID"})
    );
    let message = msgpack_client.recv_message().await?;
    assert_eq!(message["data"], json!({"$bin": [1, 2, 3]}));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_accepted_and_sent() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    for encoding in [Encoding::Json, Encoding::Msgpack] {
        let mut client = WsClient::open(&server.ws_url(), encoding).await?;
        client
            .send_batch(&[
                json!({"op": "connect", "id": 1}),
                json!({"op": "subscribe", "id": 2, "channel": "a"}),
                json!({"op": "subscribe", "id": 3, "channel": "b"}),
            ])
            .await?;
        // All three replies were queued while the frame was handled: one frame out.
        let first = client.recv().await?;
        assert_eq!(first["op"], "connected");
        assert_eq!(client.recv().await?["id"], 2);
        assert_eq!(client.recv().await?["id"], 3);
        assert_eq!(
            (client.frames, client.batched_frames),
            (1, 1),
            "{encoding:?}"
        );
    }
    server.stop().await
}

/// `client.write_delay_ms` turns direct writes off and lets messages gather;
/// `client.max_messages_per_frame` caps how many share a frame. Nothing is lost or
/// reordered either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_writes_batch_within_the_frame_cap_in_order() -> TestResult {
    let config = format!("{CONFIG}[client]\nwrite_delay_ms = 20\nmax_messages_per_frame = 3\n");
    let server = TestServer::start(&config).await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    client.request("subscribe", json!({"channel": "a"})).await?;
    let channel = pushwire::protocol::ChannelName::parse("a")?;
    for i in 0..20 {
        let data = pushwire::protocol::Payload::from_json_bytes(i.to_string().into())?;
        server
            .state
            .hub
            .dispatch(pushwire::hub::Publication::new(channel.clone(), data, None))
            .await;
    }
    for i in 0..20 {
        assert_eq!(client.recv_message().await?["data"], json!(i));
    }
    assert!(
        client.largest_frame <= 3,
        "{} in one frame",
        client.largest_frame
    );
    assert!(
        client.batched_frames > 0,
        "20 messages at once were never batched"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    client.request("subscribe", json!({"channel": "a"})).await?;
    client.request("subscribe", json!({"channel": "b"})).await?;
    let reply = client
        .request("unsubscribe", json!({"channel": "a"}))
        .await?;
    assert_eq!(
        reply,
        json!({"op": "unsubscribed", "id": 4, "channel": "a"})
    );
    server.publish("a", json!("to a")).await?;
    server.publish("b", json!("to b")).await?;
    let message = client.recv_message().await?;
    assert_eq!(
        message["channel"], "b",
        "nothing from a after unsubscribing: {message}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_carry_the_documented_codes() -> TestResult {
    let server = TestServer::start(&format!(
        "{CONFIG}\n[client]\nmax_channels = 2\n[api]\nmax_publish_bytes = 1000\n"
    ))
    .await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let code = |reply: serde_json::Value| reply["code"].as_u64();
    let mut ask = async |op: &str, fields: serde_json::Value| client.request(op, fields).await;

    assert_eq!(
        code(ask("subscribe", json!({"channel": "bad channel!"})).await?),
        Some(107)
    );
    assert_eq!(
        code(ask("subscribe", json!({"channel": "x".repeat(256)})).await?),
        Some(107)
    );
    assert_eq!(
        code(ask("subscribe", json!({"channel": "nope:x"})).await?),
        Some(102)
    );
    assert_eq!(
        code(ask("subscribe", json!({"channel": 5})).await?),
        Some(107)
    );
    assert_eq!(code(ask("subscribe", json!({})).await?), Some(107));
    assert_eq!(
        code(ask("subscribe", json!({"channel": "members:x"})).await?),
        Some(103)
    );
    assert_eq!(
        code(ask("subscribe", json!({"channel": "dm#alice"})).await?),
        Some(103)
    );
    assert_eq!(
        ask("subscribe", json!({"channel": "one"})).await?["op"],
        "subscribed"
    );
    assert_eq!(
        code(ask("subscribe", json!({"channel": "one"})).await?),
        Some(105)
    );
    assert_eq!(
        ask("subscribe", json!({"channel": "two"})).await?["op"],
        "subscribed"
    );
    assert_eq!(
        code(ask("subscribe", json!({"channel": "three"})).await?),
        Some(106)
    );
    assert_eq!(
        code(ask("publish", json!({"channel": "news", "data": 1})).await?),
        Some(103)
    );
    assert_eq!(
        code(ask("publish", json!({"channel": "members:x", "data": 1})).await?),
        Some(103)
    );
    assert_eq!(
        code(ask("publish", json!({"channel": "chat:dm#alice", "data": 1})).await?),
        Some(103)
    );
    let big = "x".repeat(2_000);
    assert_eq!(
        code(ask("publish", json!({"channel": "chat:x", "data": big})).await?),
        Some(106)
    );
    assert_eq!(
        code(ask("history", json!({"channel": "news"})).await?),
        Some(108)
    );
    assert_eq!(
        code(ask("presence", json!({"channel": "news"})).await?),
        Some(108)
    );
    assert_eq!(
        code(ask("refresh", json!({"token": "abc"})).await?),
        Some(101)
    );
    // Errors echo the request id.
    let reply = ask("subscribe", json!({"channel": "nope:y"})).await?;
    assert_eq!(reply["op"], "error");
    assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    // Valid JSON that no MessagePack subscriber could receive is refused.
    client
        .send_raw(tokio_tungstenite::tungstenite::Message::text(
            r#"{"op":"publish","id":77,"channel":"chat:x","data":[1e400]}"#,
        ))
        .await?;
    let reply = client.recv_where(|m| m["id"] == 77).await?;
    assert_eq!(reply["code"], 107, "{reply}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_channels_carry_offsets_and_epoch() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let reply = client
        .request("subscribe", json!({"channel": "feed:x"}))
        .await?;
    assert_eq!(reply["offset"], 0);
    // No stream yet: the first publication starts the stream's epoch at offset 1.
    assert!(
        reply["epoch"].as_str().is_some_and(|e| e.len() == 16),
        "{reply}"
    );
    let first = server.publish("feed:x", json!("a")).await?;
    assert_eq!(first["offset"], 1);
    let epoch = first["epoch"].as_str().ok_or("no epoch")?.to_owned();
    server.publish("feed:x", json!("b")).await?;
    for (offset, data) in [(1, "a"), (2, "b")] {
        let message = client.recv_message().await?;
        assert_eq!(
            message,
            json!({"op": "message", "channel": "feed:x", "data": data, "offset": offset, "epoch": epoch})
        );
    }
    let history = client
        .request(
            "history",
            json!({"channel": "feed:x", "since": {"offset": 1, "epoch": epoch}}),
        )
        .await?;
    assert_eq!(history["messages"], json!([{"offset": 2, "data": "b"}]));
    assert_eq!(history["offset"], 2);
    server.stop().await
}

/// Data frames of every length class of RFC 6455 (7-bit, 16-bit and 64-bit lengths, and
/// the edges between them) arrive whole and in order, in both encodings; a burst of them
/// is also batched into frames above 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_every_length_class_arrive_whole() -> TestResult {
    let server = TestServer::start("[api]\nmax_publish_bytes = 262144\n").await?;
    let mut clients = Vec::new();
    for encoding in [Encoding::Json, Encoding::Msgpack] {
        let (mut client, _) = WsClient::connect(&server.ws_url(), encoding).await?;
        client
            .request("subscribe", json!({"channel": "sizes"}))
            .await?;
        clients.push(client);
    }
    let pads = [0, 60, 100, 65_400, 65_500, 70_000, 200_000];
    for (n, pad) in pads.iter().enumerate() {
        server
            .publish("sizes", json!({"n": n, "pad": "x".repeat(*pad)}))
            .await?;
    }
    for client in &mut clients {
        for (n, pad) in pads.iter().enumerate() {
            let message = client.recv_message().await?;
            assert_eq!(message["data"]["n"], n, "{:?}", client.encoding);
            assert_eq!(
                message["data"]["pad"].as_str().map(str::len),
                Some(*pad),
                "message {n} in {:?}",
                client.encoding
            );
        }
    }
    server.stop().await
}
