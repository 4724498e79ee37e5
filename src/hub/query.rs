//! The hub's look-ups for the API, the ticker and the brokers: clients by id, user or
//! selector, subscribers and counts, and the API's disconnects and server-side
//! unsubscribes by selector.

use std::sync::Arc;

use bytes::Bytes;

use super::channel::ChannelEntry;
use super::{ClientHandle, ClientId, ClientSelector, Dialect, Hub};
use crate::protocol::{ChannelName, CloseCode};

impl Hub {
    /// Whether some local client is subscribed to `channel`.
    pub fn has_subscribers(&self, channel: &ChannelName) -> bool {
        self.shared.channels.contains_key(channel)
    }

    pub fn client(&self, id: ClientId) -> Option<Arc<ClientHandle>> {
        self.shared.clients.get(&id).map(|c| c.value().clone())
    }

    /// Every local client of `user`.
    pub fn clients_of_user(&self, user: &str) -> Vec<Arc<ClientHandle>> {
        self.shared
            .clients
            .iter()
            .filter(|c| c.is_user(user))
            .map(|c| c.value().clone())
            .collect()
    }

    /// The local clients `selector` names.
    pub fn select(&self, selector: &ClientSelector) -> Vec<Arc<ClientHandle>> {
        match selector {
            ClientSelector::User(user) => self.clients_of_user(user),
            ClientSelector::ClientId(id) => ClientId::parse(id)
                .and_then(|id| self.client(id))
                .into_iter()
                .collect(),
        }
    }

    /// Closes the local clients `selector` names; returns how many.
    pub fn disconnect_matching(
        &self,
        selector: &ClientSelector,
        code: CloseCode,
        reason: &str,
        reconnect: bool,
    ) -> usize {
        self.select(selector)
            .iter()
            .filter(|c| c.close_with(code, reason, reconnect, true))
            .count()
    }

    /// Unsubscribes the local clients `selector` names from `channel`, telling each in its
    /// own wire format (see `unsubscribed_notice`); returns how many were subscribed.
    pub fn unsubscribe_matching(&self, selector: &ClientSelector, channel: &ChannelName) -> usize {
        let limits = self.queue_limits();
        let mut count = 0;
        for client in self.select(selector) {
            if self.unsubscribe(&client, channel) {
                count += 1;
                if let Some(notice) = unsubscribed_notice(&client, channel) {
                    let _ = self.enqueue_within(&client, notice, limits);
                }
            }
        }
        count
    }

    pub fn all_clients(&self) -> Vec<Arc<ClientHandle>> {
        self.shared
            .clients
            .iter()
            .map(|c| c.value().clone())
            .collect()
    }

    /// Local subscribers of `channel`.
    pub fn subscribers(&self, channel: &ChannelName) -> Vec<Arc<ClientHandle>> {
        self.shared
            .channels
            .get(channel)
            .map(|e| e.value().clone())
            .map(|e| e.members())
            .unwrap_or_default()
    }

    /// Channels with local subscribers whose name starts with `prefix`, with counts.
    pub fn channel_counts(&self, prefix: &str) -> Vec<(ChannelName, usize)> {
        let entries: Vec<(ChannelName, Arc<ChannelEntry>)> = self
            .shared
            .channels
            .iter()
            .filter(|e| e.key().as_str().starts_with(prefix))
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        entries
            .into_iter()
            .map(|(name, e)| (name, e.len()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn connection_count(&self) -> usize {
        self.shared.clients.len()
    }

    pub fn channel_count(&self) -> usize {
        self.shared.channels.len()
    }

    pub fn subscription_count(&self) -> usize {
        usize::try_from(self.shared.metrics.subscriptions.get()).unwrap_or(0)
    }

    /// Closes every client with `code`, letting queued messages flush first.
    pub fn close_all(&self, code: CloseCode) {
        for client in self.all_clients() {
            client.close(code, code.default_reason(), false);
        }
    }

    pub(super) fn clients_snapshot_where(
        &self,
        keep: impl Fn(&ClientHandle) -> bool,
    ) -> Vec<Arc<ClientHandle>> {
        self.shared
            .clients
            .iter()
            .filter(|c| keep(c.value()))
            .map(|c| c.value().clone())
            .collect()
    }
}

/// The notice of a server-side unsubscribe: `unsubscribed` (id 0) for a native client,
/// an `unsubscribed` event for an SSE stream; nothing for a Pusher client, whose protocol
/// has no such message (as for a server-side subscribe).
fn unsubscribed_notice(client: &ClientHandle, channel: &ChannelName) -> Option<Bytes> {
    match client.dialect {
        Dialect::Native => crate::protocol::encode(
            client.encoding,
            &crate::protocol::ServerMessage::Unsubscribed {
                id: 0,
                channel: channel.as_str(),
            },
        )
        .ok(),
        Dialect::Sse => Some(crate::sse::wire::notice_frame(
            "unsubscribed",
            &serde_json::json!({ "channel": channel.as_str() }),
        )),
        Dialect::Pusher => None,
    }
}
