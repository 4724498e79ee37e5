//! The WebSocket upgrade of both front ends (`GET /ws`, Pusher's `GET /app/{key}`; RFC 6455
//! handshake): subprotocol choice (PROTOCOL.md section 1), origin allowlist, the
//! pending-connection limits (per node and per client address, the address read behind
//! `server.trusted_proxies`) and the per-IP limit, WebSocket buffer sizes, and the hand-off
//! to a tracked session task. `admit` holds every check; the 101 answer is written by hyper
//! (`upgrade`) or, for a head the server read itself, here (`upgrade_raw`). Done here
//! rather than through a framework extractor so the session owns the raw stream and can
//! close with a proper lingering close.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::Admission;
use super::stream::SocketStream;
use crate::api::{self, ApiError};
use crate::config::ClientConfig;
use crate::limits::{PendingLimit, client_ip, trusted_networks};
use crate::protocol::{Encoding, ErrorCode};
use crate::server::Head;
use crate::state::AppState;

/// Accepts a WebSocket connection routed by the router.
pub async fn ws_handler(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let peer = connect_info(&parts);
    upgrade(state, &mut parts, peer, None)
}

/// A Pusher app's key and whether the `protocol` the client asked for is one we speak.
type PusherTarget = (String, bool);

/// The Pusher target of `GET /app/{key}?{query}`: the `protocol` parameter, when given,
/// must be a version we speak (5 to 7).
fn pusher_target(key: String, query: Option<&str>) -> PusherTarget {
    let protocol = query.and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("protocol="))
            .map(|v| matches!(v, "5" | "6" | "7"))
    });
    (key, protocol.unwrap_or(true))
}

/// Accepts a Pusher connection at `GET /app/{key}` (`crate::pusher`): the same upgrade,
/// limits and session as `/ws`; the app is checked after the upgrade, so that an unknown
/// key gets Pusher's `pusher:error` 4001 rather than an HTTP error.
pub async fn pusher_ws_handler(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    request: Request,
) -> Response {
    let target = pusher_target(key, request.uri().query());
    let (mut parts, _body) = request.into_parts();
    let peer = connect_info(&parts);
    upgrade(state, &mut parts, peer, Some(target))
}

/// Answers a WebSocket upgrade at `/ws` or `/app/{key}` whose head the server read itself
/// (`crate::server`'s first-request fast path, without hyper): writes the 101 answer and
/// starts the session on the socket, with what the client sent after the head. Anything it
/// would not accept, it gives back untouched (`Err`): hyper then serves the connection
/// from the same bytes, and the refusal is answered by `upgrade` like any other.
pub(crate) async fn upgrade_raw(
    state: &Arc<AppState>,
    stream: TcpStream,
    bytes: &Bytes,
    head: Head<'_>,
    peer: SocketAddr,
) -> Result<(), TcpStream> {
    let pusher = if head.path == api::WS_PATH {
        None
    } else {
        // A key that needs decoding, or more path segments, is left to the router.
        match head.path.strip_prefix("/app/") {
            Some(key) if !key.is_empty() && !key.contains(['/', '%']) => {
                Some(pusher_target(key.to_owned(), head.query))
            }
            _ => return Err(stream),
        }
    };
    let started = std::time::Instant::now();
    let is_pusher = pusher.is_some();
    let Ok(accepted) = admit(state, &head.headers, Some(peer), pusher) else {
        return Err(stream);
    };
    let answer = accepted.switching_protocols();
    let mut stream = stream;
    // A fresh socket's send buffer takes the 101 whole; a peer that vanished fails here.
    if stream.write_all(&answer).await.is_err() {
        return Ok(());
    }
    if is_pusher {
        // As the router's metrics layer counts the routed ones (`/ws` is not counted).
        api::record_request(&state.metrics, api::PUSHER_WS_ROUTE, "101", started);
    }
    let after_head = bytes.slice(head.len..);
    let socket = SocketStream::new(Arc::new(stream), after_head);
    accepted.start_session(state, std::future::ready(Some(socket)));
    Ok(())
}

/// The peer address the server attached to a routed request.
fn connect_info(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// An upgrade through hyper: the checks, then a 101 answer and a session that starts once
/// hyper hands over the connection.
fn upgrade(
    state: Arc<AppState>,
    request: &mut Parts,
    peer: Option<SocketAddr>,
    pusher: Option<PusherTarget>,
) -> Response {
    let accepted = match admit(&state, &request.headers, peer, pusher) {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal.into_response(&state),
    };
    let Some(on_upgrade) = request.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::bad_request("connection cannot be upgraded").into_response();
    };
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let out = response.headers_mut();
    out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accepted.accept_key) {
        out.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(subprotocol) = accepted.subprotocol {
        out.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(subprotocol),
        );
    }
    let socket = async move { super::socket_stream(on_upgrade.await.ok()?) };
    accepted.start_session(&state, socket);
    response
}

/// Why an upgrade request is refused (answered by `Refusal::into_response`).
enum Refusal {
    ShuttingDown,
    BadRequest(String),
    OriginNotAllowed,
    Pending(PendingLimit),
}

impl Refusal {
    fn into_response(self, state: &AppState) -> Response {
        match self {
            Refusal::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::NotAvailable,
                "server is shutting down",
            )
            .into_response(),
            Refusal::BadRequest(message) => ApiError::bad_request(message).into_response(),
            Refusal::OriginNotAllowed => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::PermissionDenied,
                "origin not allowed",
            )
            .into_response(),
            Refusal::Pending(limit) => pending_refusal(state, limit),
        }
    }
}

/// An upgrade request that passed the checks, holding its limit slots: what the 101 answer
/// says and what its session starts with.
struct Accepted {
    accept_key: String,
    /// Named in the answer when the client offered subprotocols.
    subprotocol: Option<&'static str>,
    encoding: Encoding,
    header_token: Option<String>,
    pusher: Option<PusherTarget>,
    admission: Admission,
    ws_config: WebSocketConfig,
}

/// The checks of every upgrade (RFC 6455 headers, subprotocol, origin, the pending limits),
/// in this order; on success the connection holds its limit slots.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    pusher: Option<PusherTarget>,
) -> Result<Accepted, Refusal> {
    if state.shutdown.is_cancelled() {
        return Err(Refusal::ShuttingDown);
    }
    let key = handshake_key(headers).map_err(|message| Refusal::BadRequest(message.into()))?;
    let chosen = match &pusher {
        Some(_) => Ok(Encoding::Json),
        None => choose_encoding(headers),
    };
    let encoding = chosen.map_err(|offered| {
        Refusal::BadRequest(format!(
            "unsupported subprotocol {offered:?}: offer {} or {}",
            Encoding::JSON_SUBPROTOCOL,
            Encoding::MSGPACK_SUBPROTOCOL
        ))
    })?;
    let config = state.config();
    if !origin_allowed(headers, &config.client.allowed_origins) {
        return Err(Refusal::OriginNotAllowed);
    }
    let offered_protocol = pusher.is_none() && headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL);
    let peer = peer.map(|addr| addr.ip()).map(|peer| {
        client_ip(
            peer,
            headers,
            &trusted_networks(&config.server.trusted_proxies),
        )
    });
    let pending = state
        .limits
        .try_pending(
            peer,
            config.server.max_pending_connections,
            config.server.max_pending_connections_per_ip,
        )
        .map_err(Refusal::Pending)?;
    let mut admission = Admission::new(state, pending, peer, config.client.max_connections_per_ip);
    if let Some(proxy) = state.proxy.as_ref().filter(|p| p.connects()) {
        admission.forwarded = Some(proxy.capture(headers, peer.map(|ip| ip.to_string())));
    }
    Ok(Accepted {
        accept_key: derive_accept_key(key.as_bytes()),
        subprotocol: offered_protocol.then(|| encoding.subprotocol()),
        encoding,
        header_token: bearer_token(headers),
        pusher,
        admission,
        ws_config: websocket_config(&config.client),
    })
}

impl Accepted {
    /// The 101 answer, as the fast path writes it.
    fn switching_protocols(&self) -> Vec<u8> {
        let mut answer = Vec::with_capacity(160);
        answer.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
              sec-websocket-accept: ",
        );
        answer.extend_from_slice(self.accept_key.as_bytes());
        if let Some(subprotocol) = self.subprotocol {
            answer.extend_from_slice(b"\r\nsec-websocket-protocol: ");
            answer.extend_from_slice(subprotocol.as_bytes());
        }
        answer.extend_from_slice(b"\r\n\r\n");
        answer
    }

    /// Spawns the session: it waits for `socket`, then runs the `connect` handshake of
    /// its front end and serves the client.
    fn start_session<S>(self, state: &Arc<AppState>, socket: S)
    where
        S: Future<Output = Option<SocketStream>> + Send + 'static,
    {
        let Accepted {
            encoding,
            header_token,
            pusher,
            admission,
            ws_config,
            ..
        } = self;
        let task_state = state.clone();
        // The task lives as long as the connection and its allocation is the largest state
        // of its future: the short-lived upgrade is boxed before the spawn (a capture of the
        // task's future would stay in it) so only the session's serve state remains.
        let connected = Box::pin(async move {
            let stream = socket.await?;
            let socket =
                WebSocketStream::from_raw_socket(stream, Role::Server, Some(ws_config)).await;
            match pusher {
                Some((key, protocol_ok)) => {
                    super::connect_pusher(socket, task_state, key, protocol_ok, admission).await
                }
                None => super::connect(socket, task_state, encoding, header_token, admission).await,
            }
        });
        state.sessions.spawn(async move {
            if let Some(connected) = connected.await {
                connected.run_to_end().await;
            }
        });
    }
}

/// The answer to an upgrade over a pending-connection limit: the node's cap is a
/// temporary overload (503); one address's cap is that client's own doing (429).
fn pending_refusal(state: &AppState, limit: PendingLimit) -> Response {
    let (kind, status, message) = match limit {
        PendingLimit::Node => (
            "pending_connections",
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections waiting to send connect; retry later",
        ),
        PendingLimit::Address => (
            "pending_connections_per_ip",
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address waiting to send connect; retry later",
        ),
    };
    state.metrics.limit_tripped(kind);
    ApiError::new(status, ErrorCode::LimitExceeded, message).into_response()
}

/// Buffers sized for a push server: clients send little, so the read buffer starts small
/// (it grows for a big frame); writes go straight out.
fn websocket_config(client: &ClientConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(client.read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(client.max_frame_bytes))
        .max_frame_size(Some(client.max_frame_bytes))
}

/// Checks the RFC 6455 request headers; returns `Sec-WebSocket-Key`.
fn handshake_key(headers: &HeaderMap) -> Result<&str, &'static str> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err("expected a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("Sec-WebSocket-Version must be 13");
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .ok_or("missing Sec-WebSocket-Key")
}

/// The encoding the client offered, JSON when it offered none; `Err` with the offer when
/// it offered only protocols we do not speak.
fn choose_encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    let offered = || {
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(encoding) = offered().find_map(Encoding::from_subprotocol) {
        return Ok(encoding);
    }
    if offered().next().is_none() {
        return Ok(Encoding::Json);
    }
    Err(offered().collect::<Vec<_>>().join(", "))
}

/// Whether `client.allowed_origins` lets any web page open a WebSocket (startup warns).
pub fn origins_open(client: &ClientConfig) -> bool {
    any_origin(&client.allowed_origins)
}

fn any_origin(allowed: &[String]) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| a == "*")
}

pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    if any_origin(allowed) {
        return true;
    }
    // Non-browser clients send no Origin; the allowlist guards browsers.
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
}

pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_protocols(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(value),
        );
        h
    }

    #[test]
    fn picks_the_first_known_subprotocol() {
        assert_eq!(choose_encoding(&HeaderMap::new()), Ok(Encoding::Json));
        assert_eq!(
            choose_encoding(&with_protocols("x, pushwire.v1.msgpack")),
            Ok(Encoding::Msgpack)
        );
        assert_eq!(
            choose_encoding(&with_protocols("pushwire.v1.json,pushwire.v1.msgpack")),
            Ok(Encoding::Json)
        );
        assert!(choose_encoding(&with_protocols("mqtt")).is_err());
    }

    #[test]
    fn origin_allowlist() {
        let mut h = HeaderMap::new();
        assert!(origin_allowed(&h, &["https://a.example".into()]));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(origin_allowed(&h, &[]));
        assert!(!origin_allowed(&h, &["https://a.example".into()]));
        assert!(origin_allowed(&h, &["https://evil.example".into()]));
    }

    #[test]
    fn handshake_requires_the_rfc_headers() {
        let mut h = HeaderMap::new();
        assert!(handshake_key(&h).is_err());
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        assert!(handshake_key(&h).is_err());
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(handshake_key(&h).as_deref(), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
    }
}
