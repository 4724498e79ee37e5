//! `pushwire check-config` refuses values that would crash a node or make it misbehave
//! (zero intervals, timeouts and buffers, a node timeout within one heartbeat, a
//! publication larger than half a client's queue, a short token secret, a trusted proxy
//! that is no address), naming the key,
//! and prints a configuration error's cause once.

mod support;

use support::{TestResult, fail};

/// Runs `pushwire check-config` on `toml`; returns (success, stderr).
async fn check_config(toml: &str) -> TestResult<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pushwire.toml");
    std::fs::write(&path, toml)?;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .await?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Expects `toml` to be refused with an error that names `key`.
async fn refused(toml: &str, key: &str) -> TestResult {
    let (ok, stderr) = check_config(toml).await?;
    if ok {
        return fail(format!("check-config accepted {toml:?}"));
    }
    assert!(
        stderr.contains(&format!("`{key}`")),
        "the error for {toml:?} does not name {key}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_redis_timers_and_buffers_are_refused() -> TestResult {
    for key in [
        "probe_interval_ms",
        "heartbeat_interval_ms",
        "handoff_buffer",
        "presence_ttl_secs",
        "connect_timeout_ms",
        "command_timeout_ms",
        "node_timeout_ms",
    ] {
        refused(&format!("[redis]\n{key} = 0\n"), &format!("redis.{key}")).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inverted_pairs_are_refused() -> TestResult {
    // Nodes would drop each other from the cluster view between two heartbeats.
    refused(
        "[redis]\nheartbeat_interval_ms = 3000\nnode_timeout_ms = 2000\n",
        "redis.node_timeout_ms",
    )
    .await?;
    // One publication would evict every subscriber with 4008.
    refused(
        "[client]\nqueue_max_bytes = 65536\n[api]\nmax_publish_bytes = 100000\n",
        "api.max_publish_bytes",
    )
    .await?;
    refused(
        "[client]\nqueue_max_bytes = 65536\n[api]\nmax_publish_bytes = 40000\n",
        "api.max_publish_bytes",
    )
    .await?;
    let (ok, stderr) =
        check_config("[client]\nqueue_max_bytes = 65536\n[api]\nmax_publish_bytes = 32768\n")
            .await?;
    assert!(ok, "half the queue is allowed: {stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_entry_must_parse() -> TestResult {
    for entry in ["10.0.0.0/33", "proxy.internal", "10.0.0"] {
        refused(
            &format!("[server]\ntrusted_proxies = [\"127.0.0.1\", \"{entry}\"]\n"),
            "server.trusted_proxies[1]",
        )
        .await?;
    }
    let (ok, stderr) =
        check_config("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\", \"fd00::/8\"]\n")
            .await?;
    assert!(ok, "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_token_secret_is_refused_without_being_echoed() -> TestResult {
    let short = "thirty-one-bytes-secret-0123456";
    refused(
        &format!("[auth]\ntoken_hmac_secret = \"{short}\"\n"),
        "auth.token_hmac_secret",
    )
    .await?;
    let (_, stderr) = check_config(&format!("[auth]\ntoken_hmac_secret = \"{short}\"\n")).await?;
    assert!(!stderr.contains(short), "the secret was printed: {stderr}");
    let (ok, stderr) = check_config(&format!("[auth]\ntoken_hmac_secret = \"{short}7\"\n")).await?;
    assert!(ok, "32 bytes are enough: {stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_error_is_printed_once() -> TestResult {
    for (toml, needle) in [
        ("[client]\nping_intervall = 3\n", "ping_intervall"),
        (
            "[client]\nping_interval_secs = \"soon\"\n",
            "ping_interval_secs",
        ),
        (
            "[redis]\nprobe_interval_ms = 0\n",
            "redis.probe_interval_ms",
        ),
        ("[api]\nbatch_parallelism = 0\n", "api.batch_parallelism"),
    ] {
        let (ok, stderr) = check_config(toml).await?;
        assert!(!ok, "accepted {toml:?}");
        let lines = stderr.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(lines, 1, "the cause is not printed exactly once: {stderr}");
    }
    Ok(())
}
