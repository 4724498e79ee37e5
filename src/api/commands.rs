//! The POST commands of the HTTP API (publish, broadcast, disconnect, subscribe,
//! unsubscribe, history_remove), each run from its decoded body to a JSON result. The
//! routes and `POST /api/batch` share them, so a command means the same in both.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::ApiError;
use super::body::{
    self, BodyKind, Broadcast, BroadcastBody, DisconnectBody, HistoryRemoveBody, PresenceStatsBody,
    Publish, PublishBody, UnsubscribeBody,
};
use super::handlers::{channel_and_namespace, check_publishable, selector};
use crate::auth::KeyIndex;
use crate::hub::ClientId;
use crate::protocol::{ChannelName, CloseCode};
use crate::state::AppState;

/// A command of the HTTP API that has a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Publish,
    Broadcast,
    Disconnect,
    Subscribe,
    Unsubscribe,
    HistoryRemove,
    PresenceStats,
}

impl Command {
    pub const ALL: [Command; 7] = [
        Command::Publish,
        Command::Broadcast,
        Command::Disconnect,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::HistoryRemove,
        Command::PresenceStats,
    ];

    /// The command's name: its route (`/api/<name>`) and its key in a batch.
    pub const fn name(self) -> &'static str {
        match self {
            Command::Publish => "publish",
            Command::Broadcast => "broadcast",
            Command::Disconnect => "disconnect",
            Command::Subscribe => "subscribe",
            Command::Unsubscribe => "unsubscribe",
            Command::HistoryRemove => "history_remove",
            Command::PresenceStats => "presence_stats",
        }
    }

    fn named(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether it takes from the API key's `api.publish_rate_per_sec` bucket.
    pub const fn publishes(self) -> bool {
        matches!(self, Command::Publish | Command::Broadcast)
    }
}

/// Runs `command` with its body, already read and within `max_publish_bytes`.
pub async fn run(
    state: &AppState,
    command: Command,
    kind: BodyKind,
    bytes: &[u8],
) -> Result<Value, ApiError> {
    match command {
        Command::Publish => publish(state, kind, bytes).await,
        Command::Broadcast => broadcast(state, kind, bytes).await,
        Command::Disconnect => disconnect(state, body::decode(kind, bytes)?).await,
        Command::Subscribe => subscribe(state, body::decode(kind, bytes)?).await,
        Command::Unsubscribe => unsubscribe(state, body::decode(kind, bytes)?).await,
        Command::HistoryRemove => history_remove(state, body::decode(kind, bytes)?).await,
        Command::PresenceStats => presence_stats(state, body::decode(kind, bytes)?).await,
    }
}

/// `exclude_client` as a client id; one that is not 16 hex characters matches nobody.
fn excluded(client_id: Option<&str>) -> Option<ClientId> {
    client_id.map(|id| ClientId::parse(id).unwrap_or(ClientId(0)))
}

async fn publish(state: &AppState, kind: BodyKind, bytes: &[u8]) -> Result<Value, ApiError> {
    let request: Publish = body::decode_with_data::<
        PublishBody<Box<RawValue>>,
        PublishBody<rmpv::Value>,
        _,
    >(kind, bytes, Publish::try_from, Publish::try_from)??;
    let (channel, ns) = channel_and_namespace(state, &request.channel)?;
    if crate::telemetry::enabled() {
        tracing::Span::current().record("channel", channel.as_str());
    }
    check_publishable(state, &request.payload)?;
    let result = state
        .broker
        .publish(
            &channel,
            request.payload,
            &ns,
            request.idempotency_key.as_deref(),
            excluded(request.exclude_client.as_deref()),
        )
        .await?;
    state.metrics.published_api.inc();
    Ok(serde_json::to_value(result).unwrap_or_default())
}

async fn broadcast(state: &AppState, kind: BodyKind, bytes: &[u8]) -> Result<Value, ApiError> {
    let request: Broadcast = body::decode_with_data::<
        BroadcastBody<Box<RawValue>>,
        BroadcastBody<rmpv::Value>,
        _,
    >(kind, bytes, Broadcast::try_from, Broadcast::try_from)??;
    if request.channels.is_empty() {
        return Err(ApiError::bad_request(
            "channels must list at least one channel",
        ));
    }
    check_publishable(state, &request.payload)?;
    let exclude = excluded(request.exclude_client.as_deref());
    let mut results = Vec::with_capacity(request.channels.len());
    for name in &request.channels {
        let outcome = match channel_and_namespace(state, name) {
            Ok((channel, ns)) => state
                .broker
                .publish(&channel, request.payload.clone(), &ns, None, exclude)
                .await
                .map_err(ApiError::from),
            Err(err) => Err(err),
        };
        let mut result = json!({ "channel": name });
        match outcome {
            Ok(published) => {
                state.metrics.published_api.inc();
                if let Some(offset) = published.offset {
                    result["offset"] = json!(offset);
                }
                if let Some(epoch) = published.epoch {
                    result["epoch"] = json!(epoch);
                }
            }
            Err(err) => result["error"] = error_value(&err),
        }
        results.push(result);
    }
    Ok(json!({ "results": results }))
}

async fn disconnect(state: &AppState, request: DisconnectBody) -> Result<Value, ApiError> {
    let code = match request.code {
        None => CloseCode::ApiDisconnect,
        Some(code) => CloseCode::from_u16(code)
            .filter(|c| (4000..=4999).contains(&c.as_u16()))
            .ok_or_else(|| ApiError::bad_request("code must be in 4000..=4999"))?,
    };
    let reason = request
        .reason
        .unwrap_or_else(|| code.default_reason().to_owned());
    let reconnect = request.reconnect.unwrap_or(true);
    let selector = selector(request.user, request.client_id)?;
    let disconnected = state
        .broker
        .disconnect(&state.hub, &selector, code, &reason, reconnect)
        .await?;
    Ok(json!({ "disconnected": disconnected }))
}

async fn subscribe(state: &AppState, request: UnsubscribeBody) -> Result<Value, ApiError> {
    let (channel, ns) = channel_and_namespace(state, &request.channel)?;
    let selector = selector(request.user, request.client_id)?;
    let max_channels = state.config().client.max_channels;
    let subscribed = state
        .broker
        .subscribe_matching(&state.hub, &selector, &channel, &ns, max_channels)
        .await?;
    Ok(json!({ "subscribed": subscribed }))
}

async fn unsubscribe(state: &AppState, request: UnsubscribeBody) -> Result<Value, ApiError> {
    let channel = ChannelName::parse(&request.channel)
        .map_err(|e| ApiError::bad_request(format!("channel {:?}: {e}", request.channel)))?;
    let selector = selector(request.user, request.client_id)?;
    let unsubscribed = state
        .broker
        .unsubscribe(&state.hub, &selector, &channel)
        .await?;
    Ok(json!({ "unsubscribed": unsubscribed }))
}

/// Connection and user counts of a channel's presence, without the members.
async fn presence_stats(state: &AppState, request: PresenceStatsBody) -> Result<Value, ApiError> {
    let (channel, ns) = channel_and_namespace(state, &request.channel)?;
    if !ns.presence {
        return Err(ApiError::not_available(format!(
            "presence is off for the namespace of {channel}"
        )));
    }
    let stats = state.broker.presence_stats(&channel).await?;
    Ok(json!({ "clients": stats.clients, "users": stats.users }))
}

async fn history_remove(state: &AppState, request: HistoryRemoveBody) -> Result<Value, ApiError> {
    let (channel, ns) = channel_and_namespace(state, &request.channel)?;
    if ns.history_size == 0 {
        return Err(ApiError::not_available(format!(
            "history is off for the namespace of {channel}"
        )));
    }
    state.broker.remove_history(&channel).await?;
    Ok(json!({}))
}

fn error_value(err: &ApiError) -> Value {
    json!({ "code": err.code.as_u16(), "message": err.message })
}

/// `POST /api/batch`: `{"commands": [{"<name>": {<body>}}, ..], "parallel"?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<C> {
    commands: Vec<C>,
    #[serde(default)]
    parallel: bool,
}

/// One command of a batch, its body re-encoded on its own.
type Decoded = Result<(Command, Vec<u8>), ApiError>;

/// Runs a batch: every command in order (or `api.batch_parallelism` at a time with
/// `parallel`), each answered
/// in its place by `{"<name>": <result>}` or `{"error": {..}}`; one failing command
/// does not stop the others. Publishing commands each take from `key`'s rate bucket.
pub async fn batch(
    state: &AppState,
    key: KeyIndex,
    kind: BodyKind,
    bytes: &[u8],
) -> Result<Value, ApiError> {
    let (commands, parallel) = decode_batch(kind, bytes)?;
    let at_once = state.config().api.batch_parallelism.max(1);
    if parallel && commands.len() > at_once {
        state.metrics.limit_tripped("api_batch_parallelism");
    }
    let runs = commands
        .into_iter()
        .map(|decoded| run_one(state, key, kind, decoded));
    let replies: Vec<Value> = if parallel {
        use futures_util::StreamExt as _;
        futures_util::stream::iter(runs)
            .buffered(at_once)
            .collect()
            .await
    } else {
        let mut replies = Vec::new();
        for one in runs {
            replies.push(one.await);
        }
        replies
    };
    Ok(json!({ "replies": replies }))
}

async fn run_one(state: &AppState, key: KeyIndex, kind: BodyKind, decoded: Decoded) -> Value {
    let result = match decoded {
        Ok((command, body)) => match charge(state, key, command) {
            Ok(()) => run(state, command, kind, &body)
                .await
                .map(|value| (command, value)),
            Err(err) => Err(err),
        },
        Err(err) => Err(err),
    };
    match result {
        Ok((command, value)) => json!({ command.name(): value }),
        Err(err) => json!({ "error": error_value(&err) }),
    }
}

/// Takes one publication from the key's bucket for a publishing command.
fn charge(state: &AppState, key: KeyIndex, command: Command) -> Result<(), ApiError> {
    if !command.publishes() {
        return Ok(());
    }
    super::charge_publish(state, key)
}

fn decode_batch(kind: BodyKind, bytes: &[u8]) -> Result<(Vec<Decoded>, bool), ApiError> {
    body::decode_with_data::<BatchBody<Entries<Box<RawValue>>>, BatchBody<Entries<rmpv::Value>>, _>(
        kind,
        bytes,
        |batch| {
            let commands = batch
                .commands
                .into_iter()
                .map(|c| one_command(c, |raw: Box<RawValue>| Ok(raw.get().as_bytes().to_vec())));
            (commands.collect(), batch.parallel)
        },
        |batch| {
            let commands = batch.commands.into_iter().map(|c| {
                one_command(c, |value: rmpv::Value| {
                    let mut out = Vec::new();
                    rmpv::encode::write_value(&mut out, &value)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    Ok(out)
                })
            });
            (commands.collect(), batch.parallel)
        },
    )
}

/// A command of a batch: a map with exactly one key, the command's name.
fn one_command<T>(
    Entries(fields): Entries<T>,
    encode: impl FnOnce(T) -> Result<Vec<u8>, ApiError>,
) -> Decoded {
    let mut fields = fields.into_iter();
    let (Some((name, body)), None) = (fields.next(), fields.next()) else {
        return Err(ApiError::bad_request(
            "each command is an object with one key, the command's name",
        ));
    };
    let command = Command::named(&name).ok_or_else(|| {
        let known: Vec<&str> = Command::ALL.iter().map(|c| c.name()).collect();
        ApiError::bad_request(format!("unknown command {name:?} ({})", known.join(", ")))
    })?;
    Ok((command, encode(body)?))
}

/// A map's entries in their order, values left undecoded (`RawValue` or `rmpv::Value`).
struct Entries<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Entries<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = Entries<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a command: an object with one key, the command's name")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, T>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_batch_command_is_answered_with_every_known_name() {
        let entry = Entries(vec![("publsh".to_owned(), Vec::<u8>::new())]);
        let Err(err) = one_command(entry, Ok) else {
            panic!("an unknown command was accepted");
        };
        for command in Command::ALL {
            assert!(err.message.contains(command.name()), "{}", err.message);
        }
    }
}
