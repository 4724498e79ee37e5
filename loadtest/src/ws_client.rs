//! The client side of a WebSocket (RFC 6455) as lean as the load generator needs it: every
//! simulated client reads one small frame per delivery, so the read path is what a run
//! costs. Frames are parsed in place from one buffer per connection that a read fills
//! without zeroing it first (tungstenite zeroes its free buffer space before every read),
//! and the payload is handed out as a slice of that buffer, without a copy.
//!
//! The handshake, masking and close codes follow RFC 6455; the `Sec-WebSocket-Key` and the
//! check of `Sec-WebSocket-Accept` come from tungstenite. Messages are tungstenite's
//! [`Message`] and errors its [`Error`], so the session reads them as it read tungstenite's.
//! Server pings are answered at once; fragmented messages are joined.

use anyhow::{Context as _, bail, ensure};
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::rng::Rng;

/// A response head larger than this is refused.
const MAX_HEAD: usize = 16 * 1024;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// An open client WebSocket over `S`.
pub struct WsClient<S> {
    stream: S,
    /// Bytes read and not yet parsed.
    buffer: BytesMut,
    /// The frames of a fragmented message so far, and its opcode.
    fragments: Option<(u8, BytesMut)>,
    /// How much a read asks for at least, and the largest message accepted.
    read_size: usize,
    max_message: usize,
    /// A close frame came; nothing more is read.
    closed: bool,
    /// Masking keys (RFC 6455 section 5.3: a fresh one per frame).
    rng: Rng,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsClient<S> {
    /// Upgrades `stream` with `GET path` (`path` with its query) on `host`, asking for
    /// `protocol` if given. Bytes the server sends after its response are kept.
    pub async fn connect(
        mut stream: S,
        host: &str,
        path: &str,
        protocol: Option<&str>,
        read_size: usize,
        max_message: usize,
    ) -> anyhow::Result<WsClient<S>> {
        let key = generate_key();
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
        );
        if let Some(protocol) = protocol {
            request.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .context("send upgrade")?;
        let mut buffer = BytesMut::with_capacity(read_size.max(1024));
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            ensure!(buffer.len() <= MAX_HEAD, "upgrade response head too large");
            buffer.reserve(1024);
            let n = stream.read_buf(&mut buffer).await.context("read upgrade")?;
            ensure!(n > 0, "closed before the upgrade response");
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        check_upgrade(&head, &derive_accept_key(key.as_bytes()))?;
        buffer.advance(head_end + 4);
        Ok(WsClient {
            stream,
            buffer,
            fragments: None,
            read_size: read_size.max(256),
            max_message,
            closed: false,
            rng: Rng::from_clock(key.len() as u64 ^ u64::from(key.as_bytes()[0])),
        })
    }

    /// The next message; `None` once the connection is closed. Cancel-safe: what was read
    /// stays in the buffer.
    pub async fn next(&mut self) -> Option<Result<Message, Error>> {
        loop {
            if self.closed {
                return None;
            }
            match self.parse() {
                Ok(Some((opcode, payload))) => match self.on_frame(opcode, payload).await {
                    Ok(Some(message)) => return Some(Ok(message)),
                    Ok(None) => continue,
                    Err(err) => return Some(Err(err)),
                },
                Ok(None) => {}
                Err(err) => return Some(Err(err)),
            }
            if self.buffer.capacity() - self.buffer.len() < self.read_size {
                self.buffer.reserve(self.read_size);
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) => {
                    self.closed = true;
                    let reset = ProtocolError::ResetWithoutClosingHandshake;
                    return Some(Err(Error::Protocol(reset)));
                }
                Ok(_) => {}
                Err(err) => return Some(Err(Error::Io(err))),
            }
        }
    }

    /// Sends a text or binary message (other kinds are not sent by the load generator).
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        match message {
            Message::Text(text) => self.write_frame(TEXT, text.as_bytes()).await,
            Message::Binary(bin) => self.write_frame(BINARY, &bin).await,
            Message::Ping(data) => self.write_frame(PING, &data).await,
            Message::Pong(data) => self.write_frame(PONG, &data).await,
            Message::Close(frame) => self.close(frame).await,
            Message::Frame(_) => Ok(()),
        }
    }

    /// Sends a close frame (with its code, if given) and flushes; the reply is not awaited.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        let mut body = Vec::new();
        if let Some(frame) = frame {
            body.extend_from_slice(&u16::from(frame.code).to_be_bytes());
            body.extend_from_slice(frame.reason.as_bytes());
        }
        self.write_frame(CLOSE, &body).await?;
        self.stream.flush().await.map_err(Error::Io)
    }

    /// Takes one whole frame off the buffer: its opcode (with the FIN bit as 0x80) and
    /// payload. `None` until the buffer holds all of it.
    fn parse(&mut self) -> Result<Option<(u8, Bytes)>, Error> {
        let Some(&[first, second]) = self.buffer.get(..2) else {
            return Ok(None);
        };
        if second & 0x80 != 0 {
            // RFC 6455 section 5.1: a server never masks its frames.
            return Err(Error::Protocol(ProtocolError::MaskedFrameFromServer));
        }
        if first & 0x70 != 0 {
            return Err(Error::Protocol(ProtocolError::NonZeroReservedBits));
        }
        let (len, header) = match second & 0x7f {
            126 => match self.buffer.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match self
                .buffer
                .get(2..10)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
            {
                Some(b) => (u64::from_be_bytes(b), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max_message {
            let size = len;
            let max_size = self.max_message;
            return Err(Error::Capacity(CapacityError::MessageTooLong {
                size,
                max_size,
            }));
        }
        if self.buffer.len() < header + len {
            self.buffer.reserve(header + len - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(header);
        let payload = self.buffer.split_to(len).freeze();
        Ok(Some((first & 0x8f, payload)))
    }

    /// Turns one frame into a message, joining fragments and answering control frames.
    async fn on_frame(&mut self, opcode: u8, payload: Bytes) -> Result<Option<Message>, Error> {
        let fin = opcode & 0x80 != 0;
        // RFC 6455 section 5.5: control frames are whole and at most 125 bytes.
        if opcode & 0x08 != 0 {
            if !fin {
                return Err(Error::Protocol(ProtocolError::FragmentedControlFrame));
            }
            if payload.len() > 125 {
                return Err(Error::Protocol(ProtocolError::ControlFrameTooBig));
            }
        }
        let (opcode, payload) = match opcode & 0x0f {
            PING => {
                self.write_frame(PONG, &payload).await?;
                return Ok(Some(Message::Ping(payload)));
            }
            PONG => return Ok(Some(Message::Pong(payload))),
            CLOSE => return self.on_close(&payload).await.map(Some),
            TEXT | BINARY if self.fragments.is_some() => {
                return Err(Error::Protocol(ProtocolError::ExpectedFragment(
                    tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Continue,
                )));
            }
            op @ (TEXT | BINARY) if fin => (op, payload),
            op @ (TEXT | BINARY) => {
                self.fragments = Some((op, BytesMut::from(payload)));
                return Ok(None);
            }
            CONTINUATION => {
                let Some((op, mut joined)) = self.fragments.take() else {
                    return Err(Error::Protocol(ProtocolError::UnexpectedContinueFrame));
                };
                if joined.len() + payload.len() > self.max_message {
                    let size = joined.len() + payload.len();
                    let max_size = self.max_message;
                    return Err(Error::Capacity(CapacityError::MessageTooLong {
                        size,
                        max_size,
                    }));
                }
                joined.put(payload);
                if !fin {
                    self.fragments = Some((op, joined));
                    return Ok(None);
                }
                (op, joined.freeze())
            }
            other if other & 0x08 != 0 => {
                return Err(Error::Protocol(ProtocolError::UnknownControlFrameType(
                    other,
                )));
            }
            other => return Err(Error::Protocol(ProtocolError::UnknownDataFrameType(other))),
        };
        Ok(Some(if opcode == TEXT {
            Message::Text(Utf8Bytes::try_from(payload)?)
        } else {
            Message::Binary(payload)
        }))
    }

    /// A close frame: echo its code (RFC 6455 section 5.5.1) and stop reading.
    async fn on_close(&mut self, payload: &[u8]) -> Result<Message, Error> {
        self.closed = true;
        let frame = match payload {
            [] => None,
            [hi, lo, reason @ ..] => Some(CloseFrame {
                code: CloseCode::from(u16::from_be_bytes([*hi, *lo])),
                reason: Utf8Bytes::try_from(Bytes::copy_from_slice(reason))?,
            }),
            [_] => return Err(Error::Protocol(ProtocolError::InvalidCloseSequence)),
        };
        let code = payload.get(..2).unwrap_or_default().to_vec();
        // The peer may already be gone; the close it sent is what matters.
        let _ = self.write_frame(CLOSE, &code).await;
        Ok(Message::Close(frame))
    }

    /// Writes one final frame, masked as a client must (RFC 6455 section 5.3).
    async fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), Error> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        let mask = (self.rng.next_u64() as u32).to_ne_bytes();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        self.stream.write_all(&frame).await.map_err(Error::Io)
    }
}

/// Checks a `101 Switching Protocols` head and its `Sec-WebSocket-Accept`.
fn check_upgrade(head: &str, accept: &str) -> anyhow::Result<()> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        bail!("upgrade refused: {status}");
    }
    let accepted = lines
        .filter_map(|line| line.split_once(':'))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == accept
        });
    ensure!(
        accepted,
        "upgrade response without the expected Sec-WebSocket-Accept"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::io::{DuplexStream, duplex};

    use super::*;

    /// An unmasked frame as a server sends it; `first` is FIN plus opcode.
    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            len @ 0..=125 => frame.push(len as u8),
            len => {
                frame.push(126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    /// Reads one masked client frame: its first byte and unmasked payload.
    async fn client_frame(server: &mut DuplexStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        server.read_exact(&mut head).await.unwrap();
        assert_eq!(head[1] & 0x80, 0x80, "client frames are masked");
        let len = usize::from(head[1] & 0x7f);
        assert!(len <= 125);
        let mut mask = [0u8; 4];
        server.read_exact(&mut mask).await.unwrap();
        let mut payload = vec![0u8; len];
        server.read_exact(&mut payload).await.unwrap();
        let unmasked = payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m);
        (head[0], unmasked.collect())
    }

    /// Answers the upgrade on `server` (with `accept` overriding the right key), followed
    /// in the same write by `then`.
    async fn answer_upgrade(server: &mut DuplexStream, accept: Option<&str>, then: &[u8]) {
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            server.read_exact(&mut byte).await.unwrap();
            request.push(byte[0]);
        }
        let request = String::from_utf8(request).unwrap();
        assert!(request.starts_with("GET /ws?x=1 HTTP/1.1\r\nHost: node:80\r\n"));
        assert!(request.contains("Sec-WebSocket-Protocol: pushwire.v1.json\r\n"));
        let key = request
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let accept = accept.map_or_else(|| derive_accept_key(key.as_bytes()), str::to_owned);
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             sec-websocket-accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        response.extend_from_slice(then);
        server.write_all(&response).await.unwrap();
    }

    /// Connects a client to a server side that answers the upgrade with `accept` (the
    /// right key when `None`) followed by the bytes `then`.
    async fn upgrade(
        accept: Option<&str>,
        then: &[u8],
    ) -> (anyhow::Result<WsClient<DuplexStream>>, DuplexStream) {
        let (client, mut server) = duplex(1 << 16);
        let connecting = WsClient::connect(
            client,
            "node:80",
            "/ws?x=1",
            Some("pushwire.v1.json"),
            256,
            1 << 20,
        );
        let (ws, ()) = tokio::join!(connecting, answer_upgrade(&mut server, accept, then));
        (ws, server)
    }

    async fn open(then: &[u8]) -> (WsClient<DuplexStream>, DuplexStream) {
        let (ws, server) = upgrade(None, then).await;
        (ws.unwrap(), server)
    }

    fn text(message: Message) -> String {
        match message {
            Message::Text(text) => text.as_str().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_sent_with_the_upgrade_response_are_kept() {
        let (mut ws, _server) = open(&server_frame(0x81, b"{\"op\":\"ping\"}")).await;
        assert_eq!(text(ws.next().await.unwrap().unwrap()), r#"{"op":"ping"}"#);
    }

    #[tokio::test]
    async fn a_wrong_accept_key_fails_the_upgrade() {
        let (ws, _server) = upgrade(Some("bogus"), b"").await;
        assert!(ws.is_err());
    }

    #[tokio::test]
    async fn fragments_join_pings_are_answered_and_big_frames_arrive_in_pieces() {
        let (mut ws, mut server) = open(b"").await;
        let big = vec![b'x'; 300];
        let mut bytes = server_frame(0x01, b"hel");
        bytes.extend(server_frame(0x89, b"p1"));
        bytes.extend(server_frame(0x80, b"lo"));
        bytes.extend(server_frame(0x82, &big));
        let (first, rest) = bytes.split_at(20);
        server.write_all(first).await.unwrap();
        assert!(matches!(
            ws.next().await.unwrap().unwrap(),
            Message::Ping(_)
        ));
        assert_eq!(client_frame(&mut server).await, (0x8A, b"p1".to_vec()));
        server.write_all(rest).await.unwrap();
        assert_eq!(text(ws.next().await.unwrap().unwrap()), "hello");
        let Message::Binary(bin) = ws.next().await.unwrap().unwrap() else {
            panic!("expected binary");
        };
        assert_eq!(bin.as_ref(), &big[..]);
    }

    #[tokio::test]
    async fn sent_messages_are_masked_and_a_close_is_echoed() {
        let (mut ws, mut server) = open(b"").await;
        ws.send(Message::text(r#"{"op":"connect"}"#)).await.unwrap();
        assert_eq!(
            client_frame(&mut server).await,
            (0x81, br#"{"op":"connect"}"#.to_vec())
        );
        let mut close = 4008u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"slow");
        server.write_all(&server_frame(0x88, &close)).await.unwrap();
        let Message::Close(Some(frame)) = ws.next().await.unwrap().unwrap() else {
            panic!("expected a close frame");
        };
        assert_eq!(
            (u16::from(frame.code), frame.reason.as_str()),
            (4008, "slow")
        );
        assert_eq!(
            client_frame(&mut server).await,
            (0x88, 4008u16.to_be_bytes().to_vec())
        );
        assert!(ws.next().await.is_none());
    }

    #[tokio::test]
    async fn bad_frames_and_an_abrupt_end_are_errors() {
        let (mut ws, mut server) = open(b"").await;
        server
            .write_all(&[0x81, 0x81, 1, 2, 3, 4, b'x'])
            .await
            .unwrap();
        assert!(matches!(
            ws.next().await.unwrap(),
            Err(Error::Protocol(ProtocolError::MaskedFrameFromServer))
        ));
        for (frame, what) in [
            (server_frame(0x09, b"p"), "fragmented ping"),
            (server_frame(0x89, &[b'p'; 126]), "ping over 125 bytes"),
            (server_frame(0x8B, b""), "reserved control opcode"),
            (server_frame(0x83, b""), "reserved data opcode"),
        ] {
            let (mut ws, _server) = open(&frame).await;
            assert!(
                matches!(ws.next().await.unwrap(), Err(Error::Protocol(_))),
                "{what}"
            );
        }
        let (mut ws, server) = open(&[0x81, 126, 0xff, 0xff]).await;
        ws.max_message = 1024;
        assert!(matches!(ws.next().await.unwrap(), Err(Error::Capacity(_))));
        drop(server);
        let (mut ws, server) = open(&server_frame(0x81, b"partial")[..4]).await;
        drop(server);
        assert!(matches!(
            ws.next().await.unwrap(),
            Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))
        ));
        assert!(ws.next().await.is_none());
    }
}
