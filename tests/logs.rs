//! Logs of the real binary with `log.format = "json"`: one JSON object per line, sessions
//! identified by `client_id` and `user` on their span, nothing per message at info, no
//! token, API key or secret anywhere (even at debug), a SIGHUP reload is logged, and the
//! WebSocket library stays quiet unless debug is asked for.

mod support;

use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite;

use pushwire::auth::{ConnectClaims, mint_hs256, unix_now};
use support::{Encoding, TestResult, WAIT, WsClient, fail};

const API_KEY: &str = "log-test-api-key-7f3a9c";
const SECRET: &str = "log-test-hmac-secret-5be21d7c4e9a0f1b";
const MESSAGES: usize = 200;

fn send_signal(pid: u32, signal: &str) -> TestResult {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        return fail(format!("kill -{signal} failed"));
    }
    Ok(())
}

/// A started server binary whose stderr (the log) is being collected.
struct Logging {
    child: tokio::process::Child,
    pid: u32,
    /// The address from its `pushwire listening on ADDR` line.
    addr: String,
    /// Everything it wrote to stderr, once it has exited.
    collected: tokio::task::JoinHandle<String>,
}

/// Starts `command` (a `pushwire serve`), waits for its listening line and collects its log.
async fn start_logging(mut command: Command) -> TestResult<Logging> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("no pid")?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let line = tokio::time::timeout(WAIT, stdout.next_line())
        .await??
        .ok_or("exited before listening")?;
    let addr = line
        .strip_prefix("pushwire listening on ")
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let collected = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    Ok(Logging {
        child,
        pid,
        addr,
        collected,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_session_identity_and_never_secrets() -> TestResult {
    let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(
        config.path(),
        format!(
            "[api]\nkeys = [\"{API_KEY}\"]\n[auth]\ntoken_hmac_secret = \"{SECRET}\"\n\
             [log]\nformat = \"json\"\nlevel = \"pushwire=debug,info\"\n"
        ),
    )?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_pushwire"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config.path())
        .env_remove("RUST_LOG");
    let Logging {
        mut child,
        pid,
        addr,
        collected,
    } = start_logging(command).await?;

    let token = mint_hs256(
        SECRET,
        &ConnectClaims {
            sub: "alice".into(),
            exp: unix_now() + 600,
            info: None,
            channels: None,
        },
    )?;
    let ws_url = format!("ws://{addr}/ws");
    let (mut client, connected) =
        WsClient::connect_with(&ws_url, Encoding::Json, json!({ "token": token })).await?;
    let client_id = connected["client_id"]
        .as_str()
        .ok_or("no client_id")?
        .to_owned();
    client
        .request("subscribe", json!({ "channel": "news" }))
        .await?;
    let http = reqwest::Client::new();
    for n in 0..MESSAGES {
        let status = http
            .post(format!("http://{addr}/api/publish"))
            .bearer_auth(API_KEY)
            .json(&json!({ "channel": "news", "data": { "marker": "payload-marker", "n": n } }))
            .send()
            .await?
            .status();
        if status != 200 {
            return fail(format!("publish answered {status}"));
        }
    }
    for _ in 0..MESSAGES {
        client.recv_message().await?;
    }
    send_signal(pid, "HUP")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_signal(pid, "TERM")?;
    let _ = client.expect_close().await;
    let status = tokio::time::timeout(WAIT * 2, child.wait()).await??;
    assert!(status.success(), "exit status {status}");
    let text = tokio::time::timeout(WAIT, collected).await??;

    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|_| format!("not JSON: {l}")))
        .collect::<Result<_, _>>()?;
    for (needle, what) in [
        (API_KEY, "the API key"),
        (SECRET, "the token secret"),
        (token.as_str(), "the token"),
    ] {
        assert!(!text.contains(needle), "the logs contain {what}");
    }
    assert!(
        !text.contains("payload-marker"),
        "message data is never logged"
    );
    let level = |l: &Value| l["level"].as_str().unwrap_or_default().to_owned();
    let above_debug = lines
        .iter()
        .filter(|l| !["DEBUG", "TRACE"].contains(&level(l).as_str()))
        .count();
    assert!(
        above_debug < 20,
        "{above_debug} lines at info and above for {MESSAGES} messages: something logs per message"
    );
    assert!(
        lines.iter().any(
            |l| l["message"] == "configuration reloaded (limits and namespaces)"
                && level(l) == "INFO"
        ),
        "the SIGHUP reload is logged at info"
    );
    // Session events carry the session span's client_id and user.
    let session_events: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "session")
        .collect();
    assert!(
        !session_events.is_empty(),
        "no event inside a session span:\n{text}"
    );
    for event in session_events {
        assert_eq!(event["span"]["client_id"], client_id.as_str(), "{event}");
        assert_eq!(event["span"]["user"], "alice", "{event}");
    }
    Ok(())
}

/// Text logs written to a pipe (a file, a log collector) carry no terminal colour codes,
/// and session events still name their session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_pipe_have_no_escape_codes() -> TestResult {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pushwire"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "pushwire=debug,info")
        .env("PUSHWIRE_API__KEYS", format!("[\"{API_KEY}\"]"))
        .env_remove("NO_COLOR");
    let Logging {
        mut child,
        pid,
        addr,
        collected,
    } = start_logging(command).await?;
    let (mut client, connected) =
        WsClient::connect_with(&format!("ws://{addr}/ws"), Encoding::Json, json!({})).await?;
    let client_id = connected["client_id"]
        .as_str()
        .ok_or("no client_id")?
        .to_owned();
    client
        .request("subscribe", json!({ "channel": "news" }))
        .await?;
    send_signal(pid, "TERM")?;
    let _ = client.expect_close().await;
    let status = tokio::time::timeout(WAIT * 2, child.wait()).await??;
    assert!(status.success(), "exit status {status}");
    let text = tokio::time::timeout(WAIT, collected).await??;
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in piped logs:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("session{") && l.contains(&client_id)),
        "no event inside the session span:\n{text}"
    );
    Ok(())
}

/// Opens a connection, connects, and closes it: once the server has answered the close
/// (with its close reply, or by ending the connection), it has logged what it logs for it.
async fn open_and_close_one_connection(addr: &str) -> TestResult {
    let (mut client, _) =
        WsClient::connect_with(&format!("ws://{addr}/ws"), Encoding::Json, json!({})).await?;
    client.socket.close(None).await?;
    loop {
        match tokio::time::timeout(WAIT, client.socket.next()).await {
            Err(_) => return fail("no close reply from the server"),
            Ok(Some(Ok(tungstenite::Message::Close(_)) | Err(_)) | None) => return Ok(()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The log lines a server wrote while one connection opened and closed, with `RUST_LOG`
/// set to `rust_log` (`None`: unset, so `log.level` applies; its default is `info`).
async fn log_of_one_connection(rust_log: Option<&str>) -> TestResult<String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pushwire"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PUSHWIRE_API__KEYS", format!("[\"{API_KEY}\"]"));
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let Logging {
        mut child,
        pid,
        addr,
        collected,
    } = start_logging(command).await?;
    open_and_close_one_connection(&addr).await?;
    send_signal(pid, "TERM")?;
    let status = tokio::time::timeout(WAIT * 2, child.wait()).await??;
    assert!(status.success(), "exit status {status}");
    Ok(tokio::time::timeout(WAIT, collected).await??)
}

/// tungstenite's per-connection debug lines ("Received close frame", "Replying to close")
/// appear only when debug is asked for: the cap that keeps its trace lines (frame
/// payloads) out of the log must not raise it above the configured level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tungstenite_logs_nothing_per_connection_at_the_default_level_or_warn() -> TestResult {
    for rust_log in [None, Some("warn")] {
        let text = log_of_one_connection(rust_log).await?;
        let noisy: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("tungstenite") || l.contains(" DEBUG "))
            .collect();
        assert!(
            noisy.is_empty(),
            "RUST_LOG={rust_log:?} logged debug lines: {noisy:#?}"
        );
    }
    // The same connection does produce them when debug is asked for, and trace stays
    // capped (no frame contents).
    let text = log_of_one_connection(Some("trace")).await?;
    // `tungstenite::protocol`, not `tokio_tungstenite` (its trace lines carry no payload).
    let tungstenite: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" tungstenite::"))
        .collect();
    assert!(
        tungstenite.iter().any(|l| l.contains(" DEBUG ")),
        "no tungstenite debug line at trace:\n{text}"
    );
    assert!(
        !tungstenite.iter().any(|l| l.contains(" TRACE ")),
        "tungstenite trace lines were logged: {tungstenite:#?}"
    );
    Ok(())
}
