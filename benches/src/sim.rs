//! Offline cache simulators: the hit ratios that Belady's optimal policy ([`opt`]) and a plain
//! LRU ([`lru`]) reach on the exact request sequence of a run, at the same capacity in bytes.
//!
//! Both count sizes: every object has a weight in bytes, and the cache holds at most
//! `capacity` bytes of them. Both model the cache under test:
//! - a get that misses loads the object and may cache it;
//! - a put writes the object and caches the new content (write-allocate), replacing the old;
//! - an object heavier than the whole capacity is never cached.
//!
//! [`opt`] is Belady's rule with sizes counted: after every insertion, while the cache is over
//! capacity, evict the object whose next use is furthest in the future. The object just
//! inserted is a candidate too, so an object that is needed later than everything else is not
//! kept at all (bypass). An object's next *use* is its next get; when the next request for it
//! is a put, its cached content will never be read again and its next use is "never". With
//! equal sizes this is the optimal offline policy. With variable sizes the optimum is NP-hard,
//! and this is the usual heuristic: close to the optimum in practice, but not a proven bound.

use std::collections::{BTreeMap, BTreeSet};

/// One request as the simulators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimRequest {
    /// The object's identity (dense indices keep the simulators fast).
    pub key: u32,
    /// A put rather than a get.
    pub write: bool,
    /// The object's weight in bytes (for a put, the weight of the new content).
    pub weight: u64,
}

impl SimRequest {
    /// A get of `key` whose object weighs `weight`.
    pub fn get(key: u32, weight: u64) -> Self {
        Self {
            key,
            write: false,
            weight,
        }
    }

    /// A put of `key` with content weighing `weight`.
    pub fn put(key: u32, weight: u64) -> Self {
        Self {
            key,
            write: true,
            weight,
        }
    }
}

/// The outcome of a simulation: for each request, whether it was a get that hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimResult {
    /// `hits[i]` is true when request `i` was a get served from the cache.
    pub hits: Vec<bool>,
    /// Gets in the sequence.
    pub gets: u64,
}

impl SimResult {
    /// Gets that hit.
    pub fn hit_count(&self) -> u64 {
        self.hits.iter().filter(|h| **h).count() as u64
    }

    /// Hits over gets (0 when there are no gets).
    pub fn hit_ratio(&self) -> f64 {
        if self.gets == 0 {
            0.0
        } else {
            self.hit_count() as f64 / self.gets as f64
        }
    }
}

const NEVER: usize = usize::MAX;

fn key_space(reqs: &[SimRequest]) -> usize {
    reqs.iter().map(|r| r.key as usize + 1).max().unwrap_or(0)
}

fn count_gets(reqs: &[SimRequest]) -> u64 {
    reqs.iter().filter(|r| !r.write).count() as u64
}

/// Belady's offline optimum, sizes counted, on `reqs` with `capacity` bytes.
pub fn opt(reqs: &[SimRequest], capacity: u64) -> SimResult {
    // next[i]: the index of the next get of the same key, if no put comes first.
    let mut next = vec![NEVER; reqs.len()];
    let mut later: Vec<Option<(usize, bool)>> = vec![None; key_space(reqs)];
    for (i, r) in reqs.iter().enumerate().rev() {
        let slot = &mut later[r.key as usize];
        next[i] = match *slot {
            Some((j, false)) => j,
            _ => NEVER,
        };
        *slot = Some((i, r.write));
    }
    // Cached objects: (weight, next use) per key, ordered by next use.
    let mut cached: Vec<Option<(u64, usize)>> = vec![None; later.len()];
    let mut by_next: BTreeSet<(usize, u32)> = BTreeSet::new();
    let mut used = 0u64;
    let mut hits = vec![false; reqs.len()];
    for (i, r) in reqs.iter().enumerate() {
        let k = r.key as usize;
        if !r.write
            && let Some((w, n)) = cached[k]
        {
            hits[i] = true;
            by_next.remove(&(n, r.key));
            by_next.insert((next[i], r.key));
            cached[k] = Some((w, next[i]));
            continue;
        }
        // A miss, or a put that replaces the content.
        if let Some((w, n)) = cached[k].take() {
            by_next.remove(&(n, r.key));
            used -= w;
        }
        if next[i] == NEVER || r.weight > capacity {
            continue;
        }
        cached[k] = Some((r.weight, next[i]));
        by_next.insert((next[i], r.key));
        used += r.weight;
        while used > capacity {
            let Some((_, victim)) = by_next.pop_last() else {
                break;
            };
            if let Some((w, _)) = cached[victim as usize].take() {
                used -= w;
            }
        }
    }
    SimResult {
        hits,
        gets: count_gets(reqs),
    }
}

/// A plain LRU, sizes counted, on `reqs` with `capacity` bytes.
pub fn lru(reqs: &[SimRequest], capacity: u64) -> SimResult {
    // Cached objects: (weight, last-use stamp) per key; `order` maps stamps to keys.
    let mut cached: Vec<Option<(u64, u64)>> = vec![None; key_space(reqs)];
    let mut order: BTreeMap<u64, u32> = BTreeMap::new();
    let mut used = 0u64;
    let mut hits = vec![false; reqs.len()];
    for (i, r) in reqs.iter().enumerate() {
        let k = r.key as usize;
        let stamp = i as u64;
        if let Some((w, old)) = cached[k] {
            order.remove(&old);
            if !r.write {
                hits[i] = true;
                order.insert(stamp, r.key);
                cached[k] = Some((w, stamp));
                continue;
            }
            cached[k] = None;
            used -= w;
        }
        if r.weight > capacity {
            continue;
        }
        cached[k] = Some((r.weight, stamp));
        order.insert(stamp, r.key);
        used += r.weight;
        while used > capacity {
            let Some((_, victim)) = order.pop_first() else {
                break;
            };
            if let Some((w, _)) = cached[victim as usize].take() {
                used -= w;
            }
        }
    }
    SimResult {
        hits,
        gets: count_gets(reqs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const A: u32 = 0;
    const B: u32 = 1;
    const C: u32 = 2;

    fn gets(keys: &[u32]) -> Vec<SimRequest> {
        keys.iter().map(|&k| SimRequest::get(k, 1)).collect()
    }

    fn hit_indices(r: &SimResult) -> Vec<usize> {
        r.hits
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.then_some(i))
            .collect()
    }

    #[test]
    fn unit_sizes() {
        // Capacity 2, A B A C B A.
        // LRU: A- B- A+ C-(evicts B) B-(evicts A) A-(evicts C): one hit.
        // OPT: A- B- A+ C- (C is never used again, so it is not kept) B+ A+: three hits.
        let reqs = gets(&[A, B, A, C, B, A]);
        assert_eq!(hit_indices(&lru(&reqs, 2)), vec![2]);
        assert_eq!(hit_indices(&opt(&reqs, 2)), vec![2, 4, 5]);
        assert_eq!(opt(&reqs, 2).hit_ratio(), 0.5);
        // Everything fits: only first touches miss.
        assert_eq!(hit_indices(&lru(&reqs, 3)), vec![2, 4, 5]);
        assert_eq!(hit_indices(&opt(&reqs, 3)), vec![2, 4, 5]);
        // No room at all.
        assert!(hit_indices(&lru(&reqs, 0)).is_empty());
        assert!(hit_indices(&opt(&reqs, 0)).is_empty());
    }

    #[test]
    fn furthest_next_use_is_evicted() {
        // Capacity 3, A B C D A B C A. At D (index 3) OPT holds A(next 4), B(5), C(6); D is
        // never used again, so it is bypassed and A, B, C all hit, then A again: 4 hits.
        // LRU evicts A for D, then A evicts B, B evicts C, C evicts D, A hits: 1 hit.
        let reqs = gets(&[A, B, C, 3, A, B, C, A]);
        assert_eq!(hit_indices(&opt(&reqs, 3)), vec![4, 5, 6, 7]);
        assert_eq!(hit_indices(&lru(&reqs, 3)), vec![7]);
    }

    #[test]
    fn variable_sizes() {
        // Capacity 10: A(6) B(4) C(5) A B.
        // LRU: A- [A:6]; B- [A,B:10]; C- → 15, evict A → [B,C:9]; A- → 15, evict B → 11,
        // evict C → [A:6]; B- [A,B:10]: no hits.
        // OPT: A- (next 3); B- (next 4), 10 bytes; C- never used again: bypassed; A+ B+.
        let reqs = vec![
            SimRequest::get(A, 6),
            SimRequest::get(B, 4),
            SimRequest::get(C, 5),
            SimRequest::get(A, 6),
            SimRequest::get(B, 4),
        ];
        assert_eq!(hit_indices(&lru(&reqs, 10)), Vec::<usize>::new());
        assert_eq!(hit_indices(&opt(&reqs, 10)), vec![3, 4]);

        // Capacity 10: A(8) B(3) C(3) B C A. OPT: A- (next 5); B- (next 3) → 11 bytes, evict
        // the furthest, A → [B:3]; C- [B,C:6]; B+ C+; A- (never again, bypassed): 2 hits,
        // where keeping A would give only 1.
        // LRU: A-; B- evicts A; C-; B+ C+; A- evicts B then C: 2 hits.
        let reqs = vec![
            SimRequest::get(A, 8),
            SimRequest::get(B, 3),
            SimRequest::get(C, 3),
            SimRequest::get(B, 3),
            SimRequest::get(C, 3),
            SimRequest::get(A, 8),
        ];
        assert_eq!(hit_indices(&opt(&reqs, 10)), vec![3, 4]);
        assert_eq!(hit_indices(&lru(&reqs, 10)), vec![3, 4]);

        // An object heavier than the capacity is never cached, and evicts nothing.
        let reqs = vec![
            SimRequest::get(A, 4),
            SimRequest::get(B, 11),
            SimRequest::get(B, 11),
            SimRequest::get(A, 4),
        ];
        assert_eq!(hit_indices(&lru(&reqs, 10)), vec![3]);
        assert_eq!(hit_indices(&opt(&reqs, 10)), vec![3]);
    }

    #[test]
    fn puts_replace_content_and_change_size() {
        // Capacity 1: A, put A, A, B, A.
        // LRU: A- [A]; put [A]; A+; B- evicts A; A-: 1 hit.
        // OPT: A is next written, so the first load is not kept; put A (next get 2) [A]; A+
        // (next 4); B never again: bypassed; A+: 2 hits.
        let reqs = vec![
            SimRequest::get(A, 1),
            SimRequest::put(A, 1),
            SimRequest::get(A, 1),
            SimRequest::get(B, 1),
            SimRequest::get(A, 1),
        ];
        assert_eq!(hit_indices(&lru(&reqs, 1)), vec![2]);
        assert_eq!(hit_indices(&opt(&reqs, 1)), vec![2, 4]);
        assert_eq!(lru(&reqs, 1).gets, 4);

        // Capacity 10: A(2) B(2), put A(9), B, A. The put grows A to 9 bytes, so LRU must
        // evict B: [A:9]; B- → 11, evicts A; A-: no hits. OPT keeps B (next 3) over A (next
        // 4) when the put overflows: B+; then A misses: 1 hit.
        let reqs = vec![
            SimRequest::get(A, 2),
            SimRequest::get(B, 2),
            SimRequest::put(A, 9),
            SimRequest::get(B, 2),
            SimRequest::get(A, 9),
        ];
        assert_eq!(hit_indices(&lru(&reqs, 10)), Vec::<usize>::new());
        assert_eq!(hit_indices(&opt(&reqs, 10)), vec![3]);
    }

    #[test]
    fn opt_never_loses_to_lru_with_equal_sizes() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..50 {
            let reqs: Vec<SimRequest> = (0..400)
                .map(|_| {
                    let key = rng.random_range(0..30);
                    if rng.random_bool(0.1) {
                        SimRequest::put(key, 1)
                    } else {
                        SimRequest::get(key, 1)
                    }
                })
                .collect();
            let cap = rng.random_range(1..20);
            let (o, l) = (opt(&reqs, cap), lru(&reqs, cap));
            assert!(o.hit_count() >= l.hit_count(), "cap {cap}: {o:?} {l:?}");
        }
    }
}
