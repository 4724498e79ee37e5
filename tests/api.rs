//! The HTTP server API: auth, content types, size limits, every route's answer, and the
//! probes outside `/api`.

mod support;

use serde_json::{Value, json};
use support::{Encoding, TestResult, TestServer, WsClient, api_key};

const CONFIG: &str = r#"
[api]
max_publish_bytes = 2048
[namespaces.feed]
history_size = 10
[namespaces.room]
presence = true
"#;

async fn raw_post(
    server: &TestServer,
    path: &str,
    auth: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> TestResult<(u16, Value)> {
    let mut request = server
        .http()
        .post(server.http_url(path))
        .header("Content-Type", content_type)
        .body(body);
    if let Some(key) = auth {
        request = request.bearer_auth(key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_rejects_missing_and_wrong_keys_with_401() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let body = br#"{"channel":"news","data":1}"#.to_vec();
    for auth in [None, Some("wrong-key-123")] {
        let (status, body) = raw_post(
            &server,
            "/api/publish",
            auth,
            "application/json",
            body.clone(),
        )
        .await?;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], 101);
    }
    let response = server
        .http()
        .get(server.http_url("/api/info"))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 401);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_typed_sized_and_validated() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let key = Some(api_key());
    let (status, body) =
        raw_post(&server, "/api/publish", key, "text/plain", b"hi".to_vec()).await?;
    assert_eq!((status, body["error"]["code"].clone()), (415, json!(107)));
    let big = serde_json::to_vec(&json!({"channel": "news", "data": "x".repeat(4096)}))?;
    let (status, body) = raw_post(&server, "/api/publish", key, "application/json", big).await?;
    assert_eq!((status, body["error"]["code"].clone()), (413, json!(106)));
    let (status, body) = raw_post(
        &server,
        "/api/publish",
        key,
        "application/json",
        b"{nope".to_vec(),
    )
    .await?;
    assert_eq!((status, body["error"]["code"].clone()), (400, json!(107)));
    let (status, _) = raw_post(
        &server,
        "/api/publish",
        key,
        "application/json",
        br#"{"data":1}"#.to_vec(),
    )
    .await?;
    assert_eq!(status, 400);
    let (status, body) = server
        .post("/api/publish", &json!({"channel": "bad name", "data": 1}))
        .await?;
    assert_eq!((status, body["error"]["code"].clone()), (400, json!(107)));
    let (status, body) = server
        .post("/api/publish", &json!({"channel": "ghost:x", "data": 1}))
        .await?;
    assert_eq!((status, body["error"]["code"].clone()), (400, json!(102)));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_bodies_publish_like_json() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "news"}))
        .await?;
    let body = rmp_serde::to_vec_named(&json!({"channel": "news", "data": {"via": "msgpack"}}))?;
    for content_type in ["application/msgpack", "application/vnd.msgpack"] {
        let (status, _) = raw_post(
            &server,
            "/api/publish",
            Some(api_key()),
            content_type,
            body.clone(),
        )
        .await?;
        assert_eq!(status, 200);
        assert_eq!(
            client.recv_message().await?["data"],
            json!({"via": "msgpack"})
        );
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reports_per_channel_results() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "news"}))
        .await?;
    client
        .request("subscribe", json!({"channel": "feed:1"}))
        .await?;
    let (status, body) = server
        .post(
            "/api/broadcast",
            &json!({"channels": ["news", "feed:1", "bad name", "ghost:x"], "data": "hi"}),
        )
        .await?;
    assert_eq!(status, 200);
    let results = body["results"].as_array().ok_or("no results")?;
    assert_eq!(results[0], json!({"channel": "news"}));
    assert_eq!(results[1]["offset"], 1);
    assert_eq!(results[2]["error"]["code"], 107);
    assert_eq!(results[3]["error"]["code"], 102);
    let mut channels = vec![
        client.recv_message().await?["channel"].clone(),
        client.recv_message().await?["channel"].clone(),
    ];
    channels.sort_by_key(|c| c.to_string());
    assert_eq!(channels, vec![json!("feed:1"), json!("news")]);
    let (status, _) = server
        .post("/api/broadcast", &json!({"channels": [], "data": 1}))
        .await?;
    assert_eq!(status, 400);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_publish_returns_the_first_result_and_delivers_once() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "feed:idem"}))
        .await?;
    let publish = json!({"channel": "feed:idem", "data": "once", "idempotency_key": "k-1"});
    let (_, first) = server.post("/api/publish", &publish).await?;
    let (_, second) = server.post("/api/publish", &publish).await?;
    assert_eq!(first, second);
    server.publish("feed:idem", json!("after")).await?;
    assert_eq!(client.recv_message().await?["data"], "once");
    assert_eq!(
        client.recv_message().await?["data"],
        "after",
        "the repeat was not delivered"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_by_user_or_client_id_closes_with_4011() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut a, connected) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let (status, body) = server
        .post(
            "/api/disconnect",
            &json!({"client_id": connected["client_id"], "reason": "bye", "reconnect": false}),
        )
        .await?;
    assert_eq!((status, body), (200, json!({"disconnected": 1})));
    let (code, seen) = a.expect_close().await?;
    assert_eq!(code, 4011);
    assert_eq!(
        seen.last(),
        Some(&json!({"op": "disconnect", "code": 4011, "reason": "bye", "reconnect": false}))
    );

    let (mut b, _) = WsClient::connect(&server.ws_url(), Encoding::Msgpack).await?;
    let (status, body) = server
        .post("/api/disconnect", &json!({"user": "", "code": 4100}))
        .await?;
    assert_eq!((status, body), (200, json!({"disconnected": 1})));
    assert_eq!(b.expect_close().await?.0, 4100);

    let (status, _) = server
        .post("/api/disconnect", &json!({"user": "x", "client_id": "y"}))
        .await?;
    assert_eq!(status, 400);
    let (status, _) = server
        .post("/api/disconnect", &json!({"user": "x", "code": 1000}))
        .await?;
    assert_eq!(status, 400);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_unsubscribe_notifies_the_client() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut client, connected) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "news"}))
        .await?;
    let (status, body) = server
        .post(
            "/api/unsubscribe",
            &json!({"client_id": connected["client_id"], "channel": "news"}),
        )
        .await?;
    assert_eq!((status, body), (200, json!({"unsubscribed": 1})));
    assert_eq!(
        client.recv().await?,
        json!({"op": "unsubscribed", "id": 0, "channel": "news"})
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_info_presence_history_and_probes() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let (mut a, connected) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let (mut b, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    a.request("subscribe", json!({"channel": "room:1"})).await?;
    b.request("subscribe", json!({"channel": "room:1"})).await?;
    a.request("subscribe", json!({"channel": "feed:1"})).await?;

    let (_, body) = server.get("/api/channels").await?;
    assert_eq!(
        body,
        json!({"channels": [{"channel": "feed:1", "subscribers": 1}, {"channel": "room:1", "subscribers": 2}]})
    );
    let (_, body) = server.get("/api/channels?prefix=room").await?;
    assert_eq!(body["channels"].as_array().map(Vec::len), Some(1));

    let (_, body) = server.get("/api/info").await?;
    let node = &body["nodes"][0];
    assert_eq!(
        (
            node["connections"].clone(),
            node["subscriptions"].clone(),
            node["channels"].clone()
        ),
        (json!(2), json!(3), json!(2))
    );
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"));

    let (status, body) = server.get("/api/presence?channel=room:1").await?;
    assert_eq!(status, 200);
    let mut ids: Vec<String> = body["clients"]
        .as_array()
        .ok_or("no clients")?
        .iter()
        .map(|c| c["client_id"].to_string())
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&connected["client_id"].to_string()));
    let (status, body) = server.get("/api/presence?channel=news").await?;
    assert_eq!((status, body["error"]["code"].clone()), (404, json!(108)));
    let (status, _) = server.get("/api/presence").await?;
    assert_eq!(status, 400);

    server.publish("feed:1", json!({"n": 1})).await?;
    server.publish("feed:1", json!({"n": 2})).await?;
    let (status, body) = server.get("/api/history?channel=feed:1&limit=1").await?;
    assert_eq!(status, 200);
    assert_eq!(body["messages"], json!([{"offset": 1, "data": {"n": 1}}]));
    assert_eq!(body["offset"], 2);
    let epoch = body["epoch"].as_str().ok_or("no epoch")?;
    let (_, body) = server
        .get(&format!(
            "/api/history?channel=feed:1&since_offset=1&since_epoch={epoch}"
        ))
        .await?;
    assert_eq!(body["messages"], json!([{"offset": 2, "data": {"n": 2}}]));
    let (status, body) = server.get("/api/history?channel=news").await?;
    assert_eq!((status, body["error"]["code"].clone()), (404, json!(108)));

    // Fan-out counts a delivery when its worker runs, after publish returned: wait for
    // both messages before reading the counter.
    assert_eq!(a.recv_message().await?["data"], json!({"n": 1}));
    assert_eq!(a.recv_message().await?["data"], json!({"n": 2}));
    let health = server.http().get(server.http_url("/health")).send().await?;
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(health.json::<Value>().await?, json!({"status": "ok"}));
    let ready = server.http().get(server.http_url("/ready")).send().await?;
    assert_eq!(ready.status().as_u16(), 200);
    let metrics = server.metrics_text().await?;
    for name in [
        "pushwire_connections{encoding=\"json\"} 2",
        "pushwire_subscriptions 3",
        "pushwire_channels 2",
        "pushwire_publications_total{source=\"api\"} 2",
        "pushwire_deliveries_total 2",
        "pushwire_api_requests_total{route=\"publish\",status=\"200\"} 2",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
    let (status, _) = server.get("/api/nothing-here").await?;
    assert_eq!(status, 404);
    server.stop().await
}
