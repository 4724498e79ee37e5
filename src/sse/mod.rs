//! Server-Sent Events: `GET /sse?channel=a&channel=b` streams a channel's publications as
//! `text/event-stream` to clients that cannot use WebSockets (corporate proxies, IoT
//! devices, `curl -N`, a browser's `EventSource`). Uni-directional: the channels are fixed
//! by the request.
//!
//! A stream is a hub client like a WebSocket session (`Dialect::Sse`): the same token or
//! connect-proxy identity (`session::identify`), connection limits, namespace permissions
//! and subscribe proxy, the same bounded queue (a stream that does not keep up is ended),
//! heartbeats from the shared ticker (a comment line, no pong expected), metrics and
//! graceful drain. A browser that reconnects sends `Last-Event-ID`
//! (`<channel>@<epoch>:<offset>`, see `wire`); that channel's missed messages are replayed
//! from history, and a `recovered` event says whether it could be done.
//!
//! Architecture Invariant: the response body is the only reader of the client's queue; it
//! ends when the client is closed (drain, eviction, API disconnect) or the peer goes away,
//! and dropping it unregisters the client.

pub mod wire;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde_json::json;

use crate::api::ApiError;
use crate::auth::may_subscribe;
use crate::config::SubscribePolicy;
use crate::hub::{ClientHandle, Dialect};
use crate::limits::LimitSlot;
use crate::protocol::{ChannelName, CloseCode, Encoding, ErrorCode, StreamPosition};
use crate::state::AppState;

/// How long a browser waits before it reconnects a dropped stream (the `retry:` field).
const RETRY_MS: u64 = 1_000;

/// `GET /sse`: opens a stream of the channels named by `channel` query parameters.
pub async fn sse_handler(
    State(state): State<Arc<AppState>>,
    Query(params): Query<Vec<(String, String)>>,
    request: Request,
) -> Response {
    match open(state, params, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// What a stream holds for its life; dropping it ends the client.
struct Stream {
    state: Arc<AppState>,
    client: Arc<ClientHandle>,
    /// The first chunk (retry field, resume notices and recovered messages come through
    /// the queue after it).
    greeting: Option<Bytes>,
    done: bool,
    _ip: Option<LimitSlot>,
    _user: Option<LimitSlot>,
    /// Counts the stream among the sessions a graceful shutdown waits for.
    _tracked: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.state.hub.unregister_ended(&self.client);
    }
}

async fn open(
    state: Arc<AppState>,
    params: Vec<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotAvailable,
            "server is shutting down",
        ));
    }
    let config = state.config();
    let headers = request.headers();
    if !crate::session::origin_allowed(headers, &config.client.allowed_origins) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            "origin not allowed",
        ));
    }
    let names: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "channel")
        .map(|(_, v)| v.as_str())
        .collect();
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "name at least one channel: /sse?channel=news",
        ));
    }
    if names.len() > config.client.max_channels {
        state.metrics.limit_tripped("channels_per_connection");
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::LimitExceeded,
            "more channels than client.max_channels",
        ));
    }
    let trusted = crate::limits::trusted_networks(&config.server.trusted_proxies);
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| crate::limits::client_ip(addr.ip(), headers, &trusted));
    let ip_slot = match peer {
        Some(ip) => Some(
            state
                .limits
                .try_ip(ip, config.client.max_connections_per_ip)
                .ok_or_else(|| limit(&state, "connections_per_ip"))?,
        ),
        None => None,
    };
    let token = crate::session::bearer_token(headers).or_else(|| query(&params, "token"));
    let forwarded = state
        .proxy
        .as_ref()
        .filter(|p| p.connects())
        .map(|p| p.capture(headers, peer.map(|ip| ip.to_string())));
    let identity = crate::session::identify(
        &state,
        token,
        forwarded,
        crate::proxy::Transport::Sse,
        Encoding::Json,
        None,
        None,
    )
    .await
    .map_err(refused)?;
    let user: Arc<str> = Arc::from(identity.user.as_str());
    let user_slot = if user.is_empty() {
        None
    } else {
        Some(
            state
                .limits
                .try_user(&user, config.client.max_connections_per_user)
                .ok_or_else(|| limit(&state, "connections_per_user"))?,
        )
    };
    if state.hub.connection_count() >= config.server.max_connections {
        return Err(limit(&state, "connections_per_node"));
    }
    let channels = names
        .iter()
        .map(|name| resolve(&state, name, &user))
        .collect::<Result<Vec<_>, _>>()?;
    let resume = header_or_query(headers, &params, "last-event-id", "last_event_id")
        .and_then(|id| wire::parse_event_id(&id));
    let client = state.hub.register_as(
        user,
        Encoding::Json,
        identity.info.map(Arc::new),
        Dialect::Sse,
    );
    crate::session::apply_expiry(&state, &client, identity.expires_at, identity.by_proxy);
    let stream = Stream {
        greeting: Some(Bytes::from(format!(
            "retry: {RETRY_MS}\n: connected {}\n\n",
            client.client_id()
        ))),
        state: state.clone(),
        client: client.clone(),
        done: false,
        _ip: ip_slot,
        _user: user_slot,
        _tracked: state.sessions.token(),
    };
    for (channel, ns) in &channels {
        if let Err(err) = crate::session::check_subscribe(
            &state,
            ns.subscribe_proxy(&config.proxy),
            &client,
            channel.as_str(),
        )
        .await
        {
            return Err(ApiError::new(StatusCode::FORBIDDEN, err.0, err.1));
        }
        subscribe(&state, &client, channel, ns, resume.as_ref()).await?;
    }
    state.metrics.connects.inc();
    Ok(response(headers, &config.client.allowed_origins, stream))
}

/// Subscribes one channel, resuming it from `resume` when that names it.
async fn subscribe(
    state: &AppState,
    client: &Arc<ClientHandle>,
    channel: &ChannelName,
    ns: &crate::config::NamespaceConfig,
    resume: Option<&(ChannelName, StreamPosition)>,
) -> Result<(), ApiError> {
    let resuming = resume.is_some() && ns.history_size > 0;
    let from = resume
        .filter(|(c, _)| c == channel)
        .map(|(_, position)| position)
        .filter(|_| ns.history_size > 0);
    let notice = |result: &crate::broker::SubscribeResult| {
        // Every history channel of a resumed stream says whether it is whole again: the
        // one named by Last-Event-ID through recovery, the others cannot be.
        resuming.then(|| {
            let recovered = from.is_some() && result.recovered == Some(true);
            wire::notice_frame(
                "recovered",
                &json!({"channel": channel.as_str(), "recovered": recovered}),
            )
        })
    };
    state
        .broker
        .subscribe(client, channel, ns, from, &notice)
        .await
        .map_err(|e| ApiError::not_available(e.to_string()))?;
    Ok(())
}

/// A channel this user may read: a name, a namespace, and a policy that allows it
/// without a subscription token (an SSE request cannot carry one per channel).
fn resolve(
    state: &AppState,
    name: &str,
    user: &str,
) -> Result<(ChannelName, crate::config::NamespaceConfig), ApiError> {
    let (channel, ns) = crate::policy::resolve_channel(&state.config(), name)?;
    let allowed = channel.admits_user(user)
        && ns.allow_subscribe != SubscribePolicy::Token
        && may_subscribe(&ns, &channel, user);
    if !allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            format!("not allowed to subscribe to {channel}"),
        ));
    }
    Ok((channel, ns))
}

fn response(request_headers: &HeaderMap, allowed: &[String], stream: Stream) -> Response {
    let body = Body::from_stream(futures_util::stream::unfold(stream, next_chunk));
    let mut response = (StatusCode::OK, body).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers responses unless told not to.
    out.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(origin) = request_headers.get(header::ORIGIN) {
        let any = allowed.is_empty() || allowed.iter().any(|a| a == "*");
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            if any {
                HeaderValue::from_static("*")
            } else {
                origin.clone()
            },
        );
    }
    response
}

/// The next chunk of the body: what the queue holds, or the end once the client closes.
async fn next_chunk(mut stream: Stream) -> Option<(Result<Bytes, Infallible>, Stream)> {
    if let Some(greeting) = stream.greeting.take() {
        return Some((Ok(greeting), stream));
    }
    if stream.done {
        return None;
    }
    let max_batch = stream.state.hub.max_batch_bytes();
    loop {
        let batch = stream.client.take_batch(max_batch);
        if !batch.items.is_empty() {
            let mut chunk = BytesMut::with_capacity(batch.items.iter().map(Bytes::len).sum());
            for item in &batch.items {
                chunk.extend_from_slice(item);
            }
            return Some((Ok(chunk.freeze()), stream));
        }
        if let Some(closing) = batch.closing {
            stream.done = true;
            let notice = wire::notice_frame(
                "disconnect",
                &json!({
                    "code": closing.code.as_u16(),
                    "reason": closing.reason,
                    "reconnect": closing.reconnect,
                }),
            );
            return Some((Ok(notice), stream));
        }
        stream.client.wait_for_work().await;
    }
}

fn query(params: &[(String, String)], key: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn header_or_query(
    headers: &HeaderMap,
    params: &[(String, String)],
    header_name: &str,
    key: &str,
) -> Option<String> {
    headers
        .get(header_name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query(params, key))
}

fn limit(state: &AppState, kind: &'static str) -> ApiError {
    state.metrics.limit_tripped(kind);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::LimitExceeded,
        CloseCode::ConnectionLimit.default_reason(),
    )
}

fn refused(refused: crate::session::Refused) -> ApiError {
    let reason = refused
        .reason
        .unwrap_or_else(|| refused.code.default_reason().to_owned());
    let status = match refused.code {
        CloseCode::BackendUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    ApiError::new(status, ErrorCode::Unauthorized, reason)
}
