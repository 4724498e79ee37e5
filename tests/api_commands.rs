//! The HTTP API calls adopters look for: unknown fields refused, history newest first,
//! `exclude_client`, `b64data`, `history_remove`, server-side `subscribe` and `batch`.

mod support;

use serde_json::{Value, json};
use support::{Encoding, TestResult, TestServer, WsClient, api_key};

const CONFIG: &str = r#"
[api]
max_publish_bytes = 4096
[namespaces.feed]
history_size = 10
"#;

async fn post_msgpack(server: &TestServer, path: &str, body: &Value) -> TestResult<(u16, Value)> {
    let response = server
        .http()
        .post(server.http_url(path))
        .bearer_auth(api_key())
        .header("Content-Type", "application/msgpack")
        .body(rmp_serde::to_vec_named(body)?)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

fn offsets(history: &Value) -> Vec<u64> {
    history["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["offset"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_in_bodies_are_refused_by_name() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let cases = [
        (
            "/api/publish",
            json!({"channel": "news", "data": 1, "skip_history": true}),
            "skip_history",
        ),
        (
            "/api/broadcast",
            json!({"channels": ["news"], "data": 1, "tags": {"a": "b"}}),
            "tags",
        ),
        (
            "/api/disconnect",
            json!({"user": "alice", "whole_cluster": true}),
            "whole_cluster",
        ),
        (
            "/api/unsubscribe",
            json!({"user": "alice", "channel": "news", "chanel": "x"}),
            "chanel",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = server.post(path, &body).await?;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], 107);
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{path}: {message}");
    }
    let (status, answer) = post_msgpack(
        &server,
        "/api/publish",
        &json!({"channel": "news", "data": 1, "tags": ["x"]}),
    )
    .await?;
    assert_eq!(status, 400);
    assert!(answer["error"]["message"].to_string().contains("tags"));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reverse_gives_the_newest_first() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    for n in 1..=5 {
        server.publish("feed:r", json!(n)).await?;
    }
    let (_, oldest) = server.get("/api/history?channel=feed:r&limit=2").await?;
    assert_eq!(offsets(&oldest), [1, 2]);
    let (status, newest) = server
        .get("/api/history?channel=feed:r&limit=2&reverse=true")
        .await?;
    assert_eq!(status, 200);
    assert_eq!(offsets(&newest), [5, 4]);
    assert_eq!(newest["messages"][0]["data"], 5);
    let (_, all) = server
        .get("/api/history?channel=feed:r&reverse=true")
        .await?;
    assert_eq!(offsets(&all), [5, 4, 3, 2, 1]);

    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let reply = client
        .request(
            "history",
            json!({"channel": "feed:r", "limit": 3, "reverse": true}),
        )
        .await?;
    assert_eq!(offsets(&reply), [5, 4, 3]);
    let epoch = reply["epoch"].clone();
    let reply = client
        .request(
            "history",
            json!({"channel": "feed:r", "reverse": true, "limit": 10,
                   "since": {"offset": 3, "epoch": epoch}}),
        )
        .await?;
    assert_eq!(offsets(&reply), [5, 4], "since still bounds from below");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclude_client_skips_only_that_connection() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut sender, connected) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let (mut other, _) = WsClient::connect(&server.ws_url(), Encoding::Msgpack).await?;
    for client in [&mut sender, &mut other] {
        client
            .request("subscribe", json!({"channel": "news"}))
            .await?;
    }
    let me = connected["client_id"].clone();
    let (status, _) = server
        .post(
            "/api/publish",
            &json!({"channel": "news", "data": "to others", "exclude_client": me}),
        )
        .await?;
    assert_eq!(status, 200);
    let (status, _) = server
        .post(
            "/api/broadcast",
            &json!({"channels": ["news"], "data": "broadcast to others", "exclude_client": me}),
        )
        .await?;
    assert_eq!(status, 200);
    server.publish("news", json!("to all")).await?;
    assert_eq!(other.recv_message().await?["data"], "to others");
    assert_eq!(other.recv_message().await?["data"], "broadcast to others");
    assert_eq!(other.recv_message().await?["data"], "to all");
    // Publications on one channel arrive in order: the first the sender sees is the last.
    assert_eq!(sender.recv_message().await?["data"], "to all");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b64data_publishes_binary_data() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut json_client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let (mut msgpack_client, _) = WsClient::connect(&server.ws_url(), Encoding::Msgpack).await?;
    for client in [&mut json_client, &mut msgpack_client] {
        client
            .request("subscribe", json!({"channel": "feed:bin"}))
            .await?;
    }
    let (status, _) = server
        .post(
            "/api/publish",
            &json!({"channel": "feed:bin", "b64data": "AAEC/w=="}),
        )
        .await?;
    assert_eq!(status, 200);
    let message = json_client.recv_message().await?;
    assert_eq!(message["data_b64"], "AAEC/w==");
    assert!(message.get("data").is_none());
    let message = msgpack_client.recv_message().await?;
    assert_eq!(message["data"], json!({"$bin": [0, 1, 2, 255]}));
    let (_, history) = server.get("/api/history?channel=feed:bin").await?;
    assert_eq!(history["messages"][0]["data_b64"], "AAEC/w==");

    for bad in [
        json!({"channel": "feed:bin", "b64data": "not base64!"}),
        json!({"channel": "feed:bin", "b64data": "AAEC", "data": 1}),
    ] {
        let (status, answer) = server.post("/api/publish", &bad).await?;
        assert_eq!((status, answer["error"]["code"].clone()), (400, json!(107)));
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_remove_empties_history_and_keeps_the_position() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    for n in 1..=3 {
        server.publish("feed:gone", json!(n)).await?;
    }
    let (_, before) = server.get("/api/history?channel=feed:gone").await?;
    let (status, body) = server
        .post("/api/history_remove", &json!({"channel": "feed:gone"}))
        .await?;
    assert_eq!((status, body), (200, json!({})));
    let (_, after) = server.get("/api/history?channel=feed:gone").await?;
    assert_eq!(offsets(&after), Vec::<u64>::new());
    assert_eq!(
        (after["offset"].clone(), after["epoch"].clone()),
        (json!(3), before["epoch"].clone())
    );
    assert_eq!(server.publish("feed:gone", json!(4)).await?["offset"], 4);

    let (status, body) = server
        .post("/api/history_remove", &json!({"channel": "news"}))
        .await?;
    assert_eq!((status, body["error"]["code"].clone()), (404, json!(108)));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_subscribe_notifies_and_delivers() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut client, connected) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    server.publish("feed:s", json!("before")).await?;
    let body = json!({"client_id": connected["client_id"], "channel": "feed:s"});
    let (status, answer) = server.post("/api/subscribe", &body).await?;
    assert_eq!((status, answer), (200, json!({"subscribed": 1})));
    let notice = client.recv().await?;
    assert_eq!(notice["op"], "subscribed");
    assert_eq!(
        (notice["id"].clone(), notice["channel"].clone()),
        (json!(0), json!("feed:s"))
    );
    assert_eq!(notice["offset"], 1);
    server.publish("feed:s", json!("after")).await?;
    assert_eq!(client.recv_message().await?["data"], "after");

    let (_, again) = server.post("/api/subscribe", &body).await?;
    assert_eq!(again, json!({"subscribed": 0}), "already subscribed");
    let reply = client
        .request("subscribe", json!({"channel": "feed:s"}))
        .await?;
    assert_eq!(
        reply["code"], 105,
        "the client sees the subscription as its own"
    );

    let (status, answer) = server
        .post("/api/subscribe", &json!({"user": "", "channel": "ghost:x"}))
        .await?;
    assert_eq!((status, answer["error"]["code"].clone()), (400, json!(102)));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_runs_different_commands_in_order_or_in_parallel() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut client, connected) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let me = connected["client_id"].clone();
    let commands = json!([
        {"subscribe": {"client_id": me, "channel": "feed:b"}},
        {"publish": {"channel": "feed:b", "data": "one"}},
        {"broadcast": {"channels": ["feed:b", "ghost:x"], "data": "two"}},
        {"publish": {"channel": "bad channel", "data": 3}},
        {"frobnicate": {}},
        {"history_remove": {"channel": "feed:b"}},
    ]);
    let (status, body) = server
        .post("/api/batch", &json!({"commands": commands}))
        .await?;
    assert_eq!(status, 200, "{body}");
    let replies = body["replies"].as_array().cloned().unwrap_or_default();
    assert_eq!(replies.len(), 6, "{body}");
    assert_eq!(replies[0], json!({"subscribe": {"subscribed": 1}}));
    assert_eq!(replies[1]["publish"]["offset"], 1);
    assert_eq!(replies[2]["broadcast"]["results"][0]["offset"], 2);
    assert_eq!(replies[2]["broadcast"]["results"][1]["error"]["code"], 102);
    assert_eq!(replies[3]["error"]["code"], 107);
    assert!(
        replies[4]["error"]["message"]
            .to_string()
            .contains("frobnicate")
    );
    assert_eq!(replies[5], json!({"history_remove": {}}));
    assert_eq!(client.recv_message().await?["data"], "one");
    assert_eq!(client.recv_message().await?["data"], "two");

    let parallel: Vec<Value> = (0..5)
        .map(|n| json!({"publish": {"channel": "feed:p", "data": n}}))
        .collect();
    let (status, body) = server
        .post(
            "/api/batch",
            &json!({"commands": parallel, "parallel": true}),
        )
        .await?;
    assert_eq!(status, 200);
    let mut got: Vec<u64> = body["replies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["publish"]["offset"].as_u64())
        .collect();
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3, 4, 5]);

    let (status, body) = post_msgpack(
        &server,
        "/api/batch",
        &json!({"commands": [{"publish": {"channel": "news", "data": {"via": "msgpack"}}}]}),
    )
    .await?;
    assert_eq!((status, body), (200, json!({"replies": [{"publish": {}}]})));
    let (status, _) = server
        .post("/api/batch", &json!({"commands": [], "atomic": true}))
        .await?;
    assert_eq!(status, 400);
    server.stop().await
}

/// With the Redis broker: `exclude_client` travels with the publication to the node of
/// the excluded client, `reverse` reads the stream newest first, `history_remove`
/// deletes the stream and keeps the position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_excludes_reverses_and_removes_across_nodes() -> TestResult {
    let redis = support::RedisServer::start().await?;
    let config = format!(
        "{CONFIG}\n[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"cmds\"\n",
        redis.url()
    );
    let a = TestServer::start(&config).await?;
    let b = TestServer::start(&config).await?;
    a.wait_ready().await?;
    b.wait_ready().await?;
    let (mut on_b, connected) = WsClient::connect(&b.ws_url(), Encoding::Json).await?;
    on_b.request("subscribe", json!({"channel": "feed:x"}))
        .await?;
    let (status, _) = a
        .post(
            "/api/publish",
            &json!({"channel": "feed:x", "data": 1, "exclude_client": connected["client_id"]}),
        )
        .await?;
    assert_eq!(status, 200);
    for n in 2..=4 {
        a.publish("feed:x", json!(n)).await?;
    }
    assert_eq!(
        on_b.recv_message().await?["data"],
        2,
        "1 was not for this client"
    );
    let (_, newest) = b
        .get("/api/history?channel=feed:x&limit=2&reverse=true")
        .await?;
    assert_eq!(offsets(&newest), [4, 3]);
    let (status, _) = b
        .post("/api/history_remove", &json!({"channel": "feed:x"}))
        .await?;
    assert_eq!(status, 200);
    let (_, after) = a.get("/api/history?channel=feed:x").await?;
    assert_eq!(
        (offsets(&after), after["offset"].clone()),
        (vec![], json!(4))
    );
    assert_eq!(a.publish("feed:x", json!(5)).await?["offset"], 5);
    a.stop().await?;
    b.stop().await
}

/// Trips of `pushwire_limit_trips_total{kind}` on `server`.
async fn limit_trips(server: &TestServer, kind: &str) -> TestResult<f64> {
    let text = server.metrics_text().await?;
    let series = format!("pushwire_limit_trips_total{{kind=\"{kind}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(Ok(0.0), str::parse)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_batch_runs_at_most_batch_parallelism_commands_at_once() -> TestResult {
    let server =
        TestServer::start(&CONFIG.replace("[api]\n", "[api]\nbatch_parallelism = 4\n")).await?;
    let batch = |n: u64| -> Vec<Value> {
        (0..n)
            .map(|n| json!({"publish": {"channel": "feed:q", "data": n}}))
            .collect()
    };
    // Within the bound: nothing waits.
    let (status, _) = server
        .post(
            "/api/batch",
            &json!({"commands": batch(4), "parallel": true}),
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(limit_trips(&server, "api_batch_parallelism").await?, 0.0);
    // Beyond it: counted once, and every command still answered, in its place.
    let (status, body) = server
        .post(
            "/api/batch",
            &json!({"commands": batch(40), "parallel": true}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let replies = body["replies"].as_array().cloned().unwrap_or_default();
    assert_eq!(replies.len(), 40, "{body}");
    assert!(
        replies.iter().all(|r| r["publish"]["offset"].is_u64()),
        "{body}"
    );
    assert_eq!(limit_trips(&server, "api_batch_parallelism").await?, 1.0);
    server.stop().await
}
