//! Pusher presence channels over the broker's presence: members keyed by user id, with
//! `member_added` on a user's first connection and `member_removed` on its last, sent
//! through the broker (so to every node) and never to the connection that caused them.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use super::channel::{self, ChannelKind};
use super::session::{PusherConn, member_list};
use crate::hub::{ClientHandle, NamedEvent};
use crate::protocol::{ChannelName, Payload};
use crate::state::AppState;

/// A presence subscription about to happen.
pub(super) struct Joined {
    /// The `subscription_succeeded` data.
    pub(super) members: serde_json::Value,
    /// Whether this is the user's first connection in the channel.
    pub(super) first: bool,
}

#[derive(Deserialize)]
struct ChannelData {
    user_id: serde_json::Value,
    #[serde(default)]
    user_info: Option<serde_json::Value>,
}

/// Checks `channel_data` and the member limits and reads the current members.
pub(super) async fn join(
    state: &AppState,
    client: &ClientHandle,
    conn: &PusherConn,
    hub: &ChannelName,
    channel_data: Option<&str>,
) -> Result<Joined, String> {
    let text = channel_data.ok_or("presence channels need channel_data")?;
    if text.len() > conn.app().max_presence_member_bytes {
        return Err("channel_data too large".into());
    }
    let data: ChannelData =
        serde_json::from_str(text).map_err(|e| format!("invalid channel_data: {e}"))?;
    let user_id = match data.user_id {
        serde_json::Value::String(id) if !id.is_empty() => id,
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err("channel_data.user_id must be a non-empty string".into()),
    };
    if !client.set_pusher_member(&user_id, data.user_info) {
        return Err("a connection has one presence user id".into());
    }
    let mut members = members(state, hub)
        .await
        .map_err(|_| "server unavailable, retry".to_string())?;
    members.retain(|m| m.client_id != client.client_id());
    let first = !members.iter().any(|m| m.user == user_id);
    let distinct = member_list(&members)["presence"]["count"]
        .as_u64()
        .unwrap_or(0);
    if first && distinct as usize >= conn.app().max_presence_members {
        return Err("presence channel is full".into());
    }
    members.push(client.info_for_presence());
    Ok(Joined {
        members: member_list(&members),
        first,
    })
}

/// Every connection present in `hub` (one generous page).
async fn members(
    state: &AppState,
    hub: &ChannelName,
) -> Result<Vec<crate::protocol::ClientInfo>, crate::broker::BrokerError> {
    let query = crate::broker::PresenceQuery {
        limit: 10_000,
        cursor: None,
        by_user: false,
    };
    Ok(state.broker.presence(hub, &query).await?.clients)
}

/// Announces `client`'s user joining or leaving `hub` to everyone else in it.
pub(super) async fn announce(
    state: &AppState,
    client: &ClientHandle,
    hub: &ChannelName,
    kind: ChannelKind,
    added: bool,
) {
    let member = client.info_for_presence();
    let (name, data) = if added {
        let info = member.info.unwrap_or(serde_json::Value::Null);
        (
            "pusher_internal:member_added",
            serde_json::json!({"user_id": member.user, "user_info": info}),
        )
    } else {
        (
            "pusher_internal:member_removed",
            serde_json::json!({"user_id": member.user}),
        )
    };
    let text = serde_json::to_string(&data.to_string()).unwrap_or_default();
    let payload = Payload::Json(Bytes::from(text));
    let event = NamedEvent {
        name: Arc::from(name),
        user_id: None,
    };
    let mut ns = channel::namespace_config(kind);
    ns.history_size = 0;
    if let Err(err) = state
        .broker
        .publish_event(hub, payload, event, Some(client.id), &ns)
        .await
    {
        tracing::warn!(channel = %hub, error = %err, "presence event not published");
    }
}

/// After `client` left `hub`: `member_removed` if no other connection of its user is
/// still there.
pub(super) async fn leave(
    state: &AppState,
    client: &ClientHandle,
    hub: &ChannelName,
    kind: ChannelKind,
) {
    let me = client.info_for_presence();
    let Ok(members) = members(state, hub).await else {
        return;
    };
    let others = members
        .iter()
        .any(|m| m.user == me.user && m.client_id != me.client_id);
    if !others {
        announce(state, client, hub, kind, false).await;
    }
}
