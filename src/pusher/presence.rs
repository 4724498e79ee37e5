//! Pusher presence channels over the broker's per-user presence (`broker::presence`):
//! members keyed by user id. Joining checks `channel_data` and the app's member limits
//! and lists the members for `subscription_succeeded`; the broker announces the user's
//! first connection (`member_added`, to everyone but that connection) and its last
//! (`member_removed`) cluster-wide, and sends the app's member webhooks.

use serde::Deserialize;

use super::session::{PusherConn, member_list};
use crate::hub::ClientHandle;
use crate::protocol::ChannelName;
use crate::state::AppState;

#[derive(Deserialize)]
struct ChannelData {
    user_id: serde_json::Value,
    #[serde(default)]
    user_info: Option<serde_json::Value>,
}

/// Checks `channel_data` and the member limits; returns the `subscription_succeeded`
/// data (the current members with this one).
pub(super) async fn join(
    state: &AppState,
    client: &ClientHandle,
    conn: &PusherConn,
    hub: &ChannelName,
    channel_data: Option<&str>,
) -> Result<serde_json::Value, String> {
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
    Ok(member_list(&members))
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
