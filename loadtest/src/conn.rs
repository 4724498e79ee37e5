//! One simulated client that connects once: dial from a source address, upgrade,
//! `connect`, `subscribe`, then listen (see `session`) until told to stop. The dial and
//! handshake here are shared with the reconnecting clients of `durable`.
//!
//! A connection that ends early still waits for the stop signal, because its losses are
//! only known once the publisher's final counts are (they arrive with the stop, see
//! [`ConnContext`]).
//!
//! Slow clients (`is_slow`) stop reading, either as soon as they are subscribed
//! ([`SlowMode::FromStart`], `fanout --slow-fraction`) or when the run says so
//! ([`SlowMode::OnSignal`], the `slow` scenario). Their socket's receive buffer can be made
//! small before connecting, so the server's bounded queue, not the kernel, absorbs what
//! they do not read. At the end they read again, without decoding, to learn whether the
//! server evicted them (close 4008) or cut them off otherwise.
//!
//! Memory per connection is kept small on purpose: each connection's read buffer
//! (`ws_client`) is allocated up front, 1 KiB by default (`--read-buffer-bytes`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpSocket;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::http::Uri;

use crate::addrs::{Target, source_for};
use crate::codec::Encoding;
use crate::context::{ConnContext, Handshake, SlowMode, is_slow};
use crate::session::{DEAD_SLACK, End, Receipts, Session, Ws, short};
use crate::stats::Stats;
use crate::wire::{ClientMsg, RecoverFrom, channel_for};
use crate::ws_client::WsClient;

/// Sent as `client` in `connect`.
const CLIENT_NAME: &str = concat!("pushwire-loadtest/", env!("CARGO_PKG_VERSION"));
/// How long a slow client reads at the end to find out how its connection ended: the
/// stale data in the socket buffers (up to a few MiB per client) comes first. Below the
/// 10 s grace the run gives its connections to finish.
const SKIM_LIMIT: Duration = Duration::from_secs(8);

/// Opens connection `index`'s first session on node `index mod N`, counting the attempt,
/// its failure stage or its readiness and connect latency. `permit` is released once the
/// session is up or has failed. `None` when it failed or the run stopped first.
pub async fn first_session(
    ctx: &Arc<ConnContext>,
    index: usize,
    permit: OwnedSemaphorePermit,
    receipts: &mut Receipts,
) -> Option<Session> {
    let stats = &ctx.stats;
    Stats::bump(&stats.counters.attempts);
    let started = Instant::now();
    let mut stage = Stage::Dial;
    let node = index % ctx.targets.len();
    let establishing = establish(ctx, index, node, &mut stage, receipts, false);
    let established = tokio::select! {
        r = timeout(ctx.connect_timeout, establishing) => r,
        () = ctx.stop.cancelled() => return None,
    };
    drop(permit);
    let session = match established {
        Ok(Ok(session)) => session,
        Ok(Err(err)) => {
            stage.fail(stats, &format!("{err:#}"));
            return None;
        }
        Err(_elapsed) => {
            stage.fail(stats, "timeout");
            return None;
        }
    };
    Stats::bump(&stats.counters.ready);
    let micros = started.elapsed().as_micros() as u64;
    stats.connect_latency.record_all(index, &[micros]);
    Some(session)
}

/// Runs connection number `index` to the end. `permit` bounds concurrent handshakes and is
/// released once this connection is ready or has failed.
pub async fn run(ctx: Arc<ConnContext>, index: usize, permit: OwnedSemaphorePermit) {
    let stats = Arc::clone(&ctx.stats);
    let mut receipts = Receipts::default();
    let Some(mut session) = first_session(&ctx, index, permit, &mut receipts).await else {
        return;
    };
    if is_slow(index, ctx.slow_fraction) {
        return slow(&ctx, session, &mut receipts).await;
    }

    let end = session.listen(&mut receipts, std::future::pending()).await;
    if end != End::Stopped {
        count_end(&stats, &end);
        Stats::bump(&stats.counters.dropped);
        ctx.stop.cancelled().await;
    }
    if let Some(published) = ctx.published.get() {
        stats.add_seq(&receipts.outcome(&ctx, index, published));
    }
    if end == End::Stopped {
        // The reply to our close is not awaited: thousands of connections end at once.
        let _ = timeout(Duration::from_secs(2), session.ws.close(None)).await;
    }
    Stats::bump(&stats.counters.finished);
}

/// A slow client: stops reading (at once, or on the signal), holds the socket until the
/// run ends, then reads what is left to learn how the server ended it.
async fn slow(ctx: &ConnContext, mut session: Session, receipts: &mut Receipts) {
    let stats = &ctx.stats;
    if ctx.slow_mode == SlowMode::OnSignal {
        let end = session.listen(receipts, ctx.slow_now.cancelled()).await;
        if end != End::Interrupted {
            if end != End::Stopped {
                count_end(stats, &end);
                Stats::bump(&stats.counters.dropped);
            }
            return Stats::bump(&stats.counters.finished);
        }
    }
    // Never reads until the run stops: the kernel buffers fill and the server has to
    // cope (queue, then evict with 4008).
    Stats::bump(&stats.counters.slow);
    ctx.stop.cancelled().await;
    if ctx.slow_mode == SlowMode::OnSignal {
        match timeout(SKIM_LIMIT, session.skim()).await {
            Ok(Some(4008)) => Stats::bump(&stats.counters.slow_evicted),
            Ok(code) => {
                Stats::bump(&stats.counters.slow_cut);
                stats.code(
                    "slow_end",
                    code.map_or("no close frame".into(), |c| c.to_string()),
                );
            }
            Err(_) => stats.code("slow_end", "not ended within the skim limit"),
        }
    }
    Stats::bump(&stats.counters.finished);
}

/// Counts how a session ended before the run told it to.
pub fn count_end(stats: &Stats, end: &End) {
    match end {
        End::Dead => Stats::bump(&stats.counters.dead),
        End::Closed(code) => stats.code("close", code.map_or("none".into(), |c| c.to_string())),
        End::Failed(err) => stats.code("io", short(err)),
        End::Stopped | End::Interrupted => {}
    }
}

/// How far a connection got, to name what failed when it fails.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Dial,
    Connect,
    Subscribe,
}

impl Stage {
    /// Counts a first connection that failed; the client is finished.
    pub fn fail(self, stats: &Stats, reason: &str) {
        let (counter, kind) = match self {
            Stage::Dial => (&stats.counters.dial_failed, "dial"),
            Stage::Connect => (&stats.counters.connect_failed, "connect"),
            Stage::Subscribe => (&stats.counters.subscribe_failed, "subscribe"),
        };
        Stats::bump(counter);
        stats.code(kind, short(reason));
        Stats::bump(&stats.counters.finished);
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::Dial => "dial",
            Stage::Connect => "connect",
            Stage::Subscribe => "subscribe",
        }
    }
}

/// Dials target `node` and goes as far as the handshake says. With `recover` and a known
/// history position, the `subscribe` carries `recover` {offset, epoch}.
pub async fn establish(
    ctx: &Arc<ConnContext>,
    index: usize,
    node: usize,
    stage: &mut Stage,
    receipts: &mut Receipts,
    recover: bool,
) -> anyhow::Result<Session> {
    let target = &ctx.targets[node % ctx.targets.len()];
    let slow = is_slow(index, ctx.slow_fraction);
    let recv_buffer = if slow { ctx.slow_recv_buffer } else { 0 };
    let source = source_for(&ctx.sources, index);
    let channel = channel_for(&ctx.channel, ctx.channels, index);
    let ws = dial(ctx, target, source, recv_buffer, &channel).await?;
    let mut session = Session::new(Arc::clone(ctx), index, ws, !slow);
    if ctx.handshake == Handshake::Upgrade {
        return Ok(session);
    }
    *stage = Stage::Connect;
    let connect = ClientMsg::Connect {
        id: 1,
        client: CLIENT_NAME,
    };
    let connected = session.request(receipts, 1, &connect).await?;
    Stats::bump(&ctx.stats.counters.connected);
    let interval = connected
        .ping_interval
        .unwrap_or(crate::session::DEFAULT_PING_INTERVAL);
    let pong = connected
        .pong_timeout
        .unwrap_or(crate::session::DEFAULT_PONG_TIMEOUT);
    session.dead_after = Duration::from_secs_f64((interval + pong).clamp(1.0, 3600.0)) + DEAD_SLACK;
    if ctx.handshake == Handshake::Connect {
        return Ok(session);
    }
    *stage = Stage::Subscribe;
    let position = receipts.position.clone();
    let from = match (&position.epoch, position.offset) {
        (Some(epoch), Some(offset)) if recover => Some(RecoverFrom {
            offset,
            epoch: epoch.as_str(),
        }),
        _ => None,
    };
    let subscribe = ClientMsg::Subscribe {
        id: 2,
        channel: &channel,
        recover: from,
    };
    let reply = session.request(receipts, 2, &subscribe).await?;
    session.on_subscribed(receipts, &reply, from.map(|f| f.offset));
    Ok(session)
}

/// TCP connect from `source` (bound before connecting), then the WebSocket upgrade.
/// `recv_buffer` > 0 sets `SO_RCVBUF` first, which also caps the window the client offers.
async fn dial(
    ctx: &ConnContext,
    target: &Target,
    source: Option<IpAddr>,
    recv_buffer: usize,
    channel: &str,
) -> anyhow::Result<Ws> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("socket")?;
    if recv_buffer > 0 {
        let bytes = u32::try_from(recv_buffer).unwrap_or(u32::MAX);
        socket.set_recv_buffer_size(bytes).context("SO_RCVBUF")?;
    }
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = socket.connect(target.addr).await.context("tcp connect")?;
    stream.set_nodelay(true).context("nodelay")?;
    if ctx.encoding == Encoding::Sse {
        let path = crate::sse::path(channel);
        let sse =
            crate::transport::SseStream::open(stream, &target.addr.to_string(), &path).await?;
        return Ok(Ws::Sse(sse));
    }
    let uri: Uri = target.url.parse().context("request")?;
    let host = uri.authority().map_or(String::new(), |a| a.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let config = &ctx.ws_config;
    let ws = WsClient::connect(
        stream,
        &host,
        path,
        ctx.encoding.subprotocol(),
        config.read_buffer_size,
        config.max_message_size.unwrap_or(usize::MAX),
    )
    .await
    .context("upgrade")?;
    Ok(Ws::WebSocket(Box::new(ws)))
}
