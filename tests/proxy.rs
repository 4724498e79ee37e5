//! The backend proxy against a real backend: a small HTTP app in the test that
//! authenticates by session cookie, grants channels, refuses, stalls and fails, so the
//! connect, subscribe, publish and refresh proxies and the circuit breaker are seen from
//! a real WebSocket client.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use support::{Encoding, TestResult, TestServer, WAIT, WsClient, fail};
use tokio::sync::mpsc;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the backend saw and how it behaves.
struct Backend {
    /// Answer 500 to everything while set.
    down: AtomicBool,
    /// Renew with an `expire_at` already past while set.
    renew_in_the_past: AtomicBool,
    calls: AtomicUsize,
    seen: mpsc::UnboundedSender<(String, HeaderMap, Value)>,
}

async fn connect(
    State(b): State<Arc<Backend>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    b.calls.fetch_add(1, Ordering::SeqCst);
    let _ = b
        .seen
        .send(("connect".into(), headers.clone(), body.clone()));
    if b.down.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let cookie = headers
        .get("cookie")
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default();
    let answer = match cookie {
        "session=alice-cookie" => json!({"result": {
            "user": "alice", "info": {"name": "Alice"}, "channels": ["news"],
            "expire_at": body["data"]["expire_at"],
        }}),
        "session=alice-expiring" => json!({"result": {
            "user": "alice", "expire_at": unix_now() + 1,
        }}),
        "session=banned" => json!({"disconnect": {"code": 4403, "reason": "banned"}}),
        "session=stall" => {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            json!({"result": {"user": "late"}})
        }
        _ => json!({"disconnect": {"code": 4001, "reason": "no session"}}),
    };
    Json(answer).into_response()
}

async fn subscribe(State(b): State<Arc<Backend>>, Json(body): Json<Value>) -> Json<Value> {
    let _ = b
        .seen
        .send(("subscribe".into(), HeaderMap::new(), body.clone()));
    if body["channel"] == "vip:lounge" && body["user"] != "alice" {
        return Json(json!({"error": {"message": "vip only"}}));
    }
    if body["channel"] == "vip:closed" {
        return Json(json!({"error": {"message": "closed for today"}}));
    }
    Json(json!({"result": {}}))
}

async fn publish(Json(body): Json<Value>) -> Json<Value> {
    if body["data"]["text"] == "spam" {
        return Json(json!({"error": {"message": "no spam"}}));
    }
    Json(json!({"result": {"data": {"text": body["data"]["text"], "by": body["user"]}}}))
}

async fn refresh(State(b): State<Arc<Backend>>, Json(body): Json<Value>) -> Json<Value> {
    let _ = b
        .seen
        .send(("refresh".into(), HeaderMap::new(), body.clone()));
    if b.down.load(Ordering::SeqCst) {
        return Json(json!({"disconnect": {"reason": "session ended"}}));
    }
    if b.renew_in_the_past.load(Ordering::SeqCst) {
        return Json(json!({"result": {"expire_at": unix_now() - 60}}));
    }
    Json(json!({"result": {"expire_at": unix_now() + 1}}))
}

/// Starts the backend on port 0; returns its base URL, its state and what it saw.
async fn start_backend() -> TestResult<(
    String,
    Arc<Backend>,
    mpsc::UnboundedReceiver<(String, HeaderMap, Value)>,
)> {
    let (seen, seen_rx) = mpsc::unbounded_channel();
    let backend = Arc::new(Backend {
        down: AtomicBool::new(false),
        renew_in_the_past: AtomicBool::new(false),
        calls: AtomicUsize::new(0),
        seen,
    });
    let app = Router::new()
        .route("/connect", post(connect))
        .route("/subscribe", post(subscribe))
        .route("/publish", post(publish))
        .route("/refresh", post(refresh))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, backend, seen_rx))
}

fn config(backend: &str, extra: &str) -> String {
    format!(
        r#"
allow_anonymous = false
[auth]
expiry_grace_secs = 0
[proxy]
connect_url = "{backend}/connect"
subscribe_url = "{backend}/subscribe"
publish_url = "{backend}/publish"
refresh_url = "{backend}/refresh"
timeout_ms = 300
forward_headers = ["x-app-version"]
forward_cookies = ["session"]
static_headers = {{ "x-pushwire-secret" = "s3cret" }}
breaker_consecutive_failures = 3
breaker_failure_ratio = 0.0
breaker_open_ms = 300
[namespaces.vip]
proxy_subscribe = true
proxy_publish = true
allow_publish = "authenticated"
{extra}
"#
    )
}

async fn open_with_cookie(server: &TestServer, cookie: &str) -> TestResult<WsClient> {
    WsClient::open_with(
        &server.ws_url(),
        Encoding::Json,
        &[("cookie", cookie), ("x-app-version", "7.1")],
        None,
    )
    .await
}

async fn next_seen(
    rx: &mut mpsc::UnboundedReceiver<(String, HeaderMap, Value)>,
    kind: &str,
) -> TestResult<(HeaderMap, Value)> {
    loop {
        let Ok(Some((k, headers, body))) = tokio::time::timeout(WAIT, rx.recv()).await else {
            return fail(format!("backend saw no {kind} call"));
        };
        if k == kind {
            return Ok((headers, body));
        }
    }
}

#[tokio::test]
async fn connect_proxy_grants_the_cookie_session_its_user_and_channels() -> TestResult {
    let (backend, _, mut seen) = start_backend().await?;
    let server = TestServer::start(&config(&backend, "")).await?;
    let mut client = open_with_cookie(&server, "theme=dark; session=alice-cookie").await?;
    let reply = client
        .request(
            "connect",
            json!({"client": "test/1", "data": {"expire_at": null}}),
        )
        .await?;
    assert_eq!(reply["op"], "connected", "{reply}");
    assert_eq!(reply["user"], "alice");
    assert_eq!(reply["subscribed"], json!(["news"]));

    let (headers, body) = next_seen(&mut seen, "connect").await?;
    assert_eq!(
        headers["cookie"], "session=alice-cookie",
        "only allow-listed cookies"
    );
    assert_eq!(headers["x-app-version"], "7.1");
    assert_eq!(headers["x-pushwire-secret"], "s3cret");
    assert_eq!(body["client"], "test/1");
    assert_eq!(body["encoding"], "json");
    assert_eq!(body["transport"], "websocket");

    server.publish("news", json!({"n": 1})).await?;
    let message = client.recv_message().await?;
    assert_eq!(message["data"], json!({"n": 1}));
    server.stop().await
}

#[tokio::test]
async fn a_refusal_reaches_the_client_as_its_close_code_and_reason() -> TestResult {
    let (backend, _, _seen) = start_backend().await?;
    let server = TestServer::start(&config(&backend, "")).await?;
    let mut client = open_with_cookie(&server, "session=banned").await?;
    client.send(json!({"op": "connect", "id": 1})).await?;
    let (code, seen) = client.expect_close().await?;
    assert_eq!(code, 4403);
    assert!(
        seen.iter()
            .any(|m| m["op"] == "disconnect" && m["reason"] == "banned"),
        "{seen:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn a_stalled_backend_is_a_temporary_refusal_not_a_hang() -> TestResult {
    let (backend, _, _seen) = start_backend().await?;
    let server = TestServer::start(&config(&backend, "")).await?;
    let mut client = open_with_cookie(&server, "session=stall").await?;
    client.send(json!({"op": "connect", "id": 1})).await?;
    let (code, seen) = client.expect_close().await?;
    assert_eq!(code, 4012, "backend unavailable");
    assert!(
        seen.iter()
            .any(|m| m["op"] == "disconnect" && m["reconnect"] == true),
        "{seen:?}"
    );
    server.stop().await
}

async fn connect_code(server: &TestServer) -> TestResult<u16> {
    let mut client = open_with_cookie(server, "session=alice-cookie").await?;
    client.send(json!({"op": "connect", "id": 1})).await?;
    // The first message is `connected`, or the `disconnect` before the close frame.
    let first = client.recv().await?;
    if first["op"] == "connected" {
        return Ok(1000);
    }
    Ok(client.expect_close().await?.0)
}

#[tokio::test]
async fn the_breaker_opens_on_a_failing_backend_and_closes_when_it_recovers() -> TestResult {
    let (backend, state, _seen) = start_backend().await?;
    let server = TestServer::start(&config(&backend, "")).await?;
    state.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(connect_code(&server).await?, 4012);
    }
    assert_eq!(state.calls.load(Ordering::SeqCst), 3);
    // Open: refused at once, the backend is not called.
    for _ in 0..5 {
        assert_eq!(connect_code(&server).await?, 4012);
    }
    assert_eq!(
        state.calls.load(Ordering::SeqCst),
        3,
        "open breaker calls nobody"
    );
    let metrics = server.metrics_text().await?;
    assert!(
        metrics.contains(r#"pushwire_proxy_calls_total{kind="connect",outcome="breaker_open"} 5"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"pushwire_proxy_breaker_state{kind="connect"} 1"#));

    state.down.store(false, Ordering::SeqCst);
    // After breaker_open_ms one probe goes through and closes the breaker.
    let deadline = tokio::time::Instant::now() + WAIT;
    while connect_code(&server).await? != 1000 {
        if tokio::time::Instant::now() > deadline {
            return fail("breaker never closed again");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(connect_code(&server).await?, 1000);
    server.stop().await
}

#[tokio::test]
async fn subscribe_and_publish_proxies_decide_and_rewrite() -> TestResult {
    let (backend, _, mut seen) = start_backend().await?;
    let server = TestServer::start(&config(&backend, "")).await?;
    let mut alice = open_with_cookie(&server, "session=alice-cookie").await?;
    alice
        .request("connect", json!({"data": {"expire_at": null}}))
        .await?;
    let reply = alice
        .request("subscribe", json!({"channel": "vip:lounge"}))
        .await?;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    let (_, body) = next_seen(&mut seen, "subscribe").await?;
    assert_eq!(body["user"], "alice");
    assert_eq!(body["channel"], "vip:lounge");

    let refused = alice
        .request("subscribe", json!({"channel": "vip:closed"}))
        .await?;
    assert_eq!(refused["op"], "error");
    assert_eq!(refused["code"], 103);
    assert_eq!(refused["message"], "closed for today");

    // A channel outside the opted-in namespace is not asked about.
    let reply = alice
        .request("subscribe", json!({"channel": "lobby"}))
        .await?;
    assert_eq!(reply["op"], "subscribed", "{reply}");

    let published = alice
        .request(
            "publish",
            json!({"channel": "vip:lounge", "data": {"text": "hi"}}),
        )
        .await?;
    assert_eq!(published["op"], "published", "{published}");
    let message = alice.recv_message().await?;
    assert_eq!(
        message["data"],
        json!({"text": "hi", "by": "alice"}),
        "rewritten"
    );
    let spam = alice
        .request(
            "publish",
            json!({"channel": "vip:lounge", "data": {"text": "spam"}}),
        )
        .await?;
    assert_eq!(spam["code"], 103);
    assert_eq!(spam["message"], "no spam");
    server.stop().await
}

#[tokio::test]
async fn refresh_proxy_renews_an_expiring_connection_then_ends_it_when_refused() -> TestResult {
    let (backend, state, mut seen) = start_backend().await?;
    let server = TestServer::start(&config(&backend, "")).await?;
    let mut client = open_with_cookie(&server, "session=alice-cookie").await?;
    let expire_at = unix_now() + 1;
    let reply = client
        .request("connect", json!({"data": {"expire_at": expire_at}}))
        .await?;
    assert_eq!(reply["expires_at"], expire_at);
    // Renewed (instead of closed with 4002) and still served.
    let (_, body) = next_seen(&mut seen, "refresh").await?;
    assert_eq!(body["user"], "alice");
    next_seen(&mut seen, "refresh").await?;
    server.publish("news", json!("still here")).await?;
    assert_eq!(client.recv_message().await?["data"], "still here");
    // The backend ends the session: the next renewal closes with 4002.
    state.down.store(true, Ordering::SeqCst);
    let (code, seen_before) = client.expect_close().await?;
    assert_eq!(code, 4002);
    assert!(
        seen_before
            .iter()
            .any(|m| m["op"] == "disconnect" && m["reason"] == "session ended"),
        "{seen_before:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn a_renewal_already_expired_ends_the_connection_instead_of_asking_again() -> TestResult {
    let (backend, state, mut seen) = start_backend().await?;
    state.renew_in_the_past.store(true, Ordering::SeqCst);
    let server = TestServer::start(&config(&backend, "")).await?;
    let mut client = open_with_cookie(&server, "session=alice-cookie").await?;
    let expire_at = unix_now() + 1;
    client
        .request("connect", json!({"data": {"expire_at": expire_at}}))
        .await?;
    next_seen(&mut seen, "refresh").await?;
    // An expiry in the past is no renewal: 4002 at once, not a refresh every tick.
    let (code, _) = client.expect_close().await?;
    assert_eq!(code, 4002);
    let mut again = 0;
    while let Ok((kind, _, _)) = seen.try_recv() {
        again += usize::from(kind == "refresh");
    }
    assert_eq!(again, 0, "the backend was asked again");
    server.stop().await
}

#[tokio::test]
async fn a_proxy_url_that_is_not_http_is_refused_by_config_naming_the_key() -> TestResult {
    let err = pushwire::config::Config::from_toml("[proxy]\nconnect_url = \"ftp://x\"\n")
        .err()
        .ok_or("accepted")?;
    assert!(err.to_string().contains("proxy.connect_url"), "{err}");
    let err = pushwire::config::Config::from_toml("[namespaces.vip]\nproxy_subscribe = true\n")
        .err()
        .ok_or("accepted")?;
    assert!(
        err.to_string().contains("namespaces.vip.proxy_subscribe"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn an_sse_stream_the_connect_proxy_granted_is_renewed_too() -> TestResult {
    let (backend, _state, mut seen) = start_backend().await?;
    let server = TestServer::start(&config(&backend, "")).await?;
    let mut stream = server
        .http()
        .get(server.http_url("/sse?channel=news"))
        .header("cookie", "session=alice-expiring")
        .send()
        .await?;
    assert_eq!(stream.status().as_u16(), 200);
    let (_, body) = next_seen(&mut seen, "connect").await?;
    assert_eq!(
        body["transport"], "sse",
        "the backend is told how the client came"
    );
    // Renewed at its expiry (instead of ended with 4002), and still served.
    let (_, body) = next_seen(&mut seen, "refresh").await?;
    assert_eq!(body["user"], "alice");
    server.publish("news", json!("still here")).await?;
    let mut text = String::new();
    while !text.contains("data: \"still here\"") {
        let chunk = tokio::time::timeout(WAIT, stream.chunk())
            .await?
            .map_err(|e| format!("stream failed: {e}"))?
            .ok_or_else(|| format!("stream ended: {text}"))?;
        text.push_str(std::str::from_utf8(&chunk)?);
    }
    assert!(!text.contains("event: disconnect"), "{text}");
    server.stop().await
}

#[tokio::test]
async fn a_proxy_url_that_came_with_a_reload_refuses_instead_of_letting_through() -> TestResult {
    // Started without any proxy URL: the node has no backend proxy until a restart.
    let server = TestServer::start("").await?;
    let reloaded = pushwire::config::Config::from_toml(
        "[namespaces.vip]\nproxy_subscribe_url = \"http://127.0.0.1:9/subscribe\"\n",
    )?;
    server.state.reload(reloaded);
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let reply = client
        .request("subscribe", json!({"channel": "vip:lounge"}))
        .await?;
    assert_eq!(reply["op"], "error", "{reply}");
    assert_eq!(reply["code"], 108, "{reply}");
    server.stop().await
}
