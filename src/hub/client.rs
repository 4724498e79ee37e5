//! One connected client as the hub sees it: identity, encoding, front end, the Pusher
//! identity, subscribed channels, and the liveness timestamps the shared ticker checks.
//! Its outbound path (queue and socket) is in `outbox`.
//!
//! Architecture Invariant: the client's outbox is the only path from the hub to its
//! socket (see `outbox` for the bounds and the order of writes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::outbox::QueueState;
use crate::protocol::{ChannelName, ClientId, Encoding};

/// Frames a publication may be encoded into: JSON, MessagePack, Pusher, SSE.
pub const FRAME_SLOTS: usize = 4;

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

/// `write_started_ms` once the ticker gave up on the write (see `abort_stalled_write`).
const WRITE_ABORTED: u64 = u64::MAX;

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
    pub(super) queue: Mutex<QueueState>,
    pub(super) wake: super::wake::Wake,
    /// The session's waker while it waits on a write (`wait_for_abort`).
    abort: futures_util::task::AtomicWaker,
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
    /// Times the queue was emptied since the ticker's last scan (saturating), and whether
    /// it kept its buffer (see `after_emptying`).
    pub(super) queue_uses: std::sync::atomic::AtomicU8,
    pub(super) queue_buffer_kept: std::sync::atomic::AtomicBool,
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
            wake: super::wake::Wake::default(),
            abort: futures_util::task::AtomicWaker::new(),
            pusher: Mutex::new(None),
            channels: Mutex::new(Vec::new()),
            next_ping_ms: AtomicU64::new(next_ping_ms),
            ping_sent_ms: AtomicU64::new(0),
            write_started_ms: AtomicU64::new(0),
            expires_at: AtomicU64::new(0),
            renew_by_proxy: std::sync::atomic::AtomicBool::new(false),
            queue_uses: std::sync::atomic::AtomicU8::new(0),
            queue_buffer_kept: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Resolves when the ticker gives up on the write in progress. A wake-up left over
    /// from an earlier write (the ticker's notice can land just after that write ended)
    /// does not count: only `write_started_ms` says whether this write was aborted.
    pub async fn wait_for_abort(&self) {
        std::future::poll_fn(|cx| {
            // Registered before the check: an abort in between still wakes this waker.
            self.abort.register(cx.waker());
            if self.write_started_ms.load(Ordering::Acquire) == WRITE_ABORTED {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
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
            self.abort.wake();
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

    pub(crate) fn write_started(&self, now_ms: u64) {
        self.write_started_ms
            .store(now_ms.clamp(1, WRITE_ABORTED - 1), Ordering::Release);
    }

    pub(crate) fn write_finished(&self) {
        self.write_started_ms.store(0, Ordering::Release);
    }
}
