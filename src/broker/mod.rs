//! Brokers carry publications to the hub of every node that has subscribers, and own
//! channel streams: offsets, epochs, history, idempotency, presence.
//!
//! `memory` serves one node with no dependency (the embedded default). A `redis` broker
//! relays between nodes. `Broker` is an enum, not a trait object: there are few kinds and
//! every call site stays a plain `await`.
//!
//! Presence is per connection for listing and per user for `join`/`leave`; `presence`
//! documents that API for every front end.
//!
//! Architecture Invariant: a channel's publications reach `Hub::dispatch` one at a time,
//! in offset order; that is what makes per-channel order the same for every client.

mod epoch;
mod idempotency;
mod memory;
mod occupancy;
pub mod presence;
mod redis;

use std::sync::Arc;

use tracing::Instrument as _;

use bytes::Bytes;

pub use memory::MemoryBroker;
pub use presence::{PresencePage, PresenceQuery, PresenceStats};
pub use redis::{NodeStats, RedisBroker};

use crate::config::NamespaceConfig;
use crate::hub::{
    ClientHandle, ClientId, ClientSelector, Dialect, Hub, NamedEvent, Publication, Replay,
};
use crate::protocol::{
    ChannelName, CloseCode, Encoding, HistoryItem, Payload, StreamPosition, data_fields,
};
use crate::webhook::Webhooks;

/// How long an idempotency key is remembered (PROTOCOL.md section 8), by either broker.
pub const IDEMPOTENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// A broker operation that failed, by cause, so callers and logs can tell an outage from a
/// slow reply from a command Redis refused. Every kind answers 503 on the HTTP API and
/// error 100 in the protocol; the message names the cause and carries Redis's own text
/// (also reachable as the `source`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// Not connected: Redis not reached (yet), the node shutting down, or a configuration
    /// that cannot connect.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The connection failed during the operation (reset, refused, a failover's READONLY);
    /// the node fails fast until its health loop sees Redis again.
    #[error("broker unavailable: redis {op} failed: {source}")]
    ConnectionLost {
        op: &'static str,
        #[source]
        source: Arc<::redis::RedisError>,
    },
    /// Redis did not answer in time (`redis.command_timeout_ms`); not an outage by itself.
    #[error("broker timed out: redis {op} got no reply in time")]
    Timeout {
        op: &'static str,
        #[source]
        source: Option<Arc<::redis::RedisError>>,
    },
    /// Redis answered with an error: a script error, a refused or malformed command.
    #[error("broker command failed: redis {op}: {source}")]
    Refused {
        op: &'static str,
        #[source]
        source: Arc<::redis::RedisError>,
    },
}

/// The outcome of a publication.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// A page of a channel's history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub epoch: String,
    /// The channel's latest offset.
    pub offset: u64,
    pub messages: Vec<HistoryMessage>,
}

impl HistoryPage {
    /// The messages as a `history` reply (op or HTTP) carries them to a reader of
    /// `encoding`: data inline, or as `data_b64` where JSON cannot hold it.
    pub fn items(&self, encoding: Encoding) -> Vec<HistoryItem<'_>> {
        self.messages
            .iter()
            .map(|message| {
                let (data, data_b64) = data_fields(encoding, &message.payload);
                HistoryItem {
                    offset: message.offset,
                    data,
                    data_b64,
                }
            })
            .collect()
    }
}

/// One message kept in a channel's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryMessage {
    pub offset: u64,
    pub payload: Payload,
    /// The Pusher event it was published as, if any.
    pub event: Option<Arc<NamedEvent>>,
}

/// What a subscribe with `recover` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeResult {
    pub position: Option<StreamPosition>,
    pub recovered: Option<bool>,
}

/// Builds the `subscribed` reply once the broker knows the stream position.
pub type ReplyBuilder<'a> = &'a (dyn Fn(&SubscribeResult) -> Option<Bytes> + Sync);

/// The broker of one node.
#[derive(Clone)]
pub enum Broker {
    Memory(Arc<MemoryBroker>),
    Redis(Arc<RedisBroker>),
}

impl Broker {
    /// The embedded single-node broker, with its event task on `tracker`.
    pub fn memory(
        hub: Hub,
        webhooks: Webhooks,
        tracker: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) -> Broker {
        let broker = Arc::new(MemoryBroker::new(hub.clone(), webhooks));
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        hub.on_event(events_tx);
        tracker.spawn(broker.clone().run_events(events_rx, stop));
        Broker::Memory(broker)
    }

    /// Publishes `payload` on `channel`; assigns offset and epoch where `ns` keeps history.
    /// `exclude` names a client that does not receive it (on any node).
    pub async fn publish(
        &self,
        channel: &ChannelName,
        payload: Payload,
        ns: &NamespaceConfig,
        idempotency_key: Option<&str>,
        exclude: Option<ClientId>,
    ) -> Result<PublishResult, BrokerError> {
        let mut publication = Publication::new(channel.clone(), payload, None);
        publication.exclude = exclude;
        self.publish_publication(publication, ns, idempotency_key)
            .await
    }

    /// Publishes a Pusher event on `channel` (an app channel, see `crate::pusher::channel`),
    /// to every subscriber but `exclude`.
    pub async fn publish_event(
        &self,
        channel: &ChannelName,
        payload: Payload,
        event: NamedEvent,
        exclude: Option<ClientId>,
        ns: &NamespaceConfig,
    ) -> Result<PublishResult, BrokerError> {
        let mut publication = Publication::new(channel.clone(), payload, None);
        publication.exclude = exclude;
        publication.event = Some(Arc::new(event));
        self.publish_publication(publication, ns, None).await
    }

    async fn publish_publication(
        &self,
        publication: Publication,
        ns: &NamespaceConfig,
        idempotency_key: Option<&str>,
    ) -> Result<PublishResult, BrokerError> {
        if !crate::telemetry::enabled() {
            return self.publish_now(publication, ns, idempotency_key).await;
        }
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "broker.publish",
            broker = self.kind(),
            channel = %publication.channel,
            offset = tracing::field::Empty,
            epoch = tracing::field::Empty,
        );
        let result = self
            .publish_now(publication, ns, idempotency_key)
            .instrument(span.clone())
            .await;
        if let Ok(PublishResult {
            offset: Some(offset),
            epoch: Some(epoch),
        }) = &result
        {
            span.record("offset", offset);
            span.record("epoch", epoch.as_str());
        }
        result
    }

    async fn publish_now(
        &self,
        publication: Publication,
        ns: &NamespaceConfig,
        idempotency_key: Option<&str>,
    ) -> Result<PublishResult, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.publish(publication, ns, idempotency_key).await),
            Broker::Redis(b) => b.publish(publication, ns, idempotency_key).await,
        }
    }

    /// Subscribes a local client, recovering missed messages when asked: the `subscribed`
    /// reply, then the recovered messages, then live ones, each exactly once.
    pub async fn subscribe(
        &self,
        client: &Arc<ClientHandle>,
        channel: &ChannelName,
        ns: &NamespaceConfig,
        recover: Option<&StreamPosition>,
        reply: ReplyBuilder<'_>,
    ) -> Result<Option<SubscribeResult>, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.subscribe(client, channel, ns, recover, reply).await),
            Broker::Redis(b) => b.subscribe(client, channel, ns, recover, reply).await,
        }
    }

    /// A channel's history after `since` (all of it without), at most `limit` messages:
    /// the oldest of them in offset order, or with `newest_first` the newest, newest first.
    pub async fn history(
        &self,
        channel: &ChannelName,
        ns: &NamespaceConfig,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
        newest_first: bool,
    ) -> Result<HistoryPage, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.history(channel, ns, since, limit, newest_first).await),
            Broker::Redis(b) => b.history(channel, ns, since, limit, newest_first).await,
        }
    }

    /// A page of `channel`'s presence: its connections, or one entry per user
    /// (`query.by_user`); see `presence` for the order and the cursor.
    pub async fn presence(
        &self,
        channel: &ChannelName,
        query: &PresenceQuery,
    ) -> Result<PresencePage, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.presence(channel, query)),
            Broker::Redis(b) => b.presence(channel, query).await,
        }
    }

    /// How many connections and distinct users are present in `channel`.
    pub async fn presence_stats(
        &self,
        channel: &ChannelName,
    ) -> Result<PresenceStats, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.presence_stats(channel)),
            Broker::Redis(b) => b.presence_stats(channel).await,
        }
    }

    /// Subscriber counts per channel across the cluster, sorted by channel.
    pub async fn channels(
        &self,
        hub: &Hub,
        prefix: &str,
    ) -> Result<Vec<(String, usize)>, BrokerError> {
        let mut counts: std::collections::BTreeMap<String, usize> = hub
            .channel_counts(prefix)
            .into_iter()
            .map(|(c, n)| (c.as_str().to_owned(), n))
            .collect();
        if let Broker::Redis(b) = self {
            for (channel, n) in b.remote_channels(prefix).await? {
                *counts.entry(channel).or_default() += n;
            }
        }
        Ok(counts.into_iter().collect())
    }

    /// Closes the clients `selector` names on every node; returns how many.
    pub async fn disconnect(
        &self,
        hub: &Hub,
        selector: &ClientSelector,
        code: CloseCode,
        reason: &str,
        reconnect: bool,
    ) -> Result<usize, BrokerError> {
        let local = hub.disconnect_matching(selector, code, reason, reconnect);
        match self {
            Broker::Memory(_) => Ok(local),
            Broker::Redis(b) => Ok(local
                + b.remote_disconnect(selector, code, reason, reconnect)
                    .await?),
        }
    }

    /// Subscribes the local clients `selector` names to `channel`, server-side: each gets
    /// `subscribed` with id 0 (and no recovery). Clients already subscribed, or at
    /// `max_channels`, are skipped; returns how many were subscribed.
    pub async fn subscribe_matching(
        &self,
        hub: &Hub,
        selector: &ClientSelector,
        channel: &ChannelName,
        ns: &NamespaceConfig,
        max_channels: usize,
    ) -> Result<usize, BrokerError> {
        let mut count = 0;
        for client in hub.select(selector) {
            if client.is_subscribed(channel) || client.channel_count() >= max_channels {
                continue;
            }
            let (encoding, dialect) = (client.encoding, client.dialect);
            // The notice in the client's own wire format: a native frame would corrupt an
            // SSE stream; a Pusher connection has no such notice.
            let reply = |result: &SubscribeResult| {
                let position = result.position.as_ref();
                match dialect {
                    Dialect::Native => {
                        let message = crate::protocol::ServerMessage::Subscribed {
                            id: 0,
                            channel: channel.as_str(),
                            epoch: position.map(|p| p.epoch.as_str()),
                            offset: position.map(|p| p.offset),
                            recovered: None,
                        };
                        crate::protocol::encode(encoding, &message).ok()
                    }
                    Dialect::Sse => Some(crate::sse::wire::notice_frame(
                        "subscribed",
                        &serde_json::json!({
                            "channel": channel.as_str(),
                            "epoch": position.map(|p| p.epoch.as_str()),
                            "offset": position.map(|p| p.offset),
                        }),
                    )),
                    Dialect::Pusher => None,
                }
            };
            if self
                .subscribe(&client, channel, ns, None, &reply)
                .await?
                .is_some()
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Empties `channel`'s history, keeping its epoch and latest offset (so a client
    /// recovering from before it learns that it cannot recover).
    pub async fn remove_history(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(b) => {
                b.remove_history(channel).await;
                Ok(())
            }
            Broker::Redis(b) => b.remove_history(channel).await,
        }
    }

    /// Unsubscribes the clients `selector` names from `channel` on every node.
    pub async fn unsubscribe(
        &self,
        hub: &Hub,
        selector: &ClientSelector,
        channel: &ChannelName,
    ) -> Result<usize, BrokerError> {
        let local = hub.unsubscribe_matching(selector, channel);
        match self {
            Broker::Memory(_) => Ok(local),
            Broker::Redis(b) => Ok(local + b.remote_unsubscribe(selector, channel).await?),
        }
    }

    /// `Ok` while the broker can serve; the reason otherwise (for `/ready`).
    pub fn readiness(&self) -> Result<(), String> {
        match self {
            Broker::Memory(_) => Ok(()),
            Broker::Redis(b) => b.readiness(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Broker::Memory(_) => "memory",
            Broker::Redis(_) => "redis",
        }
    }

    /// The nodes of the cluster (just this one on the memory broker), `me` first.
    pub fn nodes(&self, me: NodeStats) -> Vec<NodeStats> {
        match self {
            Broker::Memory(_) => vec![me],
            Broker::Redis(b) => b.nodes(),
        }
    }
}

/// The `subscribed` reply for `result` and the recovered `missed` messages, as the hub
/// queues them for `client`. A recovery too large for what is left of the client's queue
/// (twice `queue_max_bytes`, see `ClientHandle::push_replay`) is not encoded at all and
/// `result` says `recovered: false`; the hub falls back the same way if it turns out not
/// to fit once encoded.
pub(crate) fn replay(
    hub: &Hub,
    client: &ClientHandle,
    channel: &ChannelName,
    result: &mut SubscribeResult,
    missed: &[HistoryMessage],
    reply: ReplyBuilder<'_>,
) -> Replay {
    let (Some(position), Some(true), false) =
        (result.position.clone(), result.recovered, missed.is_empty())
    else {
        return Replay {
            frames: reply(result).into_iter().collect(),
            fallback: None,
        };
    };
    let not_recovered = SubscribeResult {
        position: Some(position.clone()),
        recovered: Some(false),
    };
    let fallback = reply(&not_recovered);
    // Payloads are a lower bound of their frames: a recovery that cannot fit is refused
    // before it costs an allocation.
    let at_least: usize = missed.iter().map(|message| message.payload.len()).sum();
    if at_least > client.replay_room(hub.queue_limits()) {
        hub.metrics().limit_tripped("recover_bytes");
        *result = not_recovered;
        return Replay {
            frames: fallback.into_iter().collect(),
            fallback: None,
        };
    }
    let mut frames: Vec<Bytes> = reply(result).into_iter().collect();
    frames.extend(encode_recovered(client, channel, &position.epoch, missed));
    Replay { frames, fallback }
}

/// Encodes the recovered messages for a client.
pub(crate) fn encode_recovered(
    client: &ClientHandle,
    channel: &ChannelName,
    epoch: &str,
    messages: &[HistoryMessage],
) -> Vec<Bytes> {
    messages
        .iter()
        .filter_map(|message| {
            let position = StreamPosition {
                offset: message.offset,
                epoch: epoch.to_owned(),
            };
            match client.dialect {
                Dialect::Native => crate::protocol::encode_publication(
                    client.encoding,
                    channel.as_str(),
                    &message.payload,
                    Some(&position),
                )
                .ok(),
                Dialect::Sse => {
                    crate::sse::wire::encode_recovered(channel, &position, &message.payload)
                }
                Dialect::Pusher => {
                    let mut publication =
                        Publication::new(channel.clone(), message.payload.clone(), Some(position));
                    publication.event = message.event.clone();
                    crate::pusher::encode_publication(&publication)
                }
            }
        })
        .collect()
}
