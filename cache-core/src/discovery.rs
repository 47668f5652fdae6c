//! From "who is alive" to a member list: the decision that every discovery source (a static
//! list, DNS, the Kubernetes API, gossip) feeds, so that a scale event from any of them takes
//! the same path as one from `SetMembers`.
//!
//! Each node keeps a [`Proposer`] and tells it, whenever its source reports, which addresses
//! are alive. The proposer answers whether this node should propose a new member list, and
//! which:
//! - a newly seen address joins only after it has been seen alive for the damping period, so
//!   that a member that flaps is not added and removed over and over;
//! - a member that is no longer seen alive leaves at once: the source's own failure detection
//!   (a readiness probe, a gossip detector) has already waited;
//! - only one node proposes: the lowest-addressed member of the proposed list that sees
//!   itself alive. Nodes that see the same world pick the same proposer; nodes whose views
//!   differ may each propose, and the fenced claim of the next epoch in the store
//!   ([`crate::fence`]) lets exactly one of them win, which every other node adopts.
//!
//! The proposer holds no clock: every call takes the time, so tests drive it through any
//! interleaving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The damping of joins, by default: an address must be seen alive this long first.
pub const DEFAULT_READY_FOR: Duration = Duration::from_secs(5);

/// One node's view of who is alive, and its decision to propose.
#[derive(Debug, Clone)]
pub struct Proposer {
    me: String,
    ready_for: Duration,
    /// Every address seen alive in the last report, with when it was first seen alive (in
    /// an unbroken run of reports).
    alive: BTreeMap<String, Instant>,
    /// The fault of [`Proposer::eager`].
    eager: bool,
}

impl Proposer {
    /// A proposer for the node at `me`, whose joins wait `ready_for`.
    pub fn new(me: impl Into<String>, ready_for: Duration) -> Self {
        Self {
            me: me.into(),
            ready_for,
            alive: BTreeMap::new(),
            eager: false,
        }
    }

    /// Every member of the new list proposes it, not only the lowest-addressed. Unsafe: only
    /// for checking that the tests catch more than one proposer.
    #[doc(hidden)]
    pub fn eager(mut self) -> Self {
        self.eager = true;
        self
    }

    /// Records a report of the addresses alive at `now`. An address missing from a report
    /// starts its damping period afresh when it comes back.
    pub fn observe<I, S>(&mut self, now: Instant, alive: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut next = BTreeMap::new();
        for addr in alive {
            let addr = addr.into();
            let since = self.alive.get(&addr).copied().unwrap_or(now);
            next.insert(addr, since);
        }
        self.alive = next;
    }

    /// The member list this node should propose at `now`, given the `current` one, or `None`
    /// when the list should stay or another node should propose. The list holds the current
    /// members still alive, and the addresses alive for the damping period.
    pub fn proposal(&self, now: Instant, current: &[String]) -> Option<Vec<String>> {
        let target: Vec<String> = self
            .alive
            .iter()
            .filter(|(addr, since)| {
                current.contains(addr) || now.saturating_duration_since(**since) >= self.ready_for
            })
            .map(|(addr, _)| addr.clone())
            .collect();
        if target.is_empty() {
            return None;
        }
        let mut sorted_current = current.to_vec();
        sorted_current.sort();
        sorted_current.dedup();
        if target == sorted_current {
            return None;
        }
        // The lowest-addressed member of the new list proposes; `target` is sorted.
        let proposes = target[0] == self.me || (self.eager && target.contains(&self.me));
        proposes.then_some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(addrs: &[&str]) -> Vec<String> {
        addrs.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn a_new_member_joins_after_the_damping_period() {
        let t0 = Instant::now();
        let ready = Duration::from_secs(5);
        let mut p = Proposer::new("a:1", ready);
        let current = list(&["a:1"]);
        p.observe(t0, ["a:1", "b:1"]);
        assert_eq!(p.proposal(t0, &current), None, "not yet");
        p.observe(t0 + ready, ["a:1", "b:1"]);
        assert_eq!(
            p.proposal(t0 + ready, &current),
            Some(list(&["a:1", "b:1"]))
        );
    }

    #[test]
    fn a_member_that_flaps_starts_its_period_again() {
        let t0 = Instant::now();
        let ready = Duration::from_secs(5);
        let mut p = Proposer::new("a:1", ready);
        let current = list(&["a:1"]);
        p.observe(t0, ["a:1", "b:1"]);
        p.observe(t0 + Duration::from_secs(4), ["a:1"]);
        p.observe(t0 + Duration::from_secs(6), ["a:1", "b:1"]);
        assert_eq!(p.proposal(t0 + Duration::from_secs(8), &current), None);
        assert!(p.proposal(t0 + Duration::from_secs(11), &current).is_some());
    }

    #[test]
    fn a_dead_member_leaves_at_once_and_a_live_one_stays() {
        let t0 = Instant::now();
        let mut p = Proposer::new("a:1", Duration::from_secs(60));
        let current = list(&["a:1", "b:1", "c:1"]);
        p.observe(t0, ["a:1", "c:1"]);
        assert_eq!(p.proposal(t0, &current), Some(list(&["a:1", "c:1"])));
        p.observe(t0, ["a:1", "b:1", "c:1"]);
        assert_eq!(p.proposal(t0, &current), None, "nothing to change");
    }

    #[test]
    fn only_the_lowest_addressed_member_proposes() {
        let t0 = Instant::now();
        let current = list(&["b:1", "c:1"]);
        let mut b = Proposer::new("b:1", Duration::ZERO);
        let mut c = Proposer::new("c:1", Duration::ZERO);
        for p in [&mut b, &mut c] {
            p.observe(t0, ["a:1", "b:1", "c:1"]);
        }
        assert_eq!(b.proposal(t0, &current), None, "a proposes, not b");
        assert_eq!(c.proposal(t0, &current), None);
        let mut a = Proposer::new("a:1", Duration::ZERO);
        a.observe(t0, ["a:1", "b:1", "c:1"]);
        assert_eq!(a.proposal(t0, &current), Some(list(&["a:1", "b:1", "c:1"])));
    }

    /// Olric's failure: two nodes that start at the same moment with one seed each form a
    /// cluster of their own. Here both see each other alive, the lower one proposes both, and
    /// the other proposes nothing: one cluster.
    #[test]
    fn two_nodes_started_together_form_one_cluster() {
        let t0 = Instant::now();
        let ready = Duration::from_secs(1);
        let mut a = Proposer::new("a:1", ready);
        let mut b = Proposer::new("b:1", ready);
        a.observe(t0, ["a:1", "b:1"]);
        b.observe(t0, ["b:1", "a:1"]);
        let later = t0 + ready;
        a.observe(later, ["a:1", "b:1"]);
        b.observe(later, ["a:1", "b:1"]);
        // Each starts alone in its own list.
        assert_eq!(
            a.proposal(later, &list(&["a:1"])),
            Some(list(&["a:1", "b:1"]))
        );
        assert_eq!(b.proposal(later, &list(&["b:1"])), None);
    }

    /// The control: with every member proposing, the one-proposer check fails.
    #[test]
    fn the_check_catches_more_than_one_proposer() {
        let t0 = Instant::now();
        let current = list(&["a:1"]);
        let proposals = ["a:1", "b:1", "c:1"]
            .iter()
            .map(|me| {
                let mut p = Proposer::new(*me, Duration::ZERO).eager();
                p.observe(t0, ["a:1", "b:1", "c:1"]);
                p.proposal(t0, &current)
            })
            .filter(Option::is_some)
            .count();
        assert!(proposals > 1, "the fault shows: {proposals} proposers");
    }

    proptest! {
        /// Nodes that see the same world: at most one proposes, and what it proposes is the
        /// set of live addresses that are members or past their damping period.
        #[test]
        fn nodes_with_one_view_have_at_most_one_proposer(
            alive in prop::collection::btree_set(0u8..12, 1..8),
            members in prop::collection::btree_set(0u8..12, 1..8),
            young in prop::collection::btree_set(0u8..12, 0..4),
        ) {
            let t0 = Instant::now();
            let ready = Duration::from_secs(10);
            let name = |i: &u8| format!("10.0.0.{i}:7070");
            let current: Vec<String> = members.iter().map(name).collect();
            let mut proposers: Vec<Proposer> =
                alive.iter().map(|i| Proposer::new(name(i), ready)).collect();
            for p in &mut proposers {
                // Old addresses were seen long ago; young ones just now.
                p.observe(t0, alive.iter().filter(|i| !young.contains(i)).map(name));
                p.observe(t0 + ready, alive.iter().map(name));
            }
            let now = t0 + ready;
            let proposals: Vec<Vec<String>> =
                proposers.iter().filter_map(|p| p.proposal(now, &current)).collect();
            prop_assert!(proposals.len() <= 1, "{proposals:?}");
            if let Some(list) = proposals.first() {
                for addr in list {
                    let i: u8 = addr[7..addr.len() - 5].parse().unwrap();
                    prop_assert!(alive.contains(&i));
                    prop_assert!(members.contains(&i) || !young.contains(&i));
                }
                prop_assert_ne!(list.clone(), current.clone());
            }
        }
    }
}
