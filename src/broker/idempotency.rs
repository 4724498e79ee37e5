//! The memory broker's idempotency keys: what a publication carrying a key returned,
//! remembered for `IDEMPOTENCY_WINDOW` so that a retry gets the same answer instead of
//! publishing twice.
//!
//! Keys live in two generations, `current` and `previous`; once `current` is a window old,
//! everything in `previous` is past the window, and expiry swaps the generations instead
//! of visiting every key. A sweep (`retain`) over all keys ran on the runtime thread every
//! 30 s: at 2,000 publications/s that is 600,000 keys, a clock read each, and 60,000
//! strings freed, a stall of tens of milliseconds for every request waiting behind it.
//! The expired generation is dropped on a blocking thread. A generation has many shards
//! (`SHARDS`), so the rehash of one that grows moves a few thousand keys, not a
//! shard of 75,000 (tens of milliseconds with the default 8 shards of a 2-core machine).
//!
//! Architecture Invariant: a key is found for exactly as long as its entry is younger than
//! the window (`get` checks the age); the generations only bound the memory (at most
//! two windows' worth of keys, plus one upkeep period).

use std::time::Instant;

use dashmap::DashMap;
use parking_lot::RwLock;

use super::{IDEMPOTENCY_WINDOW, PublishResult};
use crate::protocol::ChannelName;

type Generation = DashMap<String, (Instant, PublishResult)>;

/// Shards of a generation (a power of two).
const SHARDS: usize = 256;

fn generation() -> Generation {
    DashMap::with_shard_amount(SHARDS)
}

pub(super) struct IdempotencyKeys {
    generations: RwLock<Generations>,
}

struct Generations {
    /// Keys remembered since `current_since`.
    current: Generation,
    /// Keys remembered in the window before `current_since`.
    previous: Generation,
    current_since: Instant,
}

impl IdempotencyKeys {
    pub(super) fn new() -> Self {
        IdempotencyKeys {
            generations: RwLock::new(Generations {
                current: generation(),
                previous: generation(),
                current_since: Instant::now(),
            }),
        }
    }

    /// The key `key` of a publication to `channel`: keys are scoped per channel, as on
    /// the Redis broker.
    pub(super) fn scoped(channel: &ChannelName, key: &str) -> String {
        format!("{channel}\u{0}{key}")
    }

    /// What the publication with this (scoped) key returned, if it is still remembered.
    pub(super) fn get(&self, scoped: &str) -> Option<PublishResult> {
        let generations = self.generations.read();
        [&generations.current, &generations.previous]
            .into_iter()
            .find_map(|generation| {
                let entry = generation.get(scoped)?;
                (entry.0.elapsed() < IDEMPOTENCY_WINDOW).then(|| entry.1.clone())
            })
    }

    pub(super) fn insert(&self, scoped: String, result: PublishResult) {
        let generations = self.generations.read();
        generations.current.insert(scoped, (Instant::now(), result));
    }

    /// Periodic upkeep: once the current generation is a window old, it becomes the
    /// previous one and the previous one, entirely past the window, is dropped (on a
    /// blocking thread when there is a runtime).
    pub(super) fn expire(&self) {
        let expired = {
            let mut generations = self.generations.write();
            if generations.current_since.elapsed() < IDEMPOTENCY_WINDOW {
                return;
            }
            let current = std::mem::replace(&mut generations.current, generation());
            generations.current_since = Instant::now();
            std::mem::replace(&mut generations.previous, current)
        };
        if expired.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(expired))),
            Err(_) => drop(expired),
        }
    }

    /// Keys held, both generations (expired ones not yet dropped included).
    #[cfg(test)]
    fn held(&self) -> usize {
        let generations = self.generations.read();
        generations.current.len() + generations.previous.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn result(offset: u64) -> PublishResult {
        PublishResult {
            offset: Some(offset),
            epoch: None,
        }
    }

    fn key(n: u64) -> String {
        IdempotencyKeys::scoped(&ChannelName::parse("chat").unwrap(), &n.to_string())
    }

    /// A window ago (`None` on a monotonic clock younger than that: nothing to test).
    fn a_window_ago() -> Option<Instant> {
        Instant::now().checked_sub(IDEMPOTENCY_WINDOW)
    }

    /// Pretends the current generation started a window ago.
    fn age_current(keys: &IdempotencyKeys, since: Instant) {
        keys.generations.write().current_since = since;
    }

    #[test]
    fn a_key_is_found_in_either_generation_until_the_window_passes() {
        let Some(past) = a_window_ago() else { return };
        let keys = IdempotencyKeys::new();
        keys.insert(key(1), result(1));
        assert_eq!(keys.get(&key(1)).unwrap().offset, Some(1));
        // Too young to rotate: nothing moves.
        keys.expire();
        assert_eq!(keys.held(), 1);
        // Rotated once: the key is in `previous`, still found.
        age_current(&keys, past);
        keys.expire();
        assert_eq!(keys.get(&key(1)).unwrap().offset, Some(1));
        keys.insert(key(2), result(2));
        assert_eq!(keys.get(&key(2)).unwrap().offset, Some(2));
        // Rotated again: key 1's generation is dropped, key 2 moves to `previous`.
        age_current(&keys, past);
        keys.expire();
        assert!(keys.get(&key(1)).is_none());
        assert_eq!(keys.get(&key(2)).unwrap().offset, Some(2));
        assert_eq!(keys.held(), 1);
    }

    #[test]
    fn an_entry_older_than_the_window_is_not_found_even_before_its_generation_goes() {
        let Some(past) = a_window_ago() else { return };
        let keys = IdempotencyKeys::new();
        keys.generations
            .write()
            .current
            .insert(key(1), (past, result(1)));
        assert!(keys.get(&key(1)).is_none());
        assert!(keys.get(&key(9)).is_none());
    }
}
