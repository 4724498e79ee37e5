//! `[broker]` and `[redis]`: which broker relays between nodes, and the Redis broker's
//! connections, buffers, timers and key prefix.

use serde::{Deserialize, Serialize};

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

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            kind: BrokerKind::Memory,
        }
    }
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
