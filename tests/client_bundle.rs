//! `GET /client/pushwire.min.js`: every node serves the browser client of its own version
//! (client-js/test/browser/served-client.test.mjs runs it in Chromium).

mod support;

use support::{TestResult, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_serves_its_browser_client() -> TestResult {
    let server = TestServer::start("").await?;
    let url = server.http_url("/client/pushwire.min.js");
    let response = server.http().get(&url).send().await?;
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_default()
    };
    assert!(header("content-type").starts_with("text/javascript"));
    let etag = header("etag");
    assert!(
        etag.starts_with(&format!("\"{}-", env!("CARGO_PKG_VERSION"))),
        "{etag}"
    );
    let body = response.text().await?;
    let banner = format!("/*! pushwire-client {} ", env!("CARGO_PKG_VERSION"));
    assert!(body.starts_with(&banner), "{}", &body[..body.len().min(80)]);
    assert!(
        body.contains("var Pushwire="),
        "defines the global Pushwire"
    );

    let again = server
        .http()
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await?;
    assert_eq!(again.status().as_u16(), 304);
    server.stop().await
}
