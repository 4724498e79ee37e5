//! The per-key checks of a loaded configuration: addresses that must parse, values that
//! must be positive, namespace names and their option pairs, and each subsystem's own
//! check (proxy, tracing, webhooks, Pusher apps). Relations between keys are in `bounds`.

use std::net::SocketAddr;

use super::namespace::proxy_opt_in_error;
use super::server::{MAX_SOCKET_BUFFER, MAX_WORKER_THREADS, MIN_SOCKET_BUFFER};
use super::{Config, ConfigError, bounds};

impl Config {
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
}
