//! The queries of the Pusher HTTP API, answered cluster-wide through the broker (the
//! same channel counts and presence as the native `/api/channels` and `/api/presence`):
//! `GET /apps/{id}/channels` (`filter_by_prefix`, `info=user_count`),
//! `GET /apps/{id}/channels/{name}` (`occupied`, `user_count`, `subscription_count`),
//! `GET /apps/{id}/channels/{name}/users`, and
//! `POST …/users/{user_id}/terminate_connections`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use super::{InfoFields, PusherApiError, Signed};
use crate::hub::ClientSelector;
use crate::protocol::{ChannelName, CloseCode};
use crate::pusher::apps::PusherApp;
use crate::pusher::channel::{self, Kind};
use crate::pusher::identity;
use crate::state::AppState;

type Reply = Result<Json<Value>, PusherApiError>;

/// What is known of one channel across the cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelStats {
    pub subscription_count: usize,
    /// Distinct users, on presence channels when asked for.
    pub user_count: Option<usize>,
}

impl ChannelStats {
    /// The attributes `fields` asked for.
    pub fn to_json(self, fields: InfoFields) -> Value {
        let mut map = Map::new();
        if fields.subscription_count {
            map.insert("subscription_count".into(), self.subscription_count.into());
        }
        if let (true, Some(users)) = (fields.user_count, self.user_count) {
            map.insert("user_count".into(), users.into());
        }
        Value::Object(map)
    }
}

/// Subscriptions (and users, when `fields.user_count`) of a hub channel, cluster-wide.
pub async fn channel_stats(
    state: &AppState,
    hub_channel: &ChannelName,
    fields: InfoFields,
) -> Result<ChannelStats, PusherApiError> {
    let counts = state
        .broker
        .channels(&state.hub, hub_channel.as_str())
        .await?;
    let subscription_count = counts
        .iter()
        .find(|(name, _)| name == hub_channel.as_str())
        .map_or(0, |(_, n)| *n);
    let user_count = if fields.user_count {
        // Presence users are per user id (`broker::presence`), counted without a listing.
        let stats = state.broker.presence_stats(hub_channel).await?;
        Some(usize::try_from(stats.users).unwrap_or(usize::MAX))
    } else {
        None
    };
    Ok(ChannelStats {
        subscription_count,
        user_count,
    })
}

/// The distinct user ids present in a hub channel, cluster-wide, sorted: read a page at
/// a time, one entry per user (`broker::presence`).
async fn presence_users(
    state: &AppState,
    hub_channel: &ChannelName,
) -> Result<BTreeSet<String>, PusherApiError> {
    let mut users = BTreeSet::new();
    let mut query = crate::broker::PresenceQuery {
        limit: 1000,
        cursor: None,
        by_user: true,
    };
    loop {
        let page = state.broker.presence(hub_channel, &query).await?;
        users.extend(
            page.clients
                .iter()
                .map(|member| presence_user_id(&member.user).to_owned()),
        );
        match page.cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return Ok(users),
        }
    }
}

/// The Pusher user id of a presence member: the user part of a signed-in hub user
/// (`identity::hub_user`), else the member's user as it is.
fn presence_user_id(user: &str) -> &str {
    identity::split_hub_user(user).map_or(user, |(_, id)| id)
}

/// The hub channel of `name` in `app`'s space, 400 for names Pusher does not allow.
fn hub_channel(app: &PusherApp, name: &str) -> Result<(ChannelName, Kind), PusherApiError> {
    let (hub, kind) = channel::to_hub(&app.id, name)
        .map_err(|e| PusherApiError::bad_request(format!("channel {name:?}: {e}")))?;
    Ok((hub, kind.kind))
}

pub async fn list(State(state): State<Arc<AppState>>, signed: Signed) -> Reply {
    let filter = signed.param("filter_by_prefix").unwrap_or_default();
    let fields = InfoFields::parse(signed.param("info"));
    if fields.user_count && !filter.starts_with("presence-") {
        return Err(PusherApiError::bad_request(
            "info=user_count needs filter_by_prefix=presence-",
        ));
    }
    let space = channel::app_space(&signed.app.id);
    let counts = state
        .broker
        .channels(&state.hub, &format!("{space}{filter}"))
        .await?;
    let mut channels = Map::new();
    for (hub_name, subscriptions) in counts {
        let Some(name) = hub_name.strip_prefix(&space) else {
            continue;
        };
        if subscriptions == 0 || name.starts_with('#') {
            continue;
        }
        let mut attributes = Map::new();
        if fields.user_count {
            let (hub, _) = hub_channel(&signed.app, name)?;
            let users = presence_users(&state, &hub).await?.len();
            attributes.insert("user_count".into(), users.into());
        }
        channels.insert(name.to_owned(), Value::Object(attributes));
    }
    Ok(Json(json!({ "channels": channels })))
}

pub async fn info(
    State(state): State<Arc<AppState>>,
    Path((_app_id, name)): Path<(String, String)>,
    signed: Signed,
) -> Reply {
    let (hub, kind) = hub_channel(&signed.app, &name)?;
    let fields = InfoFields::parse(signed.param("info"));
    if fields.user_count && kind != Kind::Presence {
        return Err(PusherApiError::bad_request(
            "user_count is only available for presence channels",
        ));
    }
    let stats = channel_stats(&state, &hub, fields).await?;
    let mut reply = json!({ "occupied": stats.subscription_count > 0 });
    if let (Value::Object(reply), Value::Object(extra)) = (&mut reply, stats.to_json(fields)) {
        reply.extend(extra);
    }
    Ok(Json(reply))
}

pub async fn users(
    State(state): State<Arc<AppState>>,
    Path((_app_id, name)): Path<(String, String)>,
    signed: Signed,
) -> Reply {
    let (hub, kind) = hub_channel(&signed.app, &name)?;
    if kind != Kind::Presence {
        return Err(PusherApiError::bad_request(
            "users are only available for presence channels",
        ));
    }
    let users: Vec<Value> = presence_users(&state, &hub)
        .await?
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    Ok(Json(json!({ "users": users })))
}

pub async fn terminate(
    State(state): State<Arc<AppState>>,
    Path((_app_id, user_id)): Path<(String, String)>,
    signed: Signed,
) -> Reply {
    terminate_user(&state, &signed, &user_id).await
}

/// The Python SDK's path, without `/apps/{id}`.
pub async fn terminate_by_key(
    State(state): State<Arc<AppState>>,
    Path(user_id): Path<String>,
    signed: Signed,
) -> Reply {
    terminate_user(&state, &signed, &user_id).await
}

/// Closes every connection signed in as `user_id` in the app, on every node (pusher-js
/// sees 4009 and does not reconnect).
async fn terminate_user(state: &AppState, signed: &Signed, user_id: &str) -> Reply {
    if user_id.is_empty() {
        return Err(PusherApiError::bad_request("user id is empty"));
    }
    let selector = ClientSelector::User(identity::hub_user(&signed.app.id, user_id));
    let closed = state
        .broker
        .disconnect(
            &state.hub,
            &selector,
            CloseCode::ApiDisconnect,
            "terminated by the app",
            false,
        )
        .await?;
    tracing::debug!(app_id = %signed.app.id, closed, "terminated a user's Pusher connections");
    Ok(Json(json!({})))
}
