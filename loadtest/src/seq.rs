//! Per-connection sequence tracking: which publications of a stream a subscriber saw, and
//! whether they came once, in order.
//!
//! The publisher runs several *streams*; each stream publishes strictly one request after the
//! other with `seq` = 0, 1, 2, ..., so the server has a defined order per stream and a
//! subscriber must see each stream's seqs exactly once, ascending. Each connection keeps one
//! [`SeqTracker`] per stream.
//!
//! Memory stays bounded: the tracker keeps a watermark (every seq below it was seen) plus the
//! seqs seen above it. If more than [`WINDOW`] seqs pile up above a gap, the gap is written
//! off as lost and the watermark jumps; a seq from a written-off gap that arrives later still
//! counts as received (it is then also counted as reordered), but a repeat of it can no
//! longer be told apart and counts as a duplicate only if it lands inside the window.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// How many seqs may wait above a gap before the gap is written off.
pub const WINDOW: usize = 1024;

/// The seqs one connection saw on one publisher stream.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// Every seq below this was seen (or written off).
    next: u64,
    /// Seen seqs at or above `next`.
    ahead: BTreeSet<u64>,
    /// The largest seq seen so far.
    max_seen: Option<u64>,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    /// Start and end of each written-off gap, kept only to recognise late arrivals.
    written_off: Vec<(u64, u64)>,
}

/// The verdict on one tracker (or a sum of them) once the publisher's count is known.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqOutcome {
    /// Distinct seqs received.
    pub received: u64,
    /// Published but never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicates: u64,
    /// Received after a larger seq of the same stream.
    pub reordered: u64,
}

impl SeqOutcome {
    pub fn add(&mut self, other: &SeqOutcome) {
        self.received += other.received;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
    }
}

impl SeqTracker {
    /// Records one received seq; true if it is its first receipt (not a duplicate).
    pub fn observe(&mut self, seq: u64) -> bool {
        if seq == self.next && self.ahead.is_empty() {
            // The common case, the next seq in order: nothing waits above the watermark, so
            // it cannot be a duplicate or late, and the set stays untouched.
            self.unique += 1;
            self.max_seen = Some(self.max_seen.map_or(seq, |max| max.max(seq)));
            self.next += 1;
            return true;
        }
        if self.ahead.contains(&seq) || (seq < self.next && !self.take_written_off(seq)) {
            self.duplicates += 1;
            return false;
        }
        self.unique += 1;
        if self.max_seen.is_some_and(|max| seq < max) {
            self.reordered += 1;
        }
        self.max_seen = Some(self.max_seen.map_or(seq, |max| max.max(seq)));
        if seq < self.next {
            return true; // a late arrival from a written-off gap, already accounted above
        }
        self.ahead.insert(seq);
        self.advance();
        if self.ahead.len() > WINDOW {
            self.write_off_first_gap();
        }
        true
    }

    /// The verdict, given that the stream published seqs `0..published`.
    pub fn outcome(&self, published: u64) -> SeqOutcome {
        SeqOutcome {
            received: self.unique,
            lost: published.saturating_sub(self.unique),
            duplicates: self.duplicates,
            reordered: self.reordered,
        }
    }

    /// Moves the watermark over the contiguous run of seen seqs starting at it.
    fn advance(&mut self) {
        while self.ahead.first() == Some(&self.next) {
            self.ahead.pop_first();
            self.next += 1;
        }
    }

    fn write_off_first_gap(&mut self) {
        if let Some(&first) = self.ahead.first() {
            self.written_off.push((self.next, first));
            self.next = first;
            self.advance();
        }
    }

    /// If `seq` lies in a written-off gap, removes it from the gap and returns true.
    fn take_written_off(&mut self, seq: u64) -> bool {
        let Some(i) = self
            .written_off
            .iter()
            .position(|&(lo, hi)| lo <= seq && seq < hi)
        else {
            return false;
        };
        let (lo, hi) = self.written_off[i];
        self.written_off.swap_remove(i);
        if lo < seq {
            self.written_off.push((lo, seq));
        }
        if seq + 1 < hi {
            self.written_off.push((seq + 1, hi));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::default();
        for &s in seqs {
            t.observe(s);
        }
        t
    }

    #[test]
    fn in_order_stream_is_clean() {
        let t = feed(&[0, 1, 2, 3, 4]);
        assert_eq!(
            t.outcome(5),
            SeqOutcome {
                received: 5,
                lost: 0,
                duplicates: 0,
                reordered: 0
            }
        );
        assert!(t.ahead.is_empty());
    }

    #[test]
    fn gaps_are_lost_including_the_tail() {
        let t = feed(&[0, 2, 3]);
        assert_eq!(t.outcome(6).lost, 3); // 1, 4 and 5 never came
        assert_eq!(t.outcome(6).reordered, 0);
    }

    #[test]
    fn duplicates_are_counted_once_each_and_not_as_received() {
        let t = feed(&[0, 1, 1, 2, 0, 2]);
        let mut fresh = SeqTracker::default();
        let firsts: Vec<bool> = [0, 1, 1, 0].iter().map(|&s| fresh.observe(s)).collect();
        assert_eq!(firsts, [true, true, false, false]);
        let o = t.outcome(3);
        assert_eq!((o.received, o.duplicates, o.lost), (3, 3, 0));
        // A duplicate above the watermark is caught too.
        let t = feed(&[0, 5, 5]);
        assert_eq!(t.outcome(6).duplicates, 1);
    }

    #[test]
    fn reordering_is_counted_and_fills_the_gap() {
        let t = feed(&[0, 2, 1, 3]);
        let o = t.outcome(4);
        assert_eq!(
            (o.received, o.lost, o.reordered, o.duplicates),
            (4, 0, 1, 0)
        );
        assert_eq!(t.next, 4);
    }

    #[test]
    fn nothing_received_means_everything_lost() {
        assert_eq!(SeqTracker::default().outcome(7).lost, 7);
    }

    #[test]
    fn a_long_gap_is_written_off_and_memory_stays_bounded() {
        let mut t = SeqTracker::default();
        t.observe(0);
        for s in 2..(WINDOW as u64 + 100) {
            t.observe(s);
        }
        assert!(t.ahead.len() <= WINDOW);
        let published = WINDOW as u64 + 100;
        assert_eq!(t.outcome(published).lost, 1);
        // The written-off seq arriving late is received after all, and reordered.
        t.observe(1);
        let o = t.outcome(published);
        assert_eq!((o.lost, o.duplicates, o.reordered), (0, 0, 1));
        t.observe(1);
        assert_eq!(t.outcome(published).duplicates, 1);
    }

    #[test]
    fn outcomes_add_up() {
        let mut sum = SeqOutcome::default();
        sum.add(&feed(&[0, 1]).outcome(3));
        sum.add(&feed(&[1, 0, 0]).outcome(3));
        assert_eq!(
            sum,
            SeqOutcome {
                received: 4,
                lost: 2,
                duplicates: 1,
                reordered: 1
            }
        );
    }
}
