//! What arrives from Redis pub/sub: relayed publications (delivered in offset order, with
//! duplicates dropped and gaps filled from the stream), presence joins and leaves, and the
//! catch-up after a pub/sub connection is replaced. Runs on the pub/sub tasks of `relay`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::RedisError;
use tracing::Instrument as _;

use super::envelope::{self, Envelope};
use super::scripts;
use super::{Followed, RelayContext, control, shard_index, stored_channel};
use crate::broker::epoch;
use crate::hub::Publication;
use crate::protocol::{ChannelName, ClientInfo, StreamPosition};

impl RelayContext {
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
    pub(super) async fn deliver_relayed(
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
    pub(super) async fn deliver_presence(
        &self,
        channel: &ChannelName,
        join: bool,
        client: &ClientInfo,
    ) {
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
    pub(crate) async fn user_changed(
        self: &Arc<Self>,
        channel: &ChannelName,
        join: bool,
        client: ClientInfo,
    ) {
        super::member_hold::emit(self, channel, &client, join).await;
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
    pub(super) async fn fill_gap(
        &self,
        channel: &ChannelName,
        position: &mut StreamPosition,
    ) -> bool {
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
    pub(super) async fn fill(
        &self,
        channel: &ChannelName,
        epoch: &str,
        after: u64,
        through: u64,
    ) -> bool {
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

    pub(super) fn follow(
        &self,
        channel: &ChannelName,
        position: &StreamPosition,
        replaced: Option<String>,
    ) {
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
    pub(super) async fn went_back(
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
}
