//! The `connect` handshake: the first message within `connect_timeout`, authentication by
//! token (in the message, or the `Authorization` header for non-browser clients), by the
//! backend's connect proxy (no token, `proxy.connect_url` set), or as anonymous, node
//! limits, registration, and the server-side subscriptions of the token's `channels`
//! claim (or the proxy's `channels` grant).

use std::sync::Arc;

use super::Admission;
use super::transport::{Inbound, Transport};
use crate::auth::TokenError;
use crate::hub::ClientHandle;
use crate::protocol::{
    ChannelName, CloseCode, Request, RequestError, ServerMessage, decode_frame, encode,
};
use crate::state::AppState;

/// Who the client turned out to be.
pub(crate) struct Identity {
    pub(crate) user: String,
    pub(crate) expires_at: Option<u64>,
    pub(crate) info: Option<serde_json::Value>,
    pub(crate) channels: Vec<String>,
    /// Granted by the connect proxy: renewed through the refresh proxy when it expires.
    pub(crate) by_proxy: bool,
}

/// Sets a new client's expiry; a connection the connect proxy granted is renewed through
/// the refresh proxy when it expires (instead of closed with 4002). Every front end that
/// takes `identify`'s identities calls it.
pub(crate) fn apply_expiry(
    state: &AppState,
    client: &ClientHandle,
    expires_at: Option<u64>,
    by_proxy: bool,
) {
    if let Some(exp) = expires_at {
        client.set_expires_at(exp);
    }
    if by_proxy && state.proxy.as_ref().is_some_and(|p| p.refreshes()) {
        client.renew_by_proxy();
    }
}

/// Why a handshake ended: the close code, and a reason other than the code's default.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) code: CloseCode,
    pub(crate) reason: Option<String>,
}

impl From<CloseCode> for Refused {
    fn from(code: CloseCode) -> Self {
        Refused { code, reason: None }
    }
}

/// Runs the handshake; on success the client is registered and `connected` is queued.
/// Returns the rest of the first frame's batch, to be handled as ordinary requests.
pub(super) async fn handshake(
    transport: &mut Transport,
    state: &Arc<AppState>,
    header_token: Option<String>,
    admission: &mut Admission,
) -> Result<(Arc<ClientHandle>, Vec<Result<Request, RequestError>>), Refused> {
    let config = state.config();
    // A shutdown does not wait for clients that have not connected yet.
    let first = tokio::select! {
        first = tokio::time::timeout(config.client.connect_timeout(), transport.next()) => first,
        _ = state.shutdown.cancelled() => return Err(CloseCode::GoingAway.into()),
    };
    let frame = match first {
        Err(_) => {
            state.metrics.limit_tripped("connect_timeout");
            return Err(CloseCode::ConnectTimeout.into());
        }
        Ok(Inbound::Frame(frame)) => frame,
        Ok(Inbound::TooLarge) => {
            state.metrics.limit_tripped("frame_size");
            return Err(CloseCode::FrameTooLarge.into());
        }
        Ok(Inbound::Closed | Inbound::Broken) => return Err(CloseCode::Normal.into()),
    };
    let mut requests = decode_frame(transport.encoding(), &frame)
        .map_err(|_| CloseCode::Malformed)?
        .into_iter();
    let Some(Ok(Request::Connect {
        id,
        token,
        client: client_name,
        data,
    })) = requests.next()
    else {
        return Err(CloseCode::Malformed.into());
    };
    let identity = identify(
        state,
        token.or(header_token),
        admission.forwarded.take(),
        crate::proxy::Transport::WebSocket,
        transport.encoding(),
        client_name.as_deref(),
        data.as_ref(),
    )
    .await?;
    let user: Arc<str> = Arc::from(identity.user.as_str());
    let user_slot = if user.is_empty() {
        None
    } else {
        let slot = state
            .limits
            .try_user(&user, config.client.max_connections_per_user);
        if slot.is_none() {
            state.metrics.limit_tripped("connections_per_user");
            return Err(CloseCode::ConnectionLimit.into());
        }
        slot
    };
    if state.hub.connection_count() >= config.server.max_connections {
        state.metrics.limit_tripped("connections_per_node");
        return Err(CloseCode::ConnectionLimit.into());
    }
    admission.connected(user_slot);
    let client = state
        .hub
        .register(user, transport.encoding(), identity.info.map(Arc::new));
    apply_expiry(state, &client, identity.expires_at, identity.by_proxy);
    crate::telemetry::session_started(&client);
    let channels: Vec<ChannelName> = identity
        .channels
        .iter()
        .filter_map(|name| ChannelName::parse(name).ok())
        .filter(|c| config.namespace_of(c).is_some())
        .take(config.client.max_channels)
        .collect();
    let client_id = client.client_id();
    let names: Vec<&str> = channels.iter().map(ChannelName::as_str).collect();
    let reply = ServerMessage::Connected {
        id,
        client_id: &client_id,
        node: &state.node.name,
        user: Some(identity.user.as_str()).filter(|u| !u.is_empty()),
        ping_interval: config.client.ping_interval_secs,
        pong_timeout: config.client.pong_timeout_secs,
        expires_at: identity.expires_at,
        subscribed: (!names.is_empty()).then_some(names),
    };
    if let Ok(bytes) = encode(transport.encoding(), &reply) {
        let _ = state.hub.enqueue(&client, bytes);
    }
    for channel in &channels {
        let Some(ns) = config.namespace_of(channel) else {
            continue;
        };
        if let Err(err) = state
            .broker
            .subscribe(&client, channel, ns, None, &|_| None)
            .await
        {
            tracing::warn!(
                client_id = %client.id,
                channel = %channel,
                error = %err,
                "server-side subscription failed"
            );
        }
    }
    Ok((client, requests.collect()))
}

/// Who a new connection is: its token's subject, the connect proxy's grant (no token and
/// `proxy.connect_url` set), or anonymous. Shared by every front end that takes native
/// tokens (WebSocket sessions, SSE streams).
pub(crate) async fn identify(
    state: &AppState,
    token: Option<String>,
    forwarded: Option<crate::proxy::Forwarded>,
    transport: crate::proxy::Transport,
    encoding: crate::protocol::Encoding,
    client_name: Option<&str>,
    data: Option<&crate::protocol::Payload>,
) -> Result<Identity, Refused> {
    let token = token.filter(|t| !t.is_empty());
    match (token, &state.proxy) {
        (None, Some(proxy)) if proxy.connects() => {
            let ask = super::proxied::ConnectAsk {
                proxy,
                forwarded: forwarded.unwrap_or_default(),
                transport,
                encoding,
                client: client_name,
                data,
            };
            super::proxied::connect(ask).await
        }
        (token, _) => Ok(authenticate(state, token)?),
    }
}

fn authenticate(state: &AppState, token: Option<String>) -> Result<Identity, CloseCode> {
    let Some(token) = token else {
        if state.config().allow_anonymous {
            return Ok(Identity {
                user: String::new(),
                expires_at: None,
                info: None,
                channels: Vec::new(),
                by_proxy: false,
            });
        }
        return Err(CloseCode::InvalidToken);
    };
    match state.tokens.verify_connect(&token) {
        Ok(claims) => Ok(Identity {
            user: claims.sub,
            expires_at: Some(claims.exp),
            info: claims.info,
            channels: claims.channels.unwrap_or_default(),
            by_proxy: false,
        }),
        Err(TokenError::Expired) => Err(CloseCode::TokenExpired),
        Err(err) => {
            tracing::debug!(error = %err, "connect token refused");
            Err(CloseCode::InvalidToken)
        }
    }
}
