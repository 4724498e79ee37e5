//! Namespace permissions (PROTOCOL.md section 5) for subscribe, client publish, presence
//! and history, as an anonymous and as an authenticated client: one table of expected
//! outcomes, checked request by request.

mod support;

use pushwire::auth::{mint_hs256, unix_now};
use serde_json::{Value, json};
use support::{Encoding, TestResult, TestServer, WsClient};

const SECRET: &str = "permissions-secret-0123456789abcd";

const CONFIG: &str = r#"
[auth]
token_hmac_secret = "permissions-secret-0123456789abcd"

[namespaces.public]
presence = true
history_size = 10
history_ttl_secs = 60
allow_subscribe = "all"
allow_publish = "all"

[namespaces.members]
presence = true
history_size = 10
history_ttl_secs = 60
allow_subscribe = "authenticated"
allow_publish = "authenticated"

[namespaces.private]
presence = true
history_size = 10
history_ttl_secs = 60
allow_subscribe = "token"
allow_publish = "none"
"#;

/// What a request should get: the success op, or an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Error(u64),
}
use Outcome::{Allowed, Error};

fn outcome(op: &str, reply: &Value) -> Outcome {
    if reply["op"] == "error" {
        return Error(reply["code"].as_u64().unwrap_or(0));
    }
    let expected = match op {
        "subscribe" => "subscribed",
        "publish" => "published",
        other => other,
    };
    assert_eq!(reply["op"], expected, "{reply}");
    Allowed
}

async fn connect_as(server: &TestServer, user: Option<&str>) -> TestResult<WsClient> {
    let fields = match user {
        Some(user) => {
            let claims = json!({ "sub": user, "exp": unix_now() + 600 });
            json!({ "token": mint_hs256(SECRET, &claims)? })
        }
        None => json!({}),
    };
    Ok(
        WsClient::connect_with(&server.ws_url(), Encoding::Json, fields)
            .await?
            .0,
    )
}

/// Sends `op` on `channel`; each row uses a fresh channel name so earlier subscriptions
/// do not change the outcome.
async fn try_op(client: &mut WsClient, op: &str, channel: &str) -> TestResult<Outcome> {
    let mut fields = json!({ "channel": channel });
    if op == "publish" {
        fields["data"] = json!({ "hello": op });
    }
    let reply = client.request(op, fields).await?;
    Ok(outcome(op, &reply))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_rules_apply_to_every_op_for_anonymous_and_authenticated() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let mut anonymous = connect_as(&server, None).await?;
    let mut alice = connect_as(&server, Some("alice")).await?;
    // (channel, op, anonymous gets, alice gets)
    let table: &[(&str, &str, Outcome, Outcome)] = &[
        ("public:a", "subscribe", Allowed, Allowed),
        ("public:b", "publish", Allowed, Allowed),
        ("public:c", "presence", Allowed, Allowed),
        ("public:d", "history", Allowed, Allowed),
        ("members:a", "subscribe", Error(103), Allowed),
        ("members:b", "publish", Error(103), Allowed),
        ("members:c", "presence", Error(103), Allowed),
        ("members:d", "history", Error(103), Allowed),
        ("private:a", "subscribe", Error(103), Error(103)),
        ("private:b", "publish", Error(103), Error(103)),
        ("private:c", "presence", Error(103), Error(103)),
        ("private:d", "history", Error(103), Error(103)),
        // User channels: only listed users, for every read.
        ("public:dm#alice,bob", "subscribe", Error(103), Allowed),
        ("public:dm#bob,carol", "subscribe", Error(103), Error(103)),
        ("public:dm#bob,carol", "presence", Error(103), Error(103)),
        ("public:dm#bob,carol", "history", Error(103), Error(103)),
        // The default namespace has neither presence nor history nor client publish.
        ("news", "presence", Error(108), Error(108)),
        ("news", "history", Error(108), Error(108)),
        ("news", "publish", Error(103), Error(103)),
        ("nowhere:x", "subscribe", Error(102), Error(102)),
        ("nowhere:x", "presence", Error(102), Error(102)),
        ("bad channel", "history", Error(107), Error(107)),
    ];
    for (channel, op, for_anonymous, for_alice) in table {
        let got = try_op(&mut anonymous, op, channel).await?;
        assert_eq!(got, *for_anonymous, "anonymous {op} {channel}");
        let got = try_op(&mut alice, op, channel).await?;
        assert_eq!(got, *for_alice, "alice {op} {channel}");
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_subscription_opens_presence_and_history_to_its_holder_only() -> TestResult {
    let server = TestServer::start(CONFIG).await?;
    let mut alice = connect_as(&server, Some("alice")).await?;
    let mut bob = connect_as(&server, Some("bob")).await?;
    let room = "private:room";
    let token = mint_hs256(
        SECRET,
        &json!({ "sub": "alice", "channel": room, "exp": unix_now() + 600 }),
    )?;
    let reply = alice
        .request("subscribe", json!({ "channel": room, "token": token }))
        .await?;
    assert_eq!(reply["op"], "subscribed");
    server.publish(room, json!("one")).await?;
    assert_eq!(alice.recv_message().await?["data"], "one");
    let presence = alice
        .request("presence", json!({ "channel": room }))
        .await?;
    assert_eq!(presence["clients"][0]["user"], "alice", "{presence}");
    let history = alice.request("history", json!({ "channel": room })).await?;
    assert_eq!(history["messages"][0]["data"], "one", "{history}");
    for op in ["presence", "history"] {
        assert_eq!(try_op(&mut bob, op, room).await?, Error(103), "bob {op}");
    }
    // Unsubscribing takes the right away again.
    alice
        .request("unsubscribe", json!({ "channel": room }))
        .await?;
    assert_eq!(try_op(&mut alice, "history", room).await?, Error(103));
    server.stop().await
}
