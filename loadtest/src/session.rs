//! One open WebSocket connection of a simulated client, and what the client has seen.
//!
//! A [`Session`] reads frames, answers `ping` with `pong`, records the publish-to-deliver
//! latency and the per-stream sequence of every benchmark `message`, and notices when the
//! server goes quiet for longer than `ping_interval + pong_timeout` (a dead connection).
//!
//! What the client has seen lives in [`Receipts`], which every reading method takes as an
//! argument rather than the session owning it: a client that reconnects (`durable`) keeps
//! its sequence trackers and its history position across sessions, and nothing is lost
//! when a session's future is dropped half-way (a timeout, the end of the run). On history channels the session follows `offset`/`epoch` (PROTOCOL.md
//! section 4): gaps, repeats and epoch changes are counted, and after a `subscribe` with
//! `recover` it times how long the client takes to catch up to the offset the reply named.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::codec::decode_batch;
use crate::context::ConnContext;
use crate::seq::{SeqOutcome, SeqTracker};
use crate::stats::Stats;
use crate::wire::{ClientMsg, Epoch, ServerMsg, ServerOp, unix_micros};

pub use crate::transport::Ws;

/// Publisher streams a subscriber keeps trackers for; higher `s` values are ignored.
const MAX_STREAMS: usize = 256;
/// Used until `connected` tells the real values (the PROTOCOL.md defaults).
pub const DEFAULT_PING_INTERVAL: f64 = 25.0;
pub const DEFAULT_PONG_TIMEOUT: f64 = 10.0;
/// Extra quiet time tolerated on top of `ping_interval + pong_timeout` before calling a
/// connection dead: the load generator itself may be slow to read under load.
pub const DEAD_SLACK: Duration = Duration::from_secs(5);

/// What one client has received, across all its sessions.
#[derive(Debug, Default)]
pub struct Receipts {
    trackers: Vec<SeqTracker>,
    pub position: Position,
    /// Set from the loss of a session until the client has caught up again.
    pub catch_up: Option<CatchUp>,
}

/// Where the client is in its channel's history.
#[derive(Debug, Default, Clone)]
pub struct Position {
    pub epoch: Option<Epoch>,
    /// The highest offset seen (or announced by the first `subscribed`).
    pub offset: Option<u64>,
}

/// A recovery in progress.
#[derive(Debug, Clone, Copy)]
pub struct CatchUp {
    /// When the session was lost.
    pub since: Instant,
    /// The offset to reach; unknown (`u64::MAX`) until the recovering `subscribed` names it.
    pub until: u64,
}

/// Why listening ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Stopped,
    /// The `interrupt` future given to [`Session::listen`] completed.
    Interrupted,
    Dead,
    Closed(Option<u16>),
    Failed(String),
}

impl Receipts {
    /// Sums this client's verdict over the publisher's counts. `published` holds one count
    /// per stream, or with `random_channels` one per (stream, channel) pair, stream-major.
    pub fn outcome(&self, ctx: &ConnContext, index: usize, published: &[u64]) -> SeqOutcome {
        let mut sum = SeqOutcome::default();
        let empty = SeqTracker::default();
        let channels = ctx.channels.max(1);
        let mine = index % channels;
        let tracker = |s: usize| self.trackers.get(s).unwrap_or(&empty);
        if ctx.random_channels {
            for (s, per_channel) in published.chunks(channels).enumerate() {
                sum.add(&tracker(s).outcome(per_channel.get(mine).copied().unwrap_or(0)));
            }
        } else {
            for (s, &count) in published.iter().enumerate() {
                if s % channels == mine {
                    sum.add(&tracker(s).outcome(count));
                }
            }
        }
        sum
    }
}

/// A connected client.
pub struct Session {
    ctx: Arc<ConnContext>,
    index: usize,
    pub ws: Ws,
    /// Replies (`connected`, `subscribed`, `error` with an id) not yet claimed.
    replies: Vec<ServerMsg>,
    /// Scratch buffers reused frame after frame.
    inbox: Vec<ServerMsg>,
    latencies: Vec<u64>,
    marked: Vec<u64>,
    pub dead_after: Duration,
    last_heard: Instant,
    /// Whether deliveries count in latency and `fresh` (slow clients' do not).
    measured: bool,
}

impl Session {
    pub fn new(ctx: Arc<ConnContext>, index: usize, ws: Ws, measured: bool) -> Session {
        let dead_after =
            Duration::from_secs_f64(DEFAULT_PING_INTERVAL + DEFAULT_PONG_TIMEOUT) + DEAD_SLACK;
        Session {
            ctx,
            index,
            ws,
            replies: Vec::new(),
            inbox: Vec::new(),
            latencies: Vec::new(),
            marked: Vec::new(),
            dead_after,
            last_heard: Instant::now(),
            measured,
        }
    }

    /// Sends a request and reads until its reply; an `error` reply is an `Err`.
    pub async fn request(
        &mut self,
        receipts: &mut Receipts,
        id: u64,
        msg: &ClientMsg<'_>,
    ) -> anyhow::Result<ServerMsg> {
        if let Some(frame) = self.ctx.encoding.encode(msg)? {
            self.ws.send(frame).await.context("send")?;
        }
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
                    if let Some(end) = self.on_frame(receipts, frame).await {
                        anyhow::bail!("ended before reply: {end:?}");
                    }
                }
                None => anyhow::bail!("closed before reply"),
            }
        }
    }

    /// Takes in a `subscribed` reply. `recovering_from` is the offset sent in `recover`.
    pub fn on_subscribed(
        &self,
        receipts: &mut Receipts,
        reply: &ServerMsg,
        recovering_from: Option<u64>,
    ) {
        let counters = &self.ctx.stats.counters;
        let position = &mut receipts.position;
        let Some(from) = recovering_from else {
            // First subscribe: start from the channel's position unless messages came already.
            if position.epoch.is_none() {
                position.epoch = reply.epoch.clone();
            }
            if position.offset.is_none() {
                position.offset = reply.offset;
            }
            return;
        };
        let top = reply.offset.unwrap_or(0);
        // From offset 0 (the channel had no stream yet) the stream's own epoch is no change.
        if reply.epoch.is_some() && reply.epoch != position.epoch && from > 0 {
            Stats::bump(&counters.epoch_changes);
        }
        if reply.recovered == Some(true) {
            Stats::bump(&counters.recoveries);
            Stats::add(&counters.recovered_messages, top.saturating_sub(from));
            if let Some(c) = &mut receipts.catch_up {
                c.until = top;
            }
            self.check_caught_up(receipts);
        } else {
            // The client would reload its state; whatever it missed shows up as lost.
            Stats::bump(&counters.recovery_failed);
            self.ctx.stats.code("recover", "recovered:false");
            *position = Position {
                epoch: reply.epoch.clone(),
                offset: reply.offset,
            };
            receipts.catch_up = None;
        }
    }

    /// Reads until the run stops, `interrupt` completes or the connection ends.
    pub async fn listen(
        &mut self,
        receipts: &mut Receipts,
        interrupt: impl Future<Output = ()>,
    ) -> End {
        // The stop future and the silence timer live across frames: re-creating them per
        // frame registers and deregisters a waiter and a timer entry for every delivery.
        // The timer is moved only when it fires early (something was heard meanwhile).
        let ctx = Arc::clone(&self.ctx);
        let stopped = ctx.stop.cancelled();
        let silence = sleep_until(self.last_heard + self.dead_after);
        tokio::pin!(interrupt, stopped, silence);
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => return End::Stopped,
                () = &mut interrupt => return End::Interrupted,
                () = &mut silence => {
                    let deadline = self.last_heard + self.dead_after;
                    if deadline <= Instant::now() {
                        return End::Dead;
                    }
                    silence.as_mut().reset(deadline);
                }
                frame = self.ws.next() => match frame {
                    Some(frame) => if let Some(end) = self.on_frame(receipts, frame).await { return end },
                    None => return End::Closed(None),
                },
            }
        }
    }

    /// Reads without decoding until the connection ends; the close code, if one came.
    /// Used by a client that stopped reading, to learn what the server did meanwhile.
    pub async fn skim(&mut self) -> Option<u16> {
        while let Some(frame) = self.ws.next().await {
            match frame {
                Ok(Message::Close(close)) => return close.map(|c| c.code.into()),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Handles one WebSocket read; `Some` when the connection is over.
    async fn on_frame(
        &mut self,
        receipts: &mut Receipts,
        frame: Result<Message, tungstenite::Error>,
    ) -> Option<End> {
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
        Stats::add(&stats.counters.frame_bytes, payload.len() as u64);
        let mut batch = std::mem::take(&mut self.inbox);
        if decode_batch(self.ctx.encoding, &payload, &mut batch).is_err() {
            Stats::bump(&stats.counters.decode_errors);
        }
        let now = unix_micros();
        let mut pongs = 0;
        for msg in batch.drain(..) {
            match msg.op {
                ServerOp::Message => self.on_message(receipts, &msg, now),
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
        stats
            .delivery_latency
            .record_all(self.index, &self.latencies);
        stats.marked_latency.record_all(self.index, &self.marked);
        self.latencies.clear();
        self.marked.clear();
        self.inbox = batch;
        for _ in 0..pongs {
            Stats::bump(&stats.counters.pings);
            let pong = match self.ctx.encoding.encode(&ClientMsg::Pong) {
                Ok(Some(pong)) => pong,
                Ok(None) => continue,
                Err(err) => return Some(End::Failed(err.to_string())),
            };
            if let Err(err) = self.ws.send(pong).await {
                return Some(End::Failed(err.to_string()));
            }
            Stats::bump(&stats.counters.pongs);
        }
        None
    }

    fn on_message(&mut self, receipts: &mut Receipts, msg: &ServerMsg, now: u64) {
        let counters = &self.ctx.stats.counters;
        Stats::bump(&counters.messages);
        if let Some(offset) = msg.offset {
            self.on_offset(receipts, offset, msg.epoch.as_ref());
        }
        let counters = &self.ctx.stats.counters;
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
        let trackers = &mut receipts.trackers;
        if trackers.len() <= stream {
            trackers.resize_with(stream + 1, SeqTracker::default);
        }
        let first = trackers[stream].observe(seq);
        if self.measured {
            let latency = now.saturating_sub(ts);
            self.latencies.push(latency);
            let mark = self.ctx.mark.load(std::sync::atomic::Ordering::Relaxed);
            if mark != 0 && ts >= mark {
                self.marked.push(latency);
            }
            if first {
                Stats::bump(&counters.fresh);
            }
        }
    }

    /// Follows the channel's offsets: gaps, repeats, epoch changes, the end of a catch-up.
    fn on_offset(&self, receipts: &mut Receipts, offset: u64, epoch: Option<&Epoch>) {
        let counters = &self.ctx.stats.counters;
        let position = &mut receipts.position;
        let changed = epoch.filter(|&e| position.epoch.as_ref() != Some(e));
        if let Some(epoch) = changed {
            // A channel first seen with no stream (offset 0) starts its epoch at offset 1:
            // nothing was missed (docs/protocol.md section 4).
            let stream_started = position.offset == Some(0) && offset == 1;
            if position.epoch.is_some() && !stream_started {
                Stats::bump(&counters.epoch_changes);
                position.offset = None;
            }
            position.epoch = Some(epoch.clone());
        }
        match position.offset {
            Some(last) if offset <= last => Stats::bump(&counters.offset_repeats),
            Some(last) if offset > last + 1 => Stats::add(&counters.offset_gaps, offset - last - 1),
            _ => {}
        }
        position.offset = Some(position.offset.map_or(offset, |last| last.max(offset)));
        self.check_caught_up(receipts);
    }

    /// Ends a catch-up once the position reached its target, recording how long it took.
    fn check_caught_up(&self, receipts: &mut Receipts) {
        let Some(c) = receipts.catch_up else {
            return;
        };
        if receipts.position.offset.unwrap_or(0) >= c.until {
            let micros = c.since.elapsed().as_micros() as u64;
            self.ctx
                .stats
                .recovery_latency
                .record_all(self.index, &[micros]);
            receipts.catch_up = None;
        }
    }
}

/// The first line of an error, cut short, as a code-table key.
pub fn short(reason: &str) -> String {
    let line = reason.lines().next().unwrap_or(reason);
    line.chars().take(80).collect()
}
