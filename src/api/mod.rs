//! The HTTP server API for backend services (`/api/*`, bearer keys), plus `/health`,
//! `/ready` and `/metrics`. Only this module maps errors to HTTP statuses.

mod body;
mod client_bundle;
mod commands;
mod error;
mod handlers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use error::ApiError;

use crate::auth::KeyIndex;
use crate::protocol::ErrorCode;
use crate::state::AppState;

/// The `/api` routes, behind API-key auth.
pub fn api_router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/publish", post(handlers::publish))
        .route("/api/broadcast", post(handlers::broadcast))
        .route("/api/disconnect", post(handlers::disconnect))
        .route("/api/subscribe", post(handlers::subscribe))
        .route("/api/unsubscribe", post(handlers::unsubscribe))
        .route("/api/history_remove", post(handlers::history_remove))
        .route("/api/batch", post(handlers::batch))
        .route("/api/channels", get(handlers::channels))
        .route("/api/presence", get(handlers::presence))
        .route("/api/presence_stats", post(handlers::presence_stats))
        .route("/api/history", get(handlers::history))
        .route("/api/info", get(handlers::info))
        .route("/api/{*rest}", axum::routing::any(handlers::not_found))
        .layer(middleware::from_fn_with_state(state, require_api_key))
}

/// `/health`, `/ready`, the browser client (`/client/pushwire.min.js`) and (unless on its
/// own listener) `/metrics`.
pub fn probe_router(with_metrics: bool) -> Router<Arc<AppState>> {
    let router = Router::new()
        .route("/client/pushwire.min.js", get(client_bundle::serve))
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready));
    if with_metrics {
        router.merge(metrics_router())
    } else {
        router
    }
}

pub fn metrics_router() -> Router<Arc<AppState>> {
    Router::new().route("/metrics", get(handlers::metrics))
}

async fn require_api_key(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let key = presented.and_then(|key| state.api_keys.identify(key.as_bytes()));
    match (presented, key) {
        (_, Some(key)) => {
            if let Err(wait) = charge_publish(&state, key, request.uri().path()) {
                return too_many_publishes(&state, wait);
            }
            // `/api/batch` charges each publishing command it carries.
            request.extensions_mut().insert(key);
            let response = next.run(request).await;
            if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
                state.metrics.limit_tripped("publish_body_size");
            }
            response
        }
        (Some(_), None) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "invalid API key",
        )
        .into_response(),
        (None, _) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing Authorization: Bearer <api key>",
        )
        .into_response(),
    }
}

/// Takes one publication from the key's `api.publish_rate_per_sec` bucket, for the routes
/// that publish; `Err` is how long until the key may publish again.
fn charge_publish(state: &AppState, key: KeyIndex, path: &str) -> Result<(), Duration> {
    if !matches!(path, "/api/publish" | "/api/broadcast") {
        return Ok(());
    }
    let per_sec = state.config().api.publish_rate_per_sec;
    state.api_keys.take_publish(key, per_sec, Instant::now())
}

/// 429 with `Retry-After` in whole seconds, rounded up.
fn too_many_publishes(state: &AppState, wait: Duration) -> Response {
    state.metrics.limit_tripped("api_publish_rate");
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooManyRequests,
        "publish rate limit of this API key exceeded",
    )
    .into_response();
    let secs = wait.as_secs_f64().ceil().clamp(1.0, 3600.0) as u64;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// Counts every HTTP request by route and status, with its latency.
pub async fn record_metrics(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = route_label(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    if route == "ws" {
        return next.run(request).await;
    }
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .api_requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
    metrics
        .api_request_seconds
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    response
}

fn route_label(path: Option<&str>) -> &'static str {
    match path {
        Some("/ws") => "ws",
        Some("/api/publish") => "publish",
        Some("/api/broadcast") => "broadcast",
        Some("/api/disconnect") => "disconnect",
        Some("/api/subscribe") => "subscribe",
        Some("/api/unsubscribe") => "unsubscribe",
        Some("/api/history_remove") => "history_remove",
        Some("/api/batch") => "batch",
        Some("/api/channels") => "channels",
        Some("/api/presence") => "presence",
        Some("/api/presence_stats") => "presence_stats",
        Some("/api/history") => "history",
        Some("/api/info") => "info",
        Some("/client/pushwire.min.js") => "client",
        Some("/health") => "health",
        Some("/ready") => "ready",
        Some("/metrics") => "metrics",
        Some(path) => crate::pusher::api::route_label(path).unwrap_or("other"),
        None => "other",
    }
}
