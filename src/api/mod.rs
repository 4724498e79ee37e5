//! The HTTP server API for backend services (`/api/*`, bearer keys), plus `/health`,
//! `/ready` and `/metrics`. Only this module maps errors to HTTP statuses.

mod body;
mod client_bundle;
mod commands;
mod error;
mod handlers;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

pub use error::ApiError;

use crate::auth::KeyIndex;
use crate::protocol::ErrorCode;
use crate::state::AppState;
use commands::Command;

/// A route this module serves, named where it is declared.
struct Route {
    path: &'static str,
    /// Its `route` label in `pushwire_api_requests_total` and `pushwire_api_request_seconds`.
    name: &'static str,
    handler: Handler,
}

enum Handler {
    /// A `POST` that runs a command on its body (`commands`).
    Command(Command),
    Other(fn() -> MethodRouter<Arc<AppState>>),
}

impl Route {
    const fn new(
        path: &'static str,
        name: &'static str,
        method: fn() -> MethodRouter<Arc<AppState>>,
    ) -> Route {
        Route {
            path,
            name,
            handler: Handler::Other(method),
        }
    }

    /// The route of `command`, labelled with its name.
    const fn command(path: &'static str, command: Command) -> Route {
        Route {
            path,
            name: command.name(),
            handler: Handler::Command(command),
        }
    }

    fn method_router(&self) -> MethodRouter<Arc<AppState>> {
        match self.handler {
            Handler::Command(command) => post_command(command),
            Handler::Other(method) => method(),
        }
    }

    /// Whether each request takes one publication from the API key's
    /// `api.publish_rate_per_sec` (`/api/batch` charges each publishing command it
    /// carries instead).
    fn publishes(&self) -> bool {
        matches!(self.handler, Handler::Command(command) if command.publishes())
    }
}

/// The `/api` routes, behind API-key auth.
const API_ROUTES: &[Route] = &[
    Route::command("/api/publish", Command::Publish),
    Route::command("/api/broadcast", Command::Broadcast),
    Route::command("/api/disconnect", Command::Disconnect),
    Route::command("/api/subscribe", Command::Subscribe),
    Route::command("/api/unsubscribe", Command::Unsubscribe),
    Route::command("/api/history_remove", Command::HistoryRemove),
    Route::new("/api/batch", "batch", || post(handlers::batch)),
    Route::new("/api/channels", "channels", || get(handlers::channels)),
    Route::new("/api/presence", "presence", || get(handlers::presence)),
    Route::command("/api/presence_stats", Command::PresenceStats),
    Route::new("/api/history", "history", || get(handlers::history)),
    Route::new("/api/info", "info", || get(handlers::info)),
];

/// `/health`, `/ready` and the browser client, without a key.
const PROBE_ROUTES: &[Route] = &[
    Route::new("/client/pushwire.min.js", "client", || {
        get(client_bundle::serve)
    }),
    Route::new("/health", "health", || get(handlers::health)),
    Route::new("/ready", "ready", || get(handlers::ready)),
];

/// `/metrics`, on the main listener or its own.
const METRICS_ROUTE: Route = Route::new("/metrics", "metrics", || get(handlers::metrics));

/// The WebSocket endpoint (declared with the other connection endpoints, in `server`,
/// which answers a `GET` of it before the router): not counted here.
pub(crate) const WS_PATH: &str = "/ws";
/// The `route` label of Pusher's WebSocket endpoint `/app/{key}` in the API metrics
/// (counted by the router, and by `session::upgrade_raw` for the upgrades it answers).
pub(crate) const PUSHER_WS_ROUTE: &str = "pusher_ws";

/// `POST` that reads the body and runs `command` on it (`commands`).
fn post_command(command: Command) -> MethodRouter<Arc<AppState>> {
    post(
        move |State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body| async move {
            handlers::command(&state, command, &headers, body).await
        },
    )
}

fn add_routes(mut router: Router<Arc<AppState>>, routes: &[Route]) -> Router<Arc<AppState>> {
    for route in routes {
        router = router.route(route.path, route.method_router());
    }
    router
}

/// The route declared at `path` (a matched route pattern), if this module serves it.
fn route_at(path: &str) -> Option<&'static Route> {
    API_ROUTES
        .iter()
        .chain(PROBE_ROUTES)
        .chain(std::iter::once(&METRICS_ROUTE))
        .find(|route| route.path == path)
}

/// The `/api` routes, behind API-key auth.
pub fn api_router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    add_routes(Router::new(), API_ROUTES)
        .route("/api/{*rest}", axum::routing::any(handlers::not_found))
        .layer(middleware::from_fn_with_state(state, require_api_key))
}

/// `/health`, `/ready`, the browser client (`/client/pushwire.min.js`) and (unless on its
/// own listener) `/metrics`.
pub fn probe_router(with_metrics: bool) -> Router<Arc<AppState>> {
    let router = add_routes(Router::new(), PROBE_ROUTES);
    if with_metrics {
        router.merge(metrics_router())
    } else {
        router
    }
}

pub fn metrics_router() -> Router<Arc<AppState>> {
    add_routes(Router::new(), std::slice::from_ref(&METRICS_ROUTE))
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
            let matched = request.extensions().get::<MatchedPath>();
            let publishes = matched
                .and_then(|path| route_at(path.as_str()))
                .is_some_and(Route::publishes);
            if publishes && let Err(refused) = charge_publish(&state, key) {
                return refused.into_response();
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

/// Takes one publication from the key's `api.publish_rate_per_sec` bucket (the publishing
/// routes, and each publishing command of `/api/batch`): 429 with `Retry-After` until the
/// key may publish again, counted as `api_publish_rate`.
pub(crate) fn charge_publish(state: &AppState, key: KeyIndex) -> Result<(), ApiError> {
    let per_sec = state.config().api.publish_rate_per_sec;
    state
        .api_keys
        .take_publish(key, per_sec, Instant::now())
        .map_err(|wait| {
            state.metrics.limit_tripped("api_publish_rate");
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                "publish rate limit of this API key exceeded",
            )
            .retry_after(wait)
        })
}

/// The `route` label of a route declared outside this module and the Pusher API (the
/// connection endpoints, in `server`), `None` for other paths.
pub type RouteLabels = fn(&str) -> Option<&'static str>;

/// Counts every HTTP request by route and status, with its latency.
pub async fn record_metrics(
    State((state, elsewhere)): State<(Arc<AppState>, RouteLabels)>,
    request: Request,
    next: Next,
) -> Response {
    let route = route_label(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
        elsewhere,
    );
    if route == "ws" {
        return next.run(request).await;
    }
    let started = Instant::now();
    let response = next.run(request).await;
    record_request(&state.metrics, route, response.status().as_str(), started);
    response
}

/// Counts one request answered with `status` under `route`, timed from `started`: what
/// `record_metrics` does for routed requests, and `session::upgrade_raw` for the Pusher
/// upgrades it answers before the router.
pub(crate) fn record_request(
    metrics: &crate::metrics::Metrics,
    route: &str,
    status: &str,
    started: Instant,
) {
    metrics
        .api_requests
        .with_label_values(&[route, status])
        .inc();
    metrics
        .api_request_seconds
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
}

fn route_label(path: Option<&str>, elsewhere: RouteLabels) -> &'static str {
    let Some(path) = path else { return "other" };
    route_at(path)
        .map(|route| route.name)
        .or_else(|| crate::pusher::api::route_label(path))
        .or_else(|| elsewhere(path))
        .unwrap_or("other")
}
