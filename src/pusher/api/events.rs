//! `POST /apps/{id}/events` and `POST /apps/{id}/batch_events`: publish an event on up
//! to 100 channels (`channels`, or `channel` as pusher-php-server 7.2 sends it), or up to
//! 10 events in one batch, excluding the connection named by `socket_id`, answering the
//! channels' counts when `info` asks for them.
//!
//! The data limit is Pusher's: the bytes of the `data` string, at most the app's
//! `max_event_bytes` (413 beyond it). Events go through the broker like native API
//! publications (and are counted with them), so every node's subscribers get them.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::channels::channel_stats;
use super::{InfoFields, MAX_BATCH_EVENTS, MAX_EVENT_CHANNELS, PusherApiError, Signed};
use crate::hub::NamedEvent;
use crate::protocol::Payload;
use crate::pusher::apps::PusherApp;
use crate::pusher::channel::{self, Kind};
use crate::state::AppState;

/// The longest event name (Pusher's limit).
const MAX_EVENT_NAME_BYTES: usize = 200;

/// One event as the SDKs send it.
#[derive(Debug, Deserialize)]
struct EventBody {
    name: String,
    data: Option<Value>,
    channels: Option<Vec<String>>,
    channel: Option<String>,
    socket_id: Option<String>,
    info: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BatchBody {
    batch: Vec<EventBody>,
}

type Reply = Result<Json<Value>, PusherApiError>;

pub async fn trigger(State(state): State<Arc<AppState>>, signed: Signed) -> Reply {
    let event: EventBody = parse(&signed)?;
    let prepared = Prepared::check(&signed.app, event, MAX_EVENT_CHANNELS)
        .inspect_err(|e| count_limit(&state, e))?;
    let info = prepared.publish(&state, &signed.app).await?;
    Ok(Json(match info {
        Some(channels) => json!({ "channels": channels }),
        None => json!({}),
    }))
}

pub async fn trigger_batch(State(state): State<Arc<AppState>>, signed: Signed) -> Reply {
    let batch: BatchBody = parse(&signed)?;
    if batch.batch.len() > MAX_BATCH_EVENTS {
        return Err(PusherApiError::bad_request(format!(
            "batch holds {} events; at most {MAX_BATCH_EVENTS}",
            batch.batch.len()
        )));
    }
    // Check every event before publishing any, so a bad batch publishes nothing.
    let prepared = batch
        .batch
        .into_iter()
        .map(|event| Prepared::check(&signed.app, event, 1))
        .collect::<Result<Vec<_>, _>>()
        .inspect_err(|e| count_limit(&state, e))?;
    let wants_info = prepared.iter().any(|p| p.info.any());
    let mut infos = Vec::with_capacity(prepared.len());
    for event in prepared {
        let info = event.publish(&state, &signed.app).await?;
        infos.push(info.and_then(|channels| channels.into_iter().next().map(|(_, v)| v)));
    }
    Ok(Json(if wants_info {
        let batch: Vec<Value> = infos
            .into_iter()
            .map(|info| info.unwrap_or_else(|| json!({})))
            .collect();
        json!({ "batch": batch })
    } else {
        json!({})
    }))
}

/// Counts an over-size event in `pushwire_limit_trips_total`.
fn count_limit(state: &AppState, err: &PusherApiError) {
    if err.status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        state.metrics.limit_tripped("pusher_event_bytes");
    }
}

fn parse<T: serde::de::DeserializeOwned>(signed: &Signed) -> Result<T, PusherApiError> {
    serde_json::from_slice(&signed.body)
        .map_err(|e| PusherApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// An event that passed every check, ready to publish.
struct Prepared {
    name: Arc<str>,
    payload: Payload,
    channels: Vec<String>,
    exclude: Option<crate::hub::ClientId>,
    info: InfoFields,
}

impl Prepared {
    fn check(
        app: &PusherApp,
        event: EventBody,
        max_channels: usize,
    ) -> Result<Self, PusherApiError> {
        check_event_name(&event.name)?;
        let mut channels = match (event.channels, event.channel) {
            (Some(channels), _) => channels,
            (None, Some(channel)) => vec![channel],
            (None, None) => {
                return Err(PusherApiError::bad_request("missing channels or channel"));
            }
        };
        dedup_in_order(&mut channels);
        if channels.is_empty() || channels.len() > max_channels {
            return Err(PusherApiError::bad_request(format!(
                "an event goes to 1 to {max_channels} channels, not {}",
                channels.len()
            )));
        }
        for name in &channels {
            channel::to_hub(&app.id, name)
                .map_err(|e| PusherApiError::bad_request(format!("channel {name:?}: {e}")))?;
        }
        let data = match event.data {
            None => String::new(),
            Some(Value::String(text)) => text,
            Some(other) => other.to_string(),
        };
        if crate::policy::check_size(data.len(), app.max_event_bytes).is_err() {
            return Err(PusherApiError::too_large(format!(
                "event data is {} bytes; at most {} (max_event_bytes)",
                data.len(),
                app.max_event_bytes
            )));
        }
        let exclude = match event.socket_id.as_deref() {
            None => None,
            Some(socket_id) => Some(
                crate::pusher::identity::parse_socket_id(socket_id).ok_or_else(|| {
                    PusherApiError::bad_request(format!("invalid socket_id {socket_id:?}"))
                })?,
            ),
        };
        let payload = Payload::Json(Bytes::from(Value::String(data).to_string()));
        Ok(Prepared {
            name: Arc::from(event.name),
            payload,
            channels,
            exclude,
            info: InfoFields::parse(event.info.as_deref()),
        })
    }

    /// Publishes on every channel; returns the channels' attributes when `info` asked.
    async fn publish(
        self,
        state: &AppState,
        app: &PusherApp,
    ) -> Result<Option<Map<String, Value>>, PusherApiError> {
        let mut infos = Map::new();
        for name in &self.channels {
            let (hub_channel, kind) = channel::to_hub(&app.id, name)
                .map_err(|e| PusherApiError::bad_request(format!("channel {name:?}: {e}")))?;
            let event = NamedEvent {
                name: self.name.clone(),
                user_id: None,
            };
            let ns = channel::namespace_config(kind);
            state
                .broker
                .publish_event(&hub_channel, self.payload.clone(), event, self.exclude, &ns)
                .await?;
            state.metrics.published_api.inc();
            if self.info.any() {
                let fields = InfoFields {
                    user_count: self.info.user_count && kind.kind == Kind::Presence,
                    ..self.info
                };
                let stats = channel_stats(state, &hub_channel, fields).await?;
                infos.insert(name.clone(), stats.to_json(fields));
            }
        }
        Ok(self.info.any().then_some(infos))
    }
}

/// Event names: 1 to 200 bytes, and not Pusher's own (`pusher:`, `pusher_internal:`),
/// which clients would take for protocol events.
fn check_event_name(name: &str) -> Result<(), PusherApiError> {
    if name.is_empty() || name.len() > MAX_EVENT_NAME_BYTES {
        return Err(PusherApiError::bad_request(format!(
            "event name must be 1 to {MAX_EVENT_NAME_BYTES} bytes"
        )));
    }
    if name.starts_with("pusher:") || name.starts_with("pusher_internal:") {
        return Err(PusherApiError::bad_request(
            "event names starting with pusher: or pusher_internal: are reserved",
        ));
    }
    Ok(())
}

fn dedup_in_order(channels: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    channels.retain(|c| seen.insert(c.clone()));
}
