//! The Pusher HTTP API on the main listener, as the Pusher server SDKs call it:
//! `POST /apps/{id}/events` and `/batch_events`, `GET /apps/{id}/channels`,
//! `/channels/{name}` and `/channels/{name}/users`, and
//! `POST /apps/{id}/users/{user}/terminate_connections` (also without `/apps/{id}`, as
//! the Python SDK sends it; the app is then the one whose key signed the request).
//!
//! Every request is signed (`signature::SignedRequest`); the `Signed` extractor finds the
//! app (`{app_id}` in the path, else the request's `auth_key`), reads the body within the
//! app's bound (413), and checks the signature (401) before a handler sees anything. Everything is cluster-wide through the broker, like the native
//! API it shares publication, channel counts, presence and disconnects with.
//!
//! - `events`: triggering events. `channels`: channel and presence queries, and
//!   terminating a user's connections. `error`: Pusher-style error responses.

mod channels;
mod error;
mod events;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{MethodRouter, get, post};
use bytes::Bytes;

pub use error::PusherApiError;

use super::apps::PusherApp;
use super::signature::{RequestAuthError, SignedRequest};
use crate::state::AppState;

/// Events in one `batch_events` request (Pusher's limit).
pub const MAX_BATCH_EVENTS: usize = 10;
/// Channels one event may be triggered on (Pusher's limit).
pub const MAX_EVENT_CHANNELS: usize = 100;
/// Room a request body has beyond its events' data: names, channel lists, JSON syntax.
const BODY_OVERHEAD_BYTES: usize = 64 * 1024;

/// Builds a route's handler.
type Handler = fn() -> MethodRouter<Arc<AppState>>;

/// The routes of the Pusher HTTP API: path, `route` label in the API metrics, handler.
const ROUTES: &[(&str, &str, Handler)] = &[
    ("/apps/{app_id}/events", "pusher_events", || {
        post(events::trigger)
    }),
    ("/apps/{app_id}/batch_events", "pusher_batch_events", || {
        post(events::trigger_batch)
    }),
    ("/apps/{app_id}/channels", "pusher_channels", || {
        get(channels::list)
    }),
    (
        "/apps/{app_id}/channels/{channel}",
        "pusher_channel",
        || get(channels::info),
    ),
    (
        "/apps/{app_id}/channels/{channel}/users",
        "pusher_users",
        || get(channels::users),
    ),
    (
        "/apps/{app_id}/users/{user_id}/terminate_connections",
        "pusher_terminate",
        || post(channels::terminate),
    ),
    (
        "/users/{user_id}/terminate_connections",
        "pusher_terminate",
        || post(channels::terminate_by_key),
    ),
];

/// The routes of the Pusher HTTP API.
pub fn router() -> Router<Arc<AppState>> {
    ROUTES
        .iter()
        .fold(Router::new(), |router, (path, _, method)| {
            router.route(path, method())
        })
}

/// The `api_requests` route label of a Pusher API route, `None` for other paths.
pub fn route_label(path: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .find(|(route, ..)| *route == path)
        .map(|(_, name, _)| *name)
}

/// A request whose signature checked out.
pub struct Signed {
    pub app: Arc<PusherApp>,
    /// The query parameters, decoded (the signature's own included).
    pub query: Vec<(String, String)>,
    pub body: Bytes,
}

impl Signed {
    /// The value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl FromRequest<Arc<AppState>> for Signed {
    type Rejection = PusherApiError;

    async fn from_request(
        request: Request,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let params = RawPathParams::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| PusherApiError::bad_request(e.body_text()))?;
        let app = match params.iter().find(|(name, _)| *name == "app_id") {
            Some((_, id)) => AppRef::Id(id),
            None => AppRef::AuthKey,
        };
        authenticate(state, &parts.method, &parts.uri, app, body).await
    }
}

/// Which app a request is for.
enum AppRef<'a> {
    /// `/apps/{id}/…`.
    Id(&'a str),
    /// No id in the path: the app whose key is the request's `auth_key`.
    AuthKey,
}

/// The largest request body an app accepts: a full batch of maximal events, plus room
/// for names and syntax (so it follows `max_event_bytes`).
fn body_limit(app: &PusherApp) -> usize {
    app.max_event_bytes
        .saturating_mul(MAX_BATCH_EVENTS)
        .saturating_add(BODY_OVERHEAD_BYTES)
}

/// Finds the app, reads the body and verifies the signature.
async fn authenticate(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    app: AppRef<'_>,
    body: Body,
) -> Result<Signed, PusherApiError> {
    let Query(query) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| PusherApiError::bad_request(e.body_text()))?;
    let app = match app {
        AppRef::Id(id) => state
            .pusher
            .by_id(id)
            .ok_or_else(|| PusherApiError::not_found(format!("unknown app id {id:?}")))?,
        AppRef::AuthKey => query
            .iter()
            .find(|(k, _)| k == "auth_key")
            .and_then(|(_, key)| state.pusher.by_key(key))
            .ok_or(RequestAuthError::UnknownKey)?,
    }
    .clone();
    state
        .metrics
        .pusher_api_requests
        .with_label_values(&[&app.id])
        .inc();
    let limit = body_limit(&app);
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        state.metrics.limit_tripped("pusher_event_bytes");
        PusherApiError::too_large(format!("request body larger than {limit} bytes"))
    })?;
    let request = SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: &query,
        body: &body,
    };
    if let Err(err) = request.verify(&app, crate::auth::unix_now()) {
        tracing::debug!(app_id = %app.id, error = %err, "Pusher API request refused");
        return Err(err.into());
    }
    if !app.enabled {
        return Err(PusherApiError::new(
            StatusCode::FORBIDDEN,
            "application is disabled",
        ));
    }
    Ok(Signed { app, query, body })
}

/// The requested attributes of an `info` parameter (`user_count,subscription_count`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InfoFields {
    pub user_count: bool,
    pub subscription_count: bool,
}

impl InfoFields {
    pub fn parse(info: Option<&str>) -> Self {
        let mut fields = InfoFields::default();
        for attribute in info.unwrap_or_default().split(',').map(str::trim) {
            match attribute {
                "user_count" => fields.user_count = true,
                "subscription_count" => fields.subscription_count = true,
                _ => {}
            }
        }
        fields
    }

    pub fn any(self) -> bool {
        self.user_count || self.subscription_count
    }
}
