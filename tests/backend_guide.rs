//! docs/backend.md's Node and Python examples, run against a real server with the
//! well-known JWT and HTTP libraries they use (tests/clients): the token they mint connects
//! as its user, and what they publish is on the channel. The page shows the files unchanged.

mod support;

use serde_json::{Value, json};
use support::external::{node, python, run};
use support::observability::read_repo_file;
use support::{Encoding, TestResult, TestServer, WsClient, api_key};

const SECRET: &str = "backend-guide-secret-0123456789abcdef";

fn config() -> String {
    format!("[auth]\ntoken_hmac_secret = \"{SECRET}\"\n[namespaces.feed]\nhistory_size = 10\n")
}

/// Runs one example against `server` and checks what it did.
async fn check_example(server: &TestServer, mut cmd: tokio::process::Command) -> TestResult {
    cmd.env("PUSHWIRE_URL", server.http_url(""))
        .env("PUSHWIRE_API_KEY", api_key())
        .env("PUSHWIRE_TOKEN_SECRET", SECRET);
    let output: Value = serde_json::from_str(run(cmd).await?.trim())?;
    let (_, connected) = WsClient::connect_with(
        &server.ws_url(),
        Encoding::Json,
        json!({"token": output["token"]}),
    )
    .await?;
    assert_eq!(connected["user"], "alice", "{connected}");
    let offset = output["result"]["offset"].as_u64().ok_or("no offset")?;
    let (_, history) = server.get("/api/history?channel=feed:orders").await?;
    let published = history["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["offset"] == offset)
        .ok_or("the publication is not in history")?;
    assert_eq!(published["data"], json!({"order": 42, "status": "shipped"}));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_example_mints_a_token_and_publishes() -> TestResult {
    let server = TestServer::start(&config()).await?;
    check_example(&server, node("backend_publish.mjs", &[])?).await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_mints_a_token_and_publishes() -> TestResult {
    let server = TestServer::start(&config()).await?;
    check_example(&server, python("backend_publish.py", &[])?).await?;
    server.stop().await
}

#[test]
fn the_guide_shows_the_tested_files_unchanged() -> TestResult {
    let guide = read_repo_file("docs/backend.md")?;
    for (file, fence) in [
        ("tests/clients/backend_publish.mjs", "```js\n"),
        ("tests/clients/backend_publish.py", "```python\n"),
    ] {
        let code = read_repo_file(file)?;
        assert!(
            guide.contains(&format!("{fence}{code}```")),
            "docs/backend.md does not show {file} as it is"
        );
    }
    for language in ["## Node", "## Python", "## PHP", "## Go"] {
        assert!(guide.contains(language), "no {language} section");
    }
    Ok(())
}
