//! Shared measurement state of one process's connections, and the serialisable
//! [`Snapshot`] of it that crosses process boundaries.
//!
//! Counters are relaxed atomics. Latency histograms (microseconds) are sharded behind
//! mutexes so connection tasks on different threads rarely meet; a task records a whole
//! frame's worth of samples under one lock. A snapshot merges the shards; snapshots of
//! several worker processes merge the same way, so the coordinator's view of a run is the
//! same type whether it ran in one process or many.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::seq::SeqOutcome;

/// Highest latency the histograms resolve, in microseconds (10 minutes).
const MAX_MICROS: u64 = 600_000_000;
const SHARDS: usize = 16;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, bumped by connection tasks.
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A copy of [`Counters`] at one instant.
        #[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
        pub struct CounterSnapshot { $($(#[$doc])* #[serde(default)] pub $name: u64,)* }

        impl Counters {
            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl CounterSnapshot {
            pub fn add(&mut self, other: &CounterSnapshot) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// Connection attempts started.
    attempts,
    /// TCP connect or WebSocket upgrade failed or timed out.
    dial_failed,
    /// `connect` answered with an error, or no answer in time.
    connect_failed,
    /// `subscribe` answered with an error, or no answer in time.
    subscribe_failed,
    /// Got `connected`.
    connected,
    /// Ready: got `subscribed` (or `connected`, for connections that do not subscribe).
    ready,
    /// Ready connections that ended before the run told them to (closed, reset, dead).
    dropped,
    /// Ready connections that then stopped reading on purpose (`--slow-fraction`).
    slow,
    /// Ready connections that heard nothing (no ping, no frame) for the ping deadline.
    dead,
    pings,
    pongs,
    frames,
    frame_bytes,
    /// `message` ops received.
    messages,
    /// `message` ops without a readable benchmark payload.
    foreign_messages,
    /// `error` ops received after the handshake.
    errors,
    /// `disconnect` ops received.
    disconnects,
    /// Frames that did not decode.
    decode_errors,
    /// Connection tasks that have fully finished.
    finished,
    /// First receipts of benchmark publications by measured clients (slow ones excluded).
    fresh,
    /// Durable clients connected and subscribed right now (a gauge: up minus down).
    up,
    /// Sessions of durable clients opened after their first one.
    reconnects,
    /// Reconnect attempts that failed (dial, `connect`, `subscribe` or timeout).
    reconnect_failures,
    /// Sessions the client closed on purpose (`--churn-rate`).
    churn_closes,
    /// Sessions of durable clients ended by the server or the network (any close code,
    /// reset, silence).
    interrupted,
    /// `subscribe` with `recover` answered `recovered: true`.
    recoveries,
    /// `subscribe` with `recover` answered `recovered: false` (or without the field).
    recovery_failed,
    /// Messages missed while away, as announced by recovering `subscribed` replies.
    recovered_messages,
    /// Offsets skipped over (a gap of k messages counts k).
    offset_gaps,
    /// Messages whose offset was not above the last one seen.
    offset_repeats,
    /// Messages or replies carrying another epoch than the one the client knew.
    epoch_changes,
    /// Clients that stopped reading and, reading again at the end, found close 4008.
    slow_evicted,
    /// Clients that stopped reading whose connection ended some other way (reset, end of
    /// stream, another code) by the end of the run.
    slow_cut,
}

/// Everything one process measures; shared by its connection tasks through an `Arc`.
#[derive(Debug)]
pub struct Stats {
    pub counters: Counters,
    /// Dial start to ready.
    pub connect_latency: ShardedHistogram,
    /// Publish (`ts`) to receipt.
    pub delivery_latency: ShardedHistogram,
    /// The same, for publications made at or after the mark (`--slow` phase 2).
    pub marked_latency: ShardedHistogram,
    /// From losing a session to having every message up to the offset the recovering
    /// `subscribed` announced.
    pub recovery_latency: ShardedHistogram,
    /// Close codes, `error` codes and `disconnect` codes, keyed like `close:4008`.
    codes: Mutex<BTreeMap<String, u64>>,
    /// Per-connection sequence verdicts, summed as connections finish.
    seq: Mutex<SeqOutcome>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            counters: Counters::default(),
            connect_latency: ShardedHistogram::new(),
            delivery_latency: ShardedHistogram::new(),
            marked_latency: ShardedHistogram::new(),
            recovery_latency: ShardedHistogram::new(),
            codes: Mutex::default(),
            seq: Mutex::default(),
        }
    }
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes one off a gauge kept in a counter (`up`).
    pub fn drop_one(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts one occurrence of a code, such as `("close", 4008)`.
    pub fn code(&self, kind: &str, code: impl std::fmt::Display) {
        if let Ok(mut codes) = self.codes.lock() {
            *codes.entry(format!("{kind}:{code}")).or_default() += 1;
        }
    }

    pub fn add_seq(&self, outcome: &SeqOutcome) {
        if let Ok(mut seq) = self.seq.lock() {
            seq.add(outcome);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counters: self.counters.snapshot(),
            connect_latency: self.connect_latency.merged(),
            delivery_latency: self.delivery_latency.merged(),
            marked_latency: self.marked_latency.merged(),
            recovery_latency: self.recovery_latency.merged(),
            codes: self.codes.lock().map(|c| c.clone()).unwrap_or_default(),
            seq: self.seq.lock().map(|s| *s).unwrap_or_default(),
        }
    }
}

/// A latency histogram split into independently locked shards.
#[derive(Debug)]
pub struct ShardedHistogram {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl ShardedHistogram {
    fn new() -> Self {
        ShardedHistogram {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }

    /// Records samples (microseconds) into the shard picked by `key` (a connection index).
    pub fn record_all(&self, key: usize, samples: &[u64]) {
        if samples.is_empty() {
            return;
        }
        if let Ok(mut h) = self.shards[key % SHARDS].lock() {
            for &s in samples {
                h.saturating_record(s.max(1));
            }
        }
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for shard in &self.shards {
            if let Ok(h) = shard.lock() {
                // Adding walks every bucket (tens of thousands) even of an empty histogram,
                // and progress merges all shards ten times a second.
                if !h.is_empty() {
                    // Same bounds on both sides, so `add` cannot fail.
                    let _ = out.add(&*h);
                }
            }
        }
        out
    }
}

/// A new microsecond histogram with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

/// A point-in-time view of one or more processes' measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub counters: CounterSnapshot,
    #[serde(with = "histogram_serde")]
    pub connect_latency: Histogram<u64>,
    #[serde(with = "histogram_serde")]
    pub delivery_latency: Histogram<u64>,
    #[serde(with = "histogram_serde", default = "new_histogram")]
    pub marked_latency: Histogram<u64>,
    #[serde(with = "histogram_serde", default = "new_histogram")]
    pub recovery_latency: Histogram<u64>,
    pub codes: BTreeMap<String, u64>,
    pub seq: SeqOutcome,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            counters: CounterSnapshot::default(),
            connect_latency: new_histogram(),
            delivery_latency: new_histogram(),
            marked_latency: new_histogram(),
            recovery_latency: new_histogram(),
            codes: BTreeMap::new(),
            seq: SeqOutcome::default(),
        }
    }
}

impl Snapshot {
    /// Folds another process's snapshot into this one.
    pub fn add(&mut self, other: &Snapshot) {
        self.counters.add(&other.counters);
        let _ = self.connect_latency.add(&other.connect_latency);
        let _ = self.delivery_latency.add(&other.delivery_latency);
        let _ = self.marked_latency.add(&other.marked_latency);
        let _ = self.recovery_latency.add(&other.recovery_latency);
        for (code, n) in &other.codes {
            *self.codes.entry(code.clone()).or_default() += n;
        }
        self.seq.add(&other.seq);
    }

    /// Connections that settled one way or the other (ready or failed).
    pub fn settled(&self) -> u64 {
        let c = &self.counters;
        c.ready + c.dial_failed + c.connect_failed + c.subscribe_failed
    }

    /// Delivery latency of publications made before the mark: everything minus the
    /// marked part.
    pub fn unmarked_latency(&self) -> Histogram<u64> {
        let mut before = self.delivery_latency.clone();
        // Same bounds, and `marked` is a subset of the whole: cannot fail.
        let _ = before.subtract(&self.marked_latency);
        before
    }

    /// Connections that failed before becoming ready.
    pub fn failed(&self) -> u64 {
        let c = &self.counters;
        c.dial_failed + c.connect_failed + c.subscribe_failed
    }
}

/// Histograms cross process boundaries as `[[value, count], ...]` of their non-empty
/// buckets: plain JSON, and exact up to the histogram's own resolution.
mod histogram_serde {
    use super::{Histogram, new_histogram};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value())),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(d)?;
        let mut h = new_histogram();
        for (value, count) in pairs {
            h.saturating_record_n(value, count);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn snapshots_round_trip_through_json_and_merge() {
        let stats = Stats::default();
        Stats::bump(&stats.counters.ready);
        stats.code("close", 4008);
        stats.delivery_latency.record_all(0, &[100, 200, 300]);
        stats.delivery_latency.record_all(5, &[10_000]);
        stats.add_seq(&SeqOutcome {
            received: 3,
            lost: 1,
            duplicates: 0,
            reordered: 2,
        });
        let snap = stats.snapshot();
        let json = serde_json::to_string(&snap).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back.delivery_latency.len(), 4);
        assert_eq!(back.delivery_latency.max(), snap.delivery_latency.max());
        let mut sum = back.clone();
        sum.add(&snap);
        assert_eq!(sum.counters.ready, 2);
        assert_eq!(sum.codes["close:4008"], 2);
        assert_eq!(sum.seq.lost, 2);
        assert_eq!(
            sum.delivery_latency.value_at_quantile(0.5),
            snap.delivery_latency.value_at_quantile(0.5)
        );
    }
}
