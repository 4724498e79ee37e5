//! A WebSocket test client: sends requests in either encoding, splits batch frames into
//! messages, and waits (bounded) for a given op or for the close frame.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{TestResult, WAIT, fail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Msgpack,
}

impl Encoding {
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => "pushwire.v1.json",
            Encoding::Msgpack => "pushwire.v1.msgpack",
        }
    }
}

/// One test connection.
pub struct WsClient {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub encoding: Encoding,
    pending: VecDeque<Value>,
    /// Frames received so far, and how many carried more than one message.
    pub frames: usize,
    pub batched_frames: usize,
    /// The most messages one frame carried.
    pub largest_frame: usize,
    next_id: u64,
}

impl WsClient {
    /// Opens a WebSocket offering `encoding`'s subprotocol.
    pub async fn open(url: &str, encoding: Encoding) -> TestResult<WsClient> {
        Self::open_with(url, encoding, &[], None).await
    }

    /// Opens a WebSocket with extra request headers (`Authorization`, `Origin`), from the
    /// local address `source` when given (e.g. 127.0.0.2, to appear as another client IP).
    pub async fn open_with(
        url: &str,
        encoding: Encoding,
        headers: &[(&'static str, &str)],
        source: Option<IpAddr>,
    ) -> TestResult<WsClient> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(encoding.subprotocol()),
        );
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, HeaderValue::from_str(value)?);
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .max_message_size(Some(64 << 20));
        let handshake = async {
            let Some(source) = source else {
                return tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                    .await;
            };
            let host = request.uri().authority().map(|a| a.as_str()).unwrap_or("");
            let addr: SocketAddr = host.parse().map_err(|_| {
                tokio_tungstenite::tungstenite::Error::Url(
                    tokio_tungstenite::tungstenite::error::UrlError::UnableToConnect(host.into()),
                )
            })?;
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            let stream = socket.connect(addr).await?;
            stream.set_nodelay(true)?;
            tokio_tungstenite::client_async_with_config(
                request,
                MaybeTlsStream::Plain(stream),
                Some(config),
            )
            .await
        };
        let (socket, _) = tokio::time::timeout(WAIT, handshake).await??;
        Ok(WsClient {
            socket,
            encoding,
            pending: VecDeque::new(),
            frames: 0,
            batched_frames: 0,
            largest_frame: 0,
            next_id: 1,
        })
    }

    /// Opens and completes `connect`; returns the `connected` reply.
    pub async fn connect(url: &str, encoding: Encoding) -> TestResult<(WsClient, Value)> {
        Self::connect_with(url, encoding, json!({})).await
    }

    /// Opens and connects with extra `connect` fields (e.g. a token).
    pub async fn connect_with(
        url: &str,
        encoding: Encoding,
        fields: Value,
    ) -> TestResult<(WsClient, Value)> {
        let mut client = Self::open(url, encoding).await?;
        let reply = client.request("connect", fields).await?;
        if reply["op"] != "connected" {
            return fail(format!("connect answered {reply}"));
        }
        Ok((client, reply))
    }

    fn encode(&self, message: &Value) -> TestResult<Message> {
        Ok(match self.encoding {
            Encoding::Json => Message::text(serde_json::to_string(message)?),
            Encoding::Msgpack => Message::binary(rmp_serde::to_vec_named(message)?),
        })
    }

    /// Sends one message.
    pub async fn send(&mut self, message: Value) -> TestResult {
        let frame = self.encode(&message)?;
        self.socket.send(frame).await?;
        Ok(())
    }

    /// Sends several messages in one batch frame.
    pub async fn send_batch(&mut self, messages: &[Value]) -> TestResult {
        let frame = match self.encoding {
            Encoding::Json => {
                let lines: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
                Message::text(lines.join("\n"))
            }
            Encoding::Msgpack => {
                let mut bytes = Vec::new();
                for m in messages {
                    bytes.extend(rmp_serde::to_vec_named(m)?);
                }
                Message::binary(bytes)
            }
        };
        self.socket.send(frame).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, message: Message) -> TestResult {
        self.socket.send(message).await?;
        Ok(())
    }

    /// Sends a request with a fresh id and waits for the reply (or `error`) with that id,
    /// keeping other messages for later `recv`s.
    pub async fn request(&mut self, op: &str, fields: Value) -> TestResult<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "op": op, "id": id });
        if let (Some(into), Some(from)) = (message.as_object_mut(), fields.as_object()) {
            into.extend(from.clone());
        }
        self.send(message).await?;
        self.recv_where(|m| m["id"] == id && m["op"] != "message")
            .await
    }

    /// The next message, whatever it is (pings are answered and skipped).
    pub async fn recv(&mut self) -> TestResult<Value> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                if message["op"] == "ping" {
                    self.send(json!({ "op": "pong" })).await?;
                    continue;
                }
                return Ok(message);
            }
            self.read_frame().await?;
        }
    }

    /// The next message matching `keep`; others stay queued in order.
    pub async fn recv_where(&mut self, keep: impl Fn(&Value) -> bool) -> TestResult<Value> {
        let mut index = 0;
        loop {
            while index < self.pending.len() {
                if keep(&self.pending[index]) {
                    return self.pending.remove(index).ok_or_else(|| "vanished".into());
                }
                index += 1;
            }
            self.read_frame().await?;
        }
    }

    /// The next `message` op on any channel.
    pub async fn recv_message(&mut self) -> TestResult<Value> {
        self.recv_where(|m| m["op"] == "message").await
    }

    async fn read_frame(&mut self) -> TestResult {
        let frame = tokio::time::timeout(WAIT, self.socket.next())
            .await
            .map_err(|_| "timed out waiting for a frame")?;
        let messages = match frame {
            Some(Ok(Message::Text(text))) => text
                .as_str()
                .split('\n')
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect::<Result<Vec<Value>, _>>()?,
            Some(Ok(Message::Binary(bytes))) => decode_msgpack_batch(&bytes)?,
            Some(Ok(Message::Close(frame))) => {
                return fail(format!("connection closed: {frame:?}"));
            }
            Some(Ok(_)) => Vec::new(),
            Some(Err(err)) => return fail(format!("socket error: {err}")),
            None => return fail("connection ended"),
        };
        self.frames += 1;
        if messages.len() > 1 {
            self.batched_frames += 1;
        }
        self.largest_frame = self.largest_frame.max(messages.len());
        self.pending.extend(messages);
        Ok(())
    }

    /// Reads until the close frame; returns its code and every message seen before it.
    pub async fn expect_close(&mut self) -> TestResult<(u16, Vec<Value>)> {
        let mut seen: Vec<Value> = self.pending.drain(..).collect();
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .map_err(|_| "timed out waiting for close")?;
            match frame {
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    return Ok((code, seen));
                }
                Some(Ok(Message::Text(text))) => {
                    for line in text.as_str().split('\n').filter(|l| !l.trim().is_empty()) {
                        seen.push(serde_json::from_str(line)?);
                    }
                }
                Some(Ok(Message::Binary(bytes))) => seen.extend(decode_msgpack_batch(&bytes)?),
                Some(Ok(_)) => {}
                Some(Err(err)) => return fail(format!("socket error before close: {err}")),
                None => return fail("connection ended without a close frame"),
            }
        }
    }
}

/// Splits back-to-back MessagePack maps into JSON values.
pub fn decode_msgpack_batch(bytes: &[u8]) -> TestResult<Vec<Value>> {
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let value = rmpv::decode::read_value(&mut rest)?;
        out.push(msgpack_to_json(value));
    }
    Ok(out)
}

fn msgpack_to_json(value: rmpv::Value) -> Value {
    match value {
        rmpv::Value::Nil => Value::Null,
        rmpv::Value::Boolean(b) => Value::Bool(b),
        rmpv::Value::Integer(i) => i.as_u64().map_or_else(|| json!(i.as_i64()), |u| json!(u)),
        rmpv::Value::F32(f) => json!(f),
        rmpv::Value::F64(f) => json!(f),
        rmpv::Value::String(s) => Value::String(s.into_str().unwrap_or_default()),
        rmpv::Value::Binary(b) => json!({ "$bin": b }),
        rmpv::Value::Array(items) => Value::Array(items.into_iter().map(msgpack_to_json).collect()),
        rmpv::Value::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| k.to_string()),
                        msgpack_to_json(v),
                    )
                })
                .collect(),
        ),
        rmpv::Value::Ext(_, b) => json!({ "$ext": b }),
    }
}
