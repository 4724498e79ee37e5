//! Scenario `recover`: how long a client takes to catch up on messages it missed.
//!
//! Each round: a client subscribes to a history channel and notes its `offset`/`epoch`,
//! disconnects; the publisher posts `--missed` messages through the API; a new client
//! connects and subscribes with `recover` {offset, epoch}. Measured from sending that
//! `subscribe` to the `subscribed` reply, and to having every missed message. The round
//! passes when the reply says `recovered: true` and the messages carry exactly the offsets
//! after the noted one, in order, each once (PROTOCOL.md section 4).
//!
//! One connection at a time, JSON encoding: this measures the server's recovery path, not
//! the load generator.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use clap::Args;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::wire::bench_data;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound on each wait for a server reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args, Serialize)]
pub struct RecoverArgs {
    /// WebSocket URL of the node the client (re)connects to.
    #[arg(long)]
    pub url: String,
    /// Base URL of the HTTP API the missed messages are published through (may be another
    /// node: the recovery then also crosses Redis).
    #[arg(long)]
    pub api_url: String,
    #[arg(long, env = "LOADTEST_API_KEY")]
    #[serde(skip)]
    pub api_key: String,
    /// A channel in a namespace with `history_size` of at least `--missed`.
    #[arg(long, default_value = "hist:recover")]
    pub channel: String,
    /// Messages published while the client is away.
    #[arg(long, default_value_t = 1000)]
    pub missed: u64,
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl RecoverArgs {
    /// Hard bound on the whole run.
    pub fn deadline(&self) -> Duration {
        let per_round = 3 * REPLY_TIMEOUT.as_secs() + self.missed / 100;
        Duration::from_secs(30 + per_round * self.rounds as u64)
    }
}

/// One round's measurements.
#[derive(Debug, Serialize)]
pub struct Round {
    pub from_offset: u64,
    pub publish_ms: f64,
    /// From sending `subscribe` with `recover` to the `subscribed` reply.
    pub subscribed_ms: f64,
    /// From sending `subscribe` with `recover` to the last missed message.
    pub recovered_all_ms: f64,
    pub recovered_flag: bool,
    pub messages: u64,
    /// Messages whose offset was not the next expected one.
    pub out_of_order: u64,
}

/// Runs every round; the exit code is 2 when any round did not recover exactly.
pub async fn run(args: &RecoverArgs) -> anyhow::Result<i32> {
    ensure!(
        args.missed > 0 && args.rounds > 0,
        "--missed and --rounds must be positive"
    );
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let r = one_round(args, &http)
            .await
            .with_context(|| format!("round {round}"))?;
        eprintln!(
            "round {round}: subscribed in {:.2} ms, all {} missed messages in {:.2} ms (recovered: {}, out of order: {})",
            r.subscribed_ms, r.messages, r.recovered_all_ms, r.recovered_flag, r.out_of_order
        );
        rounds.push(r);
    }
    let passed = rounds
        .iter()
        .all(|r| r.recovered_flag && r.messages == args.missed && r.out_of_order == 0);
    let mut all: Vec<f64> = rounds.iter().map(|r| r.recovered_all_ms).collect();
    all.sort_by(f64::total_cmp);
    println!(
        "recover {} missed: min {:.2} ms  median {:.2} ms  max {:.2} ms over {} rounds; {}",
        args.missed,
        all[0],
        all[all.len() / 2],
        all[all.len() - 1],
        all.len(),
        if passed { "PASS" } else { "FAIL" }
    );
    if let Some(path) = &args.out {
        let results =
            json!({"scenario": "recover", "params": args, "rounds": rounds, "passed": passed});
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(if passed { 0 } else { 2 })
}

async fn one_round(args: &RecoverArgs, http: &reqwest::Client) -> anyhow::Result<Round> {
    let mut ws = open(&args.url).await?;
    let reply = request(
        &mut ws,
        json!({"op": "subscribe", "id": 2, "channel": args.channel}),
    )
    .await?;
    let (offset, epoch) = position(&reply)?;
    let _ = ws.close(None).await;

    let started = Instant::now();
    publish_all(args, http).await?;
    let publish_ms = started.elapsed().as_secs_f64() * 1e3;

    let mut ws = open(&args.url).await?;
    let subscribe = json!({"op": "subscribe", "id": 2, "channel": args.channel,
        "recover": {"offset": offset, "epoch": epoch}});
    let sent = Instant::now();
    ws.send(Message::text(subscribe.to_string())).await?;
    let mut r = Round {
        from_offset: offset,
        publish_ms,
        subscribed_ms: 0.0,
        recovered_all_ms: 0.0,
        recovered_flag: false,
        messages: 0,
        out_of_order: 0,
    };
    let mut subscribed = false;
    while !subscribed || r.messages < args.missed {
        for msg in next_batch(&mut ws).await? {
            match msg["op"].as_str() {
                Some("subscribed") => {
                    subscribed = true;
                    r.subscribed_ms = sent.elapsed().as_secs_f64() * 1e3;
                    r.recovered_flag = msg["recovered"] == true;
                }
                Some("message") => {
                    r.messages += 1;
                    if msg["offset"].as_u64() != Some(offset + r.messages) {
                        r.out_of_order += 1;
                    }
                }
                Some("error") => bail!("subscribe with recover failed: {msg}"),
                _ => {}
            }
        }
        r.recovered_all_ms = sent.elapsed().as_secs_f64() * 1e3;
    }
    let _ = ws.close(None).await;
    Ok(r)
}

/// Connects (JSON subprotocol) and completes `connect`.
async fn open(url: &str) -> anyhow::Result<Ws> {
    let mut upgrade = url.into_client_request()?;
    upgrade.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("pushwire.v1.json"),
    );
    let (mut ws, _) = timeout(REPLY_TIMEOUT, connect_async(upgrade))
        .await
        .context("upgrade timed out")??;
    request(&mut ws, json!({"op": "connect", "id": 1})).await?;
    Ok(ws)
}

/// Sends a request and waits for the reply carrying its id.
async fn request(ws: &mut Ws, msg: Value) -> anyhow::Result<Value> {
    let id = msg["id"].clone();
    ws.send(Message::text(msg.to_string())).await?;
    loop {
        for reply in next_batch(ws).await? {
            if reply["id"] == id {
                ensure!(reply["op"] != "error", "request failed: {reply}");
                return Ok(reply);
            }
        }
    }
}

/// The next text frame, split into its messages.
async fn next_batch(ws: &mut Ws) -> anyhow::Result<Vec<Value>> {
    loop {
        let frame = timeout(REPLY_TIMEOUT, ws.next())
            .await
            .context("no reply in time")?
            .context("connection closed")??;
        let text: Utf8Bytes = match frame {
            Message::Text(text) => text,
            Message::Close(close) => bail!("closed by the server: {close:?}"),
            _ => continue,
        };
        return serde_json::Deserializer::from_str(text.as_str())
            .into_iter::<Value>()
            .map(|v| v.context("undecodable message"))
            .collect();
    }
}

/// `offset` and `epoch` of a `subscribed` reply.
fn position(reply: &Value) -> anyhow::Result<(u64, String)> {
    let epoch = reply["epoch"].as_str().context(
        "`subscribed` has no epoch: the channel's namespace has no history (history_size > 0)",
    )?;
    Ok((reply["offset"].as_u64().unwrap_or(0), epoch.to_string()))
}

/// Publishes `--missed` messages, one after the other.
async fn publish_all(args: &RecoverArgs, http: &reqwest::Client) -> anyhow::Result<()> {
    let url = format!("{}/api/publish", args.api_url.trim_end_matches('/'));
    for seq in 0..args.missed {
        let data: Value = serde_json::from_str(&bench_data(0, seq, 0, args.payload_bytes))?;
        let response = http
            .post(&url)
            .bearer_auth(&args.api_key)
            .json(&json!({"channel": args.channel, "data": data}))
            .timeout(REPLY_TIMEOUT)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "publish answered {}",
            response.status()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn position_needs_an_epoch() {
        let reply = json!({"op": "subscribed", "id": 2, "offset": 7, "epoch": "e1"});
        assert_eq!(position(&reply).unwrap(), (7, "e1".to_string()));
        assert!(position(&json!({"op": "subscribed", "id": 2})).is_err());
    }
}
