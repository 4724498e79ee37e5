//! Handlers of the HTTP server API (docs/protocol.md section 8). Each validates its input,
//! calls the broker or the hub, and answers JSON (MessagePack when `Accept` asks for it).

use std::sync::Arc;

use tracing::Instrument as _;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ApiError;
use super::body;
use super::commands::{self, Command};
use crate::auth::KeyIndex;
use crate::broker::{NodeStats, PresenceQuery};
use crate::config::NamespaceConfig;
use crate::hub::ClientSelector;
use crate::policy;
use crate::protocol::{ChannelName, Encoding, ErrorCode, HistoryItem, Payload, StreamPosition};
use crate::state::AppState;

type ApiResult = Result<Response, ApiError>;

/// The encoding a response is written in: MessagePack when `Accept` asks for it.
fn response_encoding(headers: &HeaderMap) -> Encoding {
    let wants_msgpack = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("msgpack"));
    if wants_msgpack {
        Encoding::Msgpack
    } else {
        Encoding::Json
    }
}

/// Answers `value` as JSON, or MessagePack when the client's `Accept` prefers it.
fn respond<T: Serialize>(headers: &HeaderMap, value: &T) -> ApiResult {
    if response_encoding(headers) == Encoding::Msgpack {
        let bytes = rmp_serde::to_vec_named(value).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                e.to_string(),
            )
        })?;
        return Ok(([(header::CONTENT_TYPE, "application/msgpack")], bytes).into_response());
    }
    let bytes = serde_json::to_vec(value).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            e.to_string(),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// The channel and its namespace (`policy::resolve_channel`): 400 with code 107 or 102.
pub(super) fn channel_and_namespace(
    state: &AppState,
    name: &str,
) -> Result<(ChannelName, NamespaceConfig), ApiError> {
    Ok(policy::resolve_channel(&state.config(), name)?)
}

/// Checks a publication's data (`policy::check_publishable`): 413 over
/// `api.max_publish_bytes` (counted in `api::require_api_key`, with bodies over the limit),
/// 400 when an encoding cannot carry it.
pub(super) fn check_publishable(state: &AppState, payload: &Payload) -> Result<(), ApiError> {
    let limit = state.config().api.max_publish_bytes;
    Ok(policy::check_publishable(payload, limit)?)
}

/// `POST /api/<command>`: reads the body and runs the command (`commands`); what every
/// route declared with `api::post_command` does.
pub(super) async fn command(
    state: &AppState,
    command: Command,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult {
    if !crate::telemetry::enabled() {
        return run_command(state, command, headers, body).await;
    }
    // A trace of this request (a child of its `traceparent`, if any).
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "api.request",
        route = command.name(),
        channel = tracing::field::Empty,
        http.status_code = tracing::field::Empty,
    );
    crate::telemetry::continue_from_headers(&span, headers);
    let result = run_command(state, command, headers, body)
        .instrument(span.clone())
        .await;
    let status = match &result {
        Ok(response) => response.status().as_u16(),
        Err(err) => err.status.as_u16(),
    };
    span.record("http.status_code", status);
    result
}

async fn run_command(
    state: &AppState,
    command: Command,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult {
    let limit = state.config().api.max_publish_bytes;
    let (kind, bytes) = body::read(headers, body, limit).await?;
    let result = commands::run(state, command, kind, &bytes).await?;
    respond(headers, &result)
}

pub async fn batch(
    State(state): State<Arc<AppState>>,
    Extension(key): Extension<KeyIndex>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let limit = state.config().api.max_publish_bytes;
    let (kind, bytes) = body::read(&headers, body, limit).await?;
    let result = commands::batch(&state, key, kind, &bytes).await?;
    respond(&headers, &result)
}

/// The clients a `user` or `client_id` selector names (exactly one must be given).
pub(super) fn selector(
    user: Option<String>,
    client_id: Option<String>,
) -> Result<ClientSelector, ApiError> {
    match (user, client_id) {
        (Some(user), None) => Ok(ClientSelector::User(user)),
        (None, Some(id)) => Ok(ClientSelector::ClientId(id)),
        _ => Err(ApiError::bad_request(
            "give exactly one of user or client_id",
        )),
    }
}

#[derive(Debug, Deserialize)]
pub struct ChannelsQuery {
    #[serde(default)]
    prefix: String,
}

pub async fn channels(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ChannelsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let channels = state.broker.channels(&state.hub, &query.prefix).await?;
    let list: Vec<_> = channels
        .iter()
        .map(|(channel, n)| json!({ "channel": channel, "subscribers": n }))
        .collect();
    respond(&headers, &json!({ "channels": list }))
}

#[derive(Debug, Deserialize)]
pub struct ChannelQuery {
    channel: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    since_offset: Option<u64>,
    since_epoch: Option<String>,
    #[serde(default)]
    reverse: bool,
}

/// The query's `channel` and its namespace, which must have `feature` on (404 otherwise).
fn channel_with(
    state: &AppState,
    query: &ChannelQuery,
    feature: &str,
    on: impl Fn(&NamespaceConfig) -> bool,
) -> Result<(ChannelName, NamespaceConfig), ApiError> {
    let name = query
        .channel
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("query parameter channel is required"))?;
    let (channel, ns) = channel_and_namespace(state, name)?;
    if !on(&ns) {
        return Err(ApiError::not_available(format!(
            "{feature} is off for the namespace of {channel}"
        )));
    }
    Ok((channel, ns))
}

pub async fn presence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ChannelQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (channel, ns) = channel_with(&state, &query, "presence", |ns| ns.presence)?;
    let query = PresenceQuery::capped(
        query.limit.map(|l| l as u64),
        query.cursor,
        ns.presence_max_page,
    );
    let page = state.broker.presence(&channel, &query).await?;
    match page.cursor {
        Some(cursor) => respond(
            &headers,
            &json!({ "clients": page.clients, "cursor": cursor }),
        ),
        None => respond(&headers, &json!({ "clients": page.clients })),
    }
}

pub async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ChannelQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (channel, ns) = channel_with(&state, &query, "history", |ns| ns.history_size > 0)?;
    let since = match (query.since_offset, &query.since_epoch) {
        (Some(offset), Some(epoch)) => Some(StreamPosition {
            offset,
            epoch: epoch.clone(),
        }),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "since_offset and since_epoch go together",
            ));
        }
    };
    let page = state
        .broker
        .history(&channel, &ns, since.as_ref(), query.limit, query.reverse)
        .await?;
    let messages = page.items(response_encoding(&headers));
    #[derive(Serialize)]
    struct HistoryReply<'a> {
        channel: &'a str,
        epoch: &'a str,
        offset: u64,
        messages: Vec<HistoryItem<'a>>,
    }
    respond(
        &headers,
        &HistoryReply {
            channel: channel.as_str(),
            epoch: &page.epoch,
            offset: page.offset,
            messages,
        },
    )
}

pub async fn info(State(state): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult {
    let node = &state.node;
    let me = NodeStats {
        id: node.id.clone(),
        name: node.name.clone(),
        version: node.version.to_owned(),
        uptime_s: node.started.elapsed().as_secs(),
        connections: state.hub.connection_count(),
        subscriptions: state.hub.subscription_count(),
        channels: state.hub.channel_count(),
    };
    respond(&headers, &json!({ "nodes": state.broker.nodes(me) }))
}

pub async fn health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "reason": "shutting down" })),
        )
            .into_response();
    }
    match state.broker.readiness() {
        Ok(()) => {
            axum::Json(json!({ "status": "ready", "broker": state.broker.kind() })).into_response()
        }
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "reason": reason })),
        )
            .into_response(),
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotAvailable,
        "no such route",
    )
}
