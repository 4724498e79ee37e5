//! What a Pusher connection does once connected: `pusher:ping`/`pong`, subscribe (with
//! private and presence signatures, cache replay) and unsubscribe, client events, and
//! `pusher:signin`. The session machinery (`crate::session`: queue, ticker, limits, drain,
//! close) is the native one; this module only turns Pusher messages into hub and broker
//! calls and queues Pusher replies on the client's own queue.
//!
//! Presence is the broker's per-user presence (`broker::presence`): the broker decides,
//! cluster-wide and exactly once, when a user's first connection joins and its last one
//! leaves (unsubscribe, disconnect, or a crashed node's entries expiring), and the hub
//! encodes those as `pusher_internal:member_added` / `member_removed`; this module only
//! checks `channel_data` and answers with the member list (`presence`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::channel::{self, ChannelKind, Kind};
use super::close::{CLIENT_EVENT_RATE_LIMIT, UNAUTHORIZED};
use super::{PusherApp, identity, signature, wire};
use crate::hub::{ClientHandle, NamedEvent};
use crate::metrics::Metrics;
use crate::protocol::{ChannelName, ClientInfo, CloseCode, Payload, StreamPosition};
use crate::session::rate::{RateLimiter, Verdict};
use crate::state::AppState;
use crate::webhook::{Target, WebhookEvent};

/// A Pusher connection's own state, beside the native session's.
pub struct PusherConn {
    app: Arc<PusherApp>,
    /// Where this app's webhooks go.
    webhooks: Target,
    socket_id: String,
    client_events: RateLimiter,
    /// This app's `pushwire_pusher_connections` (raised while the connection lives) and
    /// `pushwire_pusher_messages_total{direction="in"}`.
    connections: prometheus::IntGauge,
    messages_in: prometheus::IntCounter,
}

/// What the session does after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// The client was asked to close (`ClientHandle::close`): flush and end.
    Close,
}

#[derive(Deserialize)]
struct Inbound<'a> {
    event: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct SubscribeData {
    channel: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<String>,
}

#[derive(Deserialize, Default)]
struct SigninData {
    auth: String,
    user_data: String,
}

impl PusherConn {
    pub fn new(app: Arc<PusherApp>, client: &ClientHandle, metrics: &Metrics) -> Self {
        let connections = metrics.pusher_connections.with_label_values(&[&app.id]);
        connections.inc();
        PusherConn {
            connections,
            messages_in: metrics.pusher_messages.with_label_values(&[&app.id, "in"]),
            socket_id: identity::socket_id(client.id),
            client_events: RateLimiter::per_second(app.client_event_rate_per_sec),
            webhooks: Target::Pusher(Arc::from(app.id.as_str())),
            app,
        }
    }

    pub fn app(&self) -> &Arc<PusherApp> {
        &self.app
    }

    /// `pusher:connection_established`.
    pub fn established(&self, activity_timeout_secs: u64) -> Bytes {
        let data = serde_json::json!({
            "socket_id": self.socket_id,
            "activity_timeout": activity_timeout_secs.max(1),
        });
        wire::frame_with("pusher:connection_established", None, &data)
    }
}

impl Drop for PusherConn {
    fn drop(&mut self) {
        self.connections.dec();
    }
}

/// Parses `data` as an object, also when it arrives JSON-encoded in a string.
fn object<T: for<'de> Deserialize<'de> + Default>(data: Option<&RawValue>) -> Option<T> {
    let raw = data?.get();
    if let Ok(text) = serde_json::from_str::<String>(raw) {
        return serde_json::from_str(&text).ok();
    }
    serde_json::from_str(raw).ok()
}

fn queue(state: &AppState, client: &ClientHandle, frame: Bytes) {
    let _ = state.hub.enqueue(client, frame);
}

fn error(state: &AppState, client: &ClientHandle, message: &str, code: Option<u16>) {
    queue(state, client, super::close::error_frame(message, code));
}

fn subscription_error(state: &AppState, client: &ClientHandle, name: &str, message: &str) {
    let data = serde_json::json!({"type": "AuthError", "error": message, "status": 401});
    queue(
        state,
        client,
        wire::frame_with("pusher:subscription_error", Some(name), &data),
    );
}

/// Handles one frame from the client.
pub async fn on_frame(
    state: &Arc<AppState>,
    client: &Arc<ClientHandle>,
    conn: &mut PusherConn,
    frame: &[u8],
) -> Next {
    conn.messages_in.inc();
    let Ok(message) = serde_json::from_slice::<Inbound<'_>>(frame) else {
        error(
            state,
            client,
            "malformed message: expected {\"event\",\"data\"}",
            None,
        );
        return Next::Continue;
    };
    match message.event.as_str() {
        "pusher:ping" => queue(state, client, wire::frame("pusher:pong", None, "{}", None)),
        "pusher:pong" => client.pong_received(),
        "pusher:subscribe" => match object::<SubscribeData>(message.data) {
            Some(data) => subscribe(state, client, conn, data).await,
            None => error(state, client, "pusher:subscribe needs data.channel", None),
        },
        "pusher:unsubscribe" => {
            if let Some(data) = object::<SubscribeData>(message.data) {
                unsubscribe(state, client, conn, &data.channel);
            }
        }
        "pusher:signin" => match object::<SigninData>(message.data) {
            Some(data) => return signin(state, client, conn, data).await,
            None => error(
                state,
                client,
                "pusher:signin needs auth and user_data",
                None,
            ),
        },
        event if event.starts_with("client-") => {
            let channel = message.channel.unwrap_or_default();
            client_event(state, client, conn, event, &channel, message.data).await;
        }
        _ => {}
    }
    Next::Continue
}

async fn subscribe(
    state: &Arc<AppState>,
    client: &Arc<ClientHandle>,
    conn: &PusherConn,
    data: SubscribeData,
) {
    let name = data.channel.as_str();
    let (hub, kind) = match channel::to_hub(&conn.app.id, name) {
        Ok(found) if found.1.kind != Kind::ServerToUser => found,
        // pusher-js subscribes to its own user's channel after `pusher:signin`.
        Ok(found)
            if channel::server_to_user_id(name)
                .is_some_and(|id| client.is_user(&identity::hub_user(&conn.app.id, id))) =>
        {
            found
        }
        Ok(_) => return subscription_error(state, client, name, "not signed in as this user"),
        Err(err) => return subscription_error(state, client, name, &err.to_string()),
    };
    if client.channel_count() >= state.config().client.max_channels {
        state.metrics.limit_tripped("channels_per_connection");
        return subscription_error(state, client, name, "too many channels");
    }
    if kind.needs_auth() {
        let auth = data.auth.as_deref().unwrap_or_default();
        let channel_data = data
            .channel_data
            .as_deref()
            .filter(|_| kind.kind == Kind::Presence);
        if let Err(err) =
            signature::verify_channel_auth(&conn.app, &conn.socket_id, name, channel_data, auth)
        {
            return subscription_error(state, client, name, &format!("invalid auth: {err}"));
        }
    }
    let mut presence = None;
    if kind.kind == Kind::Presence {
        match super::presence::join(state, client, conn, &hub, data.channel_data.as_deref()).await {
            Ok(joined) => presence = Some(joined),
            Err(message) => return subscription_error(state, client, name, &message),
        }
    }
    let succeeded = match &presence {
        Some(members) => wire::frame_with(
            "pusher_internal:subscription_succeeded",
            Some(name),
            members,
        ),
        None => wire::frame(
            "pusher_internal:subscription_succeeded",
            Some(name),
            "\"{}\"",
            None,
        ),
    };
    let ns = channel::namespace_config(kind);
    let replay = if kind.cache {
        last_position(state, &hub, kind).await
    } else {
        None
    };
    let reply = |_: &crate::broker::SubscribeResult| Some(succeeded.clone());
    match state
        .broker
        .subscribe(client, &hub, &ns, replay.as_ref(), &reply)
        .await
    {
        Ok(Some(_)) => {
            if kind.cache && replay.is_none() {
                queue(
                    state,
                    client,
                    wire::frame("pusher:cache_miss", Some(name), "\"{}\"", None),
                );
                state
                    .webhooks
                    .emit(&conn.webhooks, WebhookEvent::cache_miss(name));
            }
        }
        // Already subscribed: subscribing again is idempotent.
        Ok(None) => queue(state, client, succeeded),
        Err(err) => {
            tracing::warn!(client_id = %client.id, channel = %hub, error = %err, "pusher subscribe failed");
            subscription_error(state, client, name, "server unavailable, retry");
        }
    }
}

/// For a cache channel with a last event: the position just before it, so the
/// subscribe recovers exactly that event after `subscription_succeeded`.
async fn last_position(
    state: &AppState,
    hub: &ChannelName,
    kind: ChannelKind,
) -> Option<StreamPosition> {
    let ns = channel::namespace_config(kind);
    let page = state
        .broker
        .history(hub, &ns, None, Some(1), true)
        .await
        .ok()?;
    let last = page.messages.first()?;
    Some(StreamPosition {
        offset: last.offset - 1,
        epoch: page.epoch,
    })
}

fn unsubscribe(state: &Arc<AppState>, client: &Arc<ClientHandle>, conn: &PusherConn, name: &str) {
    if let Ok((hub, _)) = channel::to_hub(&conn.app.id, name) {
        // The broker sees the departure and announces `member_removed` if it was the
        // user's last connection.
        state.hub.unsubscribe(client, &hub);
    }
}

async fn client_event(
    state: &Arc<AppState>,
    client: &Arc<ClientHandle>,
    conn: &mut PusherConn,
    event: &str,
    name: &str,
    data: Option<&RawValue>,
) {
    if !conn.app.client_events {
        return error(
            state,
            client,
            "To send client events, you must enable this feature in the Settings page of your dashboard.",
            None,
        );
    }
    let Ok((hub, kind)) = channel::to_hub(&conn.app.id, name) else {
        return error(state, client, "client event on an invalid channel", None);
    };
    if !kind.allows_client_events() {
        return error(
            state,
            client,
            "Client events are only allowed on private and presence channels",
            None,
        );
    }
    if !client.is_subscribed(&hub) {
        return error(
            state,
            client,
            "Client event rejected: not subscribed to the channel",
            None,
        );
    }
    if conn.client_events.check(Instant::now()) != Verdict::Allow {
        state.metrics.limit_tripped("pusher_client_events");
        return error(
            state,
            client,
            "Client event rejected due to rate limit",
            Some(CLIENT_EVENT_RATE_LIMIT),
        );
    }
    let raw = data.map_or("null", RawValue::get);
    if crate::policy::check_size(raw.len(), conn.app.max_event_bytes).is_err() {
        return error(state, client, "Client event rejected: data too large", None);
    }
    let payload = Payload::Json(Bytes::copy_from_slice(raw.as_bytes()));
    let user_id: Option<Arc<str>> = match kind.kind {
        Kind::Presence => Some(Arc::from(client.info_for_presence().user.as_str())),
        _ => None,
    };
    if state.webhooks.wants(&conn.webhooks, "client_event") {
        // Pusher sends the data as the client sent it, as a string.
        let text = serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned());
        let hook =
            WebhookEvent::client_event(name, event, &text, &conn.socket_id, user_id.as_deref());
        state.webhooks.emit(&conn.webhooks, hook);
    }
    let named = NamedEvent {
        name: Arc::from(event),
        user_id,
    };
    let mut ns = channel::namespace_config(kind);
    ns.history_size = 0;
    if let Err(err) = state
        .broker
        .publish_event(&hub, payload, named, Some(client.id), &ns)
        .await
    {
        tracing::warn!(client_id = %client.id, channel = %hub, error = %err, "client event not published");
    }
}

async fn signin(
    state: &Arc<AppState>,
    client: &Arc<ClientHandle>,
    conn: &PusherConn,
    data: SigninData,
) -> Next {
    let user_id = serde_json::from_str::<serde_json::Value>(&data.user_data)
        .ok()
        .and_then(|v| match &v["id"] {
            serde_json::Value::String(id) if !id.is_empty() => Some(id.clone()),
            _ => None,
        });
    let verified =
        signature::verify_user_auth(&conn.app, &conn.socket_id, &data.user_data, &data.auth);
    let (Some(user_id), Ok(())) = (user_id, verified) else {
        client.close(
            CloseCode::Custom(UNAUTHORIZED),
            "Invalid signature or user data",
            true,
        );
        return Next::Close;
    };
    client.set_pusher_user(&identity::hub_user(&conn.app.id, &user_id));
    let personal = channel::server_to_user_channel(&user_id);
    if let Ok((hub, kind)) = channel::to_hub(&conn.app.id, &personal) {
        let ns = channel::namespace_config(kind);
        if let Err(err) = state
            .broker
            .subscribe(client, &hub, &ns, None, &|_| None)
            .await
        {
            tracing::warn!(client_id = %client.id, error = %err, "server-to-user subscription failed");
        }
    }
    let success = serde_json::json!({ "user_data": data.user_data });
    queue(
        state,
        client,
        wire::frame_with("pusher:signin_success", None, &success),
    );
    Next::Continue
}

/// Members as `subscription_succeeded` lists them.
pub(super) fn member_list(members: &[ClientInfo]) -> serde_json::Value {
    let mut hash = serde_json::Map::new();
    for member in members {
        hash.entry(member.user.clone())
            .or_insert_with(|| member.info.clone().unwrap_or(serde_json::Value::Null));
    }
    let ids: Vec<&String> = hash.keys().collect();
    serde_json::json!({"presence": {"ids": ids, "hash": hash, "count": hash.len()}})
}
