//! A client's outbound path, the second half of `ClientHandle`: the bounded queue its
//! session drains and, for a WebSocket client, the socket itself, which a push writes to
//! straight away (one non-blocking `writev`, no task woken) when nothing is pending.
//!
//! Architecture Invariant: the queue is bounded by messages and by bytes; the push that
//! would overflow it discards what is queued and marks the client for close 4008, so one
//! slow reader costs the node at most `queue_max_bytes` and never slows anyone else. A
//! subscribe's reply and recovered history (a replay) may take the queue up to twice its
//! bounds, and only all at once: a replay that does not fit is refused.
//!
//! Architecture Invariant: frames reach the socket whole, in push order, from one writer
//! at a time. Every choice is made under the client's queue lock. A push writes
//! directly only when the queue is empty, nothing is `unsent` and the session is not
//! writing; a direct write that would block queues the frame (so a socket that does not
//! drain fills the bounded queue and is evicted as before), and one that is cut short
//! keeps the rest of its frame as `unsent`, which goes out before anything else. The
//! session's own writes (`take_write`) hold the socket until their next `take_write`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::client::ClientHandle;
use super::socket::{Opcode, Progress, RawSocket, frame_header, try_write_parts};
use crate::protocol::CloseCode;

/// Emptyings of a client's queue within one ticker period after which it keeps its
/// buffer (`ClientHandle::after_emptying`): more than a connect's two replies.
const QUEUE_USES_BEFORE_KEEPING: u8 = 2;

/// The largest buffer (in entries) a busy queue keeps; one a burst grew larger goes
/// when emptied, so a steady client holds at most a few KiB for it.
const QUEUE_KEPT_MAX_ENTRIES: usize = 64;

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

/// One queued frame, and whether it was queued with `push_replay`.
struct Queued {
    bytes: Bytes,
    reserved: bool,
}

/// Where a WebSocket client's frames may be written straight away.
struct Direct {
    socket: Arc<dyn RawSocket>,
    opcode: Opcode,
}

#[derive(Default)]
pub(super) struct QueueState {
    items: VecDeque<Queued>,
    bytes: usize,
    /// Of `items` and `bytes`, what was queued as replays (`push_replay`): it does not
    /// count against the live bounds, only against the total (twice them).
    reserved_items: usize,
    reserved_bytes: usize,
    /// Boxed: rare, and a `Closing` inline would cost every client its size.
    closing: Option<Box<Closing>>,
    /// Set while the session allows direct writes (`attach_socket`).
    direct: Option<Box<Direct>>,
    /// The session took bytes to write and has not come back for more.
    writing: bool,
    /// Raw bytes that go out before any frame: the rest of a direct write the socket cut
    /// short, and control frames (`push_control`).
    unsent: Vec<u8>,
    /// Frames and bytes written directly, not yet added to the shared counters.
    written_frames: u64,
    written_bytes: u64,
}

/// What the session takes from the queue for one write.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<Bytes>,
    /// Set once the queue is empty and the client is closing.
    pub closing: Option<Closing>,
}

/// What the session writes in one turn (`ClientHandle::take_write`); reused across turns.
#[derive(Debug, Default)]
pub struct WriteTurn {
    /// Raw bytes that go first (see `QueueState::unsent`).
    pub unsent: Vec<u8>,
    /// Queued frames, each still to be framed.
    pub items: Vec<Bytes>,
    /// Set once the queue is empty and the client is closing.
    pub closing: Option<Closing>,
    /// Direct writes since the last turn, for the shared counters.
    pub direct_frames: u64,
    pub direct_bytes: u64,
}

impl WriteTurn {
    /// Whether there is anything to write.
    pub fn is_empty(&self) -> bool {
        self.unsent.is_empty() && self.items.is_empty()
    }
}

impl ClientHandle {
    /// Enqueues (or writes) one encoded message. On overflow the queue is emptied and the
    /// client is marked for close 4008. Only the hub calls it, through `Hub::enqueue`,
    /// which counts the eviction (fan-out counts its own, per job).
    pub(super) fn push(&self, message: Bytes, limits: QueueLimits) -> Result<(), PushError> {
        self.push_frame(&message, limits, None, true)
    }

    /// `push` of a fan-out delivery: dropped if `subscription` has ended. The frame is
    /// cloned only if it has to be queued. Without `direct`, it is queued even when it
    /// could be written at once (a fan-out worker that is behind lets sessions batch).
    pub(crate) fn push_live(
        &self,
        message: &Bytes,
        limits: QueueLimits,
        subscription: &Subscription,
        direct: bool,
    ) -> Result<(), PushError> {
        self.push_frame(message, limits, Some(subscription), direct)
    }

    fn push_frame(
        &self,
        message: &Bytes,
        limits: QueueLimits,
        subscription: Option<&Subscription>,
        direct: bool,
    ) -> Result<(), PushError> {
        let mut state = self.queue.lock();
        if subscription.is_some_and(|s| !s.active.load(Ordering::Relaxed)) {
            return Err(PushError::Unsubscribed);
        }
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
            state.closing = Some(Box::new(Closing {
                code: CloseCode::SlowConsumer,
                reason: CloseCode::SlowConsumer.default_reason().into(),
                reconnect: true,
            }));
            drop(state);
            self.wake.notify();
            return Err(PushError::Overflow);
        }
        if direct && state.items.is_empty() && !state.writing && state.unsent.is_empty() {
            match write_direct(&mut state, message) {
                DirectOutcome::Written => return Ok(()),
                DirectOutcome::Partial => {
                    drop(state);
                    self.wake.notify();
                    return Ok(());
                }
                DirectOutcome::Queue => {}
            }
        }
        state.bytes += message.len();
        state.items.push_back(Queued {
            bytes: message.clone(),
            reserved: false,
        });
        let was_empty = state.items.len() == 1;
        drop(state);
        if was_empty {
            self.wake.notify();
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
            self.wake.notify();
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
        state.closing = Some(Box::new(Closing {
            code,
            reason: reason.into(),
            reconnect,
        }));
        drop(state);
        self.wake.notify();
        true
    }

    /// The close in progress, if any.
    pub fn closing(&self) -> Option<Closing> {
        self.queue.lock().closing.as_deref().cloned()
    }

    /// Takes queued messages up to `max_bytes` (at least one). The close, if any, is
    /// reported only once everything queued before it was taken. For readers that are
    /// not WebSocket sessions (SSE streams).
    pub fn take_batch(&self, max_bytes: usize) -> Batch {
        let mut state = self.queue.lock();
        let mut batch = Batch::default();
        batch.closing = take_items(&mut state, max_bytes, usize::MAX, &mut batch.items);
        self.after_emptying(&mut state);
        batch
    }

    /// The session's next write, in one lock: what is `unsent`, then queued frames up to
    /// `max_bytes` and `max_messages` (at least one), the close once nothing is left
    /// before it, and the direct writes' counts. Ends the session's previous write:
    /// until the next call, pushes queue instead of writing when `turn` is not empty.
    pub fn take_write(&self, max_bytes: usize, max_messages: usize, turn: &mut WriteTurn) {
        turn.items.clear();
        let mut state = self.queue.lock();
        turn.unsent = std::mem::take(&mut state.unsent);
        turn.closing = take_items(&mut state, max_bytes, max_messages, &mut turn.items);
        self.after_emptying(&mut state);
        turn.direct_frames = std::mem::take(&mut state.written_frames);
        turn.direct_bytes = std::mem::take(&mut state.written_bytes);
        state.writing = !turn.is_empty();
    }

    /// After the session emptied the queue: the first `QUEUE_USES_BEFORE_KEEPING` times
    /// since the ticker's last scan the buffer goes, so a client that only got its
    /// `connected` and `subscribed` replies keeps none; a client emptied more often
    /// within the scan period is busy and keeps it, so it does not allocate and free one
    /// per message (up to `QUEUE_KEPT_MAX_ENTRIES`). The ticker lets go of a kept buffer
    /// once a whole period passes without use (`trim_idle_queue`).
    fn after_emptying(&self, state: &mut QueueState) {
        if !state.items.is_empty() || state.items.capacity() == 0 {
            return;
        }
        let uses = self
            .queue_uses
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .unwrap_or(u8::MAX);
        if uses >= QUEUE_USES_BEFORE_KEEPING && state.items.capacity() <= QUEUE_KEPT_MAX_ENTRIES {
            self.queue_buffer_kept.store(true, Ordering::Relaxed);
        } else {
            state.items = VecDeque::new();
        }
    }

    /// The ticker's part of `after_emptying`, on every scan: lets go of the buffer of a
    /// queue that kept one and was not emptied since the last scan. Skips a queue whose
    /// lock is taken (the next scan tries again).
    pub(crate) fn trim_idle_queue(&self) {
        let used = self.queue_uses.swap(0, Ordering::Relaxed) > 0;
        if used || !self.queue_buffer_kept.load(Ordering::Relaxed) {
            return;
        }
        let Some(mut state) = self.queue.try_lock() else {
            return;
        };
        if state.items.is_empty() {
            state.items = VecDeque::new();
            self.queue_buffer_kept.store(false, Ordering::Relaxed);
        }
    }

    /// Ends the session's write without taking more (it reads in between).
    pub fn end_write(&self) {
        self.queue.lock().writing = false;
    }

    /// Lets pushes write straight to `socket` while nothing is pending (the session does
    /// this once the client is registered, unless writes are delayed on purpose).
    pub fn attach_socket(&self, socket: Arc<dyn RawSocket>, opcode: Opcode) {
        self.queue.lock().direct = Some(Box::new(Direct { socket, opcode }));
    }

    /// Stops direct writes and lets go of the socket (the session is ending).
    pub fn detach_socket(&self) {
        let direct = self.queue.lock().direct.take();
        drop(direct);
    }

    /// Adds raw control-frame bytes (a close, a pong) behind anything `unsent`; they go
    /// out before any later frame. The caller writes them (`flush_unsent`) or the session
    /// does on its next turn.
    pub fn push_control(&self, bytes: &[u8]) {
        self.queue.lock().unsent.extend_from_slice(bytes);
    }

    /// Writes what is `unsent` without waiting. `Blocked` leaves the rest for the
    /// session, which is woken to write it.
    pub fn flush_unsent(&self, socket: &dyn RawSocket) -> std::io::Result<Progress> {
        let mut state = self.queue.lock();
        if state.unsent.is_empty() {
            return Ok(Progress::Done);
        }
        let mut parts = [&state.unsent[..]];
        let progress = try_write_parts(socket, &mut parts)?;
        let written = state.unsent.len() - parts[0].len();
        state.unsent.drain(..written);
        if progress == Progress::Blocked {
            drop(state);
            self.wake.notify();
        }
        Ok(progress)
    }

    /// Frames and bytes written directly and not yet counted; the caller adds them to
    /// the shared counters.
    pub fn take_direct_counts(&self) -> (u64, u64) {
        let mut state = self.queue.lock();
        (
            std::mem::take(&mut state.written_frames),
            std::mem::take(&mut state.written_bytes),
        )
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
        std::future::poll_fn(|cx| self.poll_work(cx)).await;
    }

    /// `wait_for_work` as a poll: what the session's serve loop waits on.
    pub fn poll_work(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.wake.poll(cx)
    }

    /// Wakes the session again (it left work in the queue to read in between).
    pub(crate) fn rewake(&self) {
        self.wake.notify();
    }
}

/// Moves queued frames into `out`, up to `max_bytes` (at least one) and `max_messages`;
/// returns the close once nothing is queued before it.
fn take_items(
    state: &mut QueueState,
    max_bytes: usize,
    max_messages: usize,
    out: &mut Vec<Bytes>,
) -> Option<Closing> {
    let mut taken = 0;
    while let Some(front) = state.items.front() {
        if !out.is_empty() && (taken + front.bytes.len() > max_bytes || out.len() >= max_messages) {
            break;
        }
        taken += front.bytes.len();
        if let Some(item) = state.items.pop_front() {
            if item.reserved {
                state.reserved_items -= 1;
                state.reserved_bytes -= item.bytes.len();
            }
            out.push(item.bytes);
        }
    }
    state.bytes -= taken;
    if !state.items.is_empty() {
        return None;
    }
    // Emptied: whether the buffer stays is the caller's (`after_emptying`).
    state.closing.as_deref().cloned()
}

enum DirectOutcome {
    /// The whole frame is on the socket.
    Written,
    /// Part of it is; the rest is `unsent` and the session must write it.
    Partial,
    /// Nothing was written (no socket, the socket is full, or it failed): queue it.
    Queue,
}

/// Writes `message` as one frame straight to the socket, if there is one.
fn write_direct(state: &mut QueueState, message: &Bytes) -> DirectOutcome {
    let Some(direct) = state.direct.as_deref() else {
        return DirectOutcome::Queue;
    };
    let (header, used) = frame_header(direct.opcode, message.len());
    let mut parts = [&header[..used], &message[..]];
    match try_write_parts(&*direct.socket, &mut parts) {
        Ok(Progress::Done) => {}
        Ok(Progress::Blocked) if parts[0].len() == used => return DirectOutcome::Queue,
        Ok(Progress::Blocked) => {
            let [rest_of_header, rest_of_payload] = parts;
            state.unsent.extend_from_slice(rest_of_header);
            state.unsent.extend_from_slice(rest_of_payload);
        }
        // A broken socket: stop writing to it; the session finds out on its own write
        // or read and ends the connection.
        Err(_) => {
            state.direct = None;
            return DirectOutcome::Queue;
        }
    }
    state.written_frames += 1;
    state.written_bytes += message.len() as u64;
    if state.unsent.is_empty() {
        DirectOutcome::Written
    } else {
        DirectOutcome::Partial
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
