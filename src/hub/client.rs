//! One connected client as the hub sees it: identity, encoding, the bounded outbound queue
//! its session drains, and the liveness timestamps the shared ticker checks.
//!
//! Architecture Invariant: the queue is the only path from the hub to a socket. It is
//! bounded by messages and by bytes; the push that would overflow it discards what is
//! queued and marks the client for close 4008, so one slow reader costs the node at most
//! `queue_max_bytes` and never slows anyone else. A subscribe's reply and recovered
//! history (a replay) may take the queue up to twice its bounds, and only all at once:
//! a replay that does not fit is refused, so whatever a client sends, its queue holds at
//! most twice `queue_max_bytes` (plus one reply).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::protocol::{ChannelName, CloseCode, Encoding};

/// Frames a publication may be encoded into: JSON, MessagePack, Pusher, SSE.
pub const FRAME_SLOTS: usize = 4;

/// A client id, unique across the cluster (a random node prefix plus a counter).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl ClientId {
    pub fn parse(text: &str) -> Option<ClientId> {
        if text.len() != 16 {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(ClientId)
    }
}

/// Which front end a client speaks: it picks the frame a publication is encoded into
/// (see `EncodedPublication::frame_for`) and the ping the ticker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PROTOCOL.md, in the client's `Encoding`.
    Native,
    /// The Pusher Channels protocol (`crate::pusher`): JSON text, one event per frame.
    Pusher,
    /// Server-Sent Events (`crate::sse`): a read-only stream, no pong expected.
    Sse,
}

/// What a Pusher client said about itself: the presence member it is and the user it
/// signed in as.
#[derive(Debug, Default)]
struct PusherIdentity {
    member: Option<(Arc<str>, Option<serde_json::Value>)>,
    signed_in: Option<Arc<str>>,
}

/// Bounds of one client's outbound queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl QueueLimits {
    /// What the whole queue may hold, replays included: twice the live bounds.
    fn total_messages(self) -> usize {
        self.max_messages.saturating_mul(2)
    }

    fn total_bytes(self) -> usize {
        self.max_bytes.saturating_mul(2)
    }
}

/// `write_started_ms` once the ticker gave up on the write (see `abort_stalled_write`).
const WRITE_ABORTED: u64 = u64::MAX;

/// One channel membership of a client, shared by the channel's snapshots. Fan-out
/// delivers only while it is active, checked under the client's queue lock, so nothing
/// from a queued fan-out job reaches the client after its `unsubscribed` reply or next
/// to a later subscription's recovered messages.
pub(crate) struct Subscription {
    pub(crate) client: Arc<ClientHandle>,
    active: AtomicBool,
}

impl Subscription {
    pub(crate) fn new(client: Arc<ClientHandle>) -> Self {
        Subscription {
            client,
            active: AtomicBool::new(true),
        }
    }

    /// Ends this membership: after this returns, no push through it enqueues.
    pub(crate) fn end(&self) {
        let _queue = self.client.queue.lock();
        self.active.store(false, Ordering::Relaxed);
    }
}

/// Why and how a client's connection is being ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub code: CloseCode,
    pub reason: String,
    /// Sent in `disconnect.reconnect`.
    pub reconnect: bool,
}

/// Result of a push that did not enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The client is already closing; the message is dropped.
    Closed,
    /// This push overflowed the queue: the client is now closing with 4008.
    Overflow,
    /// The subscription it was for has ended; the message is dropped.
    Unsubscribed,
    /// A replay that does not fit in what is left of the queue; nothing was queued.
    NoRoom,
}

/// One queued frame, and whether it was queued with `push_reserved`.
struct Queued {
    bytes: Bytes,
    reserved: bool,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Queued>,
    bytes: usize,
    /// Of `items` and `bytes`, what was queued as replays (`push_replay`): it does not
    /// count against the live bounds, only against the total (twice them).
    reserved_items: usize,
    reserved_bytes: usize,
    closing: Option<Closing>,
}

/// What the session takes from the queue for one write.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<Bytes>,
    /// Set once the queue is empty and the client is closing.
    pub closing: Option<Closing>,
}

/// A connected client, shared by the hub (channel snapshots) and its session.
pub struct ClientHandle {
    pub id: ClientId,
    pub user: Arc<str>,
    pub encoding: Encoding,
    pub dialect: Dialect,
    /// The presence `info` from the connection token, if any.
    pub info: Option<Arc<serde_json::Value>>,
    /// Index of the fan-out shard that delivers to this client.
    pub(crate) shard: usize,
    queue: Mutex<QueueState>,
    wake: Notify,
    abort: Notify,
    /// A Pusher client's presence identity and signed-in user (`crate::pusher`); one
    /// pointer, empty for native clients.
    pusher: Mutex<Option<Box<PusherIdentity>>>,
    /// Channels this client is subscribed to.
    pub(crate) channels: Mutex<Vec<ChannelName>>,
    /// Liveness, in milliseconds on the hub clock.
    pub(crate) next_ping_ms: AtomicU64,
    pub(crate) ping_sent_ms: AtomicU64,
    pub(crate) write_started_ms: AtomicU64,
    /// When the connection token expires, in Unix seconds; 0: never.
    pub(crate) expires_at: AtomicU64,
    /// Granted by the backend's connect proxy: renewed through the refresh proxy on
    /// expiry instead of closed with 4002.
    renew_by_proxy: std::sync::atomic::AtomicBool,
}

impl ClientHandle {
    pub(crate) fn new(
        id: ClientId,
        user: Arc<str>,
        encoding: Encoding,
        info: Option<Arc<serde_json::Value>>,
        shard: usize,
        next_ping_ms: u64,
    ) -> Self {
        ClientHandle {
            id,
            user,
            encoding,
            dialect: Dialect::Native,
            info,
            shard,
            queue: Mutex::new(QueueState::default()),
            wake: Notify::new(),
            abort: Notify::new(),
            pusher: Mutex::new(None),
            channels: Mutex::new(Vec::new()),
            next_ping_ms: AtomicU64::new(next_ping_ms),
            ping_sent_ms: AtomicU64::new(0),
            write_started_ms: AtomicU64::new(0),
            expires_at: AtomicU64::new(0),
            renew_by_proxy: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Enqueues one encoded message. On overflow the queue is emptied and the client is
    /// marked for close 4008; the caller counts the eviction.
    pub fn push(&self, message: Bytes, limits: QueueLimits) -> Result<(), PushError> {
        let state = self.queue.lock();
        self.push_locked(state, message, limits)
    }

    /// `push` of a fan-out delivery: dropped if `subscription` has ended.
    pub(crate) fn push_live(
        &self,
        message: Bytes,
        limits: QueueLimits,
        subscription: &Subscription,
    ) -> Result<(), PushError> {
        let state = self.queue.lock();
        if !subscription.active.load(Ordering::Relaxed) {
            return Err(PushError::Unsubscribed);
        }
        self.push_locked(state, message, limits)
    }

    fn push_locked(
        &self,
        mut state: parking_lot::MutexGuard<'_, QueueState>,
        message: Bytes,
        limits: QueueLimits,
    ) -> Result<(), PushError> {
        if state.closing.is_some() {
            return Err(PushError::Closed);
        }
        if state.items.len() - state.reserved_items >= limits.max_messages
            || state.bytes - state.reserved_bytes + message.len() > limits.max_bytes
            || state.items.len() >= limits.total_messages()
            || state.bytes + message.len() > limits.total_bytes()
        {
            state.items = VecDeque::new();
            state.bytes = 0;
            state.reserved_items = 0;
            state.reserved_bytes = 0;
            state.closing = Some(Closing {
                code: CloseCode::SlowConsumer,
                reason: CloseCode::SlowConsumer.default_reason().into(),
                reconnect: true,
            });
            drop(state);
            self.wake.notify_one();
            return Err(PushError::Overflow);
        }
        state.bytes += message.len();
        state.items.push_back(Queued {
            bytes: message,
            reserved: false,
        });
        let was_empty = state.items.len() == 1;
        drop(state);
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Bytes a replay may still take: what is left of twice `max_bytes`.
    pub fn replay_room(&self, limits: QueueLimits) -> usize {
        limits.total_bytes().saturating_sub(self.queue.lock().bytes)
    }

    /// Enqueues a subscribe's reply and recovered history, all or nothing. They do not
    /// count against the live bounds (what a slow consumer missed is by definition more
    /// than its queue held), only against the total: twice the bounds. `NoRoom` when
    /// they do not fit; nothing is queued then.
    pub fn push_replay(&self, frames: Vec<Bytes>, limits: QueueLimits) -> Result<(), PushError> {
        let mut state = self.queue.lock();
        if state.closing.is_some() {
            return Err(PushError::Closed);
        }
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        if state.items.len() + frames.len() > limits.total_messages()
            || state.bytes + bytes > limits.total_bytes()
        {
            return Err(PushError::NoRoom);
        }
        let was_empty = state.items.is_empty();
        state.bytes += bytes;
        state.reserved_bytes += bytes;
        state.reserved_items += frames.len();
        state.items.extend(frames.into_iter().map(|bytes| Queued {
            bytes,
            reserved: true,
        }));
        drop(state);
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Asks the session to close with `code`. The first close wins. With `discard`, queued
    /// messages are dropped; without, they are written first (graceful shutdown).
    /// Returns whether this call started the close.
    pub fn close(&self, code: CloseCode, reason: &str, discard: bool) -> bool {
        self.close_with(code, reason, code.reconnect(), discard)
    }

    /// `close` with an explicit `disconnect.reconnect` (server API disconnects).
    pub fn close_with(
        &self,
        code: CloseCode,
        reason: &str,
        reconnect: bool,
        discard: bool,
    ) -> bool {
        let mut state = self.queue.lock();
        if state.closing.is_some() {
            return false;
        }
        if discard {
            state.items = VecDeque::new();
            state.bytes = 0;
            state.reserved_items = 0;
            state.reserved_bytes = 0;
        }
        state.closing = Some(Closing {
            code,
            reason: reason.into(),
            reconnect,
        });
        drop(state);
        self.wake.notify_one();
        true
    }

    /// The close in progress, if any.
    pub fn closing(&self) -> Option<Closing> {
        self.queue.lock().closing.clone()
    }

    /// Takes queued messages up to `max_bytes` (at least one). The close, if any, is
    /// reported only once everything queued before it was taken.
    pub fn take_batch(&self, max_bytes: usize) -> Batch {
        let mut state = self.queue.lock();
        let mut batch = Batch::default();
        let mut taken = 0;
        while let Some(front) = state.items.front() {
            if !batch.items.is_empty() && taken + front.bytes.len() > max_bytes {
                break;
            }
            taken += front.bytes.len();
            if let Some(item) = state.items.pop_front() {
                if item.reserved {
                    state.reserved_items -= 1;
                    state.reserved_bytes -= item.bytes.len();
                }
                batch.items.push(item.bytes);
            }
        }
        state.bytes -= taken;
        if state.items.is_empty() {
            if state.items.capacity() > 64 {
                state.items = VecDeque::new();
            }
            batch.closing = state.closing.clone();
        }
        batch
    }

    pub fn queue_len(&self) -> usize {
        self.queue.lock().items.len()
    }

    /// Bytes queued, replays included.
    pub fn queued_bytes(&self) -> usize {
        self.queue.lock().bytes
    }

    /// Resolves when something was queued or a close was requested since the last take.
    pub async fn wait_for_work(&self) {
        self.wake.notified().await;
    }

    /// Resolves when the ticker gives up on the write in progress. A wake-up left over
    /// from an earlier write (the ticker's notice can land just after that write ended)
    /// does not count: only `write_started_ms` says whether this write was aborted.
    pub async fn wait_for_abort(&self) {
        loop {
            let notified = self.abort.notified();
            if self.write_started_ms.load(Ordering::Acquire) == WRITE_ABORTED {
                return;
            }
            notified.await;
        }
    }

    /// Aborts the write that started at `started_ms`, if it is still in progress: a
    /// write that ended meanwhile, or a newer one, is left alone. Returns whether it
    /// aborted.
    pub(crate) fn abort_stalled_write(&self, started_ms: u64) -> bool {
        let aborted = self
            .write_started_ms
            .compare_exchange(
                started_ms,
                WRITE_ABORTED,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        if aborted {
            self.abort.notify_one();
        }
        aborted
    }

    /// Index into `EncodedPublication`'s frame cache: one slot per native encoding, then
    /// the Pusher one.
    pub fn frame_slot(&self) -> usize {
        match self.dialect {
            Dialect::Native => self.encoding.index(),
            Dialect::Pusher => 2,
            Dialect::Sse => 3,
        }
    }

    pub fn client_id(&self) -> String {
        self.id.to_string()
    }

    /// Sets a Pusher client's presence identity (from its first presence subscription's
    /// `channel_data`); false if it already has a different one.
    pub fn set_pusher_member(&self, user_id: &str, info: Option<serde_json::Value>) -> bool {
        let mut identity = self.pusher.lock();
        let identity = identity.get_or_insert_with(Box::default);
        match &identity.member {
            Some((user, _)) => &**user == user_id,
            None => {
                identity.member = Some((Arc::from(user_id), info));
                true
            }
        }
    }

    /// Records a Pusher sign-in as hub user `hub_user` (see `crate::pusher::identity`).
    pub fn set_pusher_user(&self, hub_user: &str) {
        let mut identity = self.pusher.lock();
        identity.get_or_insert_with(Box::default).signed_in = Some(Arc::from(hub_user));
    }

    /// Whether this client is `user`: its connection user or its Pusher sign-in.
    pub fn is_user(&self, user: &str) -> bool {
        &*self.user == user
            || self
                .pusher
                .lock()
                .as_ref()
                .is_some_and(|identity| identity.signed_in.as_deref() == Some(user))
    }

    /// How this client appears in presence.
    pub fn info_for_presence(&self) -> crate::protocol::ClientInfo {
        if let Some((user, info)) = self.pusher.lock().as_ref().and_then(|i| i.member.clone()) {
            return crate::protocol::ClientInfo {
                client_id: self.client_id(),
                user: user.to_string(),
                info,
            };
        }
        crate::protocol::ClientInfo {
            client_id: self.client_id(),
            user: self.user.to_string(),
            info: self.info.as_deref().cloned(),
        }
    }

    pub fn subscribed_channels(&self) -> Vec<ChannelName> {
        self.channels.lock().clone()
    }

    pub fn is_subscribed(&self, channel: &ChannelName) -> bool {
        self.channels.lock().contains(channel)
    }

    pub fn channel_count(&self) -> usize {
        self.channels.lock().len()
    }

    /// Records that the client answered a ping.
    pub fn pong_received(&self) {
        self.ping_sent_ms.store(0, Ordering::Relaxed);
    }

    /// Sets when the connection's token expires (Unix seconds; 0: never).
    pub fn set_expires_at(&self, unix_secs: u64) {
        self.expires_at.store(unix_secs, Ordering::Relaxed);
    }

    /// Marks the connection as renewed through the refresh proxy when it expires.
    pub fn renew_by_proxy(&self) {
        self.renew_by_proxy.store(true, Ordering::Relaxed);
    }

    pub(crate) fn renews_by_proxy(&self) -> bool {
        self.renew_by_proxy.load(Ordering::Relaxed)
    }

    pub fn expires_at(&self) -> u64 {
        self.expires_at.load(Ordering::Relaxed)
    }

    /// Wakes the session again (it left work in the queue to read in between).
    pub(crate) fn rewake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn write_started(&self, now_ms: u64) {
        self.write_started_ms
            .store(now_ms.clamp(1, WRITE_ABORTED - 1), Ordering::Release);
    }

    pub(crate) fn write_finished(&self) {
        self.write_started_ms.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientHandle {
        ClientHandle::new(ClientId(1), Arc::from(""), Encoding::Json, None, 0, 0)
    }

    const LIMITS: QueueLimits = QueueLimits {
        max_messages: 3,
        max_bytes: 10,
    };

    #[test]
    fn overflow_by_count_discards_and_closes_4008() {
        let c = client();
        for _ in 0..3 {
            assert_eq!(c.push(Bytes::from_static(b"a"), LIMITS), Ok(()));
        }
        assert_eq!(
            c.push(Bytes::from_static(b"a"), LIMITS),
            Err(PushError::Overflow)
        );
        assert_eq!(
            c.push(Bytes::from_static(b"a"), LIMITS),
            Err(PushError::Closed)
        );
        let batch = c.take_batch(1000);
        assert!(batch.items.is_empty());
        assert_eq!(batch.closing.map(|c| c.code), Some(CloseCode::SlowConsumer));
    }

    #[test]
    fn overflow_by_bytes() {
        let c = client();
        assert_eq!(c.push(Bytes::from_static(b"123456"), LIMITS), Ok(()));
        assert_eq!(
            c.push(Bytes::from_static(b"12345"), LIMITS),
            Err(PushError::Overflow)
        );
    }

    #[test]
    fn batches_respect_max_bytes_but_take_at_least_one() {
        let c = client();
        let limits = QueueLimits {
            max_messages: 10,
            max_bytes: 100,
        };
        for item in [&b"aaaa"[..], b"bbbb", b"cccccccccc"] {
            assert_eq!(c.push(Bytes::copy_from_slice(item), limits), Ok(()));
        }
        assert_eq!(c.take_batch(8).items.len(), 2);
        assert_eq!(c.take_batch(4).items.len(), 1);
        assert!(c.take_batch(4).items.is_empty());
    }

    #[test]
    fn graceful_close_flushes_first() {
        let c = client();
        let limits = QueueLimits {
            max_messages: 10,
            max_bytes: 100,
        };
        assert_eq!(c.push(Bytes::from_static(b"x"), limits), Ok(()));
        assert!(c.close(CloseCode::GoingAway, "bye", false));
        assert!(!c.close(CloseCode::SlowConsumer, "late", true));
        let first = c.take_batch(100);
        assert_eq!(first.items.len(), 1);
        assert_eq!(first.closing.map(|c| c.code), Some(CloseCode::GoingAway));
    }

    #[test]
    fn replays_do_not_count_against_the_live_bounds() {
        let c = client();
        let limits = QueueLimits {
            max_messages: 10,
            max_bytes: 30,
        };
        let replay = vec![Bytes::from_static(b"0123456789"); 3];
        assert_eq!(c.push_replay(replay, limits), Ok(()));
        assert_eq!(c.push(Bytes::from_static(b"live"), limits), Ok(()));
        assert_eq!(c.take_batch(1000).items.len(), 4);
        for _ in 0..3 {
            assert_eq!(c.push(Bytes::from_static(b"0123456789"), limits), Ok(()));
        }
        assert_eq!(
            c.push(Bytes::from_static(b"a"), limits),
            Err(PushError::Overflow)
        );
    }

    #[test]
    fn a_replay_that_does_not_fit_twice_the_bounds_is_refused_whole() {
        let c = client();
        let big = vec![Bytes::from_static(b"0123456789"); 3];
        assert_eq!(c.push_replay(big, LIMITS), Err(PushError::NoRoom));
        assert_eq!(c.queue_len(), 0);
        let fits = vec![Bytes::from_static(b"0123456789"); 2];
        assert_eq!(c.push_replay(fits.clone(), LIMITS), Ok(()));
        // The queue is at twice its byte bound: no further replay, and no live push.
        assert_eq!(c.push_replay(fits, LIMITS), Err(PushError::NoRoom));
        assert_eq!(
            c.push(Bytes::from_static(b"a"), LIMITS),
            Err(PushError::Overflow)
        );
    }

    #[test]
    fn live_messages_ahead_of_a_recovery_are_counted_once() {
        let c = client();
        let limits = QueueLimits {
            max_messages: 3,
            max_bytes: 100,
        };
        assert_eq!(c.push(Bytes::from_static(b"live-1"), limits), Ok(()));
        let replay = vec![Bytes::from_static(b"0123456789"); 5];
        assert_eq!(c.push_replay(replay, limits), Ok(()));
        // Taking only the live message must not consume the replay's allowance.
        assert_eq!(c.take_batch(1).items.len(), 1);
        assert_eq!(c.push(Bytes::from_static(b"live-2"), limits), Ok(()));
    }

    #[test]
    fn an_ended_subscription_delivers_nothing() {
        let c = Arc::new(client());
        let subscription = Subscription::new(c.clone());
        let limits = QueueLimits {
            max_messages: 10,
            max_bytes: 100,
        };
        assert_eq!(
            c.push_live(Bytes::from_static(b"a"), limits, &subscription),
            Ok(())
        );
        subscription.end();
        assert_eq!(
            c.push_live(Bytes::from_static(b"b"), limits, &subscription),
            Err(PushError::Unsubscribed)
        );
        assert_eq!(c.queue_len(), 1);
    }

    #[test]
    fn client_ids_round_trip() {
        let id = ClientId(0xdead_beef_0000_0001);
        assert_eq!(ClientId::parse(&id.to_string()), Some(id));
        assert_eq!(ClientId::parse("xyz"), None);
    }
}
