//! Graceful shutdown of the real binary: SIGTERM sends every client `disconnect` and
//! close 1001, and the process exits 0 within the grace period.

mod support;

use serde_json::json;
use support::{BinaryServer, Encoding, TestResult, WsClient, fail};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_and_exits_zero() -> TestResult {
    let mut server = BinaryServer::start("[server]\nshutdown_grace_secs = 5\n").await?;
    let mut clients = Vec::new();
    for encoding in [Encoding::Json, Encoding::Msgpack, Encoding::Json] {
        let (mut client, _) = WsClient::connect(&server.ws_url(), encoding).await?;
        client
            .request("subscribe", json!({"channel": "news"}))
            .await?;
        clients.push(client);
    }
    let started = std::time::Instant::now();
    server.terminate()?;
    for client in &mut clients {
        let (code, seen) = client.expect_close().await?;
        assert_eq!(code, 1001);
        assert_eq!(
            seen.last(),
            Some(
                &json!({"op": "disconnect", "code": 1001, "reason": "server going away", "reconnect": true})
            )
        );
    }
    drop(clients);
    let status =
        tokio::time::timeout(std::time::Duration::from_secs(7), server.child.wait()).await??;
    if !status.success() {
        return fail(format!("exit status {status}"));
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(7));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_the_bad_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[client]\nqueue_max_bytes = 0\n")?;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("client.queue_max_bytes"), "{stderr}");
    Ok(())
}
