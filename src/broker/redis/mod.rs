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

mod conn;
mod control;
mod envelope;
mod keys;
mod occupancy;
mod presence;
mod probe;
mod relay;
mod scripts;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tracing::Instrument as _;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use redis::RedisError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use control::NodeStats;

use super::presence::{JoinLeaveGate, PresenceMode, PresencePage, PresenceQuery, PresenceStats};
use super::{
    BrokerError, HistoryMessage, HistoryPage, PublishResult, ReplyBuilder, SubscribeResult, epoch,
    replay,
};
use crate::config::{NamespaceConfig, RedisConfig};
use crate::hub::{ClientHandle, ClientSelector, Hub, HubEvent, Publication};
use crate::protocol::{ChannelName, ClientInfo, CloseCode, StreamPosition};
use crate::pusher::channel::hub_channel;
use crate::webhook::Webhooks;
use conn::{CommandConn, Connector};
use envelope::Envelope;
use keys::Keys;
use relay::ShardCommand;

/// How long an idempotency key is remembered (PROTOCOL.md section 8).
const IDEMPOTENCY_TTL_SECS: u64 = 300;

/// Where this node stands in a channel's stream.
#[derive(Debug, Clone)]
pub(crate) struct Followed {
    /// The last position delivered.
    position: StreamPosition,
    /// The epoch the stream left when Redis went back in time: publications still
    /// labelled with it (published before the move) belong to `position.epoch`.
    replaced: Option<String>,
    /// `RelayContext::connections` when it was delivered.
    connection: u64,
}

/// State shared by the broker and its pub/sub tasks.
pub(crate) struct RelayContext {
    pub(crate) hub: Hub,
    pub(crate) keys: Keys,
    pub(crate) node_id: String,
    pub(crate) config: RedisConfig,
    pub(crate) connector: Connector,
    commands: RwLock<Option<CommandConn>>,
    /// The last stream position delivered per channel, for gap and duplicate detection.
    pub(crate) positions: DashMap<ChannelName, Followed>,
    /// Told when the control topic is (re)subscribed: time to say hello.
    pub(crate) joined: tokio::sync::Notify,
    /// Pub/sub connections established so far (a Redis restart replaces them).
    pub(crate) connections: AtomicU64,
    /// Channels with presence that have local subscribers, with their join/leave gate.
    pub(crate) presence_channels: DashMap<ChannelName, JoinLeaveGate>,
    pub(crate) shard_up: Vec<AtomicBool>,
    commands_up: AtomicBool,
    last_error: Mutex<Option<String>>,
    pub(crate) cluster: control::ClusterView,
    /// Cluster requests of this node waiting for replies, by request id.
    pub(crate) waiting: DashMap<u64, mpsc::UnboundedSender<control::ClusterReply>>,
    pub(crate) webhooks: Webhooks,
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

    fn unavailable(&self) -> BrokerError {
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
        if !err.is_timeout()
            && (err.is_io_error()
                || err.is_connection_dropped()
                || err.is_connection_refusal()
                || matches!(
                    err.kind(),
                    redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                ))
        {
            self.commands_up.store(false, Ordering::Release);
            self.hub.metrics().redis_up.set(0);
        }
        *self.last_error.lock() = Some(err.to_string());
        BrokerError::Unavailable(format!("redis {op} failed: {err}"))
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

    /// Handles one message pushed by Redis.
    pub(crate) async fn on_message(&self, topic: &str, message: &[u8]) {
        if topic == self.keys.control() {
            control::on_message(self, message).await;
            return;
        }
        let Some(channel) = self.keys.channel_of(topic).and_then(stored_channel) else {
            return;
        };
        let relayed = match envelope::decode(message) {
            Ok(relayed) => relayed,
            Err(err) => {
                tracing::warn!(channel = %channel, error = %err, "undecodable relay message");
                return;
            }
        };
        let metrics = self.hub.metrics();
        metrics.relay_in.inc();
        let age_us = envelope::now_us().saturating_sub(relayed.envelope.ts_us);
        metrics.relay_latency_seconds.observe(age_us as f64 / 1e6);
        let (payload, exclude, event) = match relayed.envelope.body {
            envelope::Body::Join { client } => {
                self.deliver_presence(&channel, true, &client).await;
                return;
            }
            envelope::Body::Leave { client } => {
                self.deliver_presence(&channel, false, &client).await;
                return;
            }
            body => match body.payload() {
                Some(payload) => (payload, body.excluded(), body.event()),
                None => return,
            },
        };
        metrics.published_relay.inc();
        match relayed.envelope.trace.as_deref() {
            Some(parent) if crate::telemetry::enabled() => {
                let span = tracing::info_span!(
                    target: crate::telemetry::TARGET,
                    "relay.receive",
                    channel = %channel,
                    from_node = %relayed.envelope.node,
                    age_us,
                );
                crate::telemetry::continue_from_traceparent(&span, parent);
                self.deliver_relayed(channel, relayed.position, payload, exclude, event)
                    .instrument(span)
                    .await;
            }
            _ => {
                self.deliver_relayed(channel, relayed.position, payload, exclude, event)
                    .await
            }
        }
    }

    /// Hands a relayed publication to the hub after the offset checks.
    async fn deliver_relayed(
        &self,
        channel: ChannelName,
        position: Option<StreamPosition>,
        payload: crate::protocol::Payload,
        exclude: Option<crate::hub::ClientId>,
        event: Option<std::sync::Arc<crate::hub::NamedEvent>>,
    ) {
        let mut position = position;
        if let Some(position) = &mut position {
            if !self.fill_gap(&channel, position).await {
                return;
            }
        }
        let mut publication = Publication::new(channel, payload, position);
        publication.exclude = exclude;
        publication.event = event;
        self.hub.dispatch(publication).await;
    }

    /// Delivers a user's join or leave to the local subscribers, within the channel's
    /// join/leave rate.
    async fn deliver_presence(&self, channel: &ChannelName, join: bool, client: &ClientInfo) {
        let admitted = self
            .presence_channels
            .get_mut(channel)
            .is_none_or(|mut gate| gate.admit(self.hub.metrics()));
        if admitted {
            self.hub.dispatch_presence(channel, join, client).await;
        }
    }

    /// A user joined (its first connection) or left (its last): tells webhooks, and the
    /// channel's subscribers on every node where it announces joins and leaves.
    pub(crate) async fn user_changed(&self, channel: &ChannelName, join: bool, client: ClientInfo) {
        crate::broker::occupancy::emit_presence(&self.webhooks, channel, &client, join);
        self.announce(channel, join, client).await;
    }

    /// Publishes a user's join or leave on the channel's topic (no stream position), if
    /// the channel announces them.
    pub(crate) async fn announce(&self, channel: &ChannelName, join: bool, client: ClientInfo) {
        let announces = self
            .presence_channels
            .get(channel)
            .is_some_and(|gate| gate.announces());
        if !announces {
            return;
        }
        let Ok(mut conn) = self.commands() else {
            return;
        };
        let body = if join {
            envelope::Body::Join { client }
        } else {
            envelope::Body::Leave { client }
        };
        let envelope = Envelope {
            node: self.node_id.clone(),
            ts_us: envelope::now_us(),
            body,
            trace: None,
        };
        let mut message = envelope::NO_POSITION.to_vec();
        message.extend_from_slice(&envelope.encode());
        let mut cmd = redis::cmd(self.connector.publish_command());
        cmd.arg(self.keys.topic(channel.as_str())).arg(message);
        if let Err(err) = cmd.query_async::<i64>(&mut conn).await {
            self.failed("presence", &err);
        }
    }

    /// Checks `position` against the last one delivered on `channel`: false for a
    /// duplicate; on a gap (a message lost between Redis and this node), delivers the
    /// missing ones from history first. A publication of an epoch the stream left is
    /// relabelled with the new one.
    async fn fill_gap(&self, channel: &ChannelName, position: &mut StreamPosition) -> bool {
        let followed = self.positions.get(channel).map(|f| f.value().clone());
        let replaced = followed.as_ref().and_then(|f| f.replaced.clone());
        if let Some(followed) = &followed
            && replaced.as_deref() == Some(position.epoch.as_str())
        {
            position.epoch = followed.position.epoch.clone();
        }
        let Some(previous) = followed.filter(|f| f.position.epoch == position.epoch) else {
            self.follow(channel, position, None);
            return true;
        };
        if position.offset <= previous.position.offset {
            return self.went_back(channel, position, &previous).await;
        }
        let previous = previous.position;
        self.follow(channel, position, replaced);
        if position.offset > previous.offset + 1 {
            self.fill(
                channel,
                &position.epoch,
                previous.offset,
                position.offset - 1,
            )
            .await;
        }
        true
    }

    /// Delivers the stream's entries `after < offset <= through` from history, if there
    /// are at most `redis.gap_fill_max_messages` of them (this runs on the pub/sub
    /// connection's task, which must not stall); a longer gap is left to client
    /// recovery. Returns whether it filled.
    async fn fill(&self, channel: &ChannelName, epoch: &str, after: u64, through: u64) -> bool {
        let missing = through - after;
        if missing > self.config.gap_fill_max_messages as u64 {
            self.hub.metrics().limit_tripped("relay_gap_fill");
            tracing::warn!(channel = %channel, missing, "offset gap on the relay too long to fill; clients recover it");
            return false;
        }
        tracing::warn!(channel = %channel, missing, "offset gap on the relay; filling from history");
        match self.read_stream(channel, after, through, None, false).await {
            Ok(entries) => {
                for message in entries {
                    let position = StreamPosition {
                        offset: message.offset,
                        epoch: epoch.to_owned(),
                    };
                    let mut publication =
                        Publication::new(channel.clone(), message.payload, Some(position));
                    publication.event = message.event;
                    self.hub.dispatch(publication).await;
                }
                true
            }
            Err(err) => {
                tracing::warn!(channel = %channel, error = %err, "cannot fill the gap; clients will see it");
                false
            }
        }
    }

    /// After pub/sub connection `shard` was replaced: fills, for every channel it follows,
    /// what was published while it was down (otherwise that shows only when the next
    /// publication arrives, if one ever does).
    pub(crate) async fn catch_up(&self, shard: usize) {
        let shards = self.shard_up.len();
        let followed: Vec<(ChannelName, StreamPosition)> = self
            .positions
            .iter()
            .filter(|f| shard_index(f.key(), shards) == shard)
            .map(|f| (f.key().clone(), f.value().position.clone()))
            .collect();
        for (channel, delivered) in followed {
            let Ok(mut conn) = self.commands() else {
                return;
            };
            let top: Result<(Option<String>, Option<u64>), RedisError> = redis::cmd("HMGET")
                .arg(self.keys.meta(channel.as_str()))
                .arg("e")
                .arg("o")
                .query_async(&mut conn)
                .await;
            let (epoch, offset) = match top {
                Ok((Some(epoch), Some(offset))) => (epoch, offset),
                Ok(_) => continue,
                Err(err) => {
                    self.failed("history", &err);
                    return;
                }
            };
            if epoch != delivered.epoch || offset <= delivered.offset {
                continue;
            }
            if self.fill(&channel, &epoch, delivered.offset, offset).await {
                let top = StreamPosition { offset, epoch };
                let replaced = self
                    .positions
                    .get(&channel)
                    .and_then(|f| f.replaced.clone());
                self.follow(&channel, &top, replaced);
            }
        }
    }

    fn follow(&self, channel: &ChannelName, position: &StreamPosition, replaced: Option<String>) {
        let followed = Followed {
            position: position.clone(),
            replaced,
            connection: self.connections.load(Ordering::Acquire),
        };
        self.positions.insert(channel.clone(), followed);
    }

    /// An offset at or below the last one delivered: a duplicate, unless Redis went back
    /// in time and hands out offsets again. Then the stream moves to a new epoch (see
    /// `scripts::ROLL_EPOCH`), and this publication is delivered under it: subscribers
    /// keep receiving, and a client recovering from the old epoch gets `recovered: false`.
    async fn went_back(
        &self,
        channel: &ChannelName,
        position: &mut StreamPosition,
        previous: &Followed,
    ) -> bool {
        let Ok(mut conn) = self.commands() else {
            return false;
        };
        let reconnected = previous.connection != self.connections.load(Ordering::Acquire);
        let previous = &previous.position;
        let rolled: Result<(String, u8), RedisError> = scripts::ROLL_EPOCH
            .key(self.keys.meta(channel.as_str()))
            .arg(&position.epoch)
            .arg(previous.offset)
            .arg(epoch::new_epoch())
            .arg(if reconnected { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await;
        match rolled {
            Ok((epoch, 1)) => {
                tracing::warn!(
                    channel = %channel,
                    offset = position.offset,
                    delivered = previous.offset,
                    old_epoch = %position.epoch,
                    new_epoch = %epoch,
                    "redis went back in time on this stream; it continues under a new epoch"
                );
                self.hub.metrics().redis_stream_rollbacks.inc();
                let replaced = std::mem::replace(&mut position.epoch, epoch);
                self.follow(channel, position, Some(replaced));
                true
            }
            Ok(_) => false,
            Err(err) => {
                self.failed("history", &err);
                tracing::warn!(channel = %channel, error = %err, "cannot tell a duplicate from a rollback; dropping");
                false
            }
        }
    }

    /// Stream entries with `after < offset <= through`, oldest first (newest first with
    /// `newest_first`), at most `limit`.
    async fn read_stream(
        &self,
        channel: &ChannelName,
        after: u64,
        through: u64,
        limit: Option<usize>,
        newest_first: bool,
    ) -> Result<Vec<HistoryMessage>, BrokerError> {
        let mut conn = self.commands()?;
        let (low, high) = (format!("{}-1", after + 1), format!("{through}-1"));
        let mut cmd = redis::cmd(if newest_first { "XREVRANGE" } else { "XRANGE" });
        cmd.arg(self.keys.stream(channel.as_str()));
        if newest_first {
            cmd.arg(high).arg(low);
        } else {
            cmd.arg(low).arg(high);
        }
        if let Some(limit) = limit {
            cmd.arg("COUNT").arg(limit);
        }
        let entries: Vec<(String, Vec<Vec<u8>>)> = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed("history", &e))?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| stream_entry(&id, &fields))
            .collect())
    }
}

/// A channel name read back from Redis (a topic, an occupancy index): a native name or a
/// Pusher app's hub channel (`pusher~{app}~{name}`, which `ChannelName::parse` refuses).
pub(crate) fn stored_channel(name: &str) -> Option<ChannelName> {
    ChannelName::parse(name).ok().or_else(|| hub_channel(name))
}

/// The pub/sub connection of a channel among `shards` (a fixed hash).
fn shard_index(channel: &ChannelName, shards: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    channel.hash(&mut hasher);
    (hasher.finish() as usize) % shards.max(1)
}

/// Decodes one stream entry (`<offset>-1`, fields `d` envelope and `t` time).
fn stream_entry(id: &str, fields: &[Vec<u8>]) -> Option<HistoryMessage> {
    let offset = id.split('-').next()?.parse().ok()?;
    let data = fields
        .chunks(2)
        .find(|kv| kv.first().map(Vec::as_slice) == Some(b"d"))?
        .get(1)?;
    let envelope: Envelope = rmp_serde::from_slice(data).ok()?;
    Some(HistoryMessage {
        offset,
        payload: envelope.body.payload()?,
        event: envelope.body.event(),
    })
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
                .arg(IDEMPOTENCY_TTL_SECS)
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
                        .arg(IDEMPOTENCY_TTL_SECS)
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
            Err(err) => tracing::warn!(channel = %channel, error = %err, "presence update failed"),
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
            Err(err) => tracing::warn!(channel = %channel, error = %err, "presence update failed"),
        }
    }

    /// The channel's stream position and creation time (ms), read without storing
    /// anything: a channel nobody published to has no stream (`None`).
    async fn stream_position(
        &self,
        channel: &ChannelName,
    ) -> Result<Option<(StreamPosition, u64)>, BrokerError> {
        let ctx = &self.ctx;
        let mut conn = ctx.commands()?;
        let (epoch, offset, created): (Option<String>, Option<u64>, Option<u64>) =
            redis::cmd("HMGET")
                .arg(ctx.keys.meta(channel.as_str()))
                .arg("e")
                .arg("o")
                .arg("c")
                .query_async(&mut conn)
                .await
                .map_err(|e| ctx.failed("history", &e))?;
        Ok(epoch.map(|epoch| {
            let position = StreamPosition {
                offset: offset.unwrap_or(0),
                epoch,
            };
            (position, created.unwrap_or(0))
        }))
    }

    /// The messages after `from` up to `top`, if history still holds every one of them
    /// (from the stream's start when `from` was read before the stream existed).
    async fn recover(
        &self,
        channel: &ChannelName,
        ns: &NamespaceConfig,
        from: &StreamPosition,
        top: &StreamPosition,
        created_ms: u64,
    ) -> Result<(bool, Vec<HistoryMessage>), BrokerError> {
        let start = if from.epoch == top.epoch {
            from.offset
        } else if epoch::recovers_into_new_stream(
            from,
            created_ms,
            true,
            self.stream_lifetime(ns),
            epoch::now_ms(),
        ) {
            0
        } else {
            return Ok((false, Vec::new()));
        };
        if start > top.offset {
            return Ok((false, Vec::new()));
        }
        let wanted = top.offset - start;
        if wanted == 0 {
            return Ok((true, Vec::new()));
        }
        if wanted > ns.max_recover_messages as u64 {
            return Ok((false, Vec::new()));
        }
        let entries = self
            .ctx
            .read_stream(channel, start, top.offset, None, false)
            .await?;
        let complete = entries.len() as u64 == wanted
            && entries
                .iter()
                .zip(start + 1..)
                .all(|(message, expected)| message.offset == expected);
        if complete {
            Ok((true, entries))
        } else {
            Ok((false, Vec::new()))
        }
    }

    /// How long a stream lives in Redis after its last publication.
    fn stream_lifetime(&self, ns: &NamespaceConfig) -> Duration {
        Duration::from_secs(
            self.ctx
                .config
                .stream_meta_ttl_secs
                .max(ns.history_ttl_secs),
        )
    }

    pub async fn history(
        &self,
        channel: &ChannelName,
        _ns: &NamespaceConfig,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
        newest_first: bool,
    ) -> Result<HistoryPage, BrokerError> {
        let Some((top, _)) = self.stream_position(channel).await? else {
            let position = epoch::no_stream_position(epoch::now_ms());
            return Ok(HistoryPage {
                epoch: position.epoch,
                offset: 0,
                messages: Vec::new(),
            });
        };
        let after = since
            .filter(|s| s.epoch == top.epoch)
            .map_or(0, |s| s.offset);
        let messages = if after >= top.offset {
            Vec::new()
        } else {
            self.ctx
                .read_stream(channel, after, top.offset, limit, newest_first)
                .await?
        };
        Ok(HistoryPage {
            epoch: top.epoch,
            offset: top.offset,
            messages,
        })
    }

    /// Deletes the channel's stream of messages; its offset and epoch stay in Redis.
    pub async fn remove_history(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let ctx = &self.ctx;
        let mut conn = ctx.commands()?;
        let _: i64 = redis::cmd("DEL")
            .arg(ctx.keys.stream(channel.as_str()))
            .query_async(&mut conn)
            .await
            .map_err(|e| ctx.failed("history", &e))?;
        Ok(())
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

/// Keeps the command connection alive and `redis_up` true to life.
async fn health_loop(ctx: Arc<RelayContext>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let existing = ctx.commands.read().clone();
        let conn = match existing {
            Some(conn) => Some(conn),
            None => match ctx.connector.commands().await {
                Ok(conn) => {
                    *ctx.commands.write() = Some(conn.clone());
                    Some(conn)
                }
                Err(err) => {
                    ctx.hub
                        .metrics()
                        .redis_errors
                        .with_label_values(&["control"])
                        .inc();
                    *ctx.last_error.lock() = Some(err.to_string());
                    None
                }
            },
        };
        let ok = match conn {
            Some(mut conn) => {
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<String>(&mut conn);
                matches!(
                    tokio::time::timeout(
                        Duration::from_millis(ctx.config.command_timeout_ms),
                        ping
                    )
                    .await,
                    Ok(Ok(_))
                )
            }
            None => false,
        };
        let was_up = ctx.commands_up.swap(ok, Ordering::AcqRel);
        if was_up != ok {
            if ok {
                tracing::info!("redis reachable");
            } else {
                tracing::warn!(reason = ?ctx.last_error.lock().clone(), "redis unreachable");
            }
        }
        let all_up = ok && ctx.shard_up.iter().all(|s| s.load(Ordering::Acquire));
        ctx.hub.metrics().redis_up.set(i64::from(all_up));
    }
}

/// Follows local membership: leaves update presence; released channels are unsubscribed
/// after `unsubscribe_delay_ms`, in batches per connection, unless they got local
/// subscribers again; occupancy changes go to the cluster-wide record when webhooks are
/// on.
async fn events_loop(
    broker: Arc<RedisBroker>,
    mut events: mpsc::UnboundedReceiver<HubEvent>,
    stop: CancellationToken,
) {
    let delay = Duration::from_millis(broker.ctx.config.unsubscribe_delay_ms);
    let mut waiting: Vec<(tokio::time::Instant, ChannelName)> = Vec::new();
    let mut tick =
        tokio::time::interval(Duration::from_millis(100).min(delay.max(Duration::from_millis(10))));
    let ctx = &broker.ctx;
    let mut occupancy = occupancy::ClusterOccupancy::default();
    let webhooks = ctx.webhooks.enabled();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => match event {
                Some(HubEvent::Released(channel)) => {
                    // Kept if a new subscriber came meanwhile: its join and leave need it.
                    let hub = &broker.ctx.hub;
                    broker.ctx.presence_channels.remove_if(&channel, |c, _| !hub.has_subscribers(c));
                    if webhooks {
                        occupancy.reconcile(ctx, &channel).await;
                    }
                    waiting.push((tokio::time::Instant::now() + delay, channel));
                }
                Some(HubEvent::Occupied(channel)) => {
                    if webhooks {
                        occupancy.reconcile(ctx, &channel).await;
                    }
                }
                Some(HubEvent::Left { channel, client }) => broker.left(&channel, client).await,
                // Redis counts presence users itself (`RedisBroker::joined`).
                Some(HubEvent::Joined { .. }) => {}
                None => return,
            },
            _ = tick.tick() => {
                if webhooks {
                    occupancy.tick(ctx).await;
                }
                let now = tokio::time::Instant::now();
                let (due, later): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|(at, _)| *at <= now);
                waiting = later;
                let mut by_shard: HashMap<usize, Vec<ChannelName>> = HashMap::new();
                for (_, channel) in due {
                    if !broker.ctx.hub.has_subscribers(&channel) {
                        by_shard.entry(broker.shard_of(&channel)).or_default().push(channel);
                    }
                }
                for (shard, channels) in by_shard {
                    let _ = broker.shards[shard].send(ShardCommand::Unsubscribe { channels });
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    envelope::now_us() / 1000
}
