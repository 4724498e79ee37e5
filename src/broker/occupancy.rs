//! Occupancy of channels as webhooks see it: `channel_occupied` when a channel gets its
//! first subscriber, `channel_vacated` when its last one left. `LocalOccupancy` follows
//! this node's hub; the memory broker sends its transitions as they are, and the Redis
//! broker turns them into a cluster-wide record first (`redis::occupancy`).
//!
//! Hub events may arrive out of order with the membership they announce (a channel
//! released on one thread while another subscribes), so a transition is decided by
//! comparing the hub's current state with the last state acted on, never from the event
//! alone.

use std::collections::HashSet;

use crate::hub::Hub;
use crate::protocol::{ChannelName, ClientInfo};
use crate::webhook::{Target, WebhookEvent, Webhooks};

/// The channels this node last saw occupied; owned by one broker event task.
#[derive(Debug, Default)]
pub(crate) struct LocalOccupancy {
    occupied: HashSet<ChannelName>,
}

impl LocalOccupancy {
    /// Compares `channel` in the hub with the last known state: `Some(true)` when it
    /// became occupied, `Some(false)` when it was vacated, `None` when nothing changed.
    pub(crate) fn transition(&mut self, hub: &Hub, channel: &ChannelName) -> Option<bool> {
        let now = hub.has_subscribers(channel);
        let was = self.occupied.contains(channel);
        match (was, now) {
            (false, true) => {
                self.occupied.insert(channel.clone());
                Some(true)
            }
            (true, false) => {
                self.occupied.remove(channel);
                Some(false)
            }
            _ => None,
        }
    }
}

/// Emits a single node's occupancy transition (held for vacated, see `webhook::hold`).
pub(crate) fn emit_local(webhooks: &Webhooks, channel: &ChannelName, occupied: bool) {
    let (target, name) = webhooks.target_of(channel);
    let event = if occupied {
        WebhookEvent::channel_occupied(&name)
    } else {
        WebhookEvent::channel_vacated(&name)
    };
    webhooks.emit(&target, event);
}

/// Emits a user's presence join or leave (its first connection in, its last out), held
/// on this node for leave (see `webhook::hold`; the Redis broker holds cluster-wide
/// instead, `redis::member_hold`).
pub(crate) fn emit_presence(
    webhooks: &Webhooks,
    channel: &ChannelName,
    client: &ClientInfo,
    joined: bool,
) {
    if let Some((target, event)) = presence_event(webhooks, channel, client, joined) {
        webhooks.emit(&target, event);
    }
}

/// The webhook event of a user's presence join or leave: a native `join` / `leave`, or a
/// Pusher app's `member_added` / `member_removed` (user ids, as Pusher sends them);
/// `None` when no endpoint is configured.
pub(crate) fn presence_event(
    webhooks: &Webhooks,
    channel: &ChannelName,
    client: &ClientInfo,
    joined: bool,
) -> Option<(Target, WebhookEvent)> {
    if !webhooks.enabled() {
        return None;
    }
    let (target, name) = webhooks.target_of(channel);
    let event = match (&target, joined) {
        (Target::Native, true) => WebhookEvent::join(&name, client),
        (Target::Native, false) => WebhookEvent::leave(&name, client),
        (Target::Pusher(_), true) => WebhookEvent::member_added(&name, &client.user),
        (Target::Pusher(_), false) => WebhookEvent::member_removed(&name, &client.user),
    };
    Some((target, event))
}
