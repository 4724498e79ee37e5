//! The Redis broker: nodes relay publications to each other through Redis pub/sub, and
//! channel streams (offsets, epochs, history, idempotency) live in Redis.
//!
//! - Publishing runs one Lua script per publication (see `scripts`) on a multiplexed
//!   command connection; every node, the publisher included, receives the publication
//!   back through pub/sub and delivers it to its own subscribers exactly once.
//! - A node subscribes a channel's topic only while it has local subscribers, on one of
//!   `redis.pubsub_connections` connections chosen by channel hash (see `relay`), and
//!   unsubscribes after `unsubscribe_delay_ms` once the last one left.
//! - Subscribing registers the client first with live messages held back, then makes sure
//!   the topic is subscribed and reads the stream position and missed history, then
//!   queues reply, history and held-back messages de-duplicated by offset: no loss, no
//!   duplicate, no reordering, whatever races with it.
//! - Only a publication creates a stream's keys: a `history` or `subscribe` of a channel
//!   nobody published to reads and stores nothing (see `broker::epoch`).
//! - Redis down: connections stay, publishes and subscribes fail fast, `/ready` is 503;
//!   everything is resubscribed when Redis is back.
//!
//! Code map: this file is the broker's face (start, publish, subscribe, presence, cluster
//! requests). `context`: the state shared with the tasks, and Redis errors. `inbound`:
//! what pub/sub delivers (publications in offset order, gap fill, presence). `streams`:
//! stream reads, positions, recovery and history. `relay` and `probe`: the pub/sub
//! connections and their liveness probes. `health`: the command connection's health loop.
//! `membership`: the hub's events (delayed unsubscribes, presence, occupancy). `control`:
//! heartbeats and cluster-wide requests. `occupancy`, `presence`: their cluster-wide
//! records. `conn`, `keys`, `envelope`, `scripts`: connections, names, the relay message
//! format and the Lua scripts.

mod conn;
mod context;
mod control;
mod envelope;
mod health;
mod inbound;
mod keys;
mod member_hold;
mod membership;
mod occupancy;
mod presence;
mod probe;
mod relay;
mod scripts;
mod streams;

pub(crate) use context::{Followed, RelayContext};
use health::health_loop;
use membership::events_loop;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use control::NodeStats;

use super::presence::{JoinLeaveGate, PresenceMode, PresencePage, PresenceQuery, PresenceStats};
use super::{
    BrokerError, IDEMPOTENCY_WINDOW, PublishResult, ReplyBuilder, SubscribeResult, epoch, replay,
};
use crate::config::{NamespaceConfig, RedisConfig};
use crate::hub::{ClientHandle, ClientSelector, Hub, Publication};
use crate::protocol::{ChannelName, ClientInfo, CloseCode, StreamPosition};
use crate::pusher::channel::hub_channel;
use crate::webhook::Webhooks;
use conn::Connector;
use envelope::Envelope;
use keys::Keys;
use relay::ShardCommand;

/// A channel name read back from Redis (a topic, an occupancy index): a native name or a
/// Pusher app's hub channel (`pusher~{app}~{name}`, which `ChannelName::parse` refuses).
pub(crate) fn stored_channel(name: &str) -> Option<ChannelName> {
    ChannelName::parse(name).ok().or_else(|| hub_channel(name))
}

/// The pub/sub connection of a channel among `shards` (a fixed hash).
pub(super) fn shard_index(channel: &ChannelName, shards: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    channel.hash(&mut hasher);
    (hasher.finish() as usize) % shards.max(1)
}

/// The Redis broker of one node.
pub struct RedisBroker {
    ctx: Arc<RelayContext>,
    shards: Vec<mpsc::UnboundedSender<ShardCommand>>,
}

impl RedisBroker {
    /// Starts the pub/sub tasks, the health check and the control loop. Never waits for
    /// Redis: a node starts (and reports not ready) while Redis is down.
    pub fn start(
        hub: Hub,
        config: &RedisConfig,
        node: NodeStats,
        webhooks: Webhooks,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Arc<RedisBroker>, BrokerError> {
        let connector = Connector::new(config)
            .map_err(|e| BrokerError::Unavailable(format!("bad redis configuration: {e}")))?;
        let pools = if connector.is_cluster() {
            1
        } else {
            config.pubsub_connections
        };
        let ctx = Arc::new(RelayContext {
            keys: Keys::new(&config.key_prefix),
            node_id: node.id.clone(),
            config: config.clone(),
            connector,
            commands: RwLock::new(None),
            positions: DashMap::new(),
            connections: AtomicU64::new(0),
            joined: tokio::sync::Notify::new(),
            presence_channels: DashMap::new(),
            shard_up: (0..pools).map(|_| AtomicBool::new(false)).collect(),
            commands_up: AtomicBool::new(false),
            last_error: Mutex::new(None),
            cluster: control::ClusterView::new(node),
            waiting: DashMap::new(),
            webhooks,
            hub: hub.clone(),
        });
        hub.metrics().redis_up.set(0);
        let mut shards = Vec::with_capacity(pools);
        for index in 0..pools {
            let (tx, rx) = mpsc::unbounded_channel();
            shards.push(tx);
            tracker.spawn(relay::run_shard(ctx.clone(), index, rx, stop.clone()));
        }
        let broker = Arc::new(RedisBroker {
            ctx: ctx.clone(),
            shards,
        });
        tracker.spawn(health_loop(ctx.clone(), stop.clone()));
        tracker.spawn(control::heartbeat_loop(ctx.clone(), stop.clone()));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        hub.on_event(events_tx);
        tracker.spawn(presence::refresh_loop(ctx.clone(), stop.clone()));
        tracker.spawn(events_loop(broker.clone(), events_rx, stop));
        Ok(broker)
    }

    /// The pub/sub connection of a channel (a fixed hash: always the same one).
    fn shard_of(&self, channel: &ChannelName) -> usize {
        shard_index(channel, self.shards.len())
    }

    pub async fn publish(
        &self,
        publication: Publication,
        ns: &NamespaceConfig,
        idempotency_key: Option<&str>,
    ) -> Result<PublishResult, BrokerError> {
        let ctx = &self.ctx;
        let mut conn = ctx.commands()?;
        let name = publication.channel.as_str();
        let topic = ctx.keys.topic(name);
        let envelope = Envelope::publication(&ctx.node_id, &publication).encode();
        let publish_command = ctx.connector.publish_command();
        let result = if ns.history_size > 0 {
            let mut script = scripts::PUBLISH_WITH_HISTORY.prepare_invoke();
            script.key(ctx.keys.meta(name)).key(ctx.keys.stream(name));
            if let Some(key) = idempotency_key {
                script.key(ctx.keys.idempotency(name, key));
            }
            let (offset, epoch): (u64, String) = script
                .arg(&topic)
                .arg(&envelope)
                .arg(ns.history_size)
                .arg(ns.history_ttl_secs)
                .arg(ctx.config.stream_meta_ttl_secs.max(ns.history_ttl_secs))
                .arg(epoch::new_epoch())
                .arg(IDEMPOTENCY_WINDOW.as_secs())
                .arg(publish_command)
                .arg(now_ms())
                .invoke_async(&mut conn)
                .await
                .map_err(|e| ctx.failed("publish", &e))?;
            PublishResult {
                offset: Some(offset),
                epoch: Some(epoch),
            }
        } else {
            let mut message = envelope::NO_POSITION.to_vec();
            message.extend_from_slice(&envelope);
            match idempotency_key {
                Some(key) => {
                    let _: i64 = scripts::PUBLISH_ONCE
                        .key(ctx.keys.idempotency(name, key))
                        .arg(&topic)
                        .arg(message)
                        .arg(IDEMPOTENCY_WINDOW.as_secs())
                        .arg(publish_command)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(|e| ctx.failed("publish", &e))?;
                }
                None => {
                    let _: i64 = redis::cmd(publish_command)
                        .arg(&topic)
                        .arg(message)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| ctx.failed("publish", &e))?;
                }
            }
            PublishResult {
                offset: None,
                epoch: None,
            }
        };
        ctx.hub.metrics().relay_out.inc();
        Ok(result)
    }

    /// Makes sure this node's pub/sub connection for `channel` is subscribed to it.
    async fn ensure_subscribed(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let (done, confirmed) = oneshot::channel();
        let topics = vec![self.ctx.keys.topic(channel.as_str())];
        let shard = &self.shards[self.shard_of(channel)];
        shard
            .send(ShardCommand::Subscribe { topics, done })
            .map_err(|_| BrokerError::Unavailable("shutting down".into()))?;
        let wait = Duration::from_millis(self.ctx.config.command_timeout_ms * 2);
        match tokio::time::timeout(wait, confirmed).await {
            Ok(Ok(result)) => result,
            _ => Err(self.ctx.unavailable()),
        }
    }

    pub async fn subscribe(
        &self,
        client: &Arc<ClientHandle>,
        channel: &ChannelName,
        ns: &NamespaceConfig,
        recover: Option<&StreamPosition>,
        reply: ReplyBuilder<'_>,
    ) -> Result<Option<SubscribeResult>, BrokerError> {
        let hub = &self.ctx.hub;
        let Some(pending) = hub.subscribe_pending(client, channel) else {
            return Ok(None);
        };
        let prepared = async {
            self.ensure_subscribed(channel).await?;
            if ns.history_size == 0 {
                return Ok((
                    SubscribeResult {
                        position: None,
                        recovered: None,
                    },
                    Vec::new(),
                ));
            }
            let now = epoch::now_ms();
            let (position, created_ms) = self
                .stream_position(channel)
                .await?
                .unwrap_or_else(|| (epoch::no_stream_position(now), now));
            let (recovered, missed) = match recover {
                Some(from) => {
                    let (complete, missed) = self
                        .recover(channel, ns, from, &position, created_ms)
                        .await?;
                    (Some(complete), missed)
                }
                None => (None, Vec::new()),
            };
            Ok((
                SubscribeResult {
                    position: Some(position),
                    recovered,
                },
                missed,
            ))
        };
        match prepared.await {
            Ok((mut result, missed)) => {
                let frames = replay(hub, client, channel, &mut result, &missed, reply);
                let through = result.position.clone();
                if !hub.finish_pending(pending, frames, through) {
                    result.recovered = Some(false);
                }
                if ns.presence {
                    self.joined(client, channel, ns).await;
                }
                Ok(Some(result))
            }
            Err(err) => {
                hub.abort_pending(pending);
                Err(err)
            }
        }
    }

    /// Records a new subscriber in presence and announces its user's join if it is the
    /// user's first connection. A subscriber that left meanwhile (its `Left` may have been
    /// handled before this) is taken out again.
    async fn joined(&self, client: &ClientHandle, channel: &ChannelName, ns: &NamespaceConfig) {
        let ctx = &self.ctx;
        let mode = PresenceMode {
            announce: ns.join_leave,
            max_per_sec: ns.join_leave_rate_per_sec,
        };
        ctx.presence_channels
            .entry(channel.clone())
            .or_insert_with(|| JoinLeaveGate::new(mode));
        let info = client.info_for_presence();
        match presence::add(ctx, channel, std::slice::from_ref(&info)).await {
            Ok(first) => {
                for joined in first {
                    ctx.user_changed(channel, true, joined).await;
                }
            }
            Err(err) => tracing::warn!(
                client_id = %info.client_id,
                user = %info.user,
                channel = %channel,
                error = %err,
                "presence update failed"
            ),
        }
        if !client.is_subscribed(channel) {
            self.left(channel, info).await;
        }
    }

    /// Removes a departed connection from presence; announces its user's leave if it was
    /// the user's last connection.
    async fn left(&self, channel: &ChannelName, client: ClientInfo) {
        let ctx = &self.ctx;
        if !ctx.presence_channels.contains_key(channel) {
            return;
        }
        match presence::remove(ctx, channel, &client).await {
            Ok(true) => ctx.user_changed(channel, false, client).await,
            Ok(false) => {}
            Err(err) => tracing::warn!(
                client_id = %client.client_id,
                user = %client.user,
                channel = %channel,
                error = %err,
                "presence update failed"
            ),
        }
    }

    /// A page of `channel`'s presence, across the cluster.
    pub async fn presence(
        &self,
        channel: &ChannelName,
        query: &PresenceQuery,
    ) -> Result<PresencePage, BrokerError> {
        presence::list(&self.ctx, channel, query).await
    }

    /// Connection and user counts of `channel`, across the cluster.
    pub async fn presence_stats(
        &self,
        channel: &ChannelName,
    ) -> Result<PresenceStats, BrokerError> {
        presence::stats(&self.ctx, channel).await
    }

    /// `Ok` while Redis serves this node; the reason otherwise.
    pub fn readiness(&self) -> Result<(), String> {
        let ctx = &self.ctx;
        let shards_up = ctx.shard_up.iter().all(|s| s.load(Ordering::Acquire));
        if ctx.commands_up.load(Ordering::Acquire) && shards_up {
            return Ok(());
        }
        Err(ctx.unavailable().to_string())
    }

    /// Channel counts from every other node.
    pub async fn remote_channels(&self, prefix: &str) -> Result<Vec<(String, usize)>, BrokerError> {
        let request = control::ClusterRequest::Channels {
            prefix: prefix.to_owned(),
        };
        let replies = control::ask_others(&self.ctx, request).await?;
        Ok(replies
            .into_iter()
            .flat_map(|r| match r {
                control::ClusterReply::Channels { channels } => channels,
                control::ClusterReply::Count { .. } => Vec::new(),
            })
            .collect())
    }

    /// Disconnects matching clients on every other node; returns how many.
    pub async fn remote_disconnect(
        &self,
        selector: &ClientSelector,
        code: CloseCode,
        reason: &str,
        reconnect: bool,
    ) -> Result<usize, BrokerError> {
        let request = control::ClusterRequest::Disconnect {
            selector: selector.clone(),
            code: code.as_u16(),
            reason: reason.to_owned(),
            reconnect,
        };
        Ok(control::count(
            control::ask_others(&self.ctx, request).await?,
        ))
    }

    /// Unsubscribes matching clients on every other node; returns how many.
    pub async fn remote_unsubscribe(
        &self,
        selector: &ClientSelector,
        channel: &ChannelName,
    ) -> Result<usize, BrokerError> {
        let request = control::ClusterRequest::Unsubscribe {
            selector: selector.clone(),
            channel: channel.as_str().to_owned(),
        };
        Ok(control::count(
            control::ask_others(&self.ctx, request).await?,
        ))
    }

    /// Heartbeats carry this node's `limits` counters under `prefix` from now on.
    pub fn share_counts(&self, limits: crate::limits::ConnectionLimits, prefix: &'static str) {
        self.ctx.cluster.share_counts(limits, prefix);
    }

    /// A shared counter summed over every other live node (last heartbeats).
    pub fn others_count(&self, key: &str) -> usize {
        self.ctx.cluster.others_count(key)
    }

    /// Every node seen on the control topic, this one included.
    pub fn nodes(&self) -> Vec<NodeStats> {
        self.ctx.cluster.nodes(&self.ctx.hub)
    }
}

pub(super) fn now_ms() -> u64 {
    envelope::now_us() / 1000
}
