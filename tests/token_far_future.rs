//! A connection token that expires at the end of time (`exp` near `u64::MAX`) is valid,
//! and the shared ticker keeps serving the node: pings keep coming, for this client and
//! for everyone else.

mod support;

use pushwire::auth::mint_hs256;
use serde_json::json;
use support::{Encoding, TestResult, TestServer, WsClient};

const SECRET: &str = "far-future-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_near_u64_max_keeps_the_ticker_alive() -> TestResult {
    let server = TestServer::start(&format!(
        "[client]\nping_interval_secs = 1\npong_timeout_secs = 5\n\
         [auth]\ntoken_hmac_secret = \"{SECRET}\"\n"
    ))
    .await?;
    let token = mint_hs256(SECRET, &json!({ "sub": "alice", "exp": u64::MAX - 1 }))?;
    let (mut far, reply) =
        WsClient::connect_with(&server.ws_url(), Encoding::Json, json!({ "token": token })).await?;
    assert_eq!(reply["user"], "alice", "{reply}");
    let (mut other, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    // Two pings each: the ticker went round at least twice with the far token in it.
    for client in [&mut far, &mut other] {
        for _ in 0..2 {
            let ping = client.recv_where(|m| m["op"] == "ping").await?;
            client.send(json!({ "op": "pong" })).await?;
            assert_eq!(ping["op"], "ping");
        }
    }
    server.stop().await
}
