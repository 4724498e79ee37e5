//! Rate limits: a client over its inbound token bucket gets error 110, then close 4009 if
//! it keeps going; an API key over `api.publish_rate_per_sec` gets 429 with Retry-After,
//! without slowing down the other keys.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Encoding, TestResult, TestServer, WsClient, api_key};

const SECOND_KEY: &str = "second-api-key-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_gets_110_then_4009() -> TestResult {
    let server = TestServer::start(
        "[client]\nrate_limit_per_sec = 1\nrate_limit_burst = 3\nrate_limit_strikes = 3\n",
    )
    .await?;
    for encoding in [Encoding::Json, Encoding::Msgpack] {
        let (mut client, _) = WsClient::connect(&server.ws_url(), encoding).await?;
        let flood: Vec<Value> = (1..=20)
            .map(|id| json!({ "op": "subscribe", "id": id, "channel": format!("c{id}") }))
            .collect();
        client.send_batch(&flood).await?;
        let (code, seen) = client.expect_close().await?;
        assert_eq!(code, 4009);
        let ops: Vec<(String, u64)> = seen
            .iter()
            .map(|m| {
                let op = m["op"].as_str().unwrap_or_default().to_owned();
                let detail = m["code"].as_u64().or(m["id"].as_u64()).unwrap_or(0);
                (op, detail)
            })
            .collect();
        let expected = [
            ("subscribed", 1),
            ("subscribed", 2),
            ("subscribed", 3),
            ("error", 110),
            ("error", 110),
            ("disconnect", 4009),
        ]
        .map(|(op, n)| (op.to_owned(), n));
        assert_eq!(ops, expected, "{seen:?}");
        assert_eq!(seen[3]["id"], 4, "the error carries the request id");
    }
    let tripped = server
        .state
        .metrics
        .limit_trips
        .with_label_values(&["rate_limit"])
        .get();
    assert_eq!(tripped, 6);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pongs_are_not_rate_limited() -> TestResult {
    let server = TestServer::start(
        "[client]\nrate_limit_per_sec = 1\nrate_limit_burst = 1\nrate_limit_strikes = 1\n",
    )
    .await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let pongs = vec![json!({ "op": "pong" }); 50];
    client.send_batch(&pongs).await?;
    let reply = client
        .request("subscribe", json!({ "channel": "news" }))
        .await?;
    assert_eq!(reply["op"], "subscribed");
    server.stop().await
}

async fn publish_with(server: &TestServer, key: &str) -> TestResult<reqwest::Response> {
    Ok(server
        .http()
        .post(server.http_url("/api/publish"))
        .bearer_auth(key)
        .json(&json!({ "channel": "news", "data": 1 }))
        .send()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_api_key_has_its_own_publish_rate() -> TestResult {
    let config = format!(
        "[api]\nkeys = [\"{}\", \"{SECOND_KEY}\"]\npublish_rate_per_sec = 1\n",
        api_key()
    );
    let server = TestServer::start(&config).await?;
    assert_eq!(publish_with(&server, api_key()).await?.status(), 200);
    let refused = publish_with(&server, api_key()).await?;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .ok_or("no Retry-After")?
        .to_str()?
        .parse()?;
    assert_eq!(retry_after, 1);
    let body: Value = refused.json().await?;
    assert_eq!(body["error"]["code"], 110);
    // Broadcast draws from the same bucket; other routes do not.
    let (status, _) = server
        .post(
            "/api/broadcast",
            &json!({ "channels": ["news"], "data": 1 }),
        )
        .await?;
    assert_eq!(status, 429);
    assert_eq!(server.get("/api/info").await?.0, 200);
    // The other key is not slowed down by the first.
    assert_eq!(publish_with(&server, SECOND_KEY).await?.status(), 200);
    // Retry-After tells the truth.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(publish_with(&server, api_key()).await?.status(), 200);
    let tripped = server
        .state
        .metrics
        .limit_trips
        .with_label_values(&["api_publish_rate"])
        .get();
    assert_eq!(tripped, 2);
    server.stop().await
}
