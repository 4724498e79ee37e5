//! Native webhooks, received by a real HTTP endpoint in the test: bodies are batched
//! `{"time_ms", "events"}` signed with HMAC-SHA256 (checked here with ring, not with
//! pushwire's code); occupancy and presence events; retries after failures; a vacated
//! held and dropped when the client comes back; a dead endpoint's breaker opens while
//! publications keep flowing.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::observability::scrape;
use support::webhook_receiver::{Received, WebhookReceiver};
use support::{Encoding, TestResult, TestServer, WAIT, WsClient, fail};

const SECRET: &str = "webhook-secret-0123";

/// A node posting native webhooks to `url`; `extra` lines (`key = value`) in
/// `[webhooks]` replace the defaults of these tests.
fn config(url: &str, extra: &str) -> String {
    let mut keys = vec![
        ("urls".to_owned(), format!("[\"{url}\"]")),
        ("secret".to_owned(), format!("\"{SECRET}\"")),
        ("hold_ms".to_owned(), "300".to_owned()),
        ("batch_wait_ms".to_owned(), "20".to_owned()),
        ("retry_initial_delay_ms".to_owned(), "50".to_owned()),
        ("retry_max_delay_ms".to_owned(), "200".to_owned()),
    ];
    for line in extra.lines() {
        if let Some((key, value)) = line.split_once('=') {
            let key = key.trim().to_owned();
            keys.retain(|(k, _)| *k != key);
            keys.push((key, value.trim().to_owned()));
        }
    }
    let lines: Vec<String> = keys.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!(
        "[webhooks]\n{}\n[namespaces.room]\npresence = true\nallow_publish = \"all\"\n",
        lines.join("\n")
    )
}

fn hex_decode(hex: &str) -> TestResult<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(hex.get(i..i + 2).ok_or("odd hex")?, 16)?))
        .collect()
}

/// The body's signature header is HMAC-SHA256(secret, raw body).
fn verify(received: &Received) -> TestResult {
    let signature = received
        .header("x-pushwire-signature")
        .ok_or("no X-Pushwire-Signature header")?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    ring::hmac::verify(&key, &received.body, &hex_decode(&signature)?)
        .map_err(|_| format!("bad signature {signature} for {:?}", received.body).into())
}

/// The next `n` events as (name, channel), in arrival order, each body verified.
async fn next_events(hooks: &mut WebhookReceiver, n: usize) -> TestResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (event, received) = hooks.event().await?;
        verify(&received)?;
        let json = received.json()?;
        if !json["time_ms"].is_u64() {
            return fail(format!("no time_ms in {json}"));
        }
        out.push((
            event["name"].as_str().unwrap_or_default().to_owned(),
            event["channel"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    Ok(out)
}

fn set(events: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    events
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn metric(node: &TestServer, name: &str, labels: &[&str]) -> TestResult<f64> {
    Ok(scrape(&format!("http://{}", node.addr))
        .await?
        .sum(name, labels))
}

/// Polls a metric until `ok` holds (within `WAIT`).
async fn metric_until(
    node: &TestServer,
    name: &str,
    labels: &[&str],
    ok: impl Fn(f64) -> bool,
) -> TestResult<f64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = metric(node, name, labels).await?;
        if ok(value) {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            return fail(format!("{name}{labels:?} stayed {value}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occupancy_and_presence_arrive_signed_and_vacated_after_the_hold() -> TestResult {
    let mut hooks = WebhookReceiver::start().await?;
    let node = TestServer::start(&config(&hooks.url(), "")).await?;
    let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "room:1"}))
        .await?;
    let (join, received) = loop {
        let (event, received) = hooks.event().await?;
        if event["name"] == "join" {
            break (event, received);
        }
    };
    verify(&received)?;
    assert_eq!(join["channel"], "room:1");
    assert!(join["client_id"].is_string(), "{join}");
    client
        .request("subscribe", json!({"channel": "plain"}))
        .await?;
    client
        .request("unsubscribe", json!({"channel": "room:1"}))
        .await?;
    // occupied room:1 (maybe before the join), occupied plain, then after the hold
    // leave and vacated of room:1.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.extend(next_events(&mut hooks, 1).await?);
        seen.retain(|(name, _)| name != "join");
    }
    let expected = set(&[
        ("channel_occupied", "room:1"),
        ("channel_occupied", "plain"),
        ("leave", "room:1"),
        ("channel_vacated", "room:1"),
    ]);
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), expected);
    let vacated_at = seen.iter().position(|e| e.0 == "channel_vacated");
    let occupied_at = seen
        .iter()
        .position(|e| e.0 == "channel_occupied" && e.1 == "room:1");
    assert!(occupied_at < vacated_at, "{seen:?}");
    // Client publications are not sent by default.
    client
        .request("publish", json!({"channel": "room:2", "data": {"n": 1}}))
        .await?;
    drop(client);
    let rest = next_events(&mut hooks, 1).await?;
    assert_eq!(rest[0], ("channel_vacated".to_owned(), "plain".to_owned()));
    assert!(
        metric(
            &node,
            "pushwire_webhook_events_total",
            &["outcome=\"sent\""]
        )
        .await?
            >= 6.0
    );
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_batched_and_publish_is_sent_when_asked_for() -> TestResult {
    let mut hooks = WebhookReceiver::start().await?;
    let extra = "batch_wait_ms = 1000\nevents = [\"channel_occupied\", \"publish\"]";
    let node = TestServer::start(&config(&hooks.url(), extra)).await?;
    let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    for n in 0..5 {
        client
            .request("subscribe", json!({"channel": format!("c{n}")}))
            .await?;
    }
    let first = hooks.request().await?;
    verify(&first)?;
    let events = first.events()?;
    assert!(events.len() > 1, "one body per event: {events:?}");
    assert!(events.iter().all(|e| e["name"] == "channel_occupied"));
    let mut occupied = events.len();
    while occupied < 5 {
        occupied += hooks.request().await?.events()?.len();
    }
    client
        .request("publish", json!({"channel": "room:2", "data": {"n": 1}}))
        .await?;
    let (event, _) = hooks.event().await?;
    assert_eq!(event["name"], "publish");
    assert_eq!(event["channel"], "room:2");
    assert_eq!(event["data"], json!({"n": 1}));
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_gets_the_batch_again_until_it_takes_it() -> TestResult {
    let mut hooks = WebhookReceiver::start().await?;
    hooks.fail_next(3);
    let node = TestServer::start(&config(&hooks.url(), "")).await?;
    let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "retried"}))
        .await?;
    let events = next_events(&mut hooks, 1).await?;
    assert_eq!(events, vec![("channel_occupied".into(), "retried".into())]);
    assert_eq!(
        hooks.attempts(),
        4,
        "three failures, then the same batch taken"
    );
    let labels = ["protocol=\"native\""];
    assert_eq!(
        metric(&node, "pushwire_webhook_retries_total", &labels).await?,
        3.0
    );
    let errors = ["protocol=\"native\"", "result=\"error\""];
    assert_eq!(
        metric(&node, "pushwire_webhook_requests_total", &errors).await?,
        3.0
    );
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vacated_is_dropped_when_the_channel_is_occupied_again_within_the_hold() -> TestResult {
    let mut hooks = WebhookReceiver::start().await?;
    let node = TestServer::start(&config(&hooks.url(), "hold_ms = 1000")).await?;
    let (mut first, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    first
        .request("subscribe", json!({"channel": "reload"}))
        .await?;
    let events = next_events(&mut hooks, 1).await?;
    assert_eq!(events, vec![("channel_occupied".into(), "reload".into())]);
    // A page reload: the old connection goes, a new one subscribes again.
    drop(first);
    let cancelled = ["protocol=\"native\"", "outcome=\"cancelled\""];
    let (mut second, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    // The vacated must be held by the time the new subscriber comes.
    metric_until(&node, "pushwire_channels", &[], |n| n == 0.0).await?;
    second
        .request("subscribe", json!({"channel": "reload"}))
        .await?;
    metric_until(&node, "pushwire_webhook_events_total", &cancelled, |n| {
        n == 2.0
    })
    .await?;
    // Past the hold, the next event is a new one: neither the vacated nor the occupied.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    second
        .request("subscribe", json!({"channel": "marker"}))
        .await?;
    let events = next_events(&mut hooks, 1).await?;
    assert_eq!(events, vec![("channel_occupied".into(), "marker".into())]);
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_opens_its_breaker_and_publications_keep_flowing() -> TestResult {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let extra = r#"breaker_failures = 2
breaker_open_ms = 60000
retry_initial_delay_ms = 10
retry_max_delay_ms = 20
retry_max_secs = 1
queue_max_events = 4
request_timeout_ms = 200
events = ["channel_occupied", "channel_vacated", "publish"]"#;
    let node = TestServer::start(&config(&format!("http://{dead}/hook"), extra)).await?;
    let (mut subscriber, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    subscriber
        .request("subscribe", json!({"channel": "room:busy"}))
        .await?;
    let (mut publisher, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    // Within the per-connection burst (client.rate_limit_burst).
    const COUNT: u64 = 150;
    for n in 0..COUNT {
        let reply = publisher
            .request("publish", json!({"channel": "room:busy", "data": {"n": n}}))
            .await?;
        if reply["op"] != "published" {
            return fail(format!("publish {n} answered {reply}"));
        }
    }
    for n in 0..COUNT {
        let message = subscriber.recv_message().await?;
        assert_eq!(message["data"]["n"], n);
    }
    let open = ["protocol=\"native\""];
    metric_until(&node, "pushwire_webhook_breakers_open", &open, |n| n == 1.0).await?;
    let dropped = ["protocol=\"native\"", "outcome=\"dropped\""];
    let n = metric(&node, "pushwire_webhook_events_total", &dropped).await?;
    assert!(n > 0.0, "a full queue drops events, counted");
    let depth = metric(&node, "pushwire_webhook_queue_depth_events", &open).await?;
    assert!(depth <= 4.0, "the queue stays bounded: {depth}");
    node.stop().await
}

/// Nothing is configured: no webhook is attempted and nothing is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_urls_nothing_is_sent() -> TestResult {
    let node = TestServer::start("").await?;
    let (mut client, _) = WsClient::connect(&node.ws_url(), Encoding::Json).await?;
    client.request("subscribe", json!({"channel": "a"})).await?;
    let sent: f64 = metric(&node, "pushwire_webhook_events_total", &[]).await?;
    assert_eq!(sent, 0.0);
    let _: Value = json!(null);
    node.stop().await
}
