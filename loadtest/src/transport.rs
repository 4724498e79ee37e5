//! What a simulated client reads from and writes to: a WebSocket, or (with
//! `--encoding sse`) a Server-Sent Events stream read over a plain TCP connection.
//!
//! The SSE side speaks just enough HTTP/1.1 for one `GET /sse?channel=…` with a chunked
//! response: it yields each complete event block as one text frame, which
//! `codec::decode_batch` turns into the native message shapes (the stream's opening
//! comment stands for both `connected` and `subscribed`). Writes are no-ops: an SSE
//! client has nothing to say.

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::ws_client::WsClient;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;
/// A response head larger than this is refused.
const MAX_HEAD: usize = 16 * 1024;

pub enum Ws {
    WebSocket(Box<WsClient<TcpStream>>),
    Sse(SseStream),
}

impl Ws {
    /// The next frame; `None` once the connection ended.
    pub async fn next(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        match self {
            Ws::WebSocket(ws) => ws.next().await,
            Ws::Sse(sse) => sse.next().await.map(|r| r.map(Message::text)),
        }
    }

    pub async fn send(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        match self {
            Ws::WebSocket(ws) => ws.send(message).await,
            Ws::Sse(_) => Ok(()),
        }
    }

    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), tungstenite::Error> {
        match self {
            Ws::WebSocket(ws) => ws.close(frame).await,
            Ws::Sse(sse) => {
                let _ = sse.socket.shutdown().await;
                Ok(())
            }
        }
    }
}

/// An SSE response being read: raw bytes, de-chunked body, complete event blocks.
pub struct SseStream {
    socket: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    ended: bool,
}

impl SseStream {
    /// Sends `GET path` and reads the response head; fails unless it is a 200 event stream.
    pub async fn open(
        mut socket: TcpStream,
        authority: &str,
        path: &str,
    ) -> anyhow::Result<SseStream> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\r\n"
        );
        socket
            .write_all(request.as_bytes())
            .await
            .context("send GET")?;
        let mut raw = Vec::with_capacity(READ_CHUNK);
        let head_end = loop {
            if let Some(end) = find(&raw, b"\r\n\r\n") {
                break end;
            }
            if raw.len() > MAX_HEAD {
                bail!("response head too large");
            }
            let mut buf = [0u8; READ_CHUNK];
            let n = socket.read(&mut buf).await.context("read head")?;
            if n == 0 {
                bail!("closed before the response head");
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            let status = head.lines().next().unwrap_or_default().to_owned();
            bail!("SSE request refused: {status}");
        }
        if !head.contains("transfer-encoding: chunked") {
            bail!("expected a chunked event stream");
        }
        raw.drain(..head_end + 4);
        Ok(SseStream {
            socket,
            raw,
            body: Vec::new(),
            ended: false,
        })
    }

    /// The next complete event block (text between blank lines).
    async fn next(&mut self) -> Option<Result<String, tungstenite::Error>> {
        loop {
            if let Some(end) = find(&self.body, b"\n\n") {
                let block = String::from_utf8_lossy(&self.body[..end]).into_owned();
                self.body.drain(..end + 2);
                return Some(Ok(block));
            }
            if self.ended {
                return None;
            }
            if let Err(err) = self.dechunk() {
                return Some(Err(err));
            }
            if self.ended || find(&self.body, b"\n\n").is_some() {
                continue;
            }
            let mut buf = [0u8; READ_CHUNK];
            match self.socket.read(&mut buf).await {
                Ok(0) => return None,
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(err) => return Some(Err(tungstenite::Error::Io(err))),
            }
        }
    }

    /// Moves every complete chunk from `raw` to `body`; a zero chunk ends the body.
    fn dechunk(&mut self) -> Result<(), tungstenite::Error> {
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else {
                return Ok(());
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]);
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| tungstenite::Error::Io(std::io::Error::other("bad chunk size")))?;
            if self.raw.len() < line_end + 2 + size + 2 {
                return Ok(());
            }
            if size == 0 {
                self.ended = true;
                return Ok(());
            }
            let start = line_end + 2;
            self.body.extend_from_slice(&self.raw[start..start + size]);
            self.raw.drain(..start + size + 2);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
