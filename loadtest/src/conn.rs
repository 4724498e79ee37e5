//! One simulated client: dial from a source address, upgrade, `connect`, `subscribe`, then
//! listen until told to stop.
//!
//! While listening it answers `ping` with `pong`, records the publish-to-deliver latency and
//! the per-stream sequence of every benchmark `message`, and notices when the server goes
//! quiet for longer than `ping_interval + pong_timeout` (a dead connection). A connection
//! that ends early still waits for the stop signal, because its losses are only known once
//! the publisher's final counts are (they arrive with the stop, see [`ConnContext`]).
//!
//! Memory per connection is kept small on purpose: tungstenite allocates its read buffer up
//! front, so the WebSocket config asks for a few KiB instead of the 128 KiB default.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};
use tokio_util::sync::CancellationToken;

use crate::addrs::{Target, source_for};
use crate::seq::{SeqOutcome, SeqTracker};
use crate::stats::Stats;
use crate::wire::{
    ClientMsg, Encoding, ServerMsg, ServerOp, channel_for, decode_batch, unix_micros,
};

type Ws = WebSocketStream<TcpStream>;

/// Sent as `client` in `connect`.
const CLIENT_NAME: &str = concat!("pushwire-loadtest/", env!("CARGO_PKG_VERSION"));
/// Publisher streams a subscriber keeps trackers for; higher `s` values are ignored.
const MAX_STREAMS: usize = 256;
/// Used until `connected` tells the real values (the PROTOCOL.md defaults).
const DEFAULT_PING_INTERVAL: f64 = 25.0;
const DEFAULT_PONG_TIMEOUT: f64 = 10.0;
/// Extra quiet time tolerated on top of `ping_interval + pong_timeout` before calling a
/// connection dead: the load generator itself may be slow to read under load.
const DEAD_SLACK: Duration = Duration::from_secs(5);

/// What every connection of one process shares.
#[derive(Debug)]
pub struct ConnContext {
    pub encoding: Encoding,
    pub channel: String,
    /// Channels the connections are spread over (see [`channel_for`]).
    pub channels: usize,
    /// Share of connections that stop reading once subscribed.
    pub slow_fraction: f64,
    pub handshake: Handshake,
    pub targets: Vec<Target>,
    pub sources: Vec<IpAddr>,
    pub ws_config: WebSocketConfig,
    /// Bound on dial + upgrade + connect + subscribe.
    pub connect_timeout: Duration,
    pub stats: Arc<Stats>,
    /// Cancelled when the run ends.
    pub stop: CancellationToken,
    /// Seqs published per stream, set just before `stop` when the run published anything.
    pub published: OnceLock<Vec<u64>>,
}

/// Runs connection number `index` to the end. `permit` bounds concurrent handshakes and is
/// released once this connection is ready or has failed.
pub async fn run(ctx: Arc<ConnContext>, index: usize, permit: OwnedSemaphorePermit) {
    let stats = Arc::clone(&ctx.stats);
    Stats::bump(&stats.counters.attempts);
    let started = Instant::now();
    let mut stage = Stage::Dial;
    let established = tokio::select! {
        r = timeout(ctx.connect_timeout, establish(&ctx, index, &mut stage)) => r,
        () = ctx.stop.cancelled() => return,
    };
    drop(permit);
    let mut session = match established {
        Ok(Ok(session)) => session,
        Ok(Err(err)) => return stage.fail(&stats, &format!("{err:#}")),
        Err(_elapsed) => return stage.fail(&stats, "timeout"),
    };
    Stats::bump(&stats.counters.ready);
    let micros = started.elapsed().as_micros() as u64;
    stats.connect_latency.record_all(index, &[micros]);
    if is_slow(index, ctx.slow_fraction) {
        // Never reads again: the kernel buffers fill and the server has to cope (queue,
        // then evict with 4008). Dropped at the end without a close handshake.
        Stats::bump(&stats.counters.slow);
        ctx.stop.cancelled().await;
        return Stats::bump(&stats.counters.finished);
    }

    let end = session.listen().await;
    if end != End::Stopped {
        Stats::bump(&stats.counters.dropped);
        match &end {
            End::Dead => Stats::bump(&stats.counters.dead),
            End::Closed(code) => stats.code("close", code.map_or("none".into(), |c| c.to_string())),
            End::Failed(err) => stats.code("io", short(err)),
            End::Stopped => {}
        }
        ctx.stop.cancelled().await;
    }
    if let Some(published) = ctx.published.get() {
        stats.add_seq(&session.outcome(published));
    }
    if end == End::Stopped {
        // The reply to our close is not awaited: thousands of connections end at once.
        let _ = timeout(Duration::from_secs(2), session.ws.close(None)).await;
    }
    Stats::bump(&stats.counters.finished);
}

/// Whether connection `index` is one of the `fraction` that stop reading: the first
/// `round(fraction × 100)` of every 100 consecutive indices, so they are spread evenly
/// over nodes, source addresses and worker processes.
pub fn is_slow(index: usize, fraction: f64) -> bool {
    let per_hundred = (fraction.clamp(0.0, 1.0) * 100.0).round() as usize;
    index % 100 < per_hundred
}

/// How far each connection goes before it just listens: the WebSocket upgrade only (the
/// server closes it after its `connect_timeout`), `connect`, or `connect` + `subscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Handshake {
    Upgrade,
    Connect,
    Subscribe,
}

/// How far a connection got, to name what failed when it fails.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Dial,
    Connect,
    Subscribe,
}

impl Stage {
    fn fail(self, stats: &Stats, reason: &str) {
        let (counter, kind) = match self {
            Stage::Dial => (&stats.counters.dial_failed, "dial"),
            Stage::Connect => (&stats.counters.connect_failed, "connect"),
            Stage::Subscribe => (&stats.counters.subscribe_failed, "subscribe"),
        };
        Stats::bump(counter);
        stats.code(kind, short(reason));
        Stats::bump(&stats.counters.finished);
    }
}

/// Why listening ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Stopped,
    Dead,
    Closed(Option<u16>),
    Failed(String),
}

async fn establish(
    ctx: &Arc<ConnContext>,
    index: usize,
    stage: &mut Stage,
) -> anyhow::Result<Session> {
    let target = &ctx.targets[index % ctx.targets.len()];
    let ws = dial(ctx, target, source_for(&ctx.sources, index)).await?;
    let mut session = Session::new(Arc::clone(ctx), index, ws);
    if ctx.handshake == Handshake::Upgrade {
        return Ok(session);
    }
    *stage = Stage::Connect;
    let connected = session
        .request(
            1,
            &ClientMsg::Connect {
                id: 1,
                client: CLIENT_NAME,
            },
        )
        .await?;
    Stats::bump(&ctx.stats.counters.connected);
    let interval = connected.ping_interval.unwrap_or(DEFAULT_PING_INTERVAL);
    let pong = connected.pong_timeout.unwrap_or(DEFAULT_PONG_TIMEOUT);
    session.dead_after = Duration::from_secs_f64((interval + pong).clamp(1.0, 3600.0)) + DEAD_SLACK;
    if ctx.handshake == Handshake::Connect {
        return Ok(session);
    }
    *stage = Stage::Subscribe;
    let channel = channel_for(&ctx.channel, ctx.channels, index);
    let subscribe = ClientMsg::Subscribe {
        id: 2,
        channel: &channel,
    };
    session.request(2, &subscribe).await?;
    Ok(session)
}

/// TCP connect from `source` (bound before connecting), then the WebSocket upgrade.
async fn dial(ctx: &ConnContext, target: &Target, source: Option<IpAddr>) -> anyhow::Result<Ws> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("socket")?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = socket.connect(target.addr).await.context("tcp connect")?;
    stream.set_nodelay(true).context("nodelay")?;
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .context("request")?;
    let protocol = HeaderValue::from_static(ctx.encoding.subprotocol());
    request
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, protocol);
    let (ws, _response) = client_async_with_config(request, stream, Some(ctx.ws_config))
        .await
        .context("upgrade")?;
    Ok(ws)
}

/// A connected client and what it has seen.
struct Session {
    ctx: Arc<ConnContext>,
    index: usize,
    ws: Ws,
    trackers: Vec<SeqTracker>,
    /// Replies (`connected`, `subscribed`, `error` with an id) not yet claimed.
    replies: Vec<ServerMsg>,
    /// Scratch buffers reused frame after frame.
    inbox: Vec<ServerMsg>,
    latencies: Vec<u64>,
    dead_after: Duration,
    last_heard: Instant,
}

impl Session {
    fn new(ctx: Arc<ConnContext>, index: usize, ws: Ws) -> Session {
        let dead_after =
            Duration::from_secs_f64(DEFAULT_PING_INTERVAL + DEFAULT_PONG_TIMEOUT) + DEAD_SLACK;
        Session {
            ctx,
            index,
            ws,
            trackers: Vec::new(),
            replies: Vec::new(),
            inbox: Vec::new(),
            latencies: Vec::new(),
            dead_after,
            last_heard: Instant::now(),
        }
    }

    /// Sends a request and reads until its reply; an `error` reply is an `Err`.
    async fn request(&mut self, id: u64, msg: &ClientMsg<'_>) -> anyhow::Result<ServerMsg> {
        self.ws
            .send(self.ctx.encoding.encode(msg)?)
            .await
            .context("send")?;
        loop {
            if let Some(pos) = self.replies.iter().position(|r| r.id == Some(id)) {
                let reply = self.replies.swap_remove(pos);
                if reply.op == ServerOp::Error {
                    let code = reply.code.unwrap_or(0);
                    anyhow::bail!("error {code}: {}", reply.message.unwrap_or_default());
                }
                return Ok(reply);
            }
            match self.ws.next().await {
                Some(frame) => {
                    if let Some(end) = self.on_frame(frame).await {
                        anyhow::bail!("ended before reply: {end:?}");
                    }
                }
                None => anyhow::bail!("closed before reply"),
            }
        }
    }

    /// Reads until the run stops or the connection ends.
    async fn listen(&mut self) -> End {
        loop {
            let deadline = self.last_heard + self.dead_after;
            tokio::select! {
                biased;
                () = self.ctx.stop.cancelled() => return End::Stopped,
                () = sleep_until(deadline) => return End::Dead,
                frame = self.ws.next() => match frame {
                    Some(frame) => if let Some(end) = self.on_frame(frame).await { return end },
                    None => return End::Closed(None),
                },
            }
        }
    }

    /// Handles one WebSocket read; `Some` when the connection is over.
    async fn on_frame(&mut self, frame: Result<Message, tungstenite::Error>) -> Option<End> {
        let stats = Arc::clone(&self.ctx.stats);
        let payload = match frame {
            Ok(Message::Text(text)) => text.into(),
            Ok(Message::Binary(bin)) => bin,
            Ok(Message::Close(close)) => return Some(End::Closed(close.map(|c| c.code.into()))),
            Ok(_) => return None, // control frames; tungstenite answers pings itself
            Err(err) => return Some(End::Failed(err.to_string())),
        };
        self.last_heard = Instant::now();
        Stats::bump(&stats.counters.frames);
        stats
            .counters
            .frame_bytes
            .fetch_add(payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut batch = std::mem::take(&mut self.inbox);
        let mut latencies = std::mem::take(&mut self.latencies);
        if decode_batch(self.ctx.encoding, &payload, &mut batch).is_err() {
            Stats::bump(&stats.counters.decode_errors);
        }
        let now = unix_micros();
        let mut pongs = 0;
        for msg in batch.drain(..) {
            match msg.op {
                ServerOp::Message => self.on_message(&msg, now, &mut latencies),
                ServerOp::Ping => pongs += 1,
                ServerOp::Connected | ServerOp::Subscribed => self.replies.push(msg),
                ServerOp::Error => {
                    Stats::bump(&stats.counters.errors);
                    stats.code("error", msg.code.unwrap_or(0));
                    self.replies.push(msg);
                }
                ServerOp::Disconnect => {
                    Stats::bump(&stats.counters.disconnects);
                    let reason = msg.reason.as_deref().unwrap_or("");
                    stats.code(
                        "disconnect",
                        format!("{} {}", msg.code.unwrap_or(0), short(reason)),
                    );
                }
                ServerOp::Other => {}
            }
        }
        stats.delivery_latency.record_all(self.index, &latencies);
        latencies.clear();
        (self.inbox, self.latencies) = (batch, latencies);
        for _ in 0..pongs {
            Stats::bump(&stats.counters.pings);
            let pong = match self.ctx.encoding.encode(&ClientMsg::Pong) {
                Ok(pong) => pong,
                Err(err) => return Some(End::Failed(err.to_string())),
            };
            if let Err(err) = self.ws.send(pong).await {
                return Some(End::Failed(err.to_string()));
            }
            Stats::bump(&stats.counters.pongs);
        }
        None
    }

    fn on_message(&mut self, msg: &ServerMsg, now: u64, latencies: &mut Vec<u64>) {
        let counters = &self.ctx.stats.counters;
        Stats::bump(&counters.messages);
        let Some(probe) = msg.data else {
            return Stats::bump(&counters.foreign_messages);
        };
        let (Some(ts), Some(seq), Some(stream)) = (probe.ts, probe.seq, probe.s) else {
            return Stats::bump(&counters.foreign_messages);
        };
        let stream = stream as usize;
        if stream >= MAX_STREAMS {
            return Stats::bump(&counters.foreign_messages);
        }
        latencies.push(now.saturating_sub(ts));
        if self.trackers.len() <= stream {
            self.trackers.resize_with(stream + 1, SeqTracker::default);
        }
        self.trackers[stream].observe(seq);
    }

    /// Sums this connection's verdict over every stream the publisher ran.
    fn outcome(&self, published: &[u64]) -> SeqOutcome {
        let mut sum = SeqOutcome::default();
        let empty = SeqTracker::default();
        let channels = self.ctx.channels.max(1);
        for (stream, &count) in published.iter().enumerate() {
            if stream % channels != self.index % channels {
                continue; // that stream publishes to another channel
            }
            sum.add(&self.trackers.get(stream).unwrap_or(&empty).outcome(count));
        }
        sum
    }
}

/// The first line of an error, cut short, as a code-table key.
fn short(reason: &str) -> String {
    let line = reason.lines().next().unwrap_or(reason);
    line.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_connections_are_the_asked_share() {
        let slow = (0..1000).filter(|&i| is_slow(i, 0.1)).count();
        assert_eq!(slow, 100);
        assert!(!(0..1000).any(|i| is_slow(i, 0.0)));
        assert!((0..100).all(|i| is_slow(i, 1.0)));
    }
}
