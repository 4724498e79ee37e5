//! The SSE endpoint (`GET /sse`) with real readers: a raw HTTP stream (what `curl -N`
//! sees), the `eventsource` npm package in Node, and a real `EventSource` in Chromium that
//! reconnects after the server drops the stream and resumes with `Last-Event-ID`.

mod support;

use serde_json::{Value, json};
use support::external::{Script, node};
use support::{TestResult, TestServer, WAIT, fail};

const SECRET: &str = "sse-test-secret-0123456789-0123456789";

fn config(extra: &str) -> String {
    // `extra` first: its top-level keys must come before any table.
    format!(
        "{extra}\n[auth]\ntoken_hmac_secret = \"{SECRET}\"\n\
         [namespaces.hist]\nhistory_size = 100\nhistory_ttl_secs = 600\n\
         [namespaces.private]\nallow_subscribe = \"token\"\n"
    )
}

fn token(user: &str) -> TestResult<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    Ok(pushwire::auth::mint_hs256(
        SECRET,
        &json!({"sub": user, "exp": exp}),
    )?)
}

fn sse_url(server: &TestServer, query: &str) -> String {
    server.http_url(&format!("/sse?{query}"))
}

/// Reads a raw event stream and splits it into events (blank-line separated blocks).
struct RawStream {
    body: reqwest::Response,
    buffer: String,
}

impl RawStream {
    async fn open(
        server: &TestServer,
        query: &str,
    ) -> TestResult<(u16, reqwest::header::HeaderMap, RawStream)> {
        let response = server.http().get(sse_url(server, query)).send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let response = response;
        Ok((
            status,
            headers,
            RawStream {
                body: response,
                buffer: String::new(),
            },
        ))
    }

    /// The next event block (comments included), within `WAIT`.
    async fn block(&mut self) -> TestResult<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return Ok(block);
            }
            match tokio::time::timeout(WAIT, self.body.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk)?),
                Ok(Ok(None)) => return fail("stream ended"),
                Ok(Err(err)) => return fail(format!("stream failed: {err}")),
                Err(_) => return fail("no event within WAIT"),
            }
        }
    }

    /// The next block that is an event (skips comments and the retry field).
    async fn event(&mut self) -> TestResult<String> {
        loop {
            let block = self.block().await?;
            if block.lines().any(|l| l.starts_with("event:")) {
                return Ok(block);
            }
        }
    }

    /// Whether the stream ends (the server finished the response) within `WAIT`.
    async fn ends(&mut self) -> TestResult<bool> {
        loop {
            match tokio::time::timeout(WAIT, self.body.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk)?),
                Ok(Ok(None)) => return Ok(true),
                Ok(Err(_)) | Err(_) => return Ok(false),
            }
        }
    }
}

#[tokio::test]
async fn a_plain_http_reader_gets_one_event_per_publication_and_heartbeats() -> TestResult {
    let server = TestServer::start(&config(
        "[client]\nping_interval_secs = 1\npong_timeout_secs = 1\n",
    ))
    .await?;
    let (status, headers, mut stream) =
        RawStream::open(&server, "channel=news&channel=hist:a").await?;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    let greeting = stream.block().await?;
    assert!(greeting.starts_with("retry: "), "{greeting}");

    server.publish("news", json!({"n": 1})).await?;
    assert_eq!(stream.event().await?, "event: news\ndata: {\"n\":1}");
    let published = server.publish("hist:a", json!("x")).await?;
    let event = stream.event().await?;
    let id = format!(
        "hist:a@{}:{}",
        published["epoch"].as_str().ok_or("epoch")?,
        published["offset"]
    );
    assert_eq!(event, format!("id: {id}\nevent: hist:a\ndata: \"x\""));
    // The ticker's heartbeat is a comment line, and an SSE reader owes no pong: three
    // heartbeats span more than pong_timeout, and the stream is still served.
    let mut heartbeats = 0;
    while heartbeats < 3 {
        if stream.block().await? == ": ping" {
            heartbeats += 1;
        }
    }
    server.publish("news", json!({"n": 2})).await?;
    assert_eq!(stream.event().await?, "event: news\ndata: {\"n\":2}");
    server.stop().await
}

#[tokio::test]
async fn requests_that_cannot_be_served_get_a_clear_status() -> TestResult {
    let server = TestServer::start(&config("allow_anonymous = false\n")).await?;
    let cases = [
        ("channel=news", 401, "no token, anonymous not allowed"),
        ("", 400, "no channel"),
    ];
    for (query, status, why) in cases {
        let (got, _, _) = RawStream::open(&server, query).await?;
        assert_eq!(got, status, "{why}");
    }
    let token = token("alice")?;
    for (query, status, why) in [
        (
            format!("channel=nope:x&token={token}"),
            400,
            "unknown namespace",
        ),
        (
            format!("channel=bad%20name&token={token}"),
            400,
            "invalid channel name",
        ),
        (
            format!("channel=private:x&token={token}"),
            403,
            "token-only namespace",
        ),
        (
            "channel=news&token=garbage".to_string(),
            401,
            "invalid token",
        ),
    ] {
        let (got, _, _) = RawStream::open(&server, &query).await?;
        assert_eq!(got, status, "{why}");
    }
    let (ok, _, _) = RawStream::open(&server, &format!("channel=news&token={token}")).await?;
    assert_eq!(ok, 200);
    server.stop().await
}

#[tokio::test]
async fn a_graceful_shutdown_ends_the_stream_with_a_disconnect_event() -> TestResult {
    let server = TestServer::start(&config("")).await?;
    let (_, _, mut stream) = RawStream::open(&server, "channel=news").await?;
    stream.block().await?;
    let stopping = tokio::spawn(server.stop());
    let event = stream.event().await?;
    assert!(event.starts_with("event: disconnect\ndata: "), "{event}");
    assert!(event.contains("\"code\":1001"), "{event}");
    assert!(stream.ends().await?, "the response ends");
    stopping.await??;
    Ok(())
}

#[tokio::test]
async fn the_eventsource_npm_package_reads_the_stream_with_a_bearer_token() -> TestResult {
    let server = TestServer::start(&config("allow_anonymous = false\n")).await?;
    let auth = format!("Authorization=Bearer {}", token("alice")?);
    let url = sse_url(&server, "channel=news");
    let mut reader = Script::spawn(node("sse_node.mjs", &[&url, "news", "--header", &auth])?)?;
    assert_eq!(reader.json().await?, json!({"open": 1}));
    for n in 0..3 {
        server.publish("news", json!({"n": n})).await?;
        let event = reader.json().await?;
        assert_eq!(event["channel"], "news");
        assert_eq!(event["data"], json!({"n": n}));
    }
    reader.stop().await?;
    server.stop().await
}

/// Reads relayed page events until `n` events of `channel` arrived; returns their data.
async fn collect(
    reader: &mut Script,
    channel: &str,
    n: usize,
    seen: &mut Vec<Value>,
) -> TestResult {
    let target = seen.len() + n;
    while seen.len() < target {
        let line = reader.json().await?;
        if line["channel"] == channel {
            seen.push(line["data"].clone());
        }
    }
    Ok(())
}

#[tokio::test]
async fn chromium_eventsource_resumes_with_last_event_id_after_the_server_drops_it() -> TestResult {
    let server = TestServer::start(&config("")).await?;
    let url = sse_url(
        &server,
        &format!("channel=hist:feed&token={}", token("reader")?),
    );
    let mut page = Script::spawn(node("sse_chromium.mjs", &[&url, "hist:feed"])?)?;
    page.until(|v| v["open"] == 1).await?;
    let mut seen = Vec::new();
    for n in 1..=3 {
        server.publish("hist:feed", json!(n)).await?;
    }
    collect(&mut page, "hist:feed", 3, &mut seen).await?;

    // The server drops the stream; what is published meanwhile must not be lost.
    let (status, body) = server
        .post(
            "/api/disconnect",
            &json!({"user": "reader", "reconnect": true}),
        )
        .await?;
    assert_eq!((status, &body["disconnected"]), (200, &json!(1)), "{body}");
    for n in 4..=6 {
        server.publish("hist:feed", json!(n)).await?;
    }
    let notice = page.until(|v| v["event"] == "recovered").await?;
    assert_eq!(
        notice["data"],
        json!({"channel": "hist:feed", "recovered": true})
    );
    for n in 7..=9 {
        server.publish("hist:feed", json!(n)).await?;
    }
    collect(&mut page, "hist:feed", 6, &mut seen).await?;
    assert_eq!(
        seen,
        (1..=9).map(|n| json!(n)).collect::<Vec<_>>(),
        "all, once, in order"
    );
    page.stop().await?;
    server.stop().await
}

#[tokio::test]
async fn a_server_side_subscribe_is_announced_as_an_sse_event() -> TestResult {
    let server = TestServer::start(&config("")).await?;
    let (_, _, mut stream) = RawStream::open(&server, "channel=news").await?;
    let greeting = stream.block().await?;
    let client_id = greeting
        .lines()
        .find_map(|l| l.strip_prefix(": connected "))
        .ok_or("no client id in the greeting")?
        .to_owned();
    let (status, reply) = server
        .post(
            "/api/subscribe",
            &json!({"client_id": client_id, "channel": "hist:b"}),
        )
        .await?;
    assert_eq!((status, &reply["subscribed"]), (200, &json!(1)), "{reply}");
    let notice = stream.event().await?;
    assert!(
        notice.starts_with("event: subscribed\ndata: {\"channel\":\"hist:b\""),
        "{notice:?}"
    );
    // The stream stays well-formed: the next publication is one whole event with its id.
    let published = server.publish("hist:b", json!(1)).await?;
    let id = format!(
        "hist:b@{}:{}",
        published["epoch"].as_str().ok_or("epoch")?,
        published["offset"]
    );
    assert_eq!(
        stream.event().await?,
        format!("id: {id}\nevent: hist:b\ndata: 1")
    );
    server.stop().await
}

#[tokio::test]
async fn a_server_side_unsubscribe_is_announced_as_an_sse_event() -> TestResult {
    let server = TestServer::start(&config("")).await?;
    let (_, _, mut stream) = RawStream::open(&server, "channel=news&channel=hist:b").await?;
    let greeting = stream.block().await?;
    let client_id = greeting
        .lines()
        .find_map(|l| l.strip_prefix(": connected "))
        .ok_or("no client id in the greeting")?
        .to_owned();
    let (status, reply) = server
        .post(
            "/api/unsubscribe",
            &json!({"client_id": client_id, "channel": "news"}),
        )
        .await?;
    assert_eq!(
        (status, &reply["unsubscribed"]),
        (200, &json!(1)),
        "{reply}"
    );
    // An SSE event, not a native frame written into the stream.
    assert_eq!(
        stream.event().await?,
        "event: unsubscribed\ndata: {\"channel\":\"news\"}"
    );
    let published = server.publish("hist:b", json!(1)).await?;
    let id = format!(
        "hist:b@{}:{}",
        published["epoch"].as_str().ok_or("epoch")?,
        published["offset"]
    );
    assert_eq!(
        stream.event().await?,
        format!("id: {id}\nevent: hist:b\ndata: 1")
    );
    server.stop().await
}
