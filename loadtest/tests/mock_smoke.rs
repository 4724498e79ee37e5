//! End-to-end runs of the `pushwire-loadtest` binary against a mock node (see
//! `support/mock.rs`): both scenarios, both encodings, in-process and with worker
//! processes, checked through the JSON results file and the exit code.

#![allow(clippy::unwrap_used)]

mod support {
    pub mod mock;
}

use std::path::PathBuf;

use serde_json::Value;
use support::mock::{API_KEY, MockNode};

fn out_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "pushwire-loadtest-{}-{name}.json",
        std::process::id()
    ))
}

async fn run(args: &[&str], out: &PathBuf) -> (i32, Value) {
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushwire-loadtest"))
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--no-bars")
        .status()
        .await
        .unwrap();
    let results: Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    let _ = std::fs::remove_file(out);
    (status.code().unwrap_or(-1), results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_every_connection_and_answers_pings() {
    let node = MockNode::start().await;
    let pid = std::process::id().to_string();
    let url = node.ws_url();
    let args = [
        "idle",
        "--url",
        &url,
        "--connections",
        "300",
        "--hold-secs",
        "3",
        "--settle-secs",
        "0",
        "--server-pid",
        &pid,
        "--source-ips",
        "127.0.0.2-127.0.0.4",
        "--require-zero-loss",
    ];
    let (code, r) = run(&args, &out_file("idle")).await;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["connections"]["ready"], 300);
    assert_eq!(r["connections"]["failed"], 0);
    assert!(r["traffic"]["pongs"].as_u64().unwrap() >= 300, "{r:#}");
    assert!(r["servers"][0]["rss_per_connection_bytes"].is_number());
    assert!(node.pongs.load(std::sync::atomic::Ordering::Relaxed) >= 300);
}

async fn fanout(encoding: &str, workers: &str) {
    let node = MockNode::start().await;
    let (url, api) = (node.ws_url(), node.api_url());
    let args = [
        "fanout",
        "--url",
        &url,
        "--api-url",
        &api,
        "--api-key",
        API_KEY,
        "--subscribers",
        "200",
        "--rate",
        "200",
        "--payload-bytes",
        "100",
        "--duration-secs",
        "2",
        "--encoding",
        encoding,
        "--workers",
        workers,
        "--require-zero-loss",
    ];
    let (code, r) = run(&args, &out_file(&format!("fanout-{encoding}-{workers}"))).await;
    assert_eq!(code, 0, "{r:#}");
    let d = &r["delivery"];
    let published = d["published"].as_u64().unwrap();
    assert!(published >= 50, "{d:#}");
    assert_eq!(d["delivered"].as_u64().unwrap(), 200 * published);
    assert_eq!(
        (
            d["lost"].as_u64(),
            d["duplicates"].as_u64(),
            d["reordered"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert!(d["latency"]["p99_us"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_json_in_process_loses_nothing() {
    fanout("json", "0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_msgpack_over_two_workers_loses_nothing() {
    fanout("msgpack", "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_key_fails_the_zero_loss_run() {
    let node = MockNode::start().await;
    let (url, api) = (node.ws_url(), node.api_url());
    let args = [
        "fanout",
        "--url",
        &url,
        "--api-url",
        &api,
        "--api-key",
        "wrong",
        "--subscribers",
        "10",
        "--rate",
        "20",
        "--duration-secs",
        "1",
        "--require-zero-loss",
    ];
    let (code, r) = run(&args, &out_file("badkey")).await;
    assert_eq!(code, 2, "{r:#}");
    assert_eq!(
        r["delivery"]["publish_errors"]["status:401"],
        r["delivery"]["published"]
    );
    assert_eq!(r["verdict"]["passed"], false);
}
