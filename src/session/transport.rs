//! The socket side of a session: reading data frames, writing batches, and closing with a
//! `disconnect` message and a close code, every write bounded by `write_timeout`.
//!
//! Closing is a lingering close: after our close frame we half-close the TCP stream and
//! discard what the client still sends for a moment, so unread input cannot make the
//! kernel reset the connection and destroy the close frame before the client reads it.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

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

pub(super) struct Transport<S> {
    socket: WebSocketStream<S>,
    encoding: Encoding,
    write_timeout: Duration,
    unreported_bytes: u64,
    unreported_frames: u64,
    last_report: Option<std::time::Instant>,
}

impl<S> Transport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    pub(super) fn new(
        socket: WebSocketStream<S>,
        encoding: Encoding,
        write_timeout: Duration,
    ) -> Self {
        Transport {
            socket,
            encoding,
            write_timeout,
            unreported_bytes: 0,
            unreported_frames: 0,
            last_report: None,
        }
    }

    pub(super) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The next data frame. Cancel-safe: dropping the future loses nothing.
    pub(super) async fn next(&mut self) -> Inbound {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => return Inbound::Frame(Bytes::from(text)),
                Some(Ok(Message::Binary(bytes))) => return Inbound::Frame(bytes),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => return Inbound::Closed,
                Some(Err(err)) => return classify(&err),
            }
        }
    }

    fn data_message(&self, frame: Bytes) -> Option<Message> {
        match self.encoding {
            Encoding::Json => Utf8Bytes::try_from(frame).ok().map(Message::Text),
            Encoding::Msgpack => Some(Message::Binary(frame)),
        }
    }

    /// Writes `items` as one frame (a batch when there are several). False if it failed.
    pub(super) async fn send_batch(&mut self, items: &[Bytes], metrics: &Metrics) -> bool {
        let frame = match items {
            [one] => one.clone(),
            many => self.encoding.join_batch(many),
        };
        let len = frame.len() as u64;
        let Some(message) = self.data_message(frame) else {
            return false;
        };
        if self.socket.send(message).await.is_err() {
            return false;
        }
        // Counted locally and added to the shared counters every few frames, so a
        // delivery costs no shared atomic here.
        self.unreported_bytes += len;
        self.unreported_frames += 1;
        if self.unreported_frames >= METRICS_EVERY_FRAMES {
            self.flush_metrics(metrics);
        }
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
        let disconnect = encode_disconnect(self.encoding, code, reason, reconnect);
        let frame = CloseFrame {
            code: WsCloseCode::from(code.as_u16()),
            reason: Utf8Bytes::from(truncate_reason(reason)),
        };
        let message = self.data_message(disconnect);
        let write = async {
            if let Some(message) = message {
                self.socket.feed(message).await?;
            }
            self.socket.send(Message::Close(Some(frame))).await
        };
        if !matches!(
            tokio::time::timeout(self.write_timeout, write).await,
            Ok(Ok(()))
        ) {
            return;
        }
        self.linger().await;
    }

    async fn linger(&mut self) {
        let raw = self.socket.get_mut();
        let _ = tokio::time::timeout(self.write_timeout, raw.shutdown()).await;
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
        let _ = tokio::time::timeout(self.write_timeout, self.socket.close(None)).await;
    }
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
