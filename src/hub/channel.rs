//! One channel's local subscribers, with a lazily rebuilt snapshot for fan-out.
//!
//! Architecture Invariant: fan-out never holds the channel lock. A publication takes the
//! current snapshot (an `Arc` of subscriber lists, one per fan-out shard) and iterates it
//! unlocked. Subscribing or leaving only marks the snapshot stale, so a subscribe storm
//! costs O(1) per subscriber and the next publication rebuilds the snapshot once.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::client::ClientHandle;
use super::outbox::Subscription;
use super::pending::PendingState;
use crate::protocol::ClientId;

/// One subscriber of a channel.
#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) subscription: Arc<Subscription>,
    /// Set while the subscriber is pending (see `pending`).
    pub(crate) pending: Option<Arc<PendingState>>,
}

impl Member {
    pub(crate) fn client(&self) -> &Arc<ClientHandle> {
        &self.subscription.client
    }
}

/// The subscribers of one channel at one moment, split by fan-out shard.
pub(crate) struct Snapshot {
    pub(crate) by_shard: Vec<Vec<Member>>,
}

impl Snapshot {
    pub(crate) fn len(&self) -> usize {
        self.by_shard.iter().map(Vec::len).sum()
    }
}

struct State {
    members: HashMap<ClientId, Member>,
    snapshot: Option<Arc<Snapshot>>,
}

/// A channel with at least one local subscriber.
pub(crate) struct ChannelEntry {
    shards: usize,
    state: Mutex<State>,
}

impl ChannelEntry {
    pub(crate) fn new(shards: usize) -> Self {
        ChannelEntry {
            shards,
            state: Mutex::new(State {
                members: HashMap::new(),
                snapshot: None,
            }),
        }
    }

    /// Adds a subscriber and runs `then` under the channel lock, so nothing published
    /// after the subscription can reach the client before what `then` enqueues.
    /// Returns false when the client was already a member.
    pub(crate) fn insert_then(
        &self,
        client: &Arc<ClientHandle>,
        pending: Option<Arc<PendingState>>,
        then: impl FnOnce(),
    ) -> bool {
        let mut state = self.state.lock();
        if state.members.contains_key(&client.id) {
            return false;
        }
        state.members.insert(
            client.id,
            Member {
                subscription: Arc::new(Subscription::new(client.clone())),
                pending,
            },
        );
        state.snapshot = None;
        then();
        true
    }

    /// Removes a subscriber and ends its subscription (snapshots still queued for
    /// fan-out skip it); returns (was a member, channel is now empty).
    pub(crate) fn remove(&self, id: ClientId) -> (bool, bool) {
        let mut state = self.state.lock();
        let removed = match state.members.remove(&id) {
            Some(member) => {
                member.subscription.end();
                true
            }
            None => false,
        };
        if removed {
            state.snapshot = None;
        }
        if state.members.capacity() > 64 && state.members.len() < state.members.capacity() / 4 {
            state.members.shrink_to_fit();
        }
        (removed, state.members.is_empty())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.state.lock().members.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.state.lock().members.len()
    }

    /// The current subscribers, rebuilt if anything changed since the last call.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        let mut state = self.state.lock();
        if let Some(snapshot) = &state.snapshot {
            return snapshot.clone();
        }
        let mut by_shard: Vec<Vec<Member>> = vec![Vec::new(); self.shards];
        for member in state.members.values() {
            by_shard[member.client().shard % self.shards].push(member.clone());
        }
        let snapshot = Arc::new(Snapshot { by_shard });
        state.snapshot = Some(snapshot.clone());
        snapshot
    }

    pub(crate) fn members(&self) -> Vec<Arc<ClientHandle>> {
        self.state
            .lock()
            .members
            .values()
            .map(|m| m.client().clone())
            .collect()
    }

    /// Marks a member as no longer pending, so the next snapshot skips the check.
    pub(crate) fn settle(&self, id: ClientId) {
        let mut state = self.state.lock();
        if let Some(member) = state.members.get_mut(&id) {
            member.pending = None;
            state.snapshot = None;
        }
    }
}
