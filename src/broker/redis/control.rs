//! The control topic: every node publishes a heartbeat with its stats, and keeps a view
//! of the cluster from the heartbeats of the others (nodes unseen for `node_timeout_ms`
//! are dropped). Cluster-wide API requests travel here too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::RelayContext;
use crate::hub::Hub;

/// One node as `/api/info` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    pub id: String,
    pub name: String,
    pub version: String,
    pub uptime_s: u64,
    pub connections: usize,
    pub subscriptions: usize,
    pub channels: usize,
}

/// What travels on the control topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ControlMessage {
    Heartbeat { node: NodeStats },
}

/// This node's view of the cluster.
pub(crate) struct ClusterView {
    me: NodeStats,
    started: Instant,
    others: DashMap<String, (NodeStats, Instant)>,
}

impl ClusterView {
    pub(crate) fn new(me: NodeStats) -> Self {
        ClusterView { me, started: Instant::now(), others: DashMap::new() }
    }

    /// This node's current stats.
    pub(crate) fn me(&self, hub: &Hub) -> NodeStats {
        NodeStats {
            uptime_s: self.started.elapsed().as_secs(),
            connections: hub.connection_count(),
            subscriptions: hub.subscription_count(),
            channels: hub.channel_count(),
            ..self.me.clone()
        }
    }

    /// Every live node, this one first.
    pub(crate) fn nodes(&self, hub: &Hub) -> Vec<NodeStats> {
        let mut nodes = vec![self.me(hub)];
        let mut others: Vec<NodeStats> = self.others.iter().map(|e| e.value().0.clone()).collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.extend(others);
        nodes
    }

    fn prune(&self, timeout: Duration) {
        self.others.retain(|_, (_, seen)| seen.elapsed() < timeout);
    }
}

/// Handles a message from the control topic.
pub(crate) fn on_message(ctx: &RelayContext, message: &[u8]) {
    let Ok(message) = rmp_serde::from_slice::<ControlMessage>(message) else {
        tracing::debug!("undecodable control message");
        return;
    };
    match message {
        ControlMessage::Heartbeat { node } if node.id != ctx.node_id => {
            ctx.cluster.others.insert(node.id.clone(), (node, Instant::now()));
            ctx.hub.metrics().cluster_nodes.set(1 + ctx.cluster.others.len() as i64);
        }
        ControlMessage::Heartbeat { .. } => {}
    }
}

/// Publishes this node's heartbeat every `heartbeat_interval_ms`.
pub(crate) async fn heartbeat_loop(ctx: Arc<RelayContext>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_millis(ctx.config.heartbeat_interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        ctx.cluster.prune(Duration::from_millis(ctx.config.node_timeout_ms));
        ctx.hub.metrics().cluster_nodes.set(1 + ctx.cluster.others.len() as i64);
        let heartbeat = ControlMessage::Heartbeat { node: ctx.cluster.me(&ctx.hub) };
        let Ok(bytes) = rmp_serde::to_vec_named(&heartbeat) else { continue };
        let Ok(mut conn) = ctx.commands() else { continue };
        let mut cmd = redis::cmd(ctx.connector.publish_command());
        cmd.arg(ctx.keys.control()).arg(bytes);
        let publish = cmd.query_async::<i64>(&mut conn);
        if let Ok(Err(err)) = tokio::time::timeout(Duration::from_millis(ctx.config.command_timeout_ms), publish).await {
            ctx.failed("control", &err);
        }
    }
}
