//! Typed configuration: embedded defaults, a TOML file, `PUSHWIRE_*` environment overrides
//! (`PUSHWIRE_CLIENT__PING_INTERVAL_SECS=5`), then command-line flags, in that order.
//! `validate` checks every value and names the offending key.
//!
//! Every limit the server enforces lives here with a default; `config/pushwire.toml`
//! documents each key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

mod bounds;

pub use bounds::MIN_HMAC_SECRET_BYTES;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration of one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Shown in `/api/info` and `connected.node`; empty: hostname plus a random suffix.
    pub node_name: String,
    /// Lets a `connect` without a token in, as user "".
    pub allow_anonymous: bool,
    pub server: ServerConfig,
    pub client: ClientConfig,
    pub api: ApiConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub broker: BrokerConfig,
    pub redis: RedisConfig,
    /// The backend proxy (`crate::proxy`); off while no URL is set.
    pub proxy: crate::proxy::ProxyConfig,
    /// OpenTelemetry traces (`crate::telemetry`); off by default.
    pub tracing: crate::telemetry::TracingConfig,
    /// Channel namespaces by name; `default` holds channels without `:`.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// The Pusher protocol front end: `[[pusher.apps]]` (src/pusher/config.rs).
    pub pusher: crate::pusher::PusherConfig,
    /// Native webhooks, and the delivery settings every webhook endpoint shares.
    pub webhooks: crate::webhook::WebhooksConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the WebSocket and HTTP API listener.
    pub listen: String,
    /// A separate listener for `/metrics`; empty: served on `listen`.
    pub metrics_listen: String,
    /// How long shutdown waits for client queues to flush.
    pub shutdown_grace_secs: u64,
    /// Open connections per node (4010 beyond it).
    pub max_connections: usize,
    /// WebSockets that upgraded but have not sent `connect` yet; beyond it an upgrade is
    /// refused with HTTP 503. 0: unlimited.
    pub max_pending_connections: usize,
    /// WebSockets from one client address that upgraded but have not sent `connect` yet;
    /// beyond it an upgrade from that address is refused with HTTP 429. 0: unlimited.
    pub max_pending_connections_per_ip: usize,
    /// Proxies (CIDR networks or addresses) whose `Forwarded` / `X-Forwarded-For` header
    /// names the client address for per-IP limits and logs; from any other peer the
    /// header is ignored. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Time a client has to send its HTTP request headers (slowloris), and the longest an
    /// idle keep-alive HTTP connection stays open.
    pub handshake_timeout_secs: u64,
    /// Pending-connection queue of the listener (the kernel caps it at
    /// `net.core.somaxconn`); a burst of connects beyond it waits for SYN retries.
    pub listen_backlog: u32,
    /// Runtime worker threads, which is also the number of fan-out shards; 0: one per
    /// CPU core. Lower it when several nodes share a machine.
    pub worker_threads: usize,
    /// Kernel send buffer (`SO_SNDBUF`) of accepted sockets; 0: the kernel's default,
    /// autotuned up to `net.ipv4.tcp_wmem`'s maximum (4 MiB on many systems). A client
    /// that stops reading pins this much kernel memory before its queue starts to fill.
    pub socket_send_buffer_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    pub connect_timeout_secs: u64,
    pub ping_interval_secs: u64,
    pub pong_timeout_secs: u64,
    /// Outbound queue bound in messages; overflow evicts the client with 4008.
    pub queue_max_messages: usize,
    /// Outbound queue bound in bytes; overflow evicts the client with 4008.
    pub queue_max_bytes: usize,
    /// Largest inbound frame (close 1009 beyond it).
    pub max_frame_bytes: usize,
    /// Channels one connection may subscribe to (error 106 beyond it).
    pub max_channels: usize,
    /// Largest outbound batch frame; a queue holding more is sent in several frames.
    pub max_batch_bytes: usize,
    /// WebSocket read buffer per connection (clients send little; it grows for big frames).
    pub read_buffer_bytes: usize,
    /// A write to a client that takes longer than this ends the connection.
    pub write_timeout_secs: u64,
    /// Browser origins allowed to open a WebSocket; empty or "*": any.
    pub allowed_origins: Vec<String>,
    /// Inbound messages per second per connection (token bucket refill); 0: unlimited.
    pub rate_limit_per_sec: u32,
    /// Inbound burst per connection (token bucket size).
    pub rate_limit_burst: u32,
    /// Requests refused with error 110 in a row before the connection is closed with 4009.
    pub rate_limit_strikes: u32,
    /// Open WebSockets per client IP address (4010 beyond it); 0: unlimited. Behind a
    /// proxy every client shares the proxy's address, so set it only on direct listeners.
    pub max_connections_per_ip: usize,
    /// Open connections per authenticated user (4010 beyond it); 0: unlimited.
    pub max_connections_per_user: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer keys for `/api/*`; empty: a random key is generated at startup and logged once.
    pub keys: Vec<String>,
    /// Largest request body and largest publication data, in bytes.
    pub max_publish_bytes: usize,
    /// Publish and broadcast requests per second per API key (429 beyond it); 0: unlimited.
    pub publish_rate_per_sec: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Shared secret for HS256 connection and subscription tokens, at least 32 bytes;
    /// empty: HS256 off.
    pub token_hmac_secret: String,
    /// PEM files with RSA or EC public keys for RS256/ES256 tokens (several for rotation).
    pub token_public_keys: Vec<String>,
    /// Seconds a connection may stay open past its token's `exp` before close 4002.
    pub expiry_grace_secs: u64,
    /// When set, a token's `aud` (a string or a list) must contain it; empty: `aud` is
    /// not checked.
    pub token_audience: String,
    /// When set, a token's `iss` must equal it; empty: `iss` is not checked.
    pub token_issuer: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (human-readable) or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `pushwire=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// `memory` (one node, embedded) or `redis` (relay between nodes).
    pub kind: BrokerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// Prefix of every key and pub/sub topic, so several deployments can share a Redis.
    pub key_prefix: String,
    /// Pub/sub connections; channels are spread over them by hash.
    pub pubsub_connections: usize,
    pub connect_timeout_ms: u64,
    pub command_timeout_ms: u64,
    /// Use Redis Cluster with sharded pub/sub (SPUBLISH/SSUBSCRIBE).
    pub cluster: bool,
    /// Seed nodes of the cluster, when `cluster = true`.
    pub cluster_nodes: Vec<String>,
    /// Relayed messages buffered between a pub/sub connection and the hub; beyond it
    /// messages are dropped and counted (`pushwire_relay_dropped_total`).
    pub handoff_buffer: usize,
    /// Bytes of relayed messages buffered between a pub/sub connection and the hub;
    /// beyond it messages are dropped, counted and logged.
    pub handoff_buffer_bytes: usize,
    /// The most messages one gap on the relay is filled with from history; a longer gap
    /// is left to the clients (they see it in the offsets and recover).
    pub gap_fill_max_messages: usize,
    /// How long a channel stays subscribed on Redis after its last local subscriber left
    /// (unsubscribes are delayed and batched to avoid churn).
    pub unsubscribe_delay_ms: u64,
    /// How often each pub/sub connection is probed with a message to itself; a probe not
    /// back within this interval reconnects the connection.
    pub probe_interval_ms: u64,
    /// How often this node publishes its heartbeat on the control topic.
    pub heartbeat_interval_ms: u64,
    /// A node whose heartbeat was not seen for this long is dropped from the cluster view.
    pub node_timeout_ms: u64,
    /// Presence entries of a node expire this long after its last refresh (bounds how
    /// long the clients of a crashed node stay present).
    pub presence_ttl_secs: u64,
    /// How long offsets and epochs outlive the last publication of a channel.
    pub stream_meta_ttl_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Messages kept per channel; > 0 turns on offsets, epochs and recovery.
    pub history_size: usize,
    pub history_ttl_secs: u64,
    pub presence: bool,
    /// Announce a user's first connection (`join`) and last (`leave`); needs `presence`.
    pub join_leave: bool,
    /// Joins and leaves a second one channel delivers on one node; the rest are dropped
    /// (limit `join_leave_rate`). 0: no bound.
    pub join_leave_rate_per_sec: u32,
    /// The most entries one presence page holds (a request without `limit`, or with a
    /// larger one, gets this many and a cursor).
    pub presence_max_page: usize,
    pub allow_subscribe: SubscribePolicy,
    pub allow_publish: PublishPolicy,
    /// The most messages a recovering subscribe replays; a longer gap answers
    /// `recovered: false`.
    pub max_recover_messages: usize,
    /// Ask the backend (`proxy.subscribe_url`, or `proxy_subscribe_url`) about subscriptions.
    pub proxy_subscribe: bool,
    /// Ask the backend (`proxy.publish_url`, or `proxy_publish_url`) before client publications.
    pub proxy_publish: bool,
    /// This namespace's own subscribe proxy URL (implies `proxy_subscribe`).
    pub proxy_subscribe_url: String,
    /// This namespace's own publish proxy URL (implies `proxy_publish`).
    pub proxy_publish_url: String,
}

impl NamespaceConfig {
    /// The subscribe proxy URL this namespace uses, if any.
    pub fn subscribe_proxy<'a>(&'a self, proxy: &'a crate::proxy::ProxyConfig) -> Option<&'a str> {
        pick_proxy_url(
            &self.proxy_subscribe_url,
            self.proxy_subscribe,
            &proxy.subscribe_url,
        )
    }

    /// The publish proxy URL this namespace uses, if any.
    pub fn publish_proxy<'a>(&'a self, proxy: &'a crate::proxy::ProxyConfig) -> Option<&'a str> {
        pick_proxy_url(
            &self.proxy_publish_url,
            self.proxy_publish,
            &proxy.publish_url,
        )
    }
}

/// The namespace key that opts in to a proxy with no URL to ask, if any.
fn proxy_opt_in_error(
    ns: &NamespaceConfig,
    proxy: &crate::proxy::ProxyConfig,
) -> Option<(&'static str, &'static str)> {
    const NO_URL: &str = "needs a URL: set proxy_*_url here or the URL in [proxy]";
    if ns.proxy_subscribe && ns.subscribe_proxy(proxy).is_none() {
        return Some(("proxy_subscribe", NO_URL));
    }
    if ns.proxy_publish && ns.publish_proxy(proxy).is_none() {
        return Some(("proxy_publish", NO_URL));
    }
    for (key, url) in [
        ("proxy_subscribe_url", &ns.proxy_subscribe_url),
        ("proxy_publish_url", &ns.proxy_publish_url),
    ] {
        if !crate::proxy::config::url_or_empty(url) {
            return Some((key, "must be an http:// or https:// URL"));
        }
    }
    None
}

fn pick_proxy_url<'a>(own: &'a str, enabled: bool, global: &'a str) -> Option<&'a str> {
    if !own.is_empty() {
        Some(own)
    } else {
        (enabled && !global.is_empty()).then_some(global)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscribePolicy {
    All,
    Authenticated,
    Token,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishPolicy {
    None,
    Authenticated,
    All,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: String::new(),
            allow_anonymous: true,
            server: ServerConfig::default(),
            client: ClientConfig::default(),
            api: ApiConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            broker: BrokerConfig::default(),
            redis: RedisConfig::default(),
            proxy: crate::proxy::ProxyConfig::default(),
            tracing: crate::telemetry::TracingConfig::default(),
            namespaces: BTreeMap::from([(
                DEFAULT_NAMESPACE.to_owned(),
                NamespaceConfig::default(),
            )]),
            pusher: crate::pusher::PusherConfig::default(),
            webhooks: crate::webhook::WebhooksConfig::default(),
        }
    }
}

/// Bounds of a non-zero `server.socket_send_buffer_bytes`.
const MIN_SOCKET_BUFFER: usize = 4096;
const MAX_SOCKET_BUFFER: usize = 64 << 20;

/// Upper bound of `server.worker_threads`.
const MAX_WORKER_THREADS: usize = 256;

/// The key under `[namespaces]` that holds channels without `:`.
pub const DEFAULT_NAMESPACE: &str = "default";

impl ServerConfig {
    /// Worker threads (and fan-out shards) to run: `worker_threads`, or one per CPU core.
    pub fn threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8080".into(),
            metrics_listen: String::new(),
            shutdown_grace_secs: 10,
            max_connections: 100_000,
            max_pending_connections: 10_000,
            max_pending_connections_per_ip: 100,
            trusted_proxies: Vec::new(),
            handshake_timeout_secs: 10,
            listen_backlog: 4096,
            worker_threads: 0,
            socket_send_buffer_bytes: 0,
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout_secs: 10,
            ping_interval_secs: 25,
            pong_timeout_secs: 10,
            queue_max_messages: 4096,
            queue_max_bytes: 1024 * 1024,
            max_frame_bytes: 64 * 1024,
            max_channels: 128,
            max_batch_bytes: 64 * 1024,
            read_buffer_bytes: 256,
            write_timeout_secs: 10,
            allowed_origins: Vec::new(),
            rate_limit_per_sec: 100,
            rate_limit_burst: 200,
            rate_limit_strikes: 50,
            max_connections_per_ip: 0,
            max_connections_per_user: 0,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            keys: Vec::new(),
            max_publish_bytes: 64 * 1024,
            publish_rate_per_sec: 0,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_hmac_secret: String::new(),
            token_public_keys: Vec::new(),
            expiry_grace_secs: 10,
            token_audience: String::new(),
            token_issuer: String::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            kind: BrokerKind::Memory,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "pushwire".into(),
            pubsub_connections: 4,
            connect_timeout_ms: 2000,
            command_timeout_ms: 2000,
            cluster: false,
            cluster_nodes: Vec::new(),
            handoff_buffer: 65_536,
            handoff_buffer_bytes: 64 * 1024 * 1024,
            gap_fill_max_messages: 1_000,
            unsubscribe_delay_ms: 2_000,
            probe_interval_ms: 5_000,
            heartbeat_interval_ms: 2_000,
            node_timeout_ms: 7_000,
            presence_ttl_secs: 30,
            stream_meta_ttl_secs: 86_400,
        }
    }
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            history_size: 0,
            history_ttl_secs: 300,
            presence: false,
            join_leave: false,
            join_leave_rate_per_sec: 50,
            presence_max_page: 1000,
            allow_subscribe: SubscribePolicy::All,
            allow_publish: PublishPolicy::None,
            max_recover_messages: 10_000,
            proxy_subscribe: false,
            proxy_publish: false,
            proxy_subscribe_url: String::new(),
            proxy_publish_url: String::new(),
        }
    }
}

/// A configuration that cannot be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    MissingFile { path: String },
    /// Shown once: figment's message is the whole story (no separate cause to repeat).
    #[error(transparent)]
    Load(Box<figment::Error>),
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// Values given on the command line; they win over the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
}

impl Config {
    /// Loads defaults, then `file` (if any), then `PUSHWIRE_*` variables, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile {
                    path: path.display().to_string(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(env_overrides());
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Serialized::default("server.listen", listen));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document on top of the defaults (tests and `check-config`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value that serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: message.into(),
            })
        };
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return invalid("server.listen", "expected an address like 0.0.0.0:8080");
        }
        if !self.server.metrics_listen.is_empty()
            && self.server.metrics_listen.parse::<SocketAddr>().is_err()
        {
            return invalid(
                "server.metrics_listen",
                "expected an address like 0.0.0.0:9090",
            );
        }
        if self.server.worker_threads > MAX_WORKER_THREADS {
            return invalid(
                "server.worker_threads",
                &format!("at most {MAX_WORKER_THREADS} (0: one per CPU core)"),
            );
        }
        let sndbuf = self.server.socket_send_buffer_bytes;
        if sndbuf != 0 && !(MIN_SOCKET_BUFFER..=MAX_SOCKET_BUFFER).contains(&sndbuf) {
            return invalid(
                "server.socket_send_buffer_bytes",
                &format!(
                    "0 (kernel default) or between {MIN_SOCKET_BUFFER} and {MAX_SOCKET_BUFFER}"
                ),
            );
        }
        let positive = [
            ("server.max_connections", self.server.max_connections as u64),
            (
                "server.listen_backlog",
                u64::from(self.server.listen_backlog),
            ),
            (
                "server.handshake_timeout_secs",
                self.server.handshake_timeout_secs,
            ),
            (
                "client.connect_timeout_secs",
                self.client.connect_timeout_secs,
            ),
            ("client.ping_interval_secs", self.client.ping_interval_secs),
            ("client.pong_timeout_secs", self.client.pong_timeout_secs),
            (
                "client.queue_max_messages",
                self.client.queue_max_messages as u64,
            ),
            ("client.queue_max_bytes", self.client.queue_max_bytes as u64),
            ("client.max_frame_bytes", self.client.max_frame_bytes as u64),
            ("client.max_channels", self.client.max_channels as u64),
            ("client.max_batch_bytes", self.client.max_batch_bytes as u64),
            (
                "client.read_buffer_bytes",
                self.client.read_buffer_bytes as u64,
            ),
            ("client.write_timeout_secs", self.client.write_timeout_secs),
            ("api.max_publish_bytes", self.api.max_publish_bytes as u64),
            (
                "redis.pubsub_connections",
                self.redis.pubsub_connections as u64,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return invalid(key, "must be greater than 0");
            }
        }
        if self.client.rate_limit_per_sec > 0 {
            for (key, value) in [
                ("client.rate_limit_burst", self.client.rate_limit_burst),
                ("client.rate_limit_strikes", self.client.rate_limit_strikes),
            ] {
                if value == 0 {
                    return invalid(key, "must be at least 1 while rate_limit_per_sec > 0");
                }
            }
        }
        if self.api.keys.iter().any(|k| k.len() < 8) {
            return invalid("api.keys", "every key must be at least 8 characters");
        }
        for (name, ns) in &self.namespaces {
            if name.is_empty()
                || name.contains(':')
                || crate::protocol::ChannelName::parse(name).is_err()
            {
                return invalid(&format!("namespaces.{name}"), "not a valid namespace name");
            }
            if ns.history_size > 0 && ns.history_ttl_secs == 0 {
                return invalid(
                    &format!("namespaces.{name}.history_ttl_secs"),
                    "must be greater than 0 when history_size > 0",
                );
            }
            if ns.join_leave && !ns.presence {
                return invalid(
                    &format!("namespaces.{name}.join_leave"),
                    "needs presence = true",
                );
            }
            if let Some((key, message)) = proxy_opt_in_error(ns, &self.proxy) {
                return invalid(&format!("namespaces.{name}.{key}"), message);
            }
            if ns.presence_max_page == 0 {
                return invalid(
                    &format!("namespaces.{name}.presence_max_page"),
                    "must be at least 1",
                );
            }
        }
        if let Some((key, message)) = self.proxy.invalid() {
            return invalid(key, &message);
        }
        if let Some((key, message)) = self.tracing.invalid() {
            return invalid(key, &message);
        }
        if let Err((key, message)) = self.webhooks.validate() {
            return invalid(&key, &message);
        }
        if self.redis.cluster && self.redis.cluster_nodes.is_empty() {
            return invalid(
                "redis.cluster_nodes",
                "must list at least one seed node when redis.cluster = true",
            );
        }
        bounds::check(self)?;
        self.pusher.validate()
    }

    /// The namespace options for a channel, or `None` when its namespace is undeclared.
    pub fn namespace_of(&self, channel: &crate::protocol::ChannelName) -> Option<&NamespaceConfig> {
        self.namespaces
            .get(channel.namespace().unwrap_or(DEFAULT_NAMESPACE))
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8080)))
    }
}

/// `PUSHWIRE_<SECTION>__<KEY>` variables, plus the top-level keys (`PUSHWIRE_NODE_NAME`,
/// `PUSHWIRE_ALLOW_ANONYMOUS`). Other `PUSHWIRE_*` variables (`PUSHWIRE_CONFIG`, or a
/// deployment's own like `PUSHWIRE_BIN`) are not configuration and are left alone.
fn env_overrides() -> Env {
    Env::prefixed("PUSHWIRE_")
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            key.contains("__") || key == "node_name" || key == "allow_anonymous"
        })
        .split("__")
}

impl ClientConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
    pub fn pong_timeout(&self) -> Duration {
        Duration::from_secs(self.pong_timeout_secs)
    }
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_serve_one_node() -> Result<(), ConfigError> {
        let config = Config::from_toml("")?;
        assert_eq!(config.broker.kind, BrokerKind::Memory);
        assert!(config.allow_anonymous);
        assert!(config.namespaces.contains_key(DEFAULT_NAMESPACE));
        Ok(())
    }

    #[test]
    fn file_namespaces_add_to_the_default_one() -> Result<(), ConfigError> {
        let config =
            Config::from_toml("[namespaces.chat]\nhistory_size = 10\nallow_publish = \"all\"\n")?;
        assert!(config.namespaces.contains_key(DEFAULT_NAMESPACE));
        assert_eq!(config.namespaces["chat"].history_size, 10);
        assert_eq!(config.namespaces["chat"].allow_publish, PublishPolicy::All);
        assert_eq!(config.namespaces["chat"].history_ttl_secs, 300);
        Ok(())
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail's closure returns figment::Error"
    )]
    fn environment_overrides_sections_and_ignores_foreign_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PUSHWIRE_CLIENT__PING_INTERVAL_SECS", "7");
            jail.set_env("PUSHWIRE_API__KEYS", "[\"env-key-123\"]");
            jail.set_env("PUSHWIRE_NODE_NAME", "from-env");
            jail.set_env("PUSHWIRE_BIN", "/usr/bin/pushwire");
            jail.set_env("PUSHWIRE_CONFIG", "ignored.toml");
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.client.ping_interval_secs, 7);
            assert_eq!(config.api.keys, vec!["env-key-123".to_owned()]);
            assert_eq!(config.node_name, "from-env");
            jail.set_env("PUSHWIRE_CLIENT__PING_INTERVALL", "7");
            assert!(
                Config::load(None, &Overrides::default()).is_err(),
                "typos in a section are still caught"
            );
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_toml("[client]\nping_interval_secs = 0\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("client.ping_interval_secs")));
        let err = Config::from_toml("[client]\nping_intervall = 3\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("ping_intervall")));
        let err = Config::from_toml("[server]\nlisten = \"nope\"\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("server.listen")));
        let err = Config::from_toml("[namespaces.chat]\nallow_publish = \"maybe\"\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("allow_publish")));
        let err = Config::from_toml("[server]\nworker_threads = 100000\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("server.worker_threads")));
        let err = Config::from_toml("[server]\nsocket_send_buffer_bytes = 100\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("server.socket_send_buffer_bytes")));
    }

    #[test]
    fn worker_threads_default_to_the_cores() -> Result<(), ConfigError> {
        let config = Config::from_toml("[server]\nworker_threads = 1\n")?;
        assert_eq!(config.server.threads(), 1);
        assert!(Config::default().server.threads() >= 1);
        Ok(())
    }
}
