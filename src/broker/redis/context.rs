//! [`RelayContext`]: the state the Redis broker shares with its pub/sub, control and
//! health tasks (hub, keys, connections, followed stream positions, cluster view), and how
//! a failed Redis operation is recorded and turned into a [`BrokerError`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use redis::RedisError;
use tokio::sync::mpsc;

use super::conn::{CommandConn, Connector};
use super::control;
use super::keys::Keys;
use crate::broker::BrokerError;
use crate::broker::presence::JoinLeaveGate;
use crate::config::RedisConfig;
use crate::hub::Hub;
use crate::protocol::{ChannelName, StreamPosition};
use crate::webhook::Webhooks;

/// Where this node stands in a channel's stream.
#[derive(Debug, Clone)]
pub(crate) struct Followed {
    /// The last position delivered.
    pub(super) position: StreamPosition,
    /// The epoch the stream left when Redis went back in time: publications still
    /// labelled with it (published before the move) belong to `position.epoch`.
    pub(super) replaced: Option<String>,
    /// `RelayContext::connections` when it was delivered.
    pub(super) connection: u64,
}

/// State shared by the broker and its pub/sub, control, health and membership tasks;
/// visible to the Redis broker's modules only.
pub(crate) struct RelayContext {
    /// Where relayed publications and presence changes are delivered on this node.
    pub(super) hub: Hub,
    /// Key and topic names under `redis.key_prefix`.
    pub(super) keys: Keys,
    /// This node's id in heartbeats, envelopes and presence entries.
    pub(super) node_id: String,
    /// `[redis]` as the node started with it (not reloadable).
    pub(super) config: RedisConfig,
    /// Opens command and pub/sub connections (standalone or Cluster).
    pub(super) connector: Connector,
    /// The command connection; `None` until connected, or after a failover asked for a
    /// fresh slot map (the health loop reconnects).
    pub(super) commands: RwLock<Option<CommandConn>>,
    /// The last stream position delivered per channel, for gap and duplicate detection.
    pub(super) positions: DashMap<ChannelName, Followed>,
    /// Told when the control topic is (re)subscribed: time to say hello.
    pub(super) joined: tokio::sync::Notify,
    /// Pub/sub connections established so far (a Redis restart replaces them).
    pub(super) connections: AtomicU64,
    /// Channels with presence that have local subscribers, with their join/leave gate.
    pub(super) presence_channels: DashMap<ChannelName, JoinLeaveGate>,
    /// Per pub/sub connection: up and subscribed (all up and the command connection
    /// healthy is `pushwire_redis_up`).
    pub(super) shard_up: Vec<AtomicBool>,
    /// The health loop's last verdict on the command connection (a dropped connection
    /// also clears it at once, see `failed`).
    pub(super) commands_up: AtomicBool,
    /// The last Redis error, for `/ready` and the `unavailable` message.
    pub(super) last_error: Mutex<Option<String>>,
    /// The nodes seen on the control topic, from their heartbeats.
    pub(super) cluster: control::ClusterView,
    /// Cluster requests of this node waiting for replies, by request id.
    pub(super) waiting: DashMap<u64, mpsc::UnboundedSender<control::ClusterReply>>,
    /// Where occupancy and presence webhooks go.
    pub(super) webhooks: Webhooks,
}

impl RelayContext {
    pub(crate) fn commands(&self) -> Result<CommandConn, BrokerError> {
        if !self.commands_up.load(Ordering::Acquire) {
            return Err(self.unavailable());
        }
        self.commands
            .read()
            .clone()
            .ok_or_else(|| self.unavailable())
    }

    pub(super) fn unavailable(&self) -> BrokerError {
        let reason = self
            .last_error
            .lock()
            .clone()
            .unwrap_or_else(|| "not connected yet".into());
        BrokerError::Unavailable(format!("redis unavailable: {reason}"))
    }

    /// Records a failed Redis operation and turns it into a broker error.
    pub(crate) fn failed(&self, op: &'static str, err: &RedisError) -> BrokerError {
        self.hub
            .metrics()
            .redis_errors
            .with_label_values(&[op])
            .inc();
        // A lost connection fails everything fast until the health check sees Redis back;
        // a timeout does not (under load it is one slow reply, not an outage: marking
        // Redis down then turned a busy node's publishes into 503s).
        if matches!(
            err.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        ) {
            // A Cluster failover turned the master this connection writes to into a
            // replica: start over with a fresh slot map (the health loop reconnects).
            *self.commands.write() = None;
        }
        let lost = !err.is_timeout()
            && (err.is_io_error()
                || err.is_connection_dropped()
                || err.is_connection_refusal()
                || matches!(
                    err.kind(),
                    redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                ));
        if lost {
            self.commands_up.store(false, Ordering::Release);
            self.hub.metrics().redis_up.set(0);
        }
        *self.last_error.lock() = Some(err.to_string());
        let source = Arc::new(err.clone());
        if err.is_timeout() {
            BrokerError::Timeout {
                op,
                source: Some(source),
            }
        } else if lost {
            BrokerError::ConnectionLost { op, source }
        } else {
            BrokerError::Refused { op, source }
        }
    }

    pub(crate) fn pubsub_failed(&self, shard: usize, err: &str) {
        self.hub
            .metrics()
            .redis_errors
            .with_label_values(&["pubsub"])
            .inc();
        self.hub.metrics().redis_up.set(0);
        *self.last_error.lock() = Some(err.to_owned());
        tracing::warn!(shard, error = %err, "redis pub/sub connection failed");
    }

    /// Publishes a probe to a pub/sub connection's own topic (bounded by the command
    /// timeout). Returns whether its missing echo must count: Redis took it, or did not
    /// answer in time, or the command connection is down (Redis unreachable or silent:
    /// the pub/sub connection to the same server is as suspect, and the missing echo is
    /// what makes it reconnect). Only a probe Redis answered with an error (an ACL
    /// refusal, say) proves nothing about the pub/sub connection and does not count.
    pub(crate) async fn send_probe(&self, topic: &str) -> bool {
        let Ok(mut conn) = self.commands() else {
            return true;
        };
        let mut cmd = redis::cmd(self.connector.publish_command());
        cmd.arg(topic).arg("probe");
        let publish = cmd.query_async::<i64>(&mut conn);
        match tokio::time::timeout(
            Duration::from_millis(self.config.command_timeout_ms),
            publish,
        )
        .await
        {
            Ok(Ok(_)) | Err(_) => true,
            Ok(Err(err)) => {
                self.failed("control", &err);
                false
            }
        }
    }
}
