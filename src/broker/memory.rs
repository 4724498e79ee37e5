//! The embedded single-node broker: per-channel streams with offsets and history in
//! process memory, idempotency keys, and presence read straight from the hub.
//!
//! Presence users are counted from the hub's `Joined` and `Left` events on one task, in
//! the order the hub made them, so a user joins on its first connection and leaves on its
//! last however subscribes and leaves race (see `broker::presence`).
//!
//! A channel's lock is held from offset assignment through `Hub::dispatch` and through a
//! recovering subscribe, so history, offsets and live delivery can never disagree.
//! A stream unused for its `history_ttl` is dropped; the next publication starts a new
//! epoch at offset 1, so a client holding the old epoch learns it must reload.
//! Only a publication creates a stream: reading or subscribing to a channel nobody
//! published to stores nothing (see `epoch`), and a stream-less channel's subscribe is
//! ordered against the publication that creates its stream by the channel's stripe lock.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::Mutex;

use super::epoch::{self, new_epoch, no_stream_position, recovers_into_new_stream};
use super::idempotency::IdempotencyKeys;
use super::occupancy::{LocalOccupancy, emit_local, emit_presence};
use super::presence::{LocalUsers, PresenceMode, PresencePage, PresenceQuery, PresenceStats};
use super::{HistoryMessage, HistoryPage, PublishResult, ReplyBuilder, SubscribeResult, replay};
use crate::config::NamespaceConfig;
use crate::hub::{ClientHandle, Hub, HubEvent, Publication, Replay};
use crate::protocol::{ChannelName, StreamPosition};
use crate::webhook::Webhooks;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Locks that order publications on channels without history.
const STRIPES: usize = 256;

struct Stream {
    epoch: String,
    /// When the first publication created it (ms since the Unix epoch).
    created_ms: u64,
    offset: u64,
    items: VecDeque<(HistoryMessage, Instant)>,
    touched: Instant,
}

impl Stream {
    fn new() -> Self {
        Stream {
            epoch: new_epoch(),
            created_ms: epoch::now_ms(),
            offset: 0,
            items: VecDeque::new(),
            touched: Instant::now(),
        }
    }

    fn prune(&mut self, ns: &NamespaceConfig, now: Instant) {
        let ttl = Duration::from_secs(ns.history_ttl_secs);
        while self.items.len() > ns.history_size {
            self.items.pop_front();
        }
        while self
            .items
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) > ttl)
        {
            self.items.pop_front();
        }
    }

    /// What a client at `from` missed, and whether that is all of it.
    fn recover(&self, from: &StreamPosition, ns: &NamespaceConfig) -> (Vec<HistoryMessage>, bool) {
        let start = if from.epoch == self.epoch {
            from.offset
        } else {
            let lifetime = Duration::from_secs(ns.history_ttl_secs);
            let (_, complete) = self.since(0);
            let now = epoch::now_ms();
            if !recovers_into_new_stream(from, self.created_ms, complete, lifetime, now) {
                return (Vec::new(), false);
            }
            0
        };
        if self.offset.saturating_sub(start) > ns.max_recover_messages as u64 {
            return (Vec::new(), false);
        }
        match self.since(start) {
            (messages, true) => (messages, true),
            (_, false) => (Vec::new(), false),
        }
    }

    /// Messages after `offset`, and whether they cover everything since it.
    fn since(&self, offset: u64) -> (Vec<HistoryMessage>, bool) {
        let messages: Vec<HistoryMessage> = self
            .items
            .iter()
            .filter(|(m, _)| m.offset > offset)
            .map(|(m, _)| m.clone())
            .collect();
        let complete = match messages.first() {
            Some(first) => first.offset == offset + 1,
            None => offset == self.offset,
        };
        (messages, complete)
    }
}

/// The in-memory broker.
pub struct MemoryBroker {
    hub: Hub,
    /// Channels with presence: connections per user, and the join/leave gate.
    users: DashMap<ChannelName, LocalUsers>,
    webhooks: Webhooks,
    streams: DashMap<ChannelName, Arc<Mutex<Stream>>>,
    stripes: Vec<Mutex<()>>,
    idempotency: IdempotencyKeys,
}

impl MemoryBroker {
    pub fn new(hub: Hub, webhooks: Webhooks) -> Self {
        MemoryBroker {
            hub,
            users: DashMap::new(),
            webhooks,
            streams: DashMap::new(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            idempotency: IdempotencyKeys::new(),
        }
    }

    fn stripe(&self, channel: &ChannelName) -> &Mutex<()> {
        let hash = self.streams.hasher().hash_one(channel);
        &self.stripes[(hash as usize) % STRIPES]
    }

    fn existing(&self, channel: &ChannelName) -> Option<Arc<Mutex<Stream>>> {
        self.streams.get(channel).map(|s| s.value().clone())
    }

    /// The channel's stream, created under the stripe lock if it has none yet.
    async fn stream(&self, channel: &ChannelName) -> Arc<Mutex<Stream>> {
        if let Some(stream) = self.existing(channel) {
            return stream;
        }
        let _order = self.stripe(channel).lock().await;
        self.streams
            .entry(channel.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Stream::new())))
            .value()
            .clone()
    }

    /// What the publication with this (scoped) key returned, if it is remembered.
    fn remembered(&self, key: Option<&str>) -> Option<PublishResult> {
        self.idempotency.get(key?)
    }

    pub async fn publish(
        &self,
        mut publication: Publication,
        ns: &NamespaceConfig,
        idempotency_key: Option<&str>,
    ) -> PublishResult {
        let channel = &publication.channel.clone();
        let idempotency_key = idempotency_key.map(|key| IdempotencyKeys::scoped(channel, key));
        if ns.history_size == 0 {
            let _order = self.stripe(channel).lock().await;
            if let Some(result) = self.remembered(idempotency_key.as_deref()) {
                return result;
            }
            self.hub.dispatch(publication).await;
            let result = PublishResult {
                offset: None,
                epoch: None,
            };
            self.remember(idempotency_key, &result);
            return result;
        }
        let stream = self.stream(channel).await;
        let mut stream = stream.lock().await;
        if let Some(result) = self.remembered(idempotency_key.as_deref()) {
            return result;
        }
        let now = Instant::now();
        stream.offset += 1;
        stream.touched = now;
        let position = StreamPosition {
            offset: stream.offset,
            epoch: stream.epoch.clone(),
        };
        let stored = HistoryMessage {
            offset: position.offset,
            payload: publication.payload.clone(),
            event: publication.event.clone(),
        };
        stream.items.push_back((stored, now));
        stream.prune(ns, now);
        let result = PublishResult {
            offset: Some(position.offset),
            epoch: Some(position.epoch.clone()),
        };
        publication.position = Some(position);
        self.hub.dispatch(publication).await;
        // Remembered before the lock is released: a concurrent repeat waits for it.
        self.remember(idempotency_key, &result);
        drop(stream);
        result
    }

    fn remember(&self, key: Option<String>, result: &PublishResult) {
        if let Some(key) = key {
            self.idempotency.insert(key, result.clone());
        }
    }

    /// Follows hub membership events: counts presence users, announces their joins
    /// and leaves, and tells webhooks about them and about occupancy.
    pub async fn run_events(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<HubEvent>,
        stop: CancellationToken,
    ) {
        let mut occupancy = LocalOccupancy::default();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                None => return,
                Some(HubEvent::Joined {
                    channel,
                    client,
                    mode,
                }) => {
                    let (first, announce) = {
                        let mut users = self
                            .users
                            .entry(channel.clone())
                            .or_insert_with(|| LocalUsers::new(mode));
                        let first = users.add(&client);
                        (first, first && users.gate.admit(self.hub.metrics()))
                    };
                    if announce {
                        self.hub.dispatch_presence(&channel, true, &client).await;
                    }
                    if first {
                        emit_presence(&self.webhooks, &channel, &client, true);
                    }
                }
                Some(HubEvent::Left { channel, client }) => {
                    let (last, announce) =
                        self.users
                            .get_mut(&channel)
                            .map_or((false, false), |mut users| {
                                let last = users.remove(&client);
                                (last, last && users.gate.admit(self.hub.metrics()))
                            });
                    self.users.remove_if(&channel, |_, u| u.counts.is_empty());
                    if announce {
                        self.hub.dispatch_presence(&channel, false, &client).await;
                    }
                    if last {
                        emit_presence(&self.webhooks, &channel, &client, false);
                    }
                }
                Some(HubEvent::Released(channel) | HubEvent::Occupied(channel)) => {
                    if self.webhooks.enabled()
                        && let Some(occupied) = occupancy.transition(&self.hub, &channel)
                    {
                        emit_local(&self.webhooks, &channel, occupied);
                    }
                }
            }
        }
    }

    /// Subscribes; where the namespace has presence, the hub's `Joined` event counts the
    /// connection in (and announces its user's join).
    pub async fn subscribe(
        &self,
        client: &Arc<ClientHandle>,
        channel: &ChannelName,
        ns: &NamespaceConfig,
        recover: Option<&StreamPosition>,
        reply: ReplyBuilder<'_>,
    ) -> Option<SubscribeResult> {
        if ns.history_size == 0 {
            let result = SubscribeResult {
                position: None,
                recovered: None,
            };
            let _order = self.stripe(channel).lock().await;
            return self
                .hub_subscribe(
                    client,
                    channel,
                    ns,
                    reply(&result).into_iter().collect::<Vec<_>>().into(),
                )
                .map(|_| result);
        }
        let Some(stream) = self.existing(channel) else {
            return self
                .subscribe_without_stream(client, channel, ns, recover, reply)
                .await;
        };
        let mut stream = stream.lock().await;
        let now = Instant::now();
        stream.prune(ns, now);
        let position = StreamPosition {
            offset: stream.offset,
            epoch: stream.epoch.clone(),
        };
        let (recovered, missed) = match recover {
            Some(from) => {
                let (messages, complete) = stream.recover(from, ns);
                (Some(complete), messages)
            }
            None => (None, Vec::new()),
        };
        let mut result = SubscribeResult {
            position: Some(position),
            recovered,
        };
        let frames = replay(&self.hub, client, channel, &mut result, &missed, reply);
        let queued = self.hub_subscribe(client, channel, ns, frames)?;
        if !queued {
            result.recovered = Some(false);
        }
        Some(result)
    }

    /// Subscribes to a channel that has no stream, storing nothing: a publication that
    /// creates the stream waits for the stripe lock held here, so it reaches this client.
    async fn subscribe_without_stream(
        &self,
        client: &Arc<ClientHandle>,
        channel: &ChannelName,
        ns: &NamespaceConfig,
        recover: Option<&StreamPosition>,
        reply: ReplyBuilder<'_>,
    ) -> Option<SubscribeResult> {
        let order = self.stripe(channel).lock().await;
        if self.existing(channel).is_some() {
            drop(order);
            return Box::pin(self.subscribe(client, channel, ns, recover, reply)).await;
        }
        let now = epoch::now_ms();
        let lifetime = Duration::from_secs(ns.history_ttl_secs);
        let result = SubscribeResult {
            position: Some(no_stream_position(now)),
            recovered: recover.map(|from| recovers_into_new_stream(from, now, true, lifetime, now)),
        };
        self.hub_subscribe(
            client,
            channel,
            ns,
            reply(&result).into_iter().collect::<Vec<_>>().into(),
        )
        .map(|_| result)
    }

    fn hub_subscribe(
        &self,
        client: &Arc<ClientHandle>,
        channel: &ChannelName,
        ns: &NamespaceConfig,
        frames: Replay,
    ) -> Option<bool> {
        if ns.presence {
            let mode = PresenceMode {
                announce: ns.join_leave,
                max_per_sec: ns.join_leave_rate_per_sec,
            };
            self.hub.subscribe_present(client, channel, frames, mode)
        } else {
            self.hub.subscribe(client, channel, frames)
        }
    }

    pub async fn history(
        &self,
        channel: &ChannelName,
        ns: &NamespaceConfig,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
        newest_first: bool,
    ) -> HistoryPage {
        let Some(stream) = self.existing(channel) else {
            let position = no_stream_position(epoch::now_ms());
            return HistoryPage {
                epoch: position.epoch,
                offset: 0,
                messages: Vec::new(),
            };
        };
        let mut stream = stream.lock().await;
        stream.prune(ns, Instant::now());
        let from = since
            .filter(|s| s.epoch == stream.epoch)
            .map_or(0, |s| s.offset);
        let (mut messages, _) = stream.since(from);
        if newest_first {
            messages.reverse();
        }
        if let Some(limit) = limit {
            messages.truncate(limit);
        }
        HistoryPage {
            epoch: stream.epoch.clone(),
            offset: stream.offset,
            messages,
        }
    }

    pub async fn remove_history(&self, channel: &ChannelName) {
        let stream = self.streams.get(channel).map(|s| s.value().clone());
        if let Some(stream) = stream {
            stream.lock().await.items.clear();
        }
    }

    /// A page of the channel's presence on this node.
    pub fn presence(&self, channel: &ChannelName, query: &PresenceQuery) -> PresencePage {
        let clients = self
            .hub
            .subscribers(channel)
            .iter()
            .map(|c| c.info_for_presence())
            .collect();
        super::presence::page_of(clients, query)
    }

    /// Connection and user counts of this node's subscribers (one pass, nothing encoded).
    pub fn presence_stats(&self, channel: &ChannelName) -> PresenceStats {
        let subscribers = self.hub.subscribers(channel);
        let users: std::collections::HashSet<String> = subscribers
            .iter()
            .map(|c| super::presence::user_key_of(&c.user, &c.client_id()))
            .collect();
        PresenceStats {
            clients: subscribers.len() as u64,
            users: users.len() as u64,
        }
    }

    /// How many channel streams this node holds.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Periodic upkeep: lets idempotency keys past their window go, and drops streams untouched
    /// for longer than their namespace's history TTL that no local client is subscribed
    /// to (a subscribed client must keep its epoch: it missed nothing).
    pub fn expire(&self, ttl_of: impl Fn(&ChannelName) -> Option<Duration>) {
        self.idempotency.expire();
        self.streams.retain(|name, stream| {
            let Ok(stream) = stream.try_lock() else {
                return true;
            };
            self.hub.has_subscribers(name)
                || ttl_of(name).is_some_and(|ttl| stream.touched.elapsed() <= ttl)
        });
    }
}
