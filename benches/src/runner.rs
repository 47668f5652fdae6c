//! Running a workload through a [`CacheClient`] with many requests in flight, and measuring it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_client::{CacheClient, Tier};
use hdrhistogram::Histogram;

use crate::workload::{Op, key_name};

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Requests made.
    pub ops: u64,
    /// Gets, and the tier that served each.
    pub gets: u64,
    /// Gets by tier.
    pub by_tier: TierCounts,
    /// Gets of blobs that did not exist.
    pub not_found: u64,
    /// Puts made.
    pub puts: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Latency of every request, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

/// Gets counted by the tier that served them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierCounts {
    /// In-process copies.
    pub local: u64,
    /// The home node's cache.
    pub home: u64,
    /// The previous owner during a handoff.
    pub handoff: u64,
    /// The blob store.
    pub store: u64,
}

impl TierCounts {
    fn add(&mut self, tier: Tier) {
        match tier {
            Tier::Local => self.local += 1,
            Tier::Home => self.home += 1,
            Tier::Handoff => self.handoff += 1,
            Tier::Store => self.store += 1,
        }
    }

    fn merge(&mut self, other: TierCounts) {
        self.local += other.local;
        self.home += other.home;
        self.handoff += other.handoff;
        self.store += other.store;
    }

    /// Gets served by any cache tier.
    pub fn hits(&self) -> u64 {
        self.local + self.home + self.handoff
    }

    /// Gets that returned a value.
    pub fn total(&self) -> u64 {
        self.hits() + self.store
    }
}

impl RunResult {
    /// The share of gets served from a cache tier.
    pub fn hit_ratio(&self) -> f64 {
        ratio(self.by_tier.hits(), self.by_tier.total())
    }

    /// Requests per second.
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `num / den`, or 0 when `den` is 0.
pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `ops` through `client` with `concurrency` requests in flight. A put writes
/// `value_for(key)`.
pub async fn run(
    client: &CacheClient,
    ops: Arc<Vec<Op>>,
    concurrency: usize,
    value_for: Arc<dyn Fn(u32) -> Bytes + Send + Sync>,
) -> RunResult {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency.max(1)).map(|_| {
        let (client, ops, next, value_for) =
            (client.clone(), ops.clone(), next.clone(), value_for.clone());
        tokio::spawn(async move {
            let mut r = RunResult {
                ops: 0,
                gets: 0,
                by_tier: TierCounts::default(),
                not_found: 0,
                puts: 0,
                errors: 0,
                latency_us: histogram(),
                elapsed: Duration::ZERO,
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(op) = ops.get(i) else { break };
                let t = Instant::now();
                match *op {
                    Op::Get(k) => {
                        r.gets += 1;
                        match client.get_entry(&key_name(k)).await {
                            Ok(Some(f)) => r.by_tier.add(f.tier),
                            Ok(None) => r.not_found += 1,
                            Err(_) => r.errors += 1,
                        }
                    }
                    Op::Put(k) => {
                        r.puts += 1;
                        if client.put(&key_name(k), value_for(k)).await.is_err() {
                            r.errors += 1;
                        }
                    }
                }
                let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = r.latency_us.record(us.max(1));
                r.ops += 1;
            }
            r
        })
    });
    let parts = futures::future::join_all(workers).await;
    let mut total = RunResult {
        ops: 0,
        gets: 0,
        by_tier: TierCounts::default(),
        not_found: 0,
        puts: 0,
        errors: 0,
        latency_us: histogram(),
        elapsed: started.elapsed(),
    };
    for part in parts.into_iter().flatten() {
        total.ops += part.ops;
        total.gets += part.gets;
        total.by_tier.merge(part.by_tier);
        total.not_found += part.not_found;
        total.puts += part.puts;
        total.errors += part.errors;
        let _ = total.latency_us.add(&part.latency_us);
    }
    total
}
