//! The control topic: every node publishes a heartbeat with its stats, and keeps a view
//! of the cluster from the heartbeats of the others (nodes unseen for `node_timeout_ms`
//! are dropped). Cluster-wide API requests travel here too.
//!
//! A node that (re)subscribes the control topic says `hello` at once, and every other
//! node answers with its heartbeat at once: the cluster view is complete within a round
//! trip of joining, not a heartbeat interval later.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::RelayContext;
use crate::broker::BrokerError;
use crate::hub::{ClientSelector, Hub};
use crate::protocol::{ChannelName, CloseCode};

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
    Heartbeat {
        node: NodeStats,
        /// Shared connection counters (`ClusterView::share_counts`) on the sender.
        #[serde(default)]
        counts: BTreeMap<String, usize>,
    },
    /// A heartbeat that asks every other node for theirs now.
    Hello {
        node: NodeStats,
        #[serde(default)]
        counts: BTreeMap<String, usize>,
    },
    Request {
        id: u64,
        from: String,
        request: ClusterRequest,
    },
    Reply {
        id: u64,
        to: String,
        reply: ClusterReply,
    },
}

/// A server-API request every node carries out for its own clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum ClusterRequest {
    Channels {
        prefix: String,
    },
    Disconnect {
        selector: ClientSelector,
        code: u16,
        reason: String,
        reconnect: bool,
    },
    Unsubscribe {
        selector: ClientSelector,
        channel: String,
    },
}

/// One node's answer to a `ClusterRequest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum ClusterReply {
    Channels { channels: Vec<(String, usize)> },
    Count { n: usize },
}

/// How long a cluster request waits for the other nodes.
const REPLY_TIMEOUT: Duration = Duration::from_millis(1500);

/// Sends `request` to every other node and gathers their replies (those that answer
/// within the timeout).
pub(crate) async fn ask_others(
    ctx: &RelayContext,
    request: ClusterRequest,
) -> Result<Vec<ClusterReply>, BrokerError> {
    let expected = ctx.cluster.others.len();
    if expected == 0 {
        return Ok(Vec::new());
    }
    let id = rand::random::<u64>();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    ctx.waiting.insert(id, tx);
    let message = ControlMessage::Request {
        id,
        from: ctx.node_id.clone(),
        request,
    };
    let sent = publish(ctx, &message).await;
    let mut replies = Vec::new();
    if sent.is_ok() {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        while replies.len() < expected {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(reply)) => replies.push(reply),
                _ => break,
            }
        }
    }
    ctx.waiting.remove(&id);
    sent.map(|()| replies)
}

/// Adds up `Count` replies.
pub(crate) fn count(replies: Vec<ClusterReply>) -> usize {
    replies
        .into_iter()
        .map(|r| match r {
            ClusterReply::Count { n } => n,
            ClusterReply::Channels { .. } => 0,
        })
        .sum()
}

async fn publish(ctx: &RelayContext, message: &ControlMessage) -> Result<(), BrokerError> {
    let bytes =
        rmp_serde::to_vec_named(message).map_err(|e| BrokerError::Unavailable(e.to_string()))?;
    let mut conn = ctx.commands()?;
    let mut cmd = redis::cmd(ctx.connector.publish_command());
    cmd.arg(ctx.keys.control()).arg(bytes);
    let publish = cmd.query_async::<i64>(&mut conn);
    match tokio::time::timeout(
        Duration::from_millis(ctx.config.command_timeout_ms),
        publish,
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(ctx.failed("control", &err)),
        Err(_) => Err(BrokerError::Timeout {
            op: "control",
            source: None,
        }),
    }
}

/// Carries out another node's request on this node's clients.
fn execute(hub: &Hub, request: ClusterRequest) -> ClusterReply {
    match request {
        ClusterRequest::Channels { prefix } => ClusterReply::Channels {
            channels: hub
                .channel_counts(&prefix)
                .into_iter()
                .map(|(c, n)| (c.as_str().to_owned(), n))
                .collect(),
        },
        ClusterRequest::Disconnect {
            selector,
            code,
            reason,
            reconnect,
        } => {
            let code = CloseCode::from_u16(code).unwrap_or(CloseCode::ApiDisconnect);
            ClusterReply::Count {
                n: hub.disconnect_matching(&selector, code, &reason, reconnect),
            }
        }
        ClusterRequest::Unsubscribe { selector, channel } => {
            let n =
                ChannelName::parse(&channel).map_or(0, |c| hub.unsubscribe_matching(&selector, &c));
            ClusterReply::Count { n }
        }
    }
}

/// The connection counters this node shares: its limits, and the user-key prefix of the
/// counters to share (Pusher app quotas, `pusher::quota`).
type SharedCounters = (crate::limits::ConnectionLimits, &'static str);

/// This node's view of the cluster.
pub(crate) struct ClusterView {
    me: NodeStats,
    started: Instant,
    /// Every other live node: its stats, when it was last heard, its shared counters.
    others: DashMap<String, (NodeStats, Instant, BTreeMap<String, usize>)>,
    shared: OnceLock<SharedCounters>,
}

impl ClusterView {
    pub(crate) fn new(me: NodeStats) -> Self {
        ClusterView {
            me,
            started: Instant::now(),
            others: DashMap::new(),
            shared: OnceLock::new(),
        }
    }

    /// From now on, heartbeats carry this node's counters of `limits` whose key starts
    /// with `prefix`.
    pub(crate) fn share_counts(
        &self,
        limits: crate::limits::ConnectionLimits,
        prefix: &'static str,
    ) {
        let _ = self.shared.set((limits, prefix));
    }

    fn my_counts(&self) -> BTreeMap<String, usize> {
        self.shared
            .get()
            .map(|(limits, prefix)| limits.user_counts_with_prefix(prefix))
            .unwrap_or_default()
    }

    /// The sum of `key`'s shared counter on every other live node, as their last
    /// heartbeats reported it.
    pub(crate) fn others_count(&self, key: &str) -> usize {
        self.others
            .iter()
            .map(|e| e.value().2.get(key).copied().unwrap_or(0))
            .sum()
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

    fn seen(&self, ctx: &RelayContext, node: NodeStats, counts: BTreeMap<String, usize>) {
        self.others
            .insert(node.id.clone(), (node, Instant::now(), counts));
        ctx.hub
            .metrics()
            .cluster_nodes
            .set(1 + self.others.len() as i64);
    }

    fn prune(&self, timeout: Duration) {
        self.others
            .retain(|_, (_, seen, _)| seen.elapsed() < timeout);
    }
}

/// Handles a message from the control topic.
pub(crate) async fn on_message(ctx: &RelayContext, message: &[u8]) {
    let Ok(message) = rmp_serde::from_slice::<ControlMessage>(message) else {
        tracing::debug!("undecodable control message");
        return;
    };
    match message {
        ControlMessage::Heartbeat { node, counts } if node.id != ctx.node_id => {
            ctx.cluster.seen(ctx, node, counts)
        }
        ControlMessage::Hello { node, counts } if node.id != ctx.node_id => {
            ctx.cluster.seen(ctx, node, counts);
            let heartbeat = ControlMessage::Heartbeat {
                node: ctx.cluster.me(&ctx.hub),
                counts: ctx.cluster.my_counts(),
            };
            if let Err(err) = publish(ctx, &heartbeat).await {
                tracing::debug!(error = %err, "cannot answer a hello");
            }
        }
        ControlMessage::Heartbeat { .. } | ControlMessage::Hello { .. } => {}
        ControlMessage::Request { id, from, request } if from != ctx.node_id => {
            let reply = ControlMessage::Reply {
                id,
                to: from,
                reply: execute(&ctx.hub, request),
            };
            if let Err(err) = publish(ctx, &reply).await {
                tracing::warn!(error = %err, "cannot answer a cluster request");
            }
        }
        ControlMessage::Request { .. } => {}
        ControlMessage::Reply { id, to, reply } if to == ctx.node_id => {
            if let Some(waiting) = ctx.waiting.get(&id) {
                let _ = waiting.send(reply);
            }
        }
        ControlMessage::Reply { .. } => {}
    }
}

/// Publishes this node's heartbeat every `heartbeat_interval_ms`, and a hello as soon as
/// the control topic is (re)subscribed (`RelayContext::joined`), retried every 50 ms
/// until Redis takes it.
pub(crate) async fn heartbeat_loop(ctx: Arc<RelayContext>, stop: CancellationToken) {
    let mut interval =
        tokio::time::interval(Duration::from_millis(ctx.config.heartbeat_interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hello = false;
    loop {
        let retry = tokio::time::sleep(Duration::from_millis(50));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
            _ = ctx.joined.notified() => hello = true,
            _ = retry, if hello => {}
        }
        ctx.cluster
            .prune(Duration::from_millis(ctx.config.node_timeout_ms));
        ctx.hub
            .metrics()
            .cluster_nodes
            .set(1 + ctx.cluster.others.len() as i64);
        let node = ctx.cluster.me(&ctx.hub);
        let counts = ctx.cluster.my_counts();
        let message = if hello {
            ControlMessage::Hello { node, counts }
        } else {
            ControlMessage::Heartbeat { node, counts }
        };
        if publish(&ctx, &message).await.is_ok() {
            hello = false;
        }
    }
}
