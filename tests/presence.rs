//! Presence per user: `join` on a user's first connection to a channel (cluster-wide),
//! `leave` on its last (a crashed node's users too), at a bounded rate; `presence_stats`
//! counts; presence read in pages with a cursor; a reply too big for the asker's queue
//! refused with 106 rather than evicting it. On the memory broker and through Redis with
//! two nodes.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use pushwire::auth::{mint_hs256, unix_now};
use serde_json::{Value, json};
use support::{BinaryServer, Encoding, RedisServer, TestResult, TestServer, WsClient, fail};

const SECRET: &str = "presence-tests-secret-0123456789abcdef";

fn namespace(extra: &str) -> String {
    format!(
        "[auth]\ntoken_hmac_secret = \"{SECRET}\"\n[namespaces.room]\npresence = true\njoin_leave = true\n{extra}\n"
    )
}

fn redis_config(redis: &RedisServer, prefix: &str, extra: &str) -> String {
    format!(
        "{}[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\nheartbeat_interval_ms = 200\nnode_timeout_ms = 1000\npresence_ttl_secs = 2\n",
        namespace(extra),
        redis.url()
    )
}

/// Connects as `user` (anonymous when empty).
async fn connect_as(url: &str, user: &str) -> TestResult<(WsClient, String)> {
    let fields = if user.is_empty() {
        json!({})
    } else {
        let claims = json!({ "sub": user, "exp": unix_now() + 600, "info": { "name": user } });
        json!({ "token": mint_hs256(SECRET, &claims)? })
    };
    let (client, connected) = WsClient::connect_with(url, Encoding::Json, fields).await?;
    let id = connected["client_id"]
        .as_str()
        .ok_or("no client_id")?
        .to_owned();
    Ok((client, id))
}

/// Subscribes, retrying while a Redis node is not ready yet.
async fn subscribe(client: &mut WsClient, channel: &str) -> TestResult {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let reply = client
            .request("subscribe", json!({ "channel": channel }))
            .await?;
        if reply["op"] == "subscribed" {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return fail(format!("subscribe answered {reply}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_presence_event(m: &Value) -> bool {
    m["op"] == "join" || m["op"] == "leave"
}

/// The next join or leave the watcher sees, as (op, user).
async fn next_event(watcher: &mut WsClient) -> TestResult<(String, String)> {
    let event = watcher.recv_where(is_presence_event).await?;
    Ok((
        event["op"].as_str().unwrap_or_default().to_owned(),
        event["user"].as_str().unwrap_or_default().to_owned(),
    ))
}

fn pair(op: &str, user: &str) -> (String, String) {
    (op.to_owned(), user.to_owned())
}

/// A second connection of a user already present brings no `join`, the first of its
/// connections to go brings no `leave`, its last one does. `bob` marks where the
/// events that must not come would have been.
async fn check_per_user_join_leave(first: &str, second: &str) -> TestResult {
    let channel = "room:per-user";
    let (mut watcher, _) = connect_as(first, "watcher").await?;
    subscribe(&mut watcher, channel).await?;
    assert_eq!(next_event(&mut watcher).await?, pair("join", "watcher"));

    let (mut alice1, _) = connect_as(first, "alice").await?;
    subscribe(&mut alice1, channel).await?;
    let joined = watcher.recv_where(is_presence_event).await?;
    assert_eq!(
        (joined["op"].clone(), joined["user"].clone()),
        (json!("join"), json!("alice"))
    );
    assert_eq!(joined["info"], json!({ "name": "alice" }));

    // alice's second connection, on the other node where there are two.
    let (mut alice2, _) = connect_as(second, "alice").await?;
    subscribe(&mut alice2, channel).await?;
    let (mut bob, _) = connect_as(second, "bob").await?;
    subscribe(&mut bob, channel).await?;
    assert_eq!(next_event(&mut watcher).await?, pair("join", "bob"));

    alice1
        .request("unsubscribe", json!({ "channel": channel }))
        .await?;
    bob.request("unsubscribe", json!({ "channel": channel }))
        .await?;
    assert_eq!(next_event(&mut watcher).await?, pair("leave", "bob"));

    // Her last connection goes: now she leaves.
    drop(alice2);
    assert_eq!(next_event(&mut watcher).await?, pair("leave", "alice"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_are_per_user_on_the_memory_broker() -> TestResult {
    let node = TestServer::start(&namespace("")).await?;
    check_per_user_join_leave(&node.ws_url(), &node.ws_url()).await?;
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_are_per_user_across_redis_nodes() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = redis_config(&redis, "peruser", "");
    let a = TestServer::start(&config).await?;
    let b = TestServer::start(&config).await?;
    a.wait_ready().await?;
    b.wait_ready().await?;
    check_per_user_join_leave(&a.ws_url(), &b.ws_url()).await?;
    a.stop().await?;
    b.stop().await
}

/// A user whose only connection was on a node that crashed leaves within
/// `presence_ttl_secs`; a user with a connection left elsewhere stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_a_crashed_node_leave_within_the_ttl() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = redis_config(&redis, "crash", "");
    let a = TestServer::start(&config).await?;
    a.wait_ready().await?;
    let mut doomed = BinaryServer::start(&config).await?;
    let channel = "room:crash";
    let (mut watcher, _) = connect_as(&a.ws_url(), "watcher").await?;
    subscribe(&mut watcher, channel).await?;
    assert_eq!(next_event(&mut watcher).await?, pair("join", "watcher"));
    let (mut dana_here, _) = connect_as(&a.ws_url(), "dana").await?;
    subscribe(&mut dana_here, channel).await?;
    assert_eq!(next_event(&mut watcher).await?, pair("join", "dana"));

    let (mut carol, _) = connect_as(&doomed.ws_url(), "carol").await?;
    subscribe(&mut carol, channel).await?;
    assert_eq!(next_event(&mut watcher).await?, pair("join", "carol"));
    let (mut dana_there, _) = connect_as(&doomed.ws_url(), "dana").await?;
    subscribe(&mut dana_there, channel).await?;

    // SIGKILL: the node says goodbye to nobody.
    doomed.child.start_kill()?;
    doomed.child.wait().await?;
    let killed = std::time::Instant::now();
    assert_eq!(next_event(&mut watcher).await?, pair("leave", "carol"));
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    loop {
        let stats = watcher
            .request("presence_stats", json!({ "channel": channel }))
            .await?;
        if stats["clients"] == 2 {
            assert_eq!(stats["users"], 2, "{stats}");
            break;
        }
        if killed.elapsed() > Duration::from_secs(5) {
            return fail(format!("crashed node's clients still counted: {stats}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // dana is still here: no leave for her came before this marker.
    let (mut erin, _) = connect_as(&a.ws_url(), "erin").await?;
    subscribe(&mut erin, channel).await?;
    assert_eq!(next_event(&mut watcher).await?, pair("join", "erin"));
    a.stop().await
}

/// Counts: connections and distinct users (each anonymous connection is a user).
async fn check_stats(first: &TestServer, second: &TestServer) -> TestResult {
    let channel = "room:stats";
    let mut keep = Vec::new();
    for (node, user) in [
        (first, "alice"),
        (second, "alice"),
        (second, "bob"),
        (first, ""),
        (second, ""),
    ] {
        let (mut client, _) = connect_as(&node.ws_url(), user).await?;
        subscribe(&mut client, channel).await?;
        keep.push(client);
    }
    let stats = keep[0]
        .request("presence_stats", json!({ "channel": channel }))
        .await?;
    assert_eq!(stats["op"], "presence_stats", "{stats}");
    assert_eq!(
        (stats["clients"].as_u64(), stats["users"].as_u64()),
        (Some(5), Some(4)),
        "{stats}"
    );
    let (status, body) = second
        .post("/api/presence_stats", &json!({ "channel": channel }))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "clients": 5, "users": 4 }));
    let (status, _) = second
        .post("/api/presence_stats", &json!({ "channel": "nowhere:x" }))
        .await?;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_stats_on_the_memory_broker() -> TestResult {
    let node = TestServer::start(&namespace("")).await?;
    check_stats(&node, &node).await?;
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_stats_across_redis_nodes() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = redis_config(&redis, "stats", "");
    let a = TestServer::start(&config).await?;
    let b = TestServer::start(&config).await?;
    a.wait_ready().await?;
    b.wait_ready().await?;
    check_stats(&a, &b).await?;
    a.stop().await?;
    b.stop().await
}

/// Every page within the limit; all pages together list every connection once.
async fn check_pages(first: &TestServer, second: &TestServer) -> TestResult {
    let channel = "room:pages";
    let mut keep = Vec::new();
    let mut expected = BTreeSet::new();
    for i in 0..23 {
        let node = if i % 2 == 0 { first } else { second };
        let user = match i % 3 {
            0 => String::new(),
            _ => format!("user{}", i % 5),
        };
        let (mut client, id) = connect_as(&node.ws_url(), &user).await?;
        subscribe(&mut client, channel).await?;
        expected.insert(id);
        keep.push(client);
    }
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut fields = json!({ "channel": channel, "limit": 10 });
        if let Some(cursor) = &cursor {
            fields["cursor"] = json!(cursor);
        }
        let page = keep[0].request("presence", fields).await?;
        let clients = page["clients"].as_array().ok_or("no clients")?;
        assert!(clients.len() <= 10, "{page}");
        for client in clients {
            let id = client["client_id"].as_str().ok_or("no id")?.to_owned();
            assert!(seen.insert(id), "listed twice: {page}");
        }
        pages += 1;
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        if pages > 5 {
            return fail("cursor never ends");
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);

    // The HTTP API pages the same way.
    let (_, body) = second
        .get(&format!("/api/presence?channel={channel}&limit=20"))
        .await?;
    assert_eq!(body["clients"].as_array().map(Vec::len), Some(20), "{body}");
    let cursor = body["cursor"].as_str().ok_or("no cursor")?;
    let response = second
        .http()
        .get(second.http_url("/api/presence"))
        .query(&[("channel", channel), ("limit", "20"), ("cursor", cursor)])
        .bearer_auth(support::api_key())
        .send()
        .await?;
    let status = response.status().as_u16();
    let body: Value = response.json().await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["clients"].as_array().map(Vec::len), Some(3), "{body}");
    assert!(body.get("cursor").is_none(), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_pages_on_the_memory_broker() -> TestResult {
    let node = TestServer::start(&namespace("")).await?;
    check_pages(&node, &node).await?;
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_pages_across_redis_nodes() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = redis_config(&redis, "pages", "");
    let a = TestServer::start(&config).await?;
    let b = TestServer::start(&config).await?;
    a.wait_ready().await?;
    b.wait_ready().await?;
    check_pages(&a, &b).await?;
    a.stop().await?;
    b.stop().await
}

/// A presence reply larger than the asker's queue bound is refused with 106; the asker
/// stays connected (it used to be evicted with 4008).
async fn check_oversized_reply(node: &TestServer) -> TestResult {
    let channel = "room:big";
    let mut keep = Vec::new();
    for i in 0..40 {
        let (mut client, _) = connect_as(&node.ws_url(), &format!("member-{i}")).await?;
        subscribe(&mut client, channel).await?;
        keep.push(client);
    }
    let asker = &mut keep[0];
    let reply = asker
        .request("presence", json!({ "channel": channel }))
        .await?;
    assert_eq!(
        (reply["op"].clone(), reply["code"].clone()),
        (json!("error"), json!(106)),
        "{reply}"
    );
    let page = asker
        .request("presence", json!({ "channel": channel, "limit": 5 }))
        .await?;
    assert_eq!(page["clients"].as_array().map(Vec::len), Some(5), "{page}");
    let trips = node
        .state
        .metrics
        .limit_trips
        .with_label_values(&["presence_reply_size"])
        .get();
    assert!(trips >= 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_presence_reply_is_an_error_on_the_memory_broker() -> TestResult {
    let node = TestServer::start(&format!(
        "{}[client]\nqueue_max_bytes = 2048\n[api]\nmax_publish_bytes = 1024\n",
        namespace("")
    ))
    .await?;
    check_oversized_reply(&node).await?;
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_presence_reply_is_an_error_with_redis() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = format!(
        "{}[client]\nqueue_max_bytes = 2048\n[api]\nmax_publish_bytes = 1024\n",
        redis_config(&redis, "big", "")
    );
    let node = TestServer::start(&config).await?;
    node.wait_ready().await?;
    check_oversized_reply(&node).await?;
    node.stop().await
}

/// Anonymous connections churn on a channel (each one a user of its own, so every
/// subscribe is a join and every unsubscribe a leave): the watcher receives at most what
/// `join_leave_rate_per_sec` allows, the rest is counted as the `join_leave_rate` limit.
async fn check_rate_bound(node: &TestServer, churn_url: &str) -> TestResult {
    let channel = "room:churn";
    let (mut watcher, _) = connect_as(&node.ws_url(), "watcher").await?;
    subscribe(&mut watcher, channel).await?;
    assert_eq!(next_event(&mut watcher).await?, pair("join", "watcher"));
    let trips = || {
        node.state
            .metrics
            .limit_trips
            .with_label_values(&["join_leave_rate"])
            .get()
    };
    let before = trips();
    let started = std::time::Instant::now();
    const CYCLES: u64 = 60;
    let mut churners = Vec::new();
    for _ in 0..CYCLES {
        let (mut c, _) = connect_as(churn_url, "").await?;
        subscribe(&mut c, channel).await?;
        c.request("unsubscribe", json!({ "channel": channel }))
            .await?;
        churners.push(c);
    }
    // Every join and leave is either delivered to the watcher or counted as dropped.
    let mut delivered = 0u64;
    let deadline = std::time::Instant::now() + support::WAIT;
    while delivered + trips() - before < 2 * CYCLES {
        if std::time::Instant::now() > deadline {
            return fail(format!(
                "{delivered} delivered, {} dropped of {}",
                trips() - before,
                2 * CYCLES
            ));
        }
        if let Ok(event) = tokio::time::timeout(
            Duration::from_millis(100),
            watcher.recv_where(is_presence_event),
        )
        .await
        {
            event?;
            delivered += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 5.0 + 5.0 * elapsed.ceil();
    assert!(
        (delivered as f64) <= allowed,
        "{delivered} events in {elapsed:.1}s at 5/s"
    );
    assert!(trips() > before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_rate_is_bounded_on_the_memory_broker() -> TestResult {
    let node = TestServer::start(&namespace("join_leave_rate_per_sec = 5")).await?;
    check_rate_bound(&node, &node.ws_url()).await?;
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_rate_is_bounded_with_redis() -> TestResult {
    let redis = RedisServer::start().await?;
    let config = redis_config(&redis, "churn", "join_leave_rate_per_sec = 5");
    let a = TestServer::start(&config).await?;
    let b = TestServer::start(&config).await?;
    a.wait_ready().await?;
    b.wait_ready().await?;
    check_rate_bound(&a, &b.ws_url()).await?;
    a.stop().await?;
    b.stop().await
}
