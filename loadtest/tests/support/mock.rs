//! A minimal stand-in for a pushwire node, just enough of PROTOCOL.md for the load
//! generator: `/ws` with both subprotocols (`connect`, `subscribe`, `ping`/`pong`, batched
//! `message` frames) and `POST /api/publish` with a bearer key.
//!
//! It lets the harness be tested end to end without the real server; it checks nothing the
//! server's own tests check.

#![allow(dead_code, clippy::unwrap_used, clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// A running mock node.
pub struct MockNode {
    pub addr: SocketAddr,
    pub pongs: Arc<AtomicU64>,
    pub published: Arc<AtomicU64>,
}

pub const API_KEY: &str = "test-key";

impl MockNode {
    pub async fn start() -> MockNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, _) = broadcast::channel::<Arc<Value>>(65_536);
        let pongs = Arc::new(AtomicU64::new(0));
        let published = Arc::new(AtomicU64::new(0));
        let (p, q) = (Arc::clone(&pongs), Arc::clone(&published));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, p, q) = (tx.clone(), Arc::clone(&p), Arc::clone(&q));
                tokio::spawn(async move {
                    let mut head = [0u8; 8];
                    if stream.peek(&mut head).await.is_ok() && head.starts_with(b"POST") {
                        let _ = serve_http(stream, tx, q).await;
                    } else {
                        let _ = serve_ws(stream, tx, p).await;
                    }
                });
            }
        });
        MockNode {
            addr,
            pongs,
            published,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn serve_ws(
    stream: TcpStream,
    tx: broadcast::Sender<Arc<Value>>,
    pongs: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut msgpack = false;
    let callback = |req: &Request, mut resp: Response| {
        if let Some(proto) = req.headers().get("sec-websocket-protocol") {
            msgpack = proto.to_str().unwrap_or("").contains("msgpack");
            resp.headers_mut()
                .insert("sec-websocket-protocol", proto.clone());
        }
        Ok(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback).await?;
    let encode = move |values: &[Value]| -> Message {
        if msgpack {
            let mut out = Vec::new();
            for v in values {
                out.extend(rmp_serde::to_vec_named(v).unwrap());
            }
            Message::Binary(Bytes::from(out))
        } else {
            let lines: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            Message::text(lines.join("\n"))
        }
    };
    let decode = move |msg: Message| -> Option<Value> {
        match msg {
            Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
            Message::Binary(b) => rmp_serde::from_slice(&b).ok(),
            _ => None,
        }
    };
    let mut rx: Option<broadcast::Receiver<Arc<Value>>> = None;
    let mut ping = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return Ok(()) };
                let Some(req) = decode(msg) else { continue };
                let id = req["id"].clone();
                let reply = match req["op"].as_str() {
                    Some("connect") => json!({"op": "connected", "id": id, "client_id": "c", "node": "mock", "ping_interval": 1, "pong_timeout": 1}),
                    Some("subscribe") => {
                        rx = Some(tx.subscribe());
                        json!({"op": "subscribed", "id": id, "channel": req["channel"]})
                    }
                    Some("pong") => { pongs.fetch_add(1, Ordering::Relaxed); continue }
                    _ => json!({"op": "error", "id": id, "code": 104, "message": "unknown op"}),
                };
                ws.send(encode(&[reply])).await?;
            }
            Some(first) = recv(&mut rx) => {
                // Batch whatever else is already queued, as the real server does.
                let mut batch = vec![(*first).clone()];
                while let Some(Ok(more)) = rx.as_mut().map(|r| r.try_recv()) {
                    batch.push((*more).clone());
                }
                ws.send(encode(&batch)).await?;
            }
            _ = ping.tick() => ws.send(encode(&[json!({"op": "ping"})])).await?,
        }
    }
}

async fn recv(rx: &mut Option<broadcast::Receiver<Arc<Value>>>) -> Option<Arc<Value>> {
    match rx {
        Some(rx) => rx.recv().await.ok(),
        None => std::future::pending().await,
    }
}

async fn serve_http(
    stream: TcpStream,
    tx: broadcast::Sender<Arc<Value>>,
    published: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let (mut length, mut authorized) = (0usize, false);
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse()?;
            }
            if l == format!("authorization: bearer {API_KEY}") {
                authorized = true;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let (status, reply) = if !authorized {
            (
                "401 Unauthorized",
                r#"{"error":{"code":101,"message":"bad key"}}"#,
            )
        } else {
            let req: Value = serde_json::from_slice(&body)?;
            let msg = json!({"op": "message", "channel": req["channel"], "data": req["data"]});
            let _ = tx.send(Arc::new(msg));
            published.fetch_add(1, Ordering::Relaxed);
            ("200 OK", "{}")
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        reader.get_mut().write_all(response.as_bytes()).await?;
    }
}
