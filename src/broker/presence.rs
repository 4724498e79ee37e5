//! Presence as both brokers serve it: who is in a channel, counted per connection and per
//! user, read in bounded pages, and announced per user.
//!
//! # The per-user presence API (for every front end)
//!
//! A *presence user* is a user id; an anonymous connection (user `""`) is a user of its
//! own (it is nobody else), keyed by its client id (`user_key`).
//!
//! - **Joined / left.** A user *joins* a channel when its first connection subscribes,
//!   cluster-wide, and *leaves* when its last one goes (unsubscribe, disconnect, or its node
//!   crashed and its entries expired after `redis.presence_ttl_secs`), as Pusher does.
//!   Each join or leave reaches every node's hub exactly as
//!   `Hub::dispatch_presence(channel, join, &ClientInfo)`: `ClientInfo.user` is the user id,
//!   `info` its info (the connection token's `info` claim), `client_id` the connection that
//!   made it join (its first) or leave (its last). The hub turns it into each client's wire
//!   format in `EncodedPublication::presence_event`: the native `join`/`leave` there, and a
//!   second front end adds its own encoding beside it (Pusher: `member_added {user_id,
//!   user_info}` / `member_removed {user_id}`). Events are announced only in namespaces with
//!   `join_leave = true`, at most `join_leave_rate_per_sec` a second per channel on each
//!   node (`JoinLeaveGate`; the rest are dropped and counted as the `join_leave_rate` limit).
//! - **Members.** `Broker::presence(channel, &PresenceQuery { by_user: true, .. })` lists one
//!   `ClientInfo` per user (its first connection in the order below), a page at a time.
//!   With `by_user: false` it lists every connection.
//! - **Counts.** `Broker::presence_stats(channel)` gives `PresenceStats { clients, users }`
//!   without reading the members (O(1) on Redis).
//!
//! Pages are ordered by user key, then client id. A cursor is an opaque string: the page
//! after it starts past the last entry returned (past every connection of the last user
//! when listing by user). A page holds at most `namespaces.<ns>.presence_max_page`
//! entries.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

pub use crate::hub::PresenceMode;
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::protocol::ClientInfo;

/// Connection and user counts of a channel's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PresenceStats {
    /// Connections subscribed.
    pub clients: u64,
    /// Distinct users among them (each anonymous connection counts as one).
    pub users: u64,
}

/// Which page of a channel's presence to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceQuery {
    /// The most entries to return (at least 1).
    pub limit: usize,
    /// Where the previous page ended; `None` from the start.
    pub cursor: Option<String>,
    /// One entry per user instead of one per connection.
    pub by_user: bool,
}

impl PresenceQuery {
    /// A page of connections as a client asked for it: `limit` capped at `max_page`
    /// (`namespaces.<ns>.presence_max_page`), which is also the default.
    pub fn capped(limit: Option<u64>, cursor: Option<String>, max_page: usize) -> Self {
        let max_page = max_page.max(1);
        let limit = limit.map_or(max_page, |l| {
            usize::try_from(l).unwrap_or(usize::MAX).clamp(1, max_page)
        });
        PresenceQuery {
            limit,
            cursor: cursor.filter(|c| !c.is_empty()),
            by_user: false,
        }
    }
}

/// A page of presence: entries, and the cursor of the next page when there may be more.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PresencePage {
    pub clients: Vec<ClientInfo>,
    pub cursor: Option<String>,
}

/// The key presence counts a connection under: its user id, or for an anonymous
/// connection a key of its own (a NUL, which no readable user id starts with, then its
/// client id).
pub(crate) fn user_key(client: &ClientInfo) -> String {
    user_key_of(&client.user, &client.client_id)
}

/// `user_key` from the parts.
pub(crate) fn user_key_of(user: &str, client_id: &str) -> String {
    if user.is_empty() {
        format!("\u{0}{client_id}")
    } else {
        user.to_owned()
    }
}

/// A connection's place in page order: user key, NUL, client id.
pub(crate) fn index_member(client: &ClientInfo) -> String {
    format!("{}\u{0}{}", user_key(client), client.client_id)
}

/// The cursor past every connection of `user_key` (client ids are hex, below `~`).
pub(crate) fn after_user(user_key: &str) -> String {
    format!("{user_key}\u{0}~")
}

/// One page of `clients` (any order) for `query`: the in-process form of the Redis
/// listing script, so both brokers page alike.
pub(crate) fn page_of(mut clients: Vec<ClientInfo>, query: &PresenceQuery) -> PresencePage {
    let mut entries: Vec<(String, ClientInfo)> = clients
        .drain(..)
        .map(|c| (index_member(&c), c))
        .filter(|(member, _)| query.cursor.as_deref().is_none_or(|c| member.as_str() > c))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let limit = query.limit.max(1);
    let mut page = PresencePage::default();
    let mut last_user: Option<String> = None;
    for (_, client) in entries {
        let key = user_key(&client);
        if query.by_user && last_user.as_deref() == Some(key.as_str()) {
            continue;
        }
        if page.clients.len() == limit {
            page.cursor = Some(match (&last_user, query.by_user) {
                (Some(user), true) => after_user(user),
                _ => page_cursor(&page),
            });
            return page;
        }
        last_user = Some(key);
        page.clients.push(client);
    }
    page
}

fn page_cursor(page: &PresencePage) -> String {
    page.clients.last().map(index_member).unwrap_or_default()
}

/// Bounds the join and leave events one channel delivers on this node.
#[derive(Debug, Clone)]
pub(crate) struct JoinLeaveGate {
    mode: PresenceMode,
    bucket: TokenBucket,
}

impl JoinLeaveGate {
    pub(crate) fn new(mode: PresenceMode) -> Self {
        JoinLeaveGate {
            mode,
            bucket: TokenBucket::new(mode.max_per_sec, mode.max_per_sec, Instant::now()),
        }
    }

    pub(crate) fn announces(&self) -> bool {
        self.mode.announce
    }

    /// Whether one more event may go out now; counts the ones that may not.
    pub(crate) fn admit(&mut self, metrics: &Metrics) -> bool {
        if !self.mode.announce {
            return false;
        }
        if self.mode.max_per_sec == 0 || self.bucket.take(Instant::now()).is_ok() {
            return true;
        }
        metrics.limit_tripped("join_leave_rate");
        false
    }
}

/// Connections per user key of one channel on the memory broker.
#[derive(Debug)]
pub(crate) struct LocalUsers {
    pub(crate) gate: JoinLeaveGate,
    pub(crate) counts: HashMap<String, u32>,
}

impl LocalUsers {
    pub(crate) fn new(mode: PresenceMode) -> Self {
        LocalUsers {
            gate: JoinLeaveGate::new(mode),
            counts: HashMap::new(),
        }
    }

    /// Counts a connection in; true when it is its user's first.
    pub(crate) fn add(&mut self, client: &ClientInfo) -> bool {
        let count = self.counts.entry(user_key(client)).or_default();
        *count += 1;
        *count == 1
    }

    /// Counts a connection out; true when it was its user's last.
    pub(crate) fn remove(&mut self, client: &ClientInfo) -> bool {
        let key = user_key(client);
        let Some(count) = self.counts.get_mut(&key) else {
            return false;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.counts.remove(&key);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, user: &str) -> ClientInfo {
        ClientInfo {
            client_id: id.into(),
            user: user.into(),
            info: None,
        }
    }

    fn all() -> Vec<ClientInfo> {
        vec![
            client("000000000000000b", "bob"),
            client("000000000000000a", "alice"),
            client("000000000000000c", "alice"),
            client("000000000000000d", ""),
            client("000000000000000e", "carol"),
        ]
    }

    #[test]
    fn pages_by_connection_cover_everything_once_in_order() {
        let mut cursor = None;
        let mut seen = Vec::new();
        loop {
            let query = PresenceQuery {
                limit: 2,
                cursor: cursor.clone(),
                by_user: false,
            };
            let page = page_of(all(), &query);
            seen.extend(page.clients.iter().map(|c| c.client_id.clone()));
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(
            seen,
            [
                "000000000000000d",
                "000000000000000a",
                "000000000000000c",
                "000000000000000b",
                "000000000000000e"
            ]
        );
    }

    #[test]
    fn pages_by_user_list_each_user_once() {
        let query = PresenceQuery {
            limit: 2,
            cursor: None,
            by_user: true,
        };
        let first = page_of(all(), &query);
        let users: Vec<_> = first.clients.iter().map(|c| c.user.clone()).collect();
        assert_eq!(users, ["", "alice"]);
        let second = page_of(
            all(),
            &PresenceQuery {
                cursor: first.cursor,
                ..query
            },
        );
        let users: Vec<_> = second.clients.iter().map(|c| c.user.clone()).collect();
        assert_eq!(users, ["bob", "carol"]);
        assert_eq!(second.cursor, None);
    }

    #[test]
    fn users_join_on_first_connection_and_leave_on_last() {
        let mut users = LocalUsers::new(PresenceMode {
            announce: true,
            max_per_sec: 0,
        });
        assert!(users.add(&client("01", "u")));
        assert!(!users.add(&client("02", "u")));
        assert!(!users.remove(&client("01", "u")));
        assert!(users.remove(&client("02", "u")));
        assert!(!users.remove(&client("02", "u")));
        assert!(users.counts.is_empty());
    }
}
