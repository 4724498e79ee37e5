//! A publication as it travels from whoever made it (the API, a session, the Pusher
//! front end, the Redis relay) through the brokers to the hub's fan-out.

use std::sync::Arc;

use super::{ChannelName, ClientId, Payload, StreamPosition};

/// A publication as the hub delivers it.
#[derive(Debug, Clone)]
pub struct Publication {
    pub channel: ChannelName,
    pub payload: Payload,
    /// Offset and epoch, on channels with history.
    pub position: Option<StreamPosition>,
    /// A client that does not receive it (the publisher's own connection, `exclude_client`,
    /// a Pusher client event's sender, the Pusher HTTP API's `socket_id`).
    pub exclude: Option<ClientId>,
    /// The Pusher event this publication is (`crate::pusher`); `None` for native ones.
    pub event: Option<Arc<NamedEvent>>,
}

/// What a Pusher publication carries besides its data. Travels with the publication
/// through the brokers, the Redis relay and history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedEvent {
    /// The event name (`my-event`, `client-typing`).
    pub name: Arc<str>,
    /// On client events in presence channels, the sender's user id.
    pub user_id: Option<Arc<str>>,
}

impl Publication {
    /// A native publication that reaches every subscriber.
    pub fn new(channel: ChannelName, payload: Payload, position: Option<StreamPosition>) -> Self {
        Publication {
            channel,
            payload,
            position,
            exclude: None,
            event: None,
        }
    }
}
