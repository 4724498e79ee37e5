//! What every part of one node shares: configuration, hub, broker, metrics, auth, and the
//! shutdown signal with the tracker of session tasks.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{ApiKeys, TokenVerifier};
use crate::broker::Broker;
use crate::config::Config;
use crate::hub::{Hub, HubSettings, QueueLimits};
use crate::limits::ConnectionLimits;
use crate::metrics::Metrics;
use crate::pusher::PusherApps;
use crate::webhook::Webhooks;

/// Identity of this node in the cluster.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// Unique per process start.
    pub id: String,
    pub name: String,
    pub version: &'static str,
    pub started: Instant,
}

/// Shared state of one node; handlers get it as `Arc<AppState>`.
pub struct AppState {
    config: RwLock<Arc<Config>>,
    pub hub: Hub,
    pub broker: Broker,
    pub metrics: Arc<Metrics>,
    pub tokens: TokenVerifier,
    pub api_keys: ApiKeys,
    pub node: NodeIdentity,
    /// Cancelled when the node starts shutting down.
    pub shutdown: CancellationToken,
    /// Tracks every session task, so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Connections per IP and per user, and pending (not yet `connect`ed) WebSockets.
    pub limits: ConnectionLimits,
    /// The Pusher apps of `[pusher]`, by key and by id (fixed until a restart).
    pub pusher: PusherApps,
    /// The backend proxy, when any proxy URL is configured (fixed until restart).
    pub proxy: Option<Arc<crate::proxy::BackendProxy>>,
    /// Webhook endpoints (native and Pusher apps); see `with_webhooks`.
    pub webhooks: Webhooks,
}

impl AppState {
    #[expect(
        clippy::too_many_arguments,
        reason = "built once, by the server, from services it created one by one"
    )]
    pub fn new(
        config: Arc<Config>,
        hub: Hub,
        broker: Broker,
        metrics: Arc<Metrics>,
        tokens: TokenVerifier,
        api_keys: ApiKeys,
        node: NodeIdentity,
        shutdown: CancellationToken,
    ) -> Self {
        let proxy = crate::proxy::BackendProxy::from_config(&config, metrics.registry())
            .unwrap_or_else(|err| {
                // Only a TLS backend that cannot initialise fails here.
                tracing::error!(error = %err, "backend proxy disabled: HTTP client failed to start");
                None
            });
        AppState {
            pusher: PusherApps::from_config(&config.pusher),
            proxy,
            config: RwLock::new(config),
            hub,
            broker,
            metrics,
            tokens,
            api_keys,
            node,
            shutdown,
            sessions: TaskTracker::new(),
            limits: ConnectionLimits::new(),
            webhooks: Webhooks::disabled(),
        }
    }

    /// The same state, sending webhooks through `webhooks`.
    pub fn with_webhooks(mut self, webhooks: Webhooks) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// The configuration in force (replaced as a whole on reload).
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    /// Applies the reloadable subset of `next` (limits and namespaces).
    /// Keys that need a restart (listeners, keys, broker, logging) keep their old values;
    /// returns the sections where such a change was ignored, for the log.
    pub fn reload(&self, next: Config) -> Vec<&'static str> {
        let current = self.config();
        let mut applied = (*current).clone();
        applied.allow_anonymous = next.allow_anonymous;
        applied.client = next.client.clone();
        applied.namespaces = next.namespaces.clone();
        applied.api.max_publish_bytes = next.api.max_publish_bytes;
        applied.api.publish_rate_per_sec = next.api.publish_rate_per_sec;
        applied.api.batch_parallelism = next.api.batch_parallelism;
        applied.auth.expiry_grace_secs = next.auth.expiry_grace_secs;
        let mut ignored = Vec::new();
        if differs(&applied.server, &next.server) {
            ignored.push("server");
        }
        if differs(&applied.api, &next.api) {
            ignored.push("api.keys");
        }
        if differs(&applied.auth, &next.auth) {
            ignored.push("auth");
        }
        if differs(&applied.broker, &next.broker) || differs(&applied.redis, &next.redis) {
            ignored.push("broker/redis");
        }
        if differs(&applied.pusher, &next.pusher) {
            ignored.push("pusher");
        }
        if differs(&applied.proxy, &next.proxy) {
            ignored.push("proxy");
        }
        if differs(&applied.tracing, &next.tracing) {
            ignored.push("tracing");
        }
        if differs(&applied.webhooks, &next.webhooks) {
            ignored.push("webhooks");
        }
        if differs(&applied.log, &next.log) || applied.node_name != next.node_name {
            ignored.push("log/node_name");
        }
        self.hub.update_settings(hub_settings(&applied));
        *self.config.write() = Arc::new(applied);
        ignored
    }
}

/// Whether two config sections differ (compared in their serialised form).
fn differs<T: serde::Serialize>(a: &T, b: &T) -> bool {
    toml::to_string(a).ok() != toml::to_string(b).ok()
}

/// The hub's view of the configuration.
pub fn hub_settings(config: &Config) -> HubSettings {
    HubSettings {
        queue: QueueLimits {
            max_messages: config.client.queue_max_messages,
            max_bytes: config.client.queue_max_bytes,
        },
        ping_interval_ms: config.client.ping_interval_secs * 1000,
        pong_timeout_ms: config.client.pong_timeout_secs * 1000,
        write_timeout_ms: config.client.write_timeout_secs * 1000,
        expiry_grace_secs: config.auth.expiry_grace_secs,
        max_batch_bytes: config.client.max_batch_bytes,
        write_delay_ms: config.client.write_delay_ms,
        max_messages_per_frame: config.client.max_messages_per_frame,
        shards: config.server.threads(),
    }
}
