//! A small, fast, non-cryptographic random number generator (SplitMix64) for the load
//! generator's choices: which client to churn, reconnect jitter, a publication's channel.
//! Deterministic for a seed, so tests can pin it; seeded from the clock in real runs.

use crate::wire::unix_micros;

/// SplitMix64 (Steele, Lea and Flood, 2014): one `u64` of state, full period.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    #[cfg(test)]
    pub fn with_seed(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator seeded from the clock, mixed with `salt` so that generators created in
    /// the same microsecond (one per client) still differ.
    pub fn from_clock(salt: u64) -> Rng {
        Rng(unix_micros() ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the bias is below 2^-32 for the sizes used here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::with_seed(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = rng.below(10) as usize;
            seen[v] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        assert_eq!(rng.below(0), 0);
        assert_ne!(Rng::from_clock(1).next_u64(), Rng::from_clock(2).next_u64());
    }
}
