//! Counting limits that span connections: connections per IP address and per user
//! (close 4010 beyond them), and WebSocket connections that upgraded but have not sent
//! `connect` yet (pending: per node, and per address so that one address cannot take
//! every pending place). Plus the token bucket that rate limits share. `address` finds
//! the client address behind trusted proxies.
//!
//! Each admitted connection holds a `LimitSlot` per counter; dropping the slot releases it,
//! so every way a session can end gives its place back. Counting is O(1): one `DashMap`
//! entry per IP or user with connections, removed when its count returns to zero.
//! Counts are kept even when a limit is 0 (unlimited), so a reload that turns a limit on
//! starts from the true numbers.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

pub mod address;

pub use address::{client_ip, parse_network, trusted_networks};

/// The connection counters of one node. Cheap to clone.
#[derive(Clone, Default)]
pub struct ConnectionLimits {
    shared: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    per_ip: DashMap<IpAddr, usize>,
    per_user: DashMap<Arc<str>, usize>,
    pending: AtomicUsize,
    pending_per_ip: DashMap<IpAddr, usize>,
}

/// Which counter a slot was taken from.
enum SlotKind {
    /// A pending place of the node, and of the address when it is known.
    Pending(Option<IpAddr>),
    Ip(IpAddr),
    User(Arc<str>),
}

/// One place in a counter, given back when dropped.
pub struct LimitSlot {
    counters: Arc<Counters>,
    kind: SlotKind,
}

impl ConnectionLimits {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a place among upgraded connections that have not sent `connect`, on the node
    /// (at most `max`) and for `ip` (at most `max_per_ip`); 0: unlimited.
    pub fn try_pending(
        &self,
        ip: Option<IpAddr>,
        max: usize,
        max_per_ip: usize,
    ) -> Result<LimitSlot, PendingLimit> {
        if let Some(ip) = ip {
            if !acquire(&self.shared.pending_per_ip, ip, max_per_ip) {
                return Err(PendingLimit::Address);
            }
        }
        let before = self.shared.pending.fetch_add(1, Ordering::AcqRel);
        if max > 0 && before >= max {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            if let Some(ip) = ip {
                release(&self.shared.pending_per_ip, &ip);
            }
            return Err(PendingLimit::Node);
        }
        Ok(self.slot(SlotKind::Pending(ip)))
    }

    /// Takes a place among the connections from `ip`; `None` beyond `max` (0: unlimited).
    pub fn try_ip(&self, ip: IpAddr, max: usize) -> Option<LimitSlot> {
        acquire(&self.shared.per_ip, ip, max).then(|| self.slot(SlotKind::Ip(ip)))
    }

    /// Takes a place among the connections of `user`; `None` beyond `max` (0: unlimited).
    pub fn try_user(&self, user: &Arc<str>, max: usize) -> Option<LimitSlot> {
        acquire(&self.shared.per_user, user.clone(), max)
            .then(|| self.slot(SlotKind::User(user.clone())))
    }

    pub fn pending_count(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    pub fn pending_ip_count(&self, ip: IpAddr) -> usize {
        self.shared.pending_per_ip.get(&ip).map_or(0, |c| *c)
    }

    pub fn ip_count(&self, ip: IpAddr) -> usize {
        self.shared.per_ip.get(&ip).map_or(0, |c| *c)
    }

    pub fn user_count(&self, user: &str) -> usize {
        self.shared.per_user.get(user).map_or(0, |c| *c)
    }

    /// How many IP addresses and users currently hold connections (memory in use).
    /// The connections of every user key that starts with `prefix` (the counters a node
    /// shares with the cluster, see `pusher::quota`).
    pub fn user_counts_with_prefix(&self, prefix: &str) -> BTreeMap<String, usize> {
        self.shared
            .per_user
            .iter()
            .filter(|e| e.key().starts_with(prefix) && *e.value() > 0)
            .map(|e| (e.key().to_string(), *e.value()))
            .collect()
    }

    pub fn tracked_keys(&self) -> (usize, usize) {
        (self.shared.per_ip.len(), self.shared.per_user.len())
    }

    fn slot(&self, kind: SlotKind) -> LimitSlot {
        LimitSlot {
            counters: self.shared.clone(),
            kind,
        }
    }
}

impl Drop for LimitSlot {
    fn drop(&mut self) {
        match &self.kind {
            SlotKind::Pending(ip) => {
                self.counters.pending.fetch_sub(1, Ordering::AcqRel);
                if let Some(ip) = ip {
                    release(&self.counters.pending_per_ip, ip);
                }
            }
            SlotKind::Ip(ip) => release(&self.counters.per_ip, ip),
            SlotKind::User(user) => release(&self.counters.per_user, user),
        }
    }
}

/// Which pending-connection limit refused an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingLimit {
    /// `server.max_pending_connections`.
    Node,
    /// `server.max_pending_connections_per_ip`.
    Address,
}

/// Counts one more for `key` unless it already has `max` (0: no maximum).
fn acquire<K: Eq + Hash>(map: &DashMap<K, usize>, key: K, max: usize) -> bool {
    let mut count = map.entry(key).or_insert(0);
    if max > 0 && *count >= max {
        return false;
    }
    *count += 1;
    true
}

fn release<K: Eq + Hash>(map: &DashMap<K, usize>, key: &K) {
    if let Some(mut count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
    }
    // Checked again under the shard lock: a concurrent acquire may have raised it.
    map.remove_if(key, |_, count| *count == 0);
}

/// A token bucket: `per_sec` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            per_sec: f64::from(per_sec),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.per_sec <= 0.0 {
            return Err(Duration::MAX);
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_slots_count_and_release() {
        let limits = ConnectionLimits::new();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let a = limits.try_ip(ip, 2);
        let b = limits.try_ip(ip, 2);
        assert!(a.is_some() && b.is_some());
        assert!(limits.try_ip(ip, 2).is_none());
        assert!(limits.try_ip([10, 0, 0, 2].into(), 2).is_some());
        drop(a);
        assert_eq!(limits.ip_count(ip), 1);
        let c = limits.try_ip(ip, 2);
        assert!(c.is_some());
        drop((b, c));
        assert_eq!(limits.tracked_keys(), (0, 0));
    }

    #[test]
    fn zero_means_unlimited_but_still_counts() {
        let limits = ConnectionLimits::new();
        let alice: Arc<str> = Arc::from("alice");
        let slots: Vec<_> = (0..100)
            .filter_map(|_| limits.try_user(&alice, 0))
            .collect();
        assert_eq!(slots.len(), 100);
        assert_eq!(limits.user_count("alice"), 100);
        assert!(limits.try_user(&alice, 100).is_none());
        drop(slots);
        assert_eq!(limits.user_count("alice"), 0);
        assert_eq!(limits.tracked_keys(), (0, 0));
    }

    #[test]
    fn pending_slots_are_bounded() {
        let limits = ConnectionLimits::new();
        let first = limits.try_pending(None, 2, 0);
        let second = limits.try_pending(None, 2, 0);
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(
            limits.try_pending(None, 2, 0).err(),
            Some(PendingLimit::Node)
        );
        assert_eq!(limits.pending_count(), 2);
        drop(first);
        assert!(limits.try_pending(None, 2, 0).is_ok());
        assert_eq!(limits.pending_count(), 1);
    }

    #[test]
    fn pending_slots_are_bounded_per_address() {
        let limits = ConnectionLimits::new();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let first = limits.try_pending(Some(a), 10, 2);
        let _second = limits.try_pending(Some(a), 10, 2);
        assert_eq!(
            limits.try_pending(Some(a), 10, 2).err(),
            Some(PendingLimit::Address)
        );
        let other = limits.try_pending(Some(b), 3, 2);
        assert!(other.is_ok());
        // The node-wide refusal gives the address's place back.
        assert_eq!(
            limits.try_pending(Some(b), 3, 2).err(),
            Some(PendingLimit::Node)
        );
        assert_eq!(limits.pending_ip_count(b), 1);
        drop((first, other));
        assert_eq!(
            (limits.pending_ip_count(a), limits.pending_ip_count(b)),
            (1, 0)
        );
        assert!(limits.try_pending(Some(a), 10, 2).is_ok());
    }

    #[test]
    fn bucket_refills_and_reports_the_wait() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2, 2, start);
        assert!(bucket.take(start).is_ok());
        assert!(bucket.take(start).is_ok());
        let wait = bucket.take(start).err();
        assert_eq!(wait, Some(Duration::from_millis(500)));
        assert!(bucket.take(start + Duration::from_millis(500)).is_ok());
        assert!(bucket.take(start + Duration::from_millis(500)).is_err());
    }
}
