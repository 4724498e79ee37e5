//! The socket side of a session: reading data frames, writing batches, and closing with a
//! `disconnect` message and a close code, every write bounded by `write_timeout`.
//!
//! Data frames are not written by tungstenite: a server frame is a 2–10 byte header and
//! the payload, sent with one vectored write straight from the shared `Bytes`, either by
//! a push itself (the outbox's direct write, `crate::hub::outbox`) or, when that could
//! not finish, here. tungstenite would copy every frame into a write buffer that keeps
//! its largest size for the connection's life, and would validate JSON frames as UTF-8
//! per recipient; frames come from our own encoders and are valid by construction.
//! Control frames (close, and tungstenite's automatic pongs) still come from
//! tungstenite, through the outbox's `unsent` bytes (see `stream`), so frames never
//! interleave. A write that finishes at once costs no timer, no clock read and no
//! wake-up registration; only a write the socket makes wait is watched for the write
//! timeout (`write_started`, aborted by the ticker).
//!
//! Closing is a lingering close: after our close frame we half-close the TCP stream and
//! discard what the client still sends for a moment, so unread input cannot make the
//! kernel reset the connection and destroy the close frame before the client reads it.

use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use super::stream::SocketStream;
use crate::hub::socket::{Opcode, Progress, RawSocket, frame_header, try_write_parts, write_parts};
use crate::hub::{ClientHandle, Dialect, Hub, WriteTurn};
use crate::metrics::Metrics;
use crate::protocol::{CloseCode, Encoding, encode_disconnect};

/// Frames written between two updates of the shared byte and frame counters.
const METRICS_EVERY_FRAMES: u64 = 64;

/// How long, and how much, to read and discard after our close frame.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// What reading the socket produced.
#[derive(Debug)]
pub(super) enum Inbound {
    /// A text or binary frame's payload.
    Frame(Bytes),
    /// The client sent a close frame or ended the stream cleanly.
    Closed,
    /// A frame above `max_frame_bytes`.
    TooLarge,
    /// A transport or protocol error: nothing more can be read.
    Broken,
}

pub(super) struct Transport {
    socket: WebSocketStream<SocketStream>,
    encoding: Encoding,
    /// Pusher clients get one event per frame and `pusher:error` before a close.
    dialect: Dialect,
    /// `client.write_timeout` in milliseconds: 4 bytes beside the two enums instead of
    /// a 16-byte `Duration` in every session.
    write_timeout_ms: u32,
    unreported_bytes: u64,
    unreported_frames: u64,
    last_report: Option<std::time::Instant>,
}

impl Transport {
    pub(super) fn new(
        socket: WebSocketStream<SocketStream>,
        encoding: Encoding,
        write_timeout: Duration,
    ) -> Self {
        Transport {
            socket,
            encoding,
            dialect: Dialect::Native,
            write_timeout_ms: u32::try_from(write_timeout.as_millis()).unwrap_or(u32::MAX),
            unreported_bytes: 0,
            unreported_frames: 0,
            last_report: None,
        }
    }

    /// A transport for a Pusher connection (`crate::pusher`).
    pub(super) fn pusher(socket: WebSocketStream<SocketStream>, write_timeout: Duration) -> Self {
        let mut transport = Transport::new(socket, Encoding::Json, write_timeout);
        transport.dialect = Dialect::Pusher;
        transport
    }

    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms.into())
    }

    pub(super) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The next data frame. Cancel-safe: dropping the future loses nothing.
    pub(super) async fn next(&mut self) -> Inbound {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// `next` as a poll, for the serve loop (which keeps no future while idle).
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        loop {
            return Poll::Ready(match ready!(self.socket.poll_next_unpin(cx)) {
                Some(Ok(Message::Text(text))) => Inbound::Frame(Bytes::from(text)),
                Some(Ok(Message::Binary(bytes))) => Inbound::Frame(bytes),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => Inbound::Closed,
                Some(Err(err)) => classify(&err),
            });
        }
    }

    fn data_message(&self, frame: Bytes) -> Option<Message> {
        match self.encoding {
            Encoding::Json => Utf8Bytes::try_from(frame).ok().map(Message::Text),
            Encoding::Msgpack => Some(Message::Binary(frame)),
        }
    }

    /// The client is registered: control frames go through its outbox from now on,
    /// and with `direct`, pushes may write data frames straight to the socket.
    pub(super) fn attach(&mut self, client: &std::sync::Arc<ClientHandle>, direct: bool) {
        let opcode = self.opcode();
        let stream = self.socket.get_mut();
        stream.route_through(client.clone());
        if direct {
            client.attach_socket(stream.socket().clone(), opcode);
        }
    }

    fn opcode(&self) -> Opcode {
        match (self.dialect, self.encoding) {
            (Dialect::Native, Encoding::Msgpack) => Opcode::Binary,
            _ => Opcode::Text,
        }
    }

    /// Adds the outbox's direct writes to this session's counts.
    pub(super) fn count_direct(&mut self, turn: &WriteTurn, metrics: &Metrics) {
        self.count(turn.direct_frames, turn.direct_bytes, metrics);
    }

    /// Adds to this session's counts without reporting them yet.
    pub(super) fn count_frames(&mut self, frames: u64, bytes: u64) {
        self.unreported_bytes += bytes;
        self.unreported_frames += frames;
    }

    fn count(&mut self, frames: u64, bytes: u64, metrics: &Metrics) {
        // Counted locally and added to the shared counters every few frames, so a
        // delivery costs no shared atomic here.
        self.unreported_bytes += bytes;
        self.unreported_frames += frames;
        if self.unreported_frames >= METRICS_EVERY_FRAMES {
            self.flush_metrics(metrics);
        }
    }

    /// Writes a turn: what was `unsent`, then the frames, one batch frame for all of
    /// them (Pusher clients, who know no batches, get one frame each). False if it
    /// failed or stalled past the write timeout.
    pub(super) async fn send_turn(
        &mut self,
        turn: &WriteTurn,
        client: &ClientHandle,
        hub: &Hub,
        metrics: &Metrics,
    ) -> bool {
        let socket = self.socket.get_ref().socket().clone();
        let opcode = self.opcode();
        let mut unsent = &turn.unsent[..];
        let joined;
        let frames: &[Bytes] = match &turn.items[..] {
            many @ [_, _, ..] if self.dialect != Dialect::Pusher => {
                joined = [self.encoding.join_batch(many)];
                &joined
            }
            items => items,
        };
        if frames.is_empty() {
            return write_watched(&*socket, &mut [unsent], client, hub).await;
        }
        let mut bytes = 0;
        for payload in frames {
            let (header, used) = frame_header(opcode, payload.len());
            let mut parts = [unsent, &header[..used], &payload[..]];
            if !write_watched(&*socket, &mut parts, client, hub).await {
                return false;
            }
            unsent = &[];
            bytes += payload.len() as u64;
        }
        self.count(frames.len() as u64, bytes, metrics);
        true
    }

    /// Reports what was written when the queue ran dry, if the last report is over a
    /// second old (or there was none): counters stay fresh without a shared atomic per
    /// frame.
    pub(super) fn report_if_stale(&mut self, metrics: &Metrics) {
        if self
            .last_report
            .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1))
        {
            self.flush_metrics(metrics);
        }
    }

    /// Adds what this session wrote since the last call to the shared counters.
    pub(super) fn flush_metrics(&mut self, metrics: &Metrics) {
        self.last_report = Some(std::time::Instant::now());
        if self.unreported_frames > 0 {
            metrics.bytes_sent.inc_by(self.unreported_bytes);
            metrics.frames_sent.inc_by(self.unreported_frames);
            self.unreported_bytes = 0;
            self.unreported_frames = 0;
        }
    }

    /// Sends `disconnect` and the close frame, then lingers (see the module doc).
    pub(super) async fn close(&mut self, code: CloseCode, reason: &str, reconnect: bool) {
        let (code, disconnect) = match self.dialect {
            Dialect::Native | Dialect::Sse => (
                code.as_u16(),
                Some(encode_disconnect(self.encoding, code, reason, reconnect)),
            ),
            Dialect::Pusher => crate::pusher::close::closing(code, reason),
        };
        let frame = CloseFrame {
            code: WsCloseCode::from(code),
            reason: Utf8Bytes::from(truncate_reason(reason)),
        };
        let message = disconnect.and_then(|d| self.data_message(d));
        let write_timeout = self.write_timeout();
        let write = async {
            if let Some(message) = message {
                self.socket.feed(message).await?;
            }
            self.socket.send(Message::Close(Some(frame))).await
        };
        if !matches!(tokio::time::timeout(write_timeout, write).await, Ok(Ok(()))) {
            return;
        }
        self.linger().await;
    }

    async fn linger(&mut self) {
        let write_timeout = self.write_timeout();
        let raw = self.socket.get_mut();
        let _ = tokio::time::timeout(write_timeout, raw.shutdown()).await;
        let drain = async {
            // On the heap: a buffer in this future would sit in every session's task.
            let mut buf = vec![0u8; 4096];
            let mut total = 0;
            while total < LINGER_BYTES {
                match raw.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// Completes a close the client started, or just releases the socket.
    pub(super) async fn shutdown(&mut self) {
        let write_timeout = self.write_timeout();
        let close = async {
            // tungstenite queued its answer to the client's close when it read it; a flush
            // writes it (into the outbox, once the client is registered: then the socket
            // is flushed too), and sending a close of our own would be refused.
            let _ = self.socket.flush().await;
            let _ = self.socket.get_mut().flush().await;
        };
        let _ = tokio::time::timeout(write_timeout, close).await;
    }
}

/// Writes `parts` whole: at once if the socket takes them, else waiting for it, watched
/// by the ticker's write timeout. False if the write failed or was aborted.
async fn write_watched(
    socket: &dyn RawSocket,
    parts: &mut [&[u8]],
    client: &ClientHandle,
    hub: &Hub,
) -> bool {
    match try_write_parts(socket, parts) {
        Ok(Progress::Done) => return true,
        Ok(Progress::Blocked) => {}
        Err(_) => return false,
    }
    client.write_started(hub.now_ms());
    let written = tokio::select! {
        written = write_parts(socket, parts) => written.is_ok(),
        _ = client.wait_for_abort() => false,
    };
    client.write_finished();
    written
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

fn classify(err: &tungstenite::Error) -> Inbound {
    match err {
        tungstenite::Error::Capacity(_) => Inbound::TooLarge,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => Inbound::Closed,
        _ => Inbound::Broken,
    }
}
