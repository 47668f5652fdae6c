//! Cheap access-frequency estimates: a count-min sketch with periodic aging.
//!
//! Each read adds one to `DEPTH` counters picked by the key's hash and returns their minimum,
//! an estimate of how often the key was read lately: O(1), no locks, no allocation. After
//! `window` reads all counters are halved, so old popularity fades.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

const DEPTH: usize = 4;

/// A concurrent count-min sketch of recent reads.
#[derive(Debug)]
pub struct FrequencySketch {
    counters: Box<[AtomicU32]>,
    mask: u64,
    reads: AtomicU64,
    window: u64,
    aging: AtomicBool,
}

impl FrequencySketch {
    /// A sketch with about `width` counters per row (rounded up to a power of two). Counts
    /// are halved every `16 × width` reads.
    pub fn new(width: usize) -> Self {
        let width = width.max(64).next_power_of_two();
        Self {
            counters: (0..width * DEPTH).map(|_| AtomicU32::new(0)).collect(),
            mask: width as u64 - 1,
            reads: AtomicU64::new(0),
            window: 16 * width as u64,
            aging: AtomicBool::new(false),
        }
    }

    fn slots(&self, hash: u64) -> [usize; DEPTH] {
        // Double hashing: row i uses h1 + i*h2.
        let (h1, h2) = (hash, hash.rotate_left(32) | 1);
        let width = self.mask as usize + 1;
        std::array::from_fn(|i| {
            i * width + (h1.wrapping_add((i as u64).wrapping_mul(h2)) & self.mask) as usize
        })
    }

    /// Records one read of the key with this hash and returns its estimated recent count.
    pub fn record(&self, hash: u64) -> u32 {
        let mut estimate = u32::MAX;
        for slot in self.slots(hash) {
            let c = self.counters[slot]
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            estimate = estimate.min(c);
        }
        if self.reads.fetch_add(1, Ordering::Relaxed) + 1 >= self.window {
            self.age();
        }
        estimate
    }

    /// The estimated recent count of the key with this hash, without recording a read.
    pub fn estimate(&self, hash: u64) -> u32 {
        self.slots(hash)
            .iter()
            .map(|&s| self.counters[s].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Halves every counter. One caller ages at a time; others skip.
    fn age(&self) {
        if self.aging.swap(true, Ordering::Acquire) {
            return;
        }
        self.reads.store(0, Ordering::Relaxed);
        for c in self.counters.iter() {
            let v = c.load(Ordering::Relaxed);
            c.store(v / 2, Ordering::Relaxed);
        }
        self.aging.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_hash;

    #[test]
    fn frequent_keys_estimate_high_and_rare_keys_low() {
        let sketch = FrequencySketch::new(1024);
        for _ in 0..200 {
            sketch.record(key_hash("hot"));
        }
        for i in 0..2000 {
            sketch.record(key_hash(&format!("cold-{i}")));
        }
        assert!(sketch.estimate(key_hash("hot")) >= 100);
        // Never under the true count, and rare keys stay small.
        assert!(sketch.estimate(key_hash("cold-7")) >= 1);
        let cold_high = (0..2000)
            .filter(|i| sketch.estimate(key_hash(&format!("cold-{i}"))) > 8)
            .count();
        assert!(cold_high < 20, "{cold_high}");
    }

    #[test]
    fn aging_halves_counts() {
        let sketch = FrequencySketch::new(1024);
        for _ in 0..100 {
            sketch.record(key_hash("k"));
        }
        assert_eq!(sketch.estimate(key_hash("k")), 100);
        // One other key fills the rest of the window (16 x 1024 reads), which ends in aging.
        for _ in 100..16 * 1024 {
            sketch.record(key_hash("other"));
        }
        assert_eq!(sketch.estimate(key_hash("k")), 50);
    }
}
