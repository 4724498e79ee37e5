//! The events webhooks carry and whom they are for. An event is the JSON object that goes
//! into a body's `events` array, built by one constructor per kind so every emitter
//! writes the same fields.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::protocol::{ClientInfo, Payload};

/// Whose endpoints an event goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `[webhooks]`: the native protocol's endpoints.
    Native,
    /// The `[[pusher.apps.webhooks]]` of the Pusher app with this id.
    Pusher(Arc<str>),
}

impl Target {
    /// The `protocol` label of the metrics.
    pub fn protocol(&self) -> &'static str {
        match self {
            Target::Native => "native",
            Target::Pusher(_) => "pusher",
        }
    }
}

/// One webhook event: `{"name": ..., "channel": ..., ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    name: &'static str,
    fields: Map<String, Value>,
}

impl WebhookEvent {
    fn new(name: &'static str, channel: &str, extra: Value) -> Self {
        let mut fields = Map::new();
        fields.insert("name".into(), Value::from(name));
        fields.insert("channel".into(), Value::from(channel));
        if let Value::Object(extra) = extra {
            fields.extend(extra);
        }
        WebhookEvent { name, fields }
    }

    /// A channel got its first subscriber, cluster-wide (native and Pusher).
    pub fn channel_occupied(channel: &str) -> Self {
        Self::new("channel_occupied", channel, Value::Null)
    }

    /// A channel lost its last subscriber, cluster-wide (native and Pusher).
    pub fn channel_vacated(channel: &str) -> Self {
        Self::new("channel_vacated", channel, Value::Null)
    }

    /// Native presence: a client joined a presence channel.
    pub fn join(channel: &str, client: &ClientInfo) -> Self {
        Self::new("join", channel, client_fields(client))
    }

    /// Native presence: a client left a presence channel.
    pub fn leave(channel: &str, client: &ClientInfo) -> Self {
        Self::new("leave", channel, client_fields(client))
    }

    /// Native: a client published `data` on a channel (`data` as JSON, or `data_b64`
    /// for binary MessagePack data, as JSON clients receive it).
    pub fn publish(channel: &str, client: &ClientInfo, data: &Payload) -> Self {
        let mut fields = client_fields(client);
        match data.json_base64() {
            Some(b64) if !data.fits_json() => fields["data_b64"] = Value::from(b64),
            _ => fields["data"] = serde_json::to_value(data).unwrap_or(Value::Null),
        }
        Self::new("publish", channel, fields)
    }

    /// Pusher presence: a user's first connection joined the channel.
    pub fn member_added(channel: &str, user_id: &str) -> Self {
        Self::new("member_added", channel, json!({ "user_id": user_id }))
    }

    /// Pusher presence: a user's last connection left the channel.
    pub fn member_removed(channel: &str, user_id: &str) -> Self {
        Self::new("member_removed", channel, json!({ "user_id": user_id }))
    }

    /// Pusher: a client event (`client-*`) was sent on a channel.
    pub fn client_event(
        channel: &str,
        event: &str,
        data: &str,
        socket_id: &str,
        user_id: Option<&str>,
    ) -> Self {
        let mut fields = json!({ "event": event, "data": data, "socket_id": socket_id });
        if let Some(user_id) = user_id {
            fields["user_id"] = Value::from(user_id);
        }
        Self::new("client_event", channel, fields)
    }

    /// Pusher: a subscriber found a cache channel empty.
    pub fn cache_miss(channel: &str) -> Self {
        Self::new("cache_miss", channel, Value::Null)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn channel(&self) -> &str {
        self.fields
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The user a presence event is about (`user_id` on Pusher, `user` on native).
    pub fn user(&self) -> Option<&str> {
        self.fields
            .get("user_id")
            .or_else(|| self.fields.get("user"))
            .and_then(Value::as_str)
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.fields.clone())
    }

    pub fn into_json(self) -> Value {
        Value::Object(self.fields)
    }
}

fn client_fields(client: &ClientInfo) -> Value {
    let mut fields = json!({ "user": client.user, "client_id": client.client_id });
    if let Some(info) = &client.info {
        fields["info"] = info.clone();
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_pushers_field_names() {
        let added = WebhookEvent::member_added("presence-a", "7").into_json();
        assert_eq!(
            added,
            json!({"name": "member_added", "channel": "presence-a", "user_id": "7"})
        );
        let client = WebhookEvent::client_event("private-a", "client-x", "{}", "1.2", None);
        assert_eq!(
            client.into_json(),
            json!({"name": "client_event", "channel": "private-a", "event": "client-x",
                   "data": "{}", "socket_id": "1.2"})
        );
        let info = ClientInfo {
            client_id: "c1".into(),
            user: "u1".into(),
            info: None,
        };
        let join = WebhookEvent::join("chat:a", &info);
        assert_eq!(join.user(), Some("u1"));
        assert_eq!(
            join.into_json(),
            json!({"name": "join", "channel": "chat:a", "user": "u1", "client_id": "c1"})
        );
    }
}
