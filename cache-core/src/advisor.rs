//! The scaling advisor: how many nodes the cache should have, from what it observes.
//!
//! A pure function of cluster-wide figures and the advisor's own memory (for hysteresis and
//! cooldown), so it can be tested without a network. It scales on data, as Faa$T does, not
//! only on compute:
//!
//! | signal | scale out when | scale in when |
//! |---|---|---|
//! | memory: bytes used / capacity | above `fill_high` (0.90) **and** ghost hits / reads above `ghost_high` (0.05): the working set outgrows memory | below `fill_low` (0.40) and ghost hits / reads below `ghost_low` (0.005) |
//! | bandwidth: bytes served per second per node / `bandwidth_per_node` (100 MiB/s) | above `bandwidth_high` (0.75), or 0.60 when the mean object is at least `large_object_bytes` (1 MiB) | below `bandwidth_low` (0.25) with one node fewer |
//!
//! Between the two bands the advice is to keep the current count (hysteresis). Memory
//! pressure adds one node at a time. Bandwidth asks for as many nodes as keep each under its
//! high mark. After the advice changes the count, it holds for `cooldown` (60 s) before it
//! changes again. The result lies within `min_nodes..=max_nodes` (1..=64).

use std::time::{Duration, Instant};

/// Cluster-wide figures over one observation interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    /// Nodes now.
    pub nodes: u32,
    /// Bytes cached, over all nodes.
    pub bytes_used: u64,
    /// Byte capacity, over all nodes.
    pub capacity_bytes: u64,
    /// Reads in the interval.
    pub reads: u64,
    /// Misses on lately evicted keys in the interval.
    pub ghost_hits: u64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Value bytes served per second, over all nodes.
    pub bytes_served_per_s: f64,
    /// The mean size of the objects served.
    pub mean_object_bytes: f64,
}

impl Observation {
    /// Bytes used over capacity.
    pub fn fill(&self) -> f64 {
        if self.capacity_bytes == 0 {
            0.0
        } else {
            self.bytes_used as f64 / self.capacity_bytes as f64
        }
    }

    /// Ghost hits per read.
    pub fn ghost_ratio(&self) -> f64 {
        if self.reads == 0 {
            0.0
        } else {
            self.ghost_hits as f64 / self.reads as f64
        }
    }
}

/// The advisor's thresholds; see the module docs for what each does.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Thresholds {
    /// Default: 0.90.
    pub fill_high: f64,
    /// Default: 0.40.
    pub fill_low: f64,
    /// Default: 0.05.
    pub ghost_high: f64,
    /// Default: 0.005.
    pub ghost_low: f64,
    /// Bytes per second one node can serve. Default: 100 MiB/s.
    pub bandwidth_per_node: f64,
    /// Default: 0.75.
    pub bandwidth_high: f64,
    /// Default: 0.25.
    pub bandwidth_low: f64,
    /// Objects at least this large lower the bandwidth mark to 0.60. Default: 1 MiB.
    pub large_object_bytes: f64,
    /// Default: 1.
    pub min_nodes: u32,
    /// Default: 64.
    pub max_nodes: u32,
    /// Default: 60 s.
    pub cooldown: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            fill_high: 0.90,
            fill_low: 0.40,
            ghost_high: 0.05,
            ghost_low: 0.005,
            bandwidth_per_node: 100.0 * 1024.0 * 1024.0,
            bandwidth_high: 0.75,
            bandwidth_low: 0.25,
            large_object_bytes: 1024.0 * 1024.0,
            min_nodes: 1,
            max_nodes: 64,
            cooldown: Duration::from_secs(60),
        }
    }
}

/// What the advisor recommends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    /// The recommended node count.
    pub desired_nodes: u32,
    /// Why, in words, with the figures that decided it.
    pub reason: String,
}

/// The advisor, with its memory of past advice.
#[derive(Debug, Clone, Default)]
pub struct Advisor {
    thresholds: Thresholds,
    last_change: Option<Instant>,
}

impl Advisor {
    /// An advisor with these thresholds.
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            last_change: None,
        }
    }

    /// The advice for `obs`, observed at `now`.
    pub fn advise(&mut self, obs: &Observation, now: Instant) -> Advice {
        let t = &self.thresholds;
        let nodes = obs.nodes.max(1);
        let fill = obs.fill();
        let ghost = obs.ghost_ratio();
        let bw_mark = if obs.mean_object_bytes >= t.large_object_bytes {
            0.60
        } else {
            t.bandwidth_high
        };
        let per_node = obs.bytes_served_per_s / f64::from(nodes);
        let bw_util = per_node / t.bandwidth_per_node;
        let bw_nodes = (obs.bytes_served_per_s / (t.bandwidth_per_node * bw_mark)).ceil() as u32;
        let figures = format!(
            "fill {fill:.2}, ghost hits {ghost:.3}/read, {:.1} MiB/s per node ({:.0}% of \
             bandwidth), mean object {:.0} B",
            per_node / 1048576.0,
            100.0 * bw_util,
            obs.mean_object_bytes
        );
        let (want, why) = if bw_util > bw_mark {
            (
                bw_nodes.max(nodes + 1),
                "bandwidth per node is above its high mark",
            )
        } else if fill > t.fill_high && ghost > t.ghost_high {
            (
                nodes + 1,
                "the working set outgrows memory (full, and evicted keys come back)",
            )
        } else if nodes > 1
            && fill < t.fill_low
            && ghost < t.ghost_low
            && obs.bytes_served_per_s / f64::from(nodes - 1) / t.bandwidth_per_node
                < t.bandwidth_low
        {
            (
                nodes - 1,
                "memory and bandwidth are both under their low marks",
            )
        } else {
            (nodes, "within the bands")
        };
        let want = want.clamp(t.min_nodes, t.max_nodes.max(t.min_nodes));
        if want != nodes
            && let Some(last) = self.last_change
            && now.saturating_duration_since(last) < t.cooldown
        {
            return Advice {
                desired_nodes: nodes,
                reason: format!("cooldown after the last change ({why}); {figures}"),
            };
        }
        if want != nodes {
            self.last_change = Some(now);
        }
        Advice {
            desired_nodes: want,
            reason: format!("{why}; {figures}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(nodes: u32, fill: f64, ghost: f64, mib_s: f64) -> Observation {
        Observation {
            nodes,
            bytes_used: (fill * 1000.0) as u64,
            capacity_bytes: 1000,
            reads: 10_000,
            ghost_hits: (ghost * 10_000.0) as u64,
            requests_per_s: 1000.0,
            bytes_served_per_s: mib_s * 1048576.0,
            mean_object_bytes: 4096.0,
        }
    }

    #[test]
    fn a_working_set_larger_than_memory_scales_out() {
        let mut a = Advisor::default();
        let advice = a.advise(&obs(3, 0.97, 0.2, 10.0), Instant::now());
        assert_eq!(advice.desired_nodes, 4, "{}", advice.reason);
        assert!(advice.reason.contains("working set"));
    }

    #[test]
    fn full_but_no_returning_keys_holds() {
        // A full cache whose evicted keys never come back does not need more memory.
        let mut a = Advisor::default();
        assert_eq!(
            a.advise(&obs(3, 0.97, 0.0, 10.0), Instant::now())
                .desired_nodes,
            3
        );
    }

    #[test]
    fn bandwidth_asks_for_enough_nodes() {
        let mut a = Advisor::default();
        // 600 MiB/s over 2 nodes at 75 MiB/s each → 8 nodes.
        let advice = a.advise(&obs(2, 0.5, 0.0, 600.0), Instant::now());
        assert_eq!(advice.desired_nodes, 8, "{}", advice.reason);
        // Large objects lower the mark: 60 MiB/s each → 10 nodes.
        let mut big = obs(2, 0.5, 0.0, 600.0);
        big.mean_object_bytes = 4.0 * 1048576.0;
        assert_eq!(
            Advisor::default()
                .advise(&big, Instant::now())
                .desired_nodes,
            10
        );
    }

    #[test]
    fn idle_and_empty_scales_in_but_not_below_the_minimum() {
        let mut a = Advisor::default();
        assert_eq!(
            a.advise(&obs(3, 0.1, 0.0, 1.0), Instant::now())
                .desired_nodes,
            2
        );
        assert_eq!(
            Advisor::default()
                .advise(&obs(1, 0.0, 0.0, 0.0), Instant::now())
                .desired_nodes,
            1
        );
    }

    #[test]
    fn hysteresis_band_holds() {
        let mut a = Advisor::default();
        // Between the low and high marks on every signal.
        assert_eq!(
            a.advise(&obs(4, 0.6, 0.02, 40.0), Instant::now())
                .desired_nodes,
            4
        );
    }

    #[test]
    fn cooldown_holds_after_a_change() {
        let mut a = Advisor::default();
        let t0 = Instant::now();
        assert_eq!(a.advise(&obs(3, 0.97, 0.2, 10.0), t0).desired_nodes, 4);
        // The platform scaled to 4, still under pressure: hold during the cooldown.
        let held = a.advise(&obs(4, 0.97, 0.2, 10.0), t0 + Duration::from_secs(30));
        assert_eq!(held.desired_nodes, 4);
        assert!(held.reason.starts_with("cooldown"));
        assert_eq!(
            a.advise(&obs(4, 0.97, 0.2, 10.0), t0 + Duration::from_secs(61))
                .desired_nodes,
            5
        );
    }
}
