//! The origin allowlist for browser upgrades (cross-site WebSocket hijacking): a listed
//! origin, or no `Origin` at all (not a browser), is let in; any other origin gets 403.
//! A server whose allowlist is open says so at startup.

mod support;

use std::process::Stdio;

use serde_json::json;
use support::{Encoding, TestResult, TestServer, WAIT, WsClient, api_key, fail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_tungstenite::tungstenite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_origins_may_upgrade() -> TestResult {
    let server = TestServer::start(
        "[client]\nallowed_origins = [\"https://app.example\", \"http://localhost:3000\"]\n",
    )
    .await?;
    let url = server.ws_url();
    for origin in [
        "https://app.example",
        "HTTPS://APP.EXAMPLE",
        "http://localhost:3000",
    ] {
        let headers = [("Origin", origin)];
        let mut client = WsClient::open_with(&url, Encoding::Json, &headers, None).await?;
        assert_eq!(
            client.request("connect", json!({})).await?["op"],
            "connected"
        );
    }
    let (_no_origin, _) = WsClient::connect(&url, Encoding::Json).await?;
    for origin in [
        "https://evil.example",
        "https://app.example.evil.example",
        "http://app.example",
        "null",
    ] {
        let headers = [("Origin", origin)];
        match WsClient::open_with(&url, Encoding::Json, &headers, None).await {
            Ok(_) => return fail(format!("{origin} was let in")),
            Err(err) => match err.downcast_ref::<tungstenite::Error>() {
                Some(tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status().as_u16(), 403, "{origin}");
                    let body = response.body().as_deref().unwrap_or_default();
                    let body: serde_json::Value = serde_json::from_slice(body)?;
                    assert_eq!(body["error"]["code"], 103);
                }
                _ => return fail(format!("{origin}: {err}")),
            },
        }
    }
    server.stop().await
}

/// Starts the binary with `config`, waits until it listens, stops it, and returns what it
/// logged.
async fn startup_log(config: &str) -> TestResult<String> {
    let file = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(
        file.path(),
        format!("[api]\nkeys = [\"{}\"]\n{config}", api_key()),
    )?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(file.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let listening = tokio::time::timeout(WAIT, BufReader::new(stdout).lines().next_line())
        .await??
        .unwrap_or_default();
    assert!(
        listening.starts_with("pushwire listening on"),
        "{listening}"
    );
    child.start_kill()?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let mut log = String::new();
    tokio::time::timeout(WAIT, stderr.read_to_string(&mut log)).await??;
    tokio::time::timeout(WAIT, child.wait()).await??;
    Ok(log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_allowlist_is_warned_about_at_startup() -> TestResult {
    let open = startup_log("").await?;
    let warnings: Vec<&str> = open
        .lines()
        .filter(|l| l.contains("allowed_origins"))
        .collect();
    assert_eq!(warnings.len(), 1, "{open}");
    assert!(warnings[0].contains("WARN"), "{open}");
    let closed = startup_log("[client]\nallowed_origins = [\"https://app.example\"]\n").await?;
    assert!(!closed.contains("allowed_origins"), "{closed}");
    Ok(())
}
