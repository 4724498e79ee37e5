//! Secrets stay out of what the server prints: at the most verbose log level (even when
//! `RUST_LOG` asks for tungstenite's frame dumps by name), nothing
//! the server logs while clients authenticate (well or badly) and backends publish (with
//! right and wrong keys) contains a token, the token secret or an API key; and
//! `check-config` shows secrets (Pusher app secrets too) as `<redacted>`.

mod support;

use std::process::Stdio;

use pushwire::auth::{mint_hs256, unix_now};
use serde_json::json;
use support::{Encoding, TestResult, WAIT, WsClient, fail};
use tokio::io::{AsyncBufReadExt, BufReader};

const SECRET: &str = "log-secret-s3cr3t-0123456789abcdef";
const API_KEY: &str = "log-api-key-k3y-0123456789";
const WRONG_KEY: &str = "log-wrong-key-w7ong-0123456789";
const PUSHER_SECRET: &str = "log-pusher-secret-p5h-0123456789";

fn config() -> String {
    format!(
        "[api]\nkeys = [\"{API_KEY}\"]\n[auth]\ntoken_hmac_secret = \"{SECRET}\"\n\
         [namespaces.private]\nallow_subscribe = \"token\"\n\
         [redis]\nurl = \"redis://pushwire:redis-pa55word@127.0.0.1:6379\"\n\
         [[pusher.apps]]\nid = \"4242\"\nkey = \"app-key\"\nsecret = \"{PUSHER_SECRET}\"\n"
    )
}

/// Connects, subscribes and refreshes with good and bad tokens; returns every token used.
async fn authenticate_every_way(url: &str) -> TestResult<Vec<String>> {
    let good = mint_hs256(SECRET, &json!({ "sub": "alice", "exp": unix_now() + 600 }))?;
    let expired = mint_hs256(SECRET, &json!({ "sub": "alice", "exp": unix_now() - 60 }))?;
    let forged = mint_hs256(
        "forged-secret",
        &json!({ "sub": "eve", "exp": unix_now() + 600 }),
    )?;
    let channel = "private:room";
    let sub = mint_hs256(
        SECRET,
        &json!({ "sub": "alice", "channel": channel, "exp": unix_now() + 600 }),
    )?;
    let (mut alice, _) =
        WsClient::connect_with(url, Encoding::Json, json!({ "token": good })).await?;
    alice
        .request("subscribe", json!({ "channel": channel, "token": sub }))
        .await?;
    alice
        .request(
            "subscribe",
            json!({ "channel": "private:x", "token": forged }),
        )
        .await?;
    alice.request("refresh", json!({ "token": good })).await?;
    alice
        .request("refresh", json!({ "token": expired }))
        .await?;
    let bearer = format!("Bearer {good}");
    let headers = [("Authorization", bearer.as_str())];
    let mut header_client = WsClient::open_with(url, Encoding::Msgpack, &headers, None).await?;
    header_client.request("connect", json!({})).await?;
    for token in [&expired, &forged] {
        let mut refused = WsClient::open(url, Encoding::Json).await?;
        refused
            .send(json!({ "op": "connect", "id": 1, "token": token }))
            .await?;
        refused.expect_close().await?;
    }
    Ok(vec![good, expired, forged, sub])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_logged_at_trace_level_contains_a_secret() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("pushwire.toml");
    std::fs::write(&config_path, config())?;
    let log_path = dir.path().join("stderr.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "trace,tungstenite=trace")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = tokio::time::timeout(WAIT, BufReader::new(stdout).lines().next_line())
        .await??
        .unwrap_or_default();
    let addr = line
        .strip_prefix("pushwire listening on ")
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .to_owned();

    let tokens = authenticate_every_way(&format!("ws://{addr}/ws")).await?;
    let http = reqwest::Client::new();
    for key in [API_KEY, WRONG_KEY] {
        http.post(format!("http://{addr}/api/publish"))
            .bearer_auth(key)
            .json(&json!({ "channel": "news", "data": 1 }))
            .send()
            .await?;
    }
    child.start_kill()?;
    tokio::time::timeout(WAIT, child.wait()).await??;

    let log = std::fs::read_to_string(&log_path)?;
    if log.lines().count() < 20 {
        return fail(format!("expected a verbose log, got:\n{log}"));
    }
    let mut secrets = vec![
        SECRET.to_owned(),
        API_KEY.to_owned(),
        WRONG_KEY.to_owned(),
        PUSHER_SECRET.to_owned(),
        "redis-pa55word".to_owned(),
    ];
    for token in tokens {
        // The signature is what makes a token a credential; its payload is public anyway.
        let signature = token.rsplit('.').next().unwrap_or_default().to_owned();
        secrets.push(token);
        secrets.push(signature);
    }
    for secret in secrets {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(&secret)).collect();
        assert!(leaks.is_empty(), "{secret:?} was logged: {leaks:#?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_redacts_secrets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pushwire.toml");
    std::fs::write(&path, config())?;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .await?;
    if !output.status.success() {
        return fail(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let printed = String::from_utf8(output.stdout)?;
    for secret in [SECRET, API_KEY, PUSHER_SECRET, "redis-pa55word"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    let table: toml::Table = printed.parse()?;
    assert_eq!(
        table["auth"]["token_hmac_secret"].as_str(),
        Some("<redacted>")
    );
    assert_eq!(
        table["api"]["keys"].as_array().map(Vec::len),
        Some(1),
        "the number of keys is still shown"
    );
    assert_eq!(
        table["redis"]["url"].as_str(),
        Some("redis://pushwire:<redacted>@127.0.0.1:6379")
    );
    assert_eq!(
        table["pusher"]["apps"][0]["secret"].as_str(),
        Some("<redacted>")
    );
    assert_eq!(
        table["pusher"]["apps"][0]["key"].as_str(),
        Some("app-key"),
        "the public key is still shown"
    );
    Ok(())
}
