//! The `GET /ws` upgrade (RFC 6455 handshake over hyper): subprotocol choice (PROTOCOL.md
//! section 1), origin allowlist, the pending-connection limits (per node and per client
//! address, the address read behind `server.trusted_proxies`) and the per-IP limit, WebSocket
//! buffer sizes, and the hand-off to a tracked session task. Done here rather than through
//! a framework extractor so the session owns the raw stream and can close with a proper
//! lingering close.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::Admission;
use crate::api::ApiError;
use crate::config::ClientConfig;
use crate::limits::{PendingLimit, client_ip, trusted_networks};
use crate::protocol::{Encoding, ErrorCode};
use crate::state::AppState;

/// Accepts a WebSocket connection routed by the router.
pub async fn ws_handler(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let peer = connect_info(&parts);
    upgrade(state, &mut parts, peer, None).await
}

/// Accepts a WebSocket connection at `GET /ws` straight from the connection's service
/// (`crate::server`), which skips the router on this hot path: no body conversion, and
/// the peer address is passed in rather than read back from the request's extensions.
pub async fn ws_upgrade<B>(
    state: Arc<AppState>,
    request: axum::http::Request<B>,
    peer: SocketAddr,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    upgrade(state, &mut parts, Some(peer), None).await
}

/// A Pusher app's key and whether the `protocol` the client asked for is one we speak.
type PusherTarget = (String, bool);

/// Accepts a Pusher connection at `GET /app/{key}` (`crate::pusher`): the same upgrade,
/// limits and session as `/ws`; the app is checked after the upgrade, so that an unknown
/// key gets Pusher's `pusher:error` 4001 rather than an HTTP error.
pub async fn pusher_ws_handler(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    request: Request,
) -> Response {
    let protocol = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("protocol="))
            .map(|v| matches!(v, "5" | "6" | "7"))
    });
    let (mut parts, _body) = request.into_parts();
    let peer = connect_info(&parts);
    upgrade(
        state,
        &mut parts,
        peer,
        Some((key, protocol.unwrap_or(true))),
    )
    .await
}

/// The peer address the server attached to a routed request.
fn connect_info(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

async fn upgrade(
    state: Arc<AppState>,
    request: &mut Parts,
    peer: Option<SocketAddr>,
    pusher: Option<PusherTarget>,
) -> Response {
    if state.shutdown.is_cancelled() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotAvailable,
            "server is shutting down",
        )
        .into_response();
    }
    let headers = &request.headers;
    let key = match handshake_key(headers) {
        Ok(key) => key,
        Err(message) => return ApiError::bad_request(message).into_response(),
    };
    let chosen = match &pusher {
        Some(_) => Ok(Encoding::Json),
        None => choose_encoding(headers),
    };
    let encoding = match chosen {
        Ok(encoding) => encoding,
        Err(offered) => {
            let message = format!(
                "unsupported subprotocol {offered:?}: offer {} or {}",
                Encoding::JSON_SUBPROTOCOL,
                Encoding::MSGPACK_SUBPROTOCOL
            );
            return ApiError::bad_request(message).into_response();
        }
    };
    let config = state.config();
    if !origin_allowed(headers, &config.client.allowed_origins) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            "origin not allowed",
        )
        .into_response();
    }
    let header_token = bearer_token(headers);
    let offered_protocol = pusher.is_none() && headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL);
    let peer = peer.map(|addr| addr.ip()).map(|peer| {
        client_ip(
            peer,
            headers,
            &trusted_networks(&config.server.trusted_proxies),
        )
    });
    let pending = match state.limits.try_pending(
        peer,
        config.server.max_pending_connections,
        config.server.max_pending_connections_per_ip,
    ) {
        Ok(pending) => pending,
        Err(limit) => return pending_refusal(&state, limit),
    };
    let mut admission = Admission::new(&state, pending, peer, config.client.max_connections_per_ip);
    if let Some(proxy) = state.proxy.as_ref().filter(|p| p.connects()) {
        admission.forwarded = Some(proxy.capture(headers, peer.map(|ip| ip.to_string())));
    }
    let Some(on_upgrade) = request.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::bad_request("connection cannot be upgraded").into_response();
    };
    let ws_config = websocket_config(&config.client);
    let task_state = state.clone();
    // The task lives as long as the connection and its allocation is the largest state
    // of its future: the short-lived upgrade is boxed before the spawn (a capture of the
    // task's future would stay in it) so only the session's serve state remains.
    let connected = Box::pin(async move {
        let upgraded = on_upgrade.await.ok()?;
        let stream = super::socket_stream(upgraded)?;
        let socket = WebSocketStream::from_raw_socket(stream, Role::Server, Some(ws_config)).await;
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
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let out = response.headers_mut();
    out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        out.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if offered_protocol {
        out.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(encoding.subprotocol()),
        );
    }
    response
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
