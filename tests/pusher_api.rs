//! The Pusher HTTP API driven by the official server SDKs, unchanged: the `pusher` npm
//! package (tests/clients/pusher_server_sdk.mjs) and the Python `pusher` package
//! (tests/clients/pusher_server_sdk.py) make every call they have against a real node:
//! trigger (with socket_id exclusion and info), batches, channel lists and info,
//! presence users, terminate_connections; and get 401 with a wrong secret and 413 for
//! an over-size event. Two nodes through a real Redis: a trigger through one reaches a
//! subscriber on the other, and channel info counts both.
//!
//! The subscribers here are Pusher connections registered in the node's hub (what the
//! `/app/{key}` endpoint registers), read frame by frame.

mod support;

use std::sync::Arc;

use pushwire::hub::{ClientHandle, Dialect};
use pushwire::protocol::Encoding;
use pushwire::pusher::{channel, identity};
use serde_json::{Value, json};
use support::external::{node, python, run};
use support::{RedisServer, TestResult, TestServer, WAIT, fail};

const APP_ID: &str = "4242";
const KEY: &str = "app-key";
const SECRET: &str = "app-secret-0123456789";

fn app_config() -> String {
    format!("[[pusher.apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n")
}

/// A Pusher connection in a node's hub, subscribed to one channel.
struct Subscriber {
    client: Arc<ClientHandle>,
}

impl Subscriber {
    /// Subscribes as hub user `user` (a presence member when the channel is presence-).
    async fn join(server: &TestServer, name: &str, user: &str) -> TestResult<Subscriber> {
        let state = &server.state;
        let hub_user = if user.is_empty() {
            String::new()
        } else {
            identity::hub_user(APP_ID, user)
        };
        let info = (!user.is_empty()).then(|| Arc::new(json!({ "user_id": user })));
        let client =
            state
                .hub
                .register_as(Arc::from(hub_user), Encoding::Json, info, Dialect::Pusher);
        let (hub_channel, kind) = channel::to_hub(APP_ID, name)?;
        let ns = channel::namespace_config(kind);
        state
            .broker
            .subscribe(&client, &hub_channel, &ns, None, &|_| None)
            .await?;
        Ok(Subscriber { client })
    }

    fn socket_id(&self) -> String {
        identity::socket_id(self.client.id)
    }

    /// The next event frame, parsed (presence `pusher_internal:` frames are skipped).
    async fn next(&self) -> TestResult<Value> {
        loop {
            let frame = self.next_frame().await?;
            let internal = frame["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("pusher_internal:"));
            if !internal {
                return Ok(frame);
            }
        }
    }

    /// The next frame, parsed.
    async fn next_frame(&self) -> TestResult<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut batch = self.client.take_batch(1);
            if let Some(frame) = batch.items.pop() {
                return Ok(serde_json::from_slice(&frame)?);
            }
            if let Some(closing) = batch.closing {
                return fail(format!("closed with {:?}", closing.code));
            }
            if tokio::time::timeout_at(deadline, self.client.wait_for_work())
                .await
                .is_err()
            {
                return fail("no frame within WAIT");
            }
        }
    }

    /// Waits until the hub closes this connection; returns the close's `reconnect`.
    async fn closed(&self) -> TestResult<bool> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let batch = self.client.take_batch(1 << 20);
            if let Some(closing) = batch.closing {
                return Ok(closing.reconnect);
            }
            if tokio::time::timeout_at(deadline, self.client.wait_for_work())
                .await
                .is_err()
            {
                return fail("not closed within WAIT");
            }
        }
    }
}

fn sdk_config(server: &TestServer, secret: &str, calls: Value) -> String {
    json!({
        "host": "127.0.0.1",
        "port": server.addr.port(),
        "appId": APP_ID,
        "key": KEY,
        "secret": secret,
        "calls": calls,
    })
    .to_string()
}

fn lines(output: &str) -> TestResult<Vec<Value>> {
    output
        .lines()
        .map(|line| serde_json::from_str(line).map_err(|e| format!("{line:?}: {e}").into()))
        .collect()
}

/// Runs `calls` through the Node SDK; one result per call.
async fn node_sdk(server: &TestServer, secret: &str, calls: Value) -> TestResult<Vec<Value>> {
    let config = sdk_config(server, secret, calls);
    lines(&run(node("pusher_server_sdk.mjs", &[&config])?).await?)
}

/// Runs `calls` through the Python SDK; one result per call.
async fn python_sdk(server: &TestServer, secret: &str, calls: Value) -> TestResult<Vec<Value>> {
    let config = sdk_config(server, secret, calls);
    lines(&run(python("pusher_server_sdk.py", &[&config])?).await?)
}

/// Waits until `server`'s cluster view (`/api/info`) lists `count` nodes.
async fn wait_for_nodes(server: &TestServer, count: usize) -> TestResult {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, info) = server.get("/api/info").await?;
        if info["nodes"].as_array().map(Vec::len) == Some(count) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return fail(format!("cluster view never reached {count} nodes: {info}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn event(name: &str, channel: &str, data: &str) -> Value {
    json!({ "event": name, "channel": channel, "data": data })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_triggers_reach_subscribers_except_the_excluded_socket() -> TestResult {
    let server = TestServer::start(&app_config()).await?;
    let a = Subscriber::join(&server, "my-channel", "").await?;
    let b = Subscriber::join(&server, "my-channel", "").await?;
    let other = Subscriber::join(&server, "private-other", "").await?;
    let results = node_sdk(
        &server,
        SECRET,
        json!([
            ["trigger", "my-channel", "first", {"n": 1}, {"socket_id": b.socket_id()}],
            ["trigger", ["my-channel", "private-other"], "second", "plain text"],
            ["trigger", "my-channel", "third", {"n": 3}, {"info": "subscription_count"}],
        ]),
    )
    .await?;
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert_eq!(results[0]["body"], json!({}));
    assert_eq!(results[1]["status"], 200, "{results:?}");
    assert_eq!(
        results[2]["body"],
        json!({ "channels": { "my-channel": { "subscription_count": 2 } } })
    );
    assert_eq!(a.next().await?, event("first", "my-channel", r#"{"n":1}"#));
    assert_eq!(a.next().await?, event("second", "my-channel", "plain text"));
    assert_eq!(a.next().await?, event("third", "my-channel", r#"{"n":3}"#));
    // `b` was excluded from the first event only.
    assert_eq!(b.next().await?, event("second", "my-channel", "plain text"));
    assert_eq!(
        other.next().await?,
        event("second", "private-other", "plain text")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_batches_and_sends_to_users() -> TestResult {
    let server = TestServer::start(&app_config()).await?;
    let news = Subscriber::join(&server, "news", "").await?;
    let alice = Subscriber::join(&server, "#server-to-user-alice", "alice").await?;
    let batch = json!([
        {"channel": "news", "name": "one", "data": "1"},
        {"channel": "news", "name": "two", "data": "2", "info": "subscription_count"},
    ]);
    let results = node_sdk(
        &server,
        SECRET,
        json!([
            ["triggerBatch", batch],
            ["sendToUser", "alice", "hello", {"to": "alice"}],
        ]),
    )
    .await?;
    assert_eq!(
        results[0]["body"],
        json!({ "batch": [{}, { "subscription_count": 1 }] }),
        "{results:?}"
    );
    assert_eq!(results[1]["status"], 200, "{results:?}");
    assert_eq!(news.next().await?, event("one", "news", "1"));
    assert_eq!(news.next().await?, event("two", "news", "2"));
    assert_eq!(
        alice.next().await?,
        event("hello", "#server-to-user-alice", r#"{"to":"alice"}"#)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_reads_channels_presence_and_terminates_users() -> TestResult {
    let server = TestServer::start(&app_config()).await?;
    let _alice = Subscriber::join(&server, "presence-room", "alice").await?;
    let _alice_again = Subscriber::join(&server, "presence-room", "alice").await?;
    let bob = Subscriber::join(&server, "presence-room", "bob").await?;
    let _public = Subscriber::join(&server, "lobby", "").await?;
    let get = |path: &str, params: Value| json!(["get", { "path": path, "params": params }]);
    let results = node_sdk(
        &server,
        SECRET,
        json!([
            get("/channels", json!({})),
            get(
                "/channels",
                json!({"filter_by_prefix": "presence-", "info": "user_count"})
            ),
            get(
                "/channels/presence-room",
                json!({"info": "user_count,subscription_count"})
            ),
            get(
                "/channels/empty-room",
                json!({"info": "subscription_count"})
            ),
            get("/channels/presence-room/users", json!({})),
            get("/channels/lobby/users", json!({})),
            get("/channels/lobby", json!({"info": "user_count"})),
            get("/channels", json!({"info": "user_count"})),
            ["terminateUserConnections", "bob"],
        ]),
    )
    .await?;
    let bodies: Vec<&Value> = results.iter().map(|r| &r["body"]).collect();
    assert_eq!(
        *bodies[0],
        json!({ "channels": { "lobby": {}, "presence-room": {} } }),
        "{results:?}"
    );
    assert_eq!(
        *bodies[1],
        json!({ "channels": { "presence-room": { "user_count": 2 } } })
    );
    assert_eq!(
        *bodies[2],
        json!({ "occupied": true, "user_count": 2, "subscription_count": 3 })
    );
    assert_eq!(
        *bodies[3],
        json!({ "occupied": false, "subscription_count": 0 })
    );
    assert_eq!(
        *bodies[4],
        json!({ "users": [{ "id": "alice" }, { "id": "bob" }] })
    );
    for bad in &results[5..8] {
        assert_eq!(bad["status"], 400, "not a presence channel: {bad:?}");
    }
    assert_eq!(results[8]["status"], 200, "{results:?}");
    assert!(!bob.closed().await?, "a terminated user must not reconnect");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_errors_are_pushers() -> TestResult {
    let server = TestServer::start(&app_config()).await?;
    let news = Subscriber::join(&server, "news", "").await?;
    let big = "x".repeat(10 * 1024 + 1);
    let eleven: Vec<Value> = (0..11)
        .map(|n| json!({"channel": "news", "name": "e", "data": n.to_string()}))
        .collect();
    let results = node_sdk(
        &server,
        SECRET,
        json!([
            ["trigger", "news", "too-big", big],
            ["triggerBatch", eleven],
            ["trigger", "news", "pusher_internal:member_added", "{}"],
            ["trigger", "news", "fits", "x".repeat(10 * 1024)],
        ]),
    )
    .await?;
    assert_eq!(results[0]["status"], 413, "{results:?}");
    assert_eq!(results[0]["body"]["code"], 413);
    assert!(results[0]["body"]["error"].is_string());
    assert_eq!(results[1]["status"], 400, "{results:?}");
    assert_eq!(results[2]["status"], 400, "{results:?}");
    assert_eq!(results[3]["status"], 200, "{results:?}");
    let wrong = node_sdk(
        &server,
        "not-the-secret",
        json!([["trigger", "news", "e", "1"]]),
    )
    .await?;
    assert_eq!(wrong[0]["status"], 401, "{wrong:?}");
    assert_eq!(wrong[0]["body"]["code"], 401);
    // Nothing refused was published: the first event the subscriber sees is the one that fit.
    assert_eq!(news.next().await?["event"], "fits");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_makes_every_call() -> TestResult {
    let server = TestServer::start(&app_config()).await?;
    let a = Subscriber::join(&server, "my-channel", "").await?;
    let b = Subscriber::join(&server, "my-channel", "").await?;
    let _carol = Subscriber::join(&server, "presence-room", "carol").await?;
    let dave = Subscriber::join(&server, "presence-room", "dave").await?;
    let results = python_sdk(
        &server,
        SECRET,
        json!([
            ["trigger", "my-channel", "first", {"n": 1}, b.socket_id()],
            ["trigger", ["my-channel"], "second", "2"],
            ["trigger_batch", [{"channel": "my-channel", "name": "third", "data": "3"}]],
            ["channels_info", "presence-", ["user_count"]],
            ["channel_info", "presence-room", ["user_count", "subscription_count"]],
            ["users_info", "presence-room"],
            ["trigger", "my-channel", "too-big", "y".repeat(20 * 1024)],
            ["terminate_user_connections", "dave"],
        ]),
    )
    .await?;
    let ok: Vec<_> = results.iter().map(|r| r["status"].clone()).collect();
    assert_eq!(
        ok,
        [200, 200, 200, 200, 200, 200, 413, 200].map(Value::from),
        "{results:?}"
    );
    assert_eq!(
        results[3]["body"],
        json!({ "channels": { "presence-room": { "user_count": 2 } } })
    );
    assert_eq!(
        results[4]["body"],
        json!({ "occupied": true, "user_count": 2, "subscription_count": 2 })
    );
    assert_eq!(
        results[5]["body"],
        json!({ "users": [{ "id": "carol" }, { "id": "dave" }] })
    );
    assert_eq!(a.next().await?, event("first", "my-channel", r#"{"n": 1}"#));
    assert_eq!(a.next().await?, event("second", "my-channel", "2"));
    assert_eq!(a.next().await?, event("third", "my-channel", "3"));
    assert_eq!(b.next().await?, event("second", "my-channel", "2"));
    assert!(!dave.closed().await?);
    let wrong = python_sdk(&server, "wrong-secret", json!([["channels_info"]])).await?;
    assert_eq!(wrong[0]["status"], 401, "{wrong:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_through_redis_trigger_on_one_deliver_and_count_on_the_other() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = format!(
        "[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"pusherapi\"\n\
         heartbeat_interval_ms = 200\nnode_timeout_ms = 1000\n{}",
        redis.url(),
        app_config()
    );
    let one = TestServer::start(&config).await?;
    let two = TestServer::start(&config).await?;
    one.wait_ready().await?;
    two.wait_ready().await?;
    let far = Subscriber::join(&one, "presence-hall", "erin").await?;
    let near = Subscriber::join(&two, "presence-hall", "frank").await?;
    let calls = json!([
        ["trigger", "presence-hall", "hi", "there"],
        ["get", {"path": "/channels/presence-hall", "params": {"info": "user_count,subscription_count"}}],
        ["get", {"path": "/channels/presence-hall/users"}],
    ]);
    // Channel counts ask every node in the cluster view: wait until it holds both.
    wait_for_nodes(&two, 2).await?;
    let results = node_sdk(&two, SECRET, calls).await?;
    assert_eq!(
        results[1]["body"],
        json!({ "occupied": true, "user_count": 2, "subscription_count": 2 }),
        "{results:?}"
    );
    assert_eq!(
        results[2]["body"],
        json!({ "users": [{ "id": "erin" }, { "id": "frank" }] })
    );
    assert_eq!(far.next().await?, event("hi", "presence-hall", "there"));
    assert_eq!(near.next().await?, event("hi", "presence-hall", "there"));
    Ok(())
}

/// A request signed by pushwire's own signer (checked against the SDK's vectors in
/// src/pusher/signature_tests.rs), for what no installed SDK sends.
async fn signed_post(
    server: &TestServer,
    app_id: &str,
    path: &str,
    body: &Value,
    at: u64,
) -> TestResult<(u16, Value)> {
    let app = server.state.pusher.by_id(app_id).ok_or("no app")?.clone();
    let body = body.to_string();
    let query =
        pushwire::pusher::signature::sign_request(&app, "POST", path, &[], body.as_bytes(), at);
    let response = server
        .http()
        .post(server.http_url(path))
        .query(&query)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_style_single_channel_and_stale_signatures() -> TestResult {
    let server = TestServer::start(&app_config()).await?;
    let news = Subscriber::join(&server, "news", "").await?;
    let now = pushwire::auth::unix_now();
    let path = format!("/apps/{APP_ID}/events");
    let single = json!({ "name": "php", "data": "{}", "channel": "news" });
    let (status, body) = signed_post(&server, APP_ID, &path, &single, now - 700).await?;
    assert_eq!((status, body["code"].clone()), (401, json!(401)), "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("timestamp")),
        "{body}"
    );
    let (status, body) = signed_post(&server, APP_ID, &path, &single, now - 500).await?;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(news.next().await?, event("php", "news", "{}"));
    let (status, _) = signed_post(&server, APP_ID, "/apps/999/events", &single, now).await?;
    assert_eq!(status, 404, "unknown app id");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_app_gets_403_once_signed_and_401_before() -> TestResult {
    let config = format!(
        "{}[[pusher.apps]]\nid = \"7\"\nkey = \"off-key\"\nsecret = \"off-secret\"\nenabled = false\n",
        app_config()
    );
    let server = TestServer::start(&config).await?;
    let now = pushwire::auth::unix_now();
    let event = json!({ "name": "e", "data": "{}", "channels": ["news"] });
    let (status, body) = signed_post(&server, "7", "/apps/7/events", &event, now).await?;
    assert_eq!((status, body["code"].clone()), (403, json!(403)), "{body}");
    // Signed with the other app's key: refused as unauthenticated, not as disabled.
    let (status, _) = signed_post(&server, APP_ID, "/apps/7/events", &event, now).await?;
    assert_eq!(status, 401);
    Ok(())
}
