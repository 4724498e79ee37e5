//! The socket side of a session: reading data frames, writing batches, and closing with a
//! `disconnect` message and a close code, every write bounded by `write_timeout`.
//!
//! Data frames are written by this module itself, not by tungstenite: a server frame is
//! a 2–10 byte header and the payload, sent with one vectored write straight from the
//! shared `Bytes`. tungstenite would copy every frame into a write buffer that keeps its
//! largest size for the connection's life (one 64 KiB batch, and every idle connection
//! that got one holds 64 KiB), and would validate JSON frames as UTF-8 per recipient;
//! frames come from our own encoders and are valid by construction. Control frames
//! (close, and tungstenite's automatic pongs) still go through tungstenite, which is
//! flushed before each data frame so frames never interleave.
//!
//! Closing is a lingering close: after our close frame we half-close the TCP stream and
//! discard what the client still sends for a moment, so unread input cannot make the
//! kernel reset the connection and destroy the close frame before the client reads it.

use std::io::IoSlice;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::hub::Dialect;
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
    /// Pusher clients get one event per frame and `pusher:error` before a close.
    dialect: Dialect,
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
            dialect: Dialect::Native,
            write_timeout,
            unreported_bytes: 0,
            unreported_frames: 0,
            last_report: None,
        }
    }

    /// A transport for a Pusher connection (`crate::pusher`).
    pub(super) fn pusher(socket: WebSocketStream<S>, write_timeout: Duration) -> Self {
        let mut transport = Transport::new(socket, Encoding::Json, write_timeout);
        transport.dialect = Dialect::Pusher;
        transport
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

    /// Writes `items` as one frame (a batch when there are several; Pusher clients, who
    /// know no batches, get one frame each). False if it failed.
    pub(super) async fn send_batch(&mut self, items: &[Bytes], metrics: &Metrics) -> bool {
        if self.dialect == Dialect::Pusher && items.len() > 1 {
            for item in items {
                if !Box::pin(self.send_batch(std::slice::from_ref(item), metrics)).await {
                    return false;
                }
            }
            return true;
        }
        let payload = match items {
            [one] => one.clone(),
            many => self.encoding.join_batch(many),
        };
        let len = payload.len() as u64;
        // Whatever tungstenite holds (an automatic pong) goes out first, whole.
        if self.socket.flush().await.is_err() {
            return false;
        }
        let (header, header_len) = frame_header(self.encoding, payload.len());
        let raw = self.socket.get_mut();
        if write_frame(raw, &header[..header_len], &payload)
            .await
            .is_err()
        {
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

/// The header of an unmasked, final server data frame (RFC 6455 section 5.2): text for
/// JSON, binary for MessagePack. Returns the buffer and how much of it is used.
fn frame_header(encoding: Encoding, payload_len: usize) -> ([u8; 10], usize) {
    let opcode = match encoding {
        Encoding::Json => 0x1,
        Encoding::Msgpack => 0x2,
    };
    let mut header = [0u8; 10];
    header[0] = 0x80 | opcode;
    let used = match payload_len {
        0..=125 => {
            header[1] = payload_len as u8;
            2
        }
        126..=0xFFFF => {
            header[1] = 126;
            header[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        }
        _ => {
            header[1] = 127;
            header[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        }
    };
    (header, used)
}

/// Writes `header` then `payload`, in one vectored write when the stream supports it
/// (with `TCP_NODELAY`, two writes would be two segments), resuming after partial writes.
async fn write_frame<W>(out: &mut W, header: &[u8], payload: &[u8]) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    if !out.is_write_vectored() {
        let mut frame = Vec::with_capacity(header.len() + payload.len());
        frame.extend_from_slice(header);
        frame.extend_from_slice(payload);
        return out.write_all(&frame).await;
    }
    let (mut header, mut payload) = (header, payload);
    while !header.is_empty() {
        let parts = [IoSlice::new(header), IoSlice::new(payload)];
        let written = out.write_vectored(&parts).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_header = written.min(header.len());
        header = &header[from_header..];
        payload = &payload[written - from_header..];
    }
    out.write_all(payload).await
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        let header = |encoding, len| {
            let (bytes, used) = frame_header(encoding, len);
            bytes[..used].to_vec()
        };
        assert_eq!(header(Encoding::Json, 0), [0x81, 0]);
        assert_eq!(header(Encoding::Msgpack, 125), [0x82, 125]);
        assert_eq!(header(Encoding::Json, 126), [0x81, 126, 0, 126]);
        assert_eq!(header(Encoding::Json, 65_535), [0x81, 126, 0xFF, 0xFF]);
        assert_eq!(
            header(Encoding::Msgpack, 65_536),
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    /// A vectored writer that takes at most `step` bytes per call.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
        vectored: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut left = self.step;
            for buf in bufs {
                let n = buf.len().min(left);
                self.written.extend_from_slice(&buf[..n]);
                left -= n;
            }
            Poll::Ready(Ok(self.step - left))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_still_write_the_whole_frame_once() -> std::io::Result<()> {
        let payload: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let (header, used) = frame_header(Encoding::Msgpack, payload.len());
        let mut expected = header[..used].to_vec();
        expected.extend_from_slice(&payload);
        for vectored in [true, false] {
            for step in [1, 3, 4, 5, 999, 5000] {
                let mut out = Trickle {
                    written: Vec::new(),
                    step,
                    vectored,
                };
                write_frame(&mut out, &header[..used], &payload).await?;
                assert_eq!(out.written, expected, "step {step}, vectored {vectored}");
            }
        }
        Ok(())
    }
}
