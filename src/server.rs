//! Listeners, routing (`/ws`, `/api/*`, `/health`, `/ready`, `/metrics`), and graceful
//! shutdown: stop accepting, send every client `disconnect` + close 1001 after its queue
//! flushes, wait for the sessions within `shutdown_grace_secs`, then stop the hub.
//! Each accepted connection is served by `accept` (WebSocket upgrades answered from the
//! server's own read of the first request head, hyper for the rest); connections that
//! open with an API request are served on the API's own thread (`api_thread`,
//! `server.api_thread`).

mod accept;
mod api_thread;
mod first_request;

use accept::{Serves, serve_http};
pub(crate) use first_request::Head;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{MethodRouter, get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::auth::{ApiKeys, KeyError, TokenVerifier};
use crate::broker::{Broker, BrokerError, NodeStats, RedisBroker};
use crate::config::{BrokerKind, Config, DEFAULT_NAMESPACE};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::CloseCode;
use crate::session;
use crate::state::{AppState, NodeIdentity, hub_settings};
use crate::webhook::{WebhookError, Webhooks};

/// A server that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
}

/// Expired proxy-granted connections waiting for the refresh proxy; more close with 4002.
const RENEWALS_QUEUED: usize = 4096;

/// A bound, not yet running, node.
pub struct Server {
    state: Arc<AppState>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    background: TaskTracker,
    background_stop: CancellationToken,
    /// Set when no API key was configured: generated for this run.
    pub generated_api_key: Option<String>,
}

impl Server {
    /// Binds the listeners and builds the node's state.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let backlog = config.server.listen_backlog;
        let send_buffer = config.server.socket_send_buffer_bytes;
        let listener = bind(&config.server.listen, backlog, send_buffer)?;
        let metrics_listener = match config.server.metrics_listen.as_str() {
            "" => None,
            addr => Some(bind(addr, backlog, 0)?),
        };
        let metrics = Arc::new(Metrics::new());
        let background = TaskTracker::new();
        let background_stop = CancellationToken::new();
        let hub = Hub::start(
            hub_settings(&config),
            metrics.clone(),
            &background,
            background_stop.clone(),
        );
        let node = NodeIdentity {
            id: format!("{:016x}", rand::random::<u64>()),
            name: node_name(&config),
            version: env!("CARGO_PKG_VERSION"),
            started: Instant::now(),
        };
        let webhooks = Webhooks::start(
            &config.webhooks,
            Webhooks::native_endpoints(&config.webhooks)
                .into_iter()
                .chain(Webhooks::pusher_endpoints(&config.pusher))
                .collect(),
            &metrics,
            &background,
            background_stop.clone(),
        )?;
        let broker = match config.broker.kind {
            BrokerKind::Memory => Broker::memory(
                hub.clone(),
                webhooks.clone(),
                &background,
                background_stop.clone(),
            ),
            BrokerKind::Redis => {
                let stats = NodeStats {
                    id: node.id.clone(),
                    name: node.name.clone(),
                    version: node.version.to_owned(),
                    uptime_s: 0,
                    connections: 0,
                    subscriptions: 0,
                    channels: 0,
                };
                let broker = RedisBroker::start(
                    hub.clone(),
                    &config.redis,
                    stats,
                    webhooks.clone(),
                    &background,
                    background_stop.clone(),
                )?;
                Broker::Redis(broker)
            }
        };
        let tokens = TokenVerifier::from_config(&config.auth)?;
        let mut keys = config.api.keys.clone();
        let generated_api_key = keys.is_empty().then(random_key);
        keys.extend(generated_api_key.clone());
        let state = Arc::new(
            AppState::new(
                Arc::new(config),
                hub,
                broker,
                metrics,
                tokens,
                ApiKeys::new(&keys),
                node,
                CancellationToken::new(),
            )
            .with_webhooks(webhooks),
        );
        crate::pusher::quota::share(&state);
        state
            .metrics
            .init_pusher_apps(state.pusher.iter().map(|app| app.id.as_str()));
        Ok(Server {
            state,
            listener,
            metrics_listener,
            background,
            background_stop,
            generated_api_key,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server {
            state,
            listener,
            metrics_listener,
            background,
            background_stop,
            ..
        } = self;
        // Background work first: a client served right away sees a fully started node.
        background.spawn(expire_streams(state.clone(), background_stop.clone()));
        if state.proxy.as_ref().is_some_and(|p| p.refreshes()) {
            let (renewals, expired) = tokio::sync::mpsc::channel(RENEWALS_QUEUED);
            state.hub.on_renewal(renewals);
            background.spawn(crate::session::run_refresher(
                state.clone(),
                expired,
                background_stop.clone(),
            ));
        }
        let router = router(state.clone(), metrics_listener.is_none());
        let api_thread = if state.config().server.api_thread {
            Some(
                api_thread::ApiThread::start().map_err(|source| ServerError::Bind {
                    addr: "the API thread".into(),
                    source,
                })?,
            )
        } else {
            None
        };
        let api_handle = api_thread.as_ref().map(|t| t.handle().clone());
        let serve = tokio::spawn(serve_http(
            listener,
            router,
            state.clone(),
            state.shutdown.clone(),
            Serves::Clients { api: api_handle },
        ));
        if let Some(listener) = metrics_listener {
            let metrics = api::metrics_router().with_state(state.clone());
            background.spawn(serve_http(
                listener,
                metrics,
                state.clone(),
                background_stop.clone(),
                Serves::RouterOnly,
            ));
        }
        signal.await;
        shutdown(&state).await;
        background_stop.cancel();
        background.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), background.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), serve).await;
        drop(api_thread);
        Ok(())
    }
}

/// Builds a route's handler.
type RouteHandler = fn() -> MethodRouter<Arc<AppState>>;

/// The connection endpoints of the front ends: path, `route` label in the API metrics,
/// handler. A WebSocket upgrade is mostly answered before hyper and the router (see
/// `serve_connection`), so the API metrics do not count it.
const CONNECTION_ROUTES: &[(&str, &str, RouteHandler)] = &[
    (api::WS_PATH, "ws", || get(session::ws_handler)),
    ("/sse", "sse", || get(crate::sse::sse_handler)),
    ("/app/{key}", api::PUSHER_WS_ROUTE, || {
        get(session::pusher_ws_handler)
    }),
];

/// The `route` label of a connection endpoint, `None` for other paths.
fn connection_route_label(path: &str) -> Option<&'static str> {
    CONNECTION_ROUTES
        .iter()
        .find(|(route, ..)| *route == path)
        .map(|(_, name, _)| *name)
}

/// The whole HTTP surface of a node.
pub fn router(state: Arc<AppState>, with_metrics: bool) -> Router {
    let labels: api::RouteLabels = connection_route_label;
    CONNECTION_ROUTES
        .iter()
        .fold(Router::new(), |router, (path, _, method)| {
            router.route(path, method())
        })
        .merge(api::api_router(state.clone()))
        .merge(api::probe_router(with_metrics))
        .merge(crate::pusher::api::router())
        .fallback(|| async { api::ApiError::not_available("no such route") })
        .method_not_allowed_fallback(|| async {
            api::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                crate::protocol::ErrorCode::BadRequest,
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), labels),
            api::record_metrics,
        ))
        .with_state(state)
}

async fn shutdown(state: &Arc<AppState>) {
    let grace = Duration::from_secs(state.config().server.shutdown_grace_secs);
    tracing::info!(
        connections = state.hub.connection_count(),
        grace_secs = grace.as_secs(),
        "shutting down"
    );
    state.shutdown.cancel();
    state.hub.close_all(CloseCode::GoingAway);
    state.sessions.close();
    if tokio::time::timeout(grace, state.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = state.sessions.len(),
            "grace period over; dropping remaining connections"
        );
    }
}

/// Drops memory-broker streams idle past their history TTL.
async fn expire_streams(state: Arc<AppState>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let Broker::Memory(broker) = &state.broker else {
            return;
        };
        let config = state.config();
        broker.expire(|channel| {
            if let Some(ns) = crate::pusher::channel::namespace_of_hub(channel) {
                return Some(Duration::from_secs(ns.history_ttl_secs));
            }
            let ns = config
                .namespaces
                .get(channel.namespace().unwrap_or(DEFAULT_NAMESPACE))?;
            Some(Duration::from_secs(ns.history_ttl_secs))
        });
    }
}

/// A listener on `addr` with an explicit backlog (`TcpListener::bind` would leave it at
/// 128). A non-zero `send_buffer` is set on the listening socket, which accepted sockets
/// inherit (and with it, no send-buffer autotuning).
pub(super) fn bind(
    addr: &str,
    backlog: u32,
    send_buffer: usize,
) -> Result<TcpListener, ServerError> {
    let failed = |source| ServerError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let parsed: std::net::SocketAddr = addr.parse().map_err(|_| {
        failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an address",
        ))
    })?;
    let socket = if parsed.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(failed)?;
    socket.set_reuseaddr(true).map_err(failed)?;
    // Inherited by accepted sockets where the OS copies it (see `NoDelay`).
    socket.set_nodelay(true).map_err(failed)?;
    if send_buffer > 0 {
        let size = u32::try_from(send_buffer).unwrap_or(u32::MAX);
        socket.set_send_buffer_size(size).map_err(failed)?;
    }
    socket.bind(parsed).map_err(failed)?;
    socket.listen(backlog).map_err(failed)
}

fn random_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn node_name(config: &Config) -> String {
    if !config.node_name.is_empty() {
        return config.node_name.clone();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pushwire".into());
    format!("{host}-{:04x}", rand::random::<u16>())
}
