//! Subscribers whose reply waits on a broker round trip (the stream position, recovered
//! history): `Hub::subscribe_pending` registers them with live publications held back,
//! fan-out offers each live publication to their `PendingState`, and
//! `Hub::finish_pending` queues the reply, then what was held back, and lets live
//! delivery through.
//!
//! Architecture Invariant: a pending subscriber goes `Holding` -> `Floor(through)` ->
//! `Live` (or straight to `Live` when the reply announced no position), and every
//! transition, and every push it guards, happens under the state's lock. So nothing live
//! reaches the client before its reply and recovered messages, nothing held back is lost,
//! and a publication at or below the position the reply announced (recovery delivered
//! it; pub/sub is asynchronous to the stream read, so it may still arrive live) is
//! skipped, until the first newer one passes.

use std::sync::Arc;

use parking_lot::Mutex;

use super::channel::ChannelEntry;
use super::fanout::EncodedPublication;
use super::{ClientHandle, Hub, Replay};
use crate::protocol::{ChannelName, StreamPosition};

/// Where a pending subscriber stands.
enum Stage {
    /// Its reply is not queued yet: live publications wait here, in order.
    Holding(Vec<Arc<EncodedPublication>>),
    /// Its reply said the stream was at this position: publications at or below it are
    /// skipped, until the first newer one passes.
    Floor(StreamPosition),
    /// Plain live delivery.
    Live,
}

/// One pending subscriber's stage, shared by its channel's snapshots.
pub(crate) struct PendingState(Mutex<Stage>);

/// What became of a live publication offered to a pending subscriber.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer<R> {
    /// Held back until the reply is queued.
    Held,
    /// At or below the floor: recovery delivered it already.
    Skipped,
    /// Delivered: what `deliver` returned, and whether this publication ended the floor
    /// (the channel can then drop the check, see `ChannelEntry::settle`).
    Delivered { outcome: R, settled: bool },
}

/// Whether `position` is at or below `floor`: same epoch, offset not past it.
fn at_or_below(position: &StreamPosition, floor: &StreamPosition) -> bool {
    position.epoch == floor.epoch && position.offset <= floor.offset
}

impl PendingState {
    fn holding() -> Self {
        PendingState(Mutex::new(Stage::Holding(Vec::new())))
    }

    /// Offers a live publication: held, skipped, or handed to `deliver` (under the lock,
    /// so it is ordered with `finish`).
    pub(crate) fn offer<R>(
        &self,
        publication: &Arc<EncodedPublication>,
        deliver: impl FnOnce() -> R,
    ) -> Offer<R> {
        let mut stage = self.0.lock();
        let mut settled = false;
        match &mut *stage {
            Stage::Holding(held) => {
                held.push(publication.clone());
                return Offer::Held;
            }
            Stage::Floor(floor) => {
                // A presence event has no position: it passes and the floor stays.
                if let Some(position) = publication.position() {
                    if at_or_below(position, floor) {
                        return Offer::Skipped;
                    }
                    *stage = Stage::Live;
                    settled = true;
                }
            }
            Stage::Live => {}
        }
        Offer::Delivered {
            outcome: deliver(),
            settled,
        }
    }

    /// Ends holding: runs `replay`, then `deliver` for each held publication not at or
    /// below `through`, in order, all under the lock; the subscriber is then at the floor
    /// `through`, or live without one. Returns what `replay` returned, and whether the
    /// subscriber is live already.
    fn finish<T>(
        &self,
        through: Option<StreamPosition>,
        replay: impl FnOnce() -> T,
        mut deliver: impl FnMut(&EncodedPublication),
    ) -> (T, bool) {
        let mut stage = self.0.lock();
        let live = through.is_none();
        let next = match through {
            Some(position) => Stage::Floor(position),
            None => Stage::Live,
        };
        let held = match std::mem::replace(&mut *stage, next) {
            Stage::Holding(held) => held,
            Stage::Floor(_) | Stage::Live => Vec::new(),
        };
        let replayed = replay();
        for publication in held {
            if let (Stage::Floor(floor), Some(position)) = (&*stage, publication.position())
                && at_or_below(position, floor)
            {
                continue;
            }
            deliver(&publication);
        }
        (replayed, live)
    }
}

/// A subscription registered with live publications held back; see `subscribe_pending`.
pub struct PendingSubscription {
    client: Arc<ClientHandle>,
    channel: ChannelName,
    entry: Arc<ChannelEntry>,
    state: Arc<PendingState>,
}

impl Hub {
    /// Subscribes `client` to `channel` with live publications held back until
    /// `finish_pending`: used when the `subscribed` reply depends on a broker round trip
    /// (stream position, recovered history). `None` if it was already subscribed.
    pub fn subscribe_pending(
        &self,
        client: &Arc<ClientHandle>,
        channel: &ChannelName,
    ) -> Option<PendingSubscription> {
        let state = Arc::new(PendingState::holding());
        let entry = self.add_member(client, channel, Some(state.clone()), || {})?;
        Some(PendingSubscription {
            client: client.clone(),
            channel: channel.clone(),
            entry,
            state,
        })
    }

    /// Queues `replay` (the reply, then recovered messages), then the live publications
    /// held back meanwhile, skipping those at or below `through` (the stream position the
    /// reply announced: they are among the recovered ones or before them), and switches
    /// the subscriber to live delivery, still skipping late ones at or below `through`.
    /// Returns whether the recovered messages were queued (see `Replay`).
    pub fn finish_pending(
        &self,
        pending: PendingSubscription,
        replay: Replay,
        through: Option<StreamPosition>,
    ) -> bool {
        let limits = self.queue_limits();
        let client = &pending.client;
        let (recovered, live) = pending.state.finish(
            through,
            || self.push_replay(client, replay, limits),
            |publication| {
                if let Some(frame) = publication.frame_for(client) {
                    let _ = self.enqueue_within(client, frame.clone(), limits);
                }
            },
        );
        if live {
            pending.entry.settle(client.id);
        }
        recovered
    }

    /// Undoes a pending subscription whose broker work failed.
    pub fn abort_pending(&self, pending: PendingSubscription) {
        self.unsubscribe(&pending.client, &pending.channel);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::hub::Publication;
    use crate::protocol::Payload;

    fn at(offset: u64) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: "e1".into(),
        }
    }

    /// A publication at `offset` of epoch `e1`, or without a position.
    fn publication(offset: Option<u64>) -> Arc<EncodedPublication> {
        let channel = ChannelName::parse("news").expect("a valid channel name");
        let payload = Payload::Json(Bytes::from_static(b"1"));
        Arc::new(EncodedPublication::new(Publication::new(
            channel,
            payload,
            offset.map(at),
        )))
    }

    /// Offers `p`; `Some(settled)` when it was delivered.
    fn offer(state: &PendingState, p: &Arc<EncodedPublication>) -> Option<bool> {
        match state.offer(p, || ()) {
            Offer::Delivered { settled, .. } => Some(settled),
            Offer::Held | Offer::Skipped => None,
        }
    }

    #[test]
    fn held_publications_follow_the_replay_and_those_at_or_below_the_floor_are_skipped() {
        let state = PendingState::holding();
        for offset in [4, 5, 6, 7] {
            assert_eq!(state.offer(&publication(Some(offset)), || ()), Offer::Held);
        }
        let order = std::cell::RefCell::new(Vec::new());
        let (replayed, live) = state.finish(
            Some(at(5)),
            || order.borrow_mut().push(None),
            |p| order.borrow_mut().push(p.position().map(|p| p.offset)),
        );
        assert_eq!((replayed, live), ((), false));
        // The replay first, then the held ones past the floor, in order.
        assert_eq!(order.into_inner(), vec![None, Some(6), Some(7)]);
        // Late arrivals at or below the floor are still skipped ...
        assert_eq!(state.offer(&publication(Some(5)), || ()), Offer::Skipped);
        // ... a presence event (no position) passes and leaves the floor in place ...
        assert_eq!(offer(&state, &publication(None)), Some(false));
        assert_eq!(state.offer(&publication(Some(3)), || ()), Offer::Skipped);
        // ... and the first newer one ends it: from then on everything passes.
        assert_eq!(offer(&state, &publication(Some(8))), Some(true));
        assert_eq!(offer(&state, &publication(Some(2))), Some(false));
    }

    #[test]
    fn a_position_of_another_epoch_ends_the_floor() {
        let state = PendingState::holding();
        let (_, live) = state.finish(Some(at(5)), || (), |_| {});
        assert!(!live);
        let reset = Arc::new(EncodedPublication::new(Publication::new(
            ChannelName::parse("news").expect("a valid channel name"),
            Payload::Json(Bytes::from_static(b"1")),
            Some(StreamPosition {
                offset: 1,
                epoch: "e2".into(),
            }),
        )));
        assert_eq!(offer(&state, &reset), Some(true));
    }

    #[test]
    fn without_a_position_the_subscriber_goes_live_with_everything_held() {
        let state = PendingState::holding();
        for offset in [1, 2] {
            assert_eq!(state.offer(&publication(Some(offset)), || ()), Offer::Held);
        }
        let mut delivered = Vec::new();
        let (recovered, live) = state.finish(
            None,
            || true,
            |p| delivered.push(p.position().map(|p| p.offset)),
        );
        assert!(recovered && live);
        assert_eq!(delivered, vec![Some(1), Some(2)]);
        assert_eq!(offer(&state, &publication(Some(1))), Some(false));
    }
}
