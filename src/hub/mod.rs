//! The sharded connection hub: every connected client, the channel -> subscribers maps,
//! and fan-out of publications into bounded per-client queues.
//!
//! Shape: `Hub` is a cheap-clone handle (`Arc<Shared>`). Channels live in a `DashMap`;
//! each channel keeps its members and a lazily rebuilt snapshot (see `channel`). A
//! publication is split by fan-out shard and handed to that shard's worker (see `fanout`),
//! which pushes a shared `Bytes` frame to each recipient's outbox (see `outbox`): written
//! straight to a WebSocket client's socket when nothing is pending, queued for its
//! session otherwise. A shared ticker (see `ticker`) sends pings, enforces pong and write
//! timeouts, and samples queue depth, so no connection owns a timer.
//!
//! Architecture Invariant: no lock and no `DashMap` reference is held while awaiting or
//! while fanning out; the hub touches a socket only through a client's outbox, with a
//! non-blocking write under that client's queue lock (never waiting for it).

mod channel;
mod client;
mod fanout;
mod outbox;
mod pending;
mod query;
pub mod socket;
mod ticker;
mod wake;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::RwLock;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use client::{ClientHandle, Dialect, FRAME_SLOTS};
pub use fanout::EncodedPublication;
pub use outbox::{Batch, Closing, PushError, QueueLimits, WriteTurn};
pub use pending::PendingSubscription;

use crate::metrics::Metrics;
use crate::protocol::{ChannelName, Encoding};
pub use crate::protocol::{ClientId, NamedEvent, Publication};
use channel::ChannelEntry;

/// Settings the hub needs from the configuration.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub queue: QueueLimits,
    pub ping_interval_ms: u64,
    pub pong_timeout_ms: u64,
    pub write_timeout_ms: u64,
    /// Seconds a connection may outlive its token before close 4002.
    pub expiry_grace_secs: u64,
    /// Largest outbound batch frame a session writes.
    pub max_batch_bytes: usize,
    /// How long a woken session waits before it writes (0: at once, and pushes write
    /// directly when nothing is pending).
    pub write_delay_ms: u64,
    /// Most messages in one batch frame; 0: no bound but `max_batch_bytes`.
    pub max_messages_per_frame: usize,
    /// Fan-out workers, each owning a slice of the clients.
    pub shards: usize,
}

/// Handle to the hub; clones share it.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

/// A fan-out shard's worker, as the dispatcher sees it.
struct Worker {
    jobs: mpsc::Sender<fanout::FanoutJob>,
    /// The jobs sent to it and not finished yet.
    backlog: Arc<AtomicUsize>,
}

struct Shared {
    clients: DashMap<ClientId, Arc<ClientHandle>>,
    channels: DashMap<ChannelName, Arc<ChannelEntry>>,
    /// One per fan-out shard.
    workers: Vec<Worker>,
    settings: RwLock<HubSettings>,
    queue_limits: Arc<RwLock<QueueLimits>>,
    /// Read by every session write: an atomic, not a lock or an `Arc` clone.
    max_batch_bytes: AtomicUsize,
    write_delay_ms: AtomicU64,
    max_messages_per_frame: AtomicUsize,
    metrics: Arc<Metrics>,
    /// The hub clock's origin; a tokio `Instant`, so tests can pause it.
    started: tokio::time::Instant,
    id_prefix: u64,
    id_counter: AtomicU32,
    events: RwLock<Option<mpsc::UnboundedSender<HubEvent>>>,
    /// Where expired connections granted by the connect proxy go to be renewed.
    renewals: RwLock<Option<mpsc::Sender<Arc<ClientHandle>>>>,
}

/// What brokers may want to hear about local membership.
#[derive(Debug, Clone)]
pub enum HubEvent {
    /// A channel got its first local subscriber.
    Occupied(ChannelName),
    /// The last local subscriber of a channel left.
    Released(ChannelName),
    /// A client subscribed through `subscribe_present` (sent under the channel lock, so
    /// it always comes before the same subscription's `Left`).
    Joined {
        channel: ChannelName,
        client: crate::protocol::ClientInfo,
        mode: PresenceMode,
    },
    /// A client left a channel (unsubscribed or disconnected).
    Left {
        channel: ChannelName,
        client: crate::protocol::ClientInfo,
    },
}

/// How a broker follows a channel's presence (see `broker::presence`): whether joins and
/// leaves are announced, and at most how many a second per channel on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceMode {
    pub announce: bool,
    /// 0: no bound.
    pub max_per_sec: u32,
}

/// Which clients a server-API request is about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSelector {
    User(String),
    ClientId(String),
}

/// What a subscribe queues: `frames`, the `subscribed` reply and the recovered messages,
/// all at once; or, when they do not fit in the client's queue (see
/// `ClientHandle::push_replay`), `fallback`, the reply saying `recovered: false`.
pub struct Replay {
    pub frames: Vec<Bytes>,
    pub fallback: Option<Bytes>,
}

/// Frames with no recovery to fall back from.
impl From<Vec<Bytes>> for Replay {
    fn from(frames: Vec<Bytes>) -> Self {
        Replay {
            frames,
            fallback: None,
        }
    }
}

impl Hub {
    /// Starts the hub's fan-out workers and ticker on `tracker`, stopping on `shutdown`.
    pub fn start(
        settings: HubSettings,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Hub {
        let shards = settings.shards.clamp(1, 64);
        let queue_limits = Arc::new(RwLock::new(settings.queue));
        let mut workers = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (jobs, rx) = mpsc::channel(1024);
            let backlog = Arc::new(AtomicUsize::new(0));
            workers.push(Worker {
                jobs,
                backlog: backlog.clone(),
            });
            tracker.spawn(fanout::run_worker(
                rx,
                backlog,
                queue_limits.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
        }
        let hub = Hub {
            shared: Arc::new(Shared {
                clients: DashMap::new(),
                channels: DashMap::new(),
                workers,
                max_batch_bytes: AtomicUsize::new(settings.max_batch_bytes),
                write_delay_ms: AtomicU64::new(settings.write_delay_ms),
                max_messages_per_frame: AtomicUsize::new(settings.max_messages_per_frame),
                settings: RwLock::new(settings),
                queue_limits,
                metrics,
                started: tokio::time::Instant::now(),
                id_prefix: u64::from(rand::random::<u32>()) << 32,
                id_counter: AtomicU32::new(0),
                events: RwLock::new(None),
                renewals: RwLock::new(None),
            }),
        };
        tracker.spawn(ticker::run(hub.clone(), shutdown));
        hub
    }

    /// Milliseconds since the hub started (the clock of liveness checks).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn settings(&self) -> HubSettings {
        self.shared.settings.read().clone()
    }

    /// Applies new limits (config reload).
    pub fn update_settings(&self, settings: HubSettings) {
        *self.shared.queue_limits.write() = settings.queue;
        self.shared
            .max_batch_bytes
            .store(settings.max_batch_bytes, Ordering::Relaxed);
        self.shared
            .write_delay_ms
            .store(settings.write_delay_ms, Ordering::Relaxed);
        self.shared
            .max_messages_per_frame
            .store(settings.max_messages_per_frame, Ordering::Relaxed);
        *self.shared.settings.write() = settings;
    }

    pub fn max_batch_bytes(&self) -> usize {
        self.shared.max_batch_bytes.load(Ordering::Relaxed)
    }

    /// How long a woken session waits before writing; zero: no wait, direct writes on.
    pub fn write_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.shared.write_delay_ms.load(Ordering::Relaxed))
    }

    /// Most messages per batch frame (`usize::MAX` when unbounded).
    pub fn max_messages_per_frame(&self) -> usize {
        match self.shared.max_messages_per_frame.load(Ordering::Relaxed) {
            0 => usize::MAX,
            n => n,
        }
    }

    pub fn queue_limits(&self) -> QueueLimits {
        *self.shared.queue_limits.read()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Membership events go to `sender` (the broker's presence and unsubscribe logic).
    pub fn on_event(&self, sender: mpsc::UnboundedSender<HubEvent>) {
        *self.shared.events.write() = Some(sender);
    }

    /// Expired connections that renew through the refresh proxy go to `sender`.
    pub fn on_renewal(&self, sender: mpsc::Sender<Arc<ClientHandle>>) {
        *self.shared.renewals.write() = Some(sender);
    }

    /// Hands an expired client to the renewal task; false when there is none or it is
    /// full (the ticker then closes with 4002 as for any expired token).
    fn hand_to_renewal(&self, client: &Arc<ClientHandle>) -> bool {
        let renewals = self.shared.renewals.read();
        let Some(tx) = renewals.as_ref() else {
            return false;
        };
        // No expiry while the backend is asked; the answer sets the next one.
        client.expires_at.store(0, Ordering::Relaxed);
        if tx.try_send(client.clone()).is_ok() {
            return true;
        }
        self.shared.metrics.limit_tripped("proxy_renewals");
        false
    }

    fn emit(&self, event: impl FnOnce() -> HubEvent) {
        if let Some(tx) = self.shared.events.read().as_ref() {
            let _ = tx.send(event());
        }
    }

    /// Registers a connected client.
    pub fn register(
        &self,
        user: Arc<str>,
        encoding: Encoding,
        info: Option<Arc<serde_json::Value>>,
    ) -> Arc<ClientHandle> {
        self.register_as(user, encoding, info, Dialect::Native)
    }

    /// Registers a connected client of either front end.
    pub fn register_as(
        &self,
        user: Arc<str>,
        encoding: Encoding,
        info: Option<Arc<serde_json::Value>>,
        dialect: Dialect,
    ) -> Arc<ClientHandle> {
        let counter = self.shared.id_counter.fetch_add(1, Ordering::Relaxed);
        let id = ClientId(self.shared.id_prefix | u64::from(counter));
        let shard = (counter as usize) % self.shared.workers.len();
        let interval = self.shared.settings.read().ping_interval_ms;
        let next_ping = self.now_ms() + interval - first_ping_lead(counter, interval);
        let mut handle = ClientHandle::new(id, user, encoding, info, shard, next_ping);
        handle.dialect = dialect;
        let client = Arc::new(handle);
        self.shared.clients.insert(id, client.clone());
        let m = &self.shared.metrics;
        m.connections.with_label_values(&[encoding.label()]).inc();
        m.connects.inc();
        client
    }

    /// Removes a client and all its subscriptions.
    /// Unregisters a client whose connection ended and counts the ending by its close
    /// code (`1006` when it ended without one); returns that label.
    pub fn unregister_ended(&self, client: &ClientHandle) -> &'static str {
        self.unregister(client);
        let label = client.closing().map_or("1006", |c| c.code.label());
        self.shared
            .metrics
            .disconnects
            .with_label_values(&[label])
            .inc();
        label
    }

    pub fn unregister(&self, client: &ClientHandle) {
        if self.shared.clients.remove(&client.id).is_none() {
            return;
        }
        for channel in client.subscribed_channels() {
            self.unsubscribe(client, &channel);
        }
        let m = &self.shared.metrics;
        m.connections
            .with_label_values(&[client.encoding.label()])
            .dec();
    }

    /// Subscribes `client` to `channel` and enqueues `replay` (the `subscribed` reply and
    /// any recovered messages) atomically with it: every publication dispatched after this
    /// call reaches the client after them. `None` if it was already subscribed, else
    /// whether the recovered messages were queued (see `Replay`).
    pub fn subscribe(
        &self,
        client: &Arc<ClientHandle>,
        channel: &ChannelName,
        replay: Replay,
    ) -> Option<bool> {
        let limits = self.queue_limits();
        let mut recovered = true;
        self.add_member(client, channel, None, || {
            recovered = self.push_replay(client, replay, limits);
        })?;
        Some(recovered)
    }

    /// Enqueues (or writes) one frame for `client`, counting an eviction when it
    /// overflowed the client's queue (the client is then closing with 4008). Every frame
    /// but fan-out's goes this way.
    pub fn enqueue(&self, client: &ClientHandle, frame: Bytes) -> Result<(), PushError> {
        self.enqueue_within(client, frame, self.queue_limits())
    }

    /// `enqueue` with limits the caller already read (the ticker, once per scan).
    #[inline]
    pub fn enqueue_within(
        &self,
        client: &ClientHandle,
        frame: Bytes,
        limits: QueueLimits,
    ) -> Result<(), PushError> {
        let pushed = client.push(frame, limits);
        if pushed == Err(PushError::Overflow) {
            self.shared.metrics.evicted(1);
        }
        pushed
    }

    /// Queues a replay, or its fallback when it does not fit; false if the fallback was
    /// queued.
    fn push_replay(&self, client: &ClientHandle, replay: Replay, limits: QueueLimits) -> bool {
        match client.push_replay(replay.frames, limits) {
            Err(PushError::NoRoom) => {
                self.shared.metrics.limit_tripped("recover_bytes");
                if let Some(fallback) = replay.fallback {
                    let _ = self.enqueue_within(client, fallback, limits);
                }
                false
            }
            _ => true,
        }
    }

    /// `subscribe`, and a `HubEvent::Joined` for a channel whose presence is followed.
    pub fn subscribe_present(
        &self,
        client: &Arc<ClientHandle>,
        channel: &ChannelName,
        replay: Replay,
        mode: PresenceMode,
    ) -> Option<bool> {
        let limits = self.queue_limits();
        let mut recovered = true;
        self.add_member(client, channel, None, || {
            recovered = self.push_replay(client, replay, limits);
            self.emit(|| HubEvent::Joined {
                channel: channel.clone(),
                client: client.info_for_presence(),
                mode,
            });
        })?;
        Some(recovered)
    }

    /// Adds a member to `channel` (creating it), running `then` under the channel lock;
    /// returns the channel, or `None` if the client was already a member.
    fn add_member(
        &self,
        client: &Arc<ClientHandle>,
        channel: &ChannelName,
        pending: Option<Arc<pending::PendingState>>,
        then: impl FnOnce(),
    ) -> Option<Arc<ChannelEntry>> {
        let mut first_local = false;
        let entry = self
            .shared
            .channels
            .entry(channel.clone())
            .or_insert_with(|| {
                first_local = true;
                Arc::new(ChannelEntry::new(self.shared.workers.len()))
            });
        let added = entry.insert_then(client, pending, || {
            let mut channels = client.channels.lock();
            // Grown from one: most clients hold a channel or two, and `push` would
            // start at four.
            if channels.len() == channels.capacity() {
                let more = channels.len().max(1);
                channels.reserve_exact(more);
            }
            channels.push(channel.clone());
            then();
        });
        let entry = entry.value().clone();
        let m = &self.shared.metrics;
        if first_local {
            m.channels.inc();
            self.emit(|| HubEvent::Occupied(channel.clone()));
        }
        if !added {
            return None;
        }
        m.subscriptions.inc();
        Some(entry)
    }

    /// Unsubscribes `client` from `channel`; returns whether it was subscribed.
    pub fn unsubscribe(&self, client: &ClientHandle, channel: &ChannelName) -> bool {
        client.channels.lock().retain(|c| c != channel);
        let Some(entry) = self.shared.channels.get(channel).map(|e| e.value().clone()) else {
            return false;
        };
        let (removed, now_empty) = entry.remove(client.id);
        if removed {
            self.shared.metrics.subscriptions.dec();
            self.emit(|| HubEvent::Left {
                channel: channel.clone(),
                client: client.info_for_presence(),
            });
        }
        if now_empty
            && self
                .shared
                .channels
                .remove_if(channel, |_, e| e.is_empty())
                .is_some()
        {
            self.shared.metrics.channels.dec();
            self.emit(|| HubEvent::Released(channel.clone()));
        }
        removed
    }

    /// Delivers a publication to every local subscriber of its channel; returns how many
    /// recipients it was handed to. Callers dispatch one channel's publications in order.
    pub async fn dispatch(&self, publication: Publication) -> usize {
        let channel = publication.channel.clone();
        let mut encoded = EncodedPublication::new(publication);
        if crate::telemetry::enabled() {
            encoded.trace = crate::telemetry::recorded_span();
        }
        self.dispatch_encoded(&channel, encoded).await
    }

    /// Delivers a `join` or `leave` to the local subscribers of `channel`.
    pub async fn dispatch_presence(
        &self,
        channel: &ChannelName,
        join: bool,
        client: &crate::protocol::ClientInfo,
    ) -> usize {
        let event = EncodedPublication::presence_event(channel, join, client);
        self.dispatch_encoded(channel, event).await
    }

    async fn dispatch_encoded(&self, channel: &ChannelName, encoded: EncodedPublication) -> usize {
        let Some(entry) = self.shared.channels.get(channel).map(|e| e.value().clone()) else {
            return 0;
        };
        let snapshot = entry.snapshot();
        let recipients = snapshot.len();
        for job in fanout::jobs_for(&entry, snapshot, encoded) {
            let worker = &self.shared.workers[job.shard];
            let backlog = &worker.backlog;
            // With no backlog the worker has finished every job dispatched before this
            // one (callers dispatch a channel's publications one at a time), so a small
            // job delivered here keeps every client's order.
            if job.delivers_inline() && backlog.load(Ordering::Acquire) == 0 {
                fanout::deliver_inline(&job, self.queue_limits(), &self.shared.metrics);
                continue;
            }
            backlog.fetch_add(1, Ordering::AcqRel);
            // Fails only while shutting down, when nothing is delivered any more.
            if worker.jobs.send(job).await.is_err() {
                backlog.fetch_sub(1, Ordering::AcqRel);
            }
        }
        recipients
    }
}

/// How much earlier than a full interval a client's first ping comes: spread over the
/// first quarter of the interval by the client's counter (a Fibonacci hash), so clients
/// that connected in the same tick (a reconnect storm after a deploy) are not pinged in
/// one scan every interval from then on. Later pings keep the spread: each comes one
/// interval after the previous one.
fn first_ping_lead(counter: u32, interval_ms: u64) -> u64 {
    let spread = interval_ms / 4;
    if spread == 0 {
        return 0;
    }
    let scrambled = u64::from(counter).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    scrambled % spread
}

#[cfg(test)]
mod first_ping_tests {
    use super::first_ping_lead;

    #[test]
    fn first_pings_of_clients_connected_together_spread_over_a_quarter_interval() {
        let interval = 25_000;
        let leads: Vec<u64> = (0..1_000).map(|c| first_ping_lead(c, interval)).collect();
        assert!(leads.iter().all(|&lead| lead < interval / 4));
        // 1,000 consecutive clients land in (nearly) every 250 ms slice of the spread.
        let mut slices = [false; 25];
        for lead in &leads {
            slices[(*lead / 250) as usize] = true;
        }
        assert!(slices.iter().all(|&hit| hit), "{slices:?}");
        assert_eq!(
            first_ping_lead(7, 3),
            0,
            "an interval under 4 ms has no spread"
        );
    }
}
