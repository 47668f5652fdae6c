//! From "who is alive" to a member list: the decision that every discovery source (a static
//! list, DNS, the Kubernetes API, gossip) feeds, so that a scale event from any of them takes
//! the same path as one from `SetMembers`.
//!
//! Each node keeps a [`Proposer`] and tells it, whenever its source reports, which addresses
//! are alive. The proposer answers whether this node should propose a new member list, and
//! which:
//! - a newly seen address joins only after it has been seen alive for the damping period, so
//!   that a member that flaps is not added and removed over and over;
//! - a member that this node saw alive and no longer sees leaves at once: the source's own
//!   failure detection (a readiness probe, a gossip detector) has already waited;
//! - a member that this node never saw alive is not taken for dead on its view alone: views
//!   differ (a gossip node that has not yet heard of every peer, a watch that lags), and two
//!   nodes that each remove the member the other cannot see would take turns replacing the
//!   list forever. Once such a member has stayed unseen for a while
//!   ([`DEFAULT_UNSEEN_FOR`]), [`Proposer::unconfirmed`] names it, the shell asks the member
//!   itself, and only a member that does not answer is [confirmed gone](Proposer::confirm_gone);
//! - only one node proposes: the lowest-addressed member of the proposed list that this node
//!   sees alive. Nodes that see the same world pick the same proposer; nodes whose views
//!   differ may each propose, and the fenced claim of the next epoch in the store
//!   ([`crate::fence`]) lets exactly one of them win, which every other node adopts.
//!
//! The proposer holds no clock: every call takes the time, so tests drive it through any
//! interleaving.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The damping of joins, by default: an address must be seen alive this long first.
pub const DEFAULT_READY_FOR: Duration = Duration::from_secs(5);

/// How long a member that this node never saw alive must stay unseen before the node asks it
/// whether it is alive, by default.
pub const DEFAULT_UNSEEN_FOR: Duration = Duration::from_secs(30);

/// One node's view of who is alive, and its decision to propose.
#[derive(Debug, Clone)]
pub struct Proposer {
    me: String,
    ready_for: Duration,
    /// Every address seen alive in the last report, with when it was first seen alive (in
    /// an unbroken run of reports).
    alive: BTreeMap<String, Instant>,
    /// Addresses seen alive in one report and missing from a later one.
    gone: BTreeSet<String>,
    /// Addresses that the shell found not answering (see [`Proposer::unconfirmed`]).
    confirmed: BTreeSet<String>,
    /// The first report.
    started: Option<Instant>,
    unseen_for: Duration,
    /// The fault of [`Proposer::eager`].
    eager: bool,
    /// The fault of [`Proposer::trusting`].
    trusting: bool,
}

impl Proposer {
    /// A proposer for the node at `me`, whose joins wait `ready_for`.
    pub fn new(me: impl Into<String>, ready_for: Duration) -> Self {
        Self {
            me: me.into(),
            ready_for,
            alive: BTreeMap::new(),
            gone: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            started: None,
            unseen_for: DEFAULT_UNSEEN_FOR,
            eager: false,
            trusting: false,
        }
    }

    /// How long a member never seen alive stays unseen before [`Proposer::unconfirmed`] names
    /// it (default [`DEFAULT_UNSEEN_FOR`]).
    pub fn unseen_for(mut self, unseen_for: Duration) -> Self {
        self.unseen_for = unseen_for;
        self
    }

    /// Takes every member missing from this node's view for dead, seen before or not. Unsafe:
    /// only for checking that the tests catch nodes whose views differ taking turns.
    #[doc(hidden)]
    pub fn trusting(mut self) -> Self {
        self.trusting = true;
        self
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
        self.started.get_or_insert(now);
        let mut next = BTreeMap::new();
        for addr in alive {
            let addr = addr.into();
            let since = self.alive.get(&addr).copied().unwrap_or(now);
            self.gone.remove(&addr);
            self.confirmed.remove(&addr);
            next.insert(addr, since);
        }
        for addr in self.alive.keys() {
            if !next.contains_key(addr) {
                self.gone.insert(addr.clone());
            }
        }
        self.alive = next;
    }

    /// Forgets what it knows of addresses that are neither in `current` nor alive, so that
    /// its memory stays bounded by the list and the view.
    pub fn settle(&mut self, current: &[String]) {
        let keep = |addr: &String| current.contains(addr);
        self.gone.retain(keep);
        self.confirmed.retain(keep);
    }

    /// The members of `current` that this node never saw alive and that have stayed unseen
    /// for the [`Proposer::unseen_for`] period: the shell asks each whether it is alive, and
    /// calls [`Proposer::confirm_gone`] for those that do not answer.
    pub fn unconfirmed(&self, now: Instant, current: &[String]) -> Vec<String> {
        let Some(started) = self.started else {
            return Vec::new();
        };
        if now.saturating_duration_since(started) < self.unseen_for {
            return Vec::new();
        }
        current
            .iter()
            .filter(|m| !self.alive.contains_key(*m) && !self.removable(m))
            .cloned()
            .collect()
    }

    /// Records that `addr` did not answer when asked: a member that leaves the next proposal
    /// unless it is seen alive again first.
    pub fn confirm_gone(&mut self, addr: &str) {
        self.confirmed.insert(addr.to_owned());
    }

    /// Whether a member missing from the view may be taken for dead.
    fn removable(&self, addr: &str) -> bool {
        self.trusting || self.gone.contains(addr) || self.confirmed.contains(addr)
    }

    /// The member list this node should propose at `now`, given the `current` one, or `None`
    /// when the list should stay or another node should propose. The list holds the current
    /// members but those known to be gone, and the addresses alive for the damping period.
    pub fn proposal(&self, now: Instant, current: &[String]) -> Option<Vec<String>> {
        let joined = self.alive.iter().filter(|(addr, since)| {
            current.contains(addr) || now.saturating_duration_since(**since) >= self.ready_for
        });
        let mut target: BTreeSet<&String> = joined.map(|(addr, _)| addr).collect();
        target.extend(current.iter().filter(|m| !self.removable(m)));
        let sorted_current: BTreeSet<&String> = current.iter().collect();
        if target.is_empty() || target == sorted_current {
            return None;
        }
        // The lowest-addressed member of the new list that this node sees alive proposes.
        let first_alive = target.iter().find(|m| self.alive.contains_key(**m));
        let proposes = first_alive == Some(&&self.me) || (self.eager && target.contains(&self.me));
        proposes.then(|| target.into_iter().cloned().collect())
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
        p.observe(t0, ["a:1", "b:1", "c:1"]);
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

    #[test]
    fn a_member_never_seen_stays_until_it_does_not_answer() {
        let t0 = Instant::now();
        let unseen = Duration::from_secs(30);
        let mut p = Proposer::new("a:1", Duration::ZERO).unseen_for(unseen);
        let current = list(&["a:1", "b:1"]);
        p.observe(t0, ["a:1"]);
        assert_eq!(p.proposal(t0, &current), None, "b was never seen: it stays");
        assert!(p.unconfirmed(t0, &current).is_empty(), "too early to ask");
        let later = t0 + unseen;
        p.observe(later, ["a:1"]);
        assert_eq!(p.unconfirmed(later, &current), list(&["b:1"]));
        p.confirm_gone("b:1");
        assert_eq!(p.proposal(later, &current), Some(list(&["a:1"])));
        // Seen alive again, it is no longer taken for gone.
        p.observe(later, ["a:1", "b:1"]);
        assert_eq!(p.proposal(later, &current), None);
    }

    #[test]
    fn settle_forgets_addresses_that_left() {
        let t0 = Instant::now();
        let mut p = Proposer::new("a:1", Duration::ZERO);
        p.observe(t0, ["a:1", "b:1"]);
        p.observe(t0, ["a:1"]);
        p.confirm_gone("c:1");
        p.settle(&list(&["a:1"]));
        assert!(p.gone.is_empty() && p.confirmed.is_empty());
    }

    /// Runs `rounds` rounds in which every node, with its own fixed view, proposes against
    /// the current list and the first proposal wins the next epoch; returns the number of
    /// list changes.
    fn changes(
        mut nodes: Vec<(Proposer, Vec<&str>)>,
        mut current: Vec<String>,
        rounds: u32,
    ) -> u32 {
        let t0 = Instant::now();
        let mut changed = 0;
        for round in 0..rounds {
            let now = t0 + Duration::from_secs(u64::from(round));
            let mut winner = None;
            for (p, view) in &mut nodes {
                p.observe(now, view.iter().copied());
                p.settle(&current);
                if winner.is_none() {
                    winner = p.proposal(now, &current);
                }
            }
            if let Some(next) = winner {
                current = next;
                changed += 1;
            }
        }
        changed
    }

    /// Olric's other failure: two nodes whose gossip has not met yet each see only
    /// themselves. Neither takes the other, a member it never saw, for dead: b joins a's
    /// list once, and the list then stays.
    #[test]
    fn nodes_whose_views_differ_do_not_take_turns() {
        let nodes = vec![
            (Proposer::new("a:1", Duration::ZERO), vec!["a:1"]),
            (Proposer::new("b:1", Duration::ZERO), vec!["b:1"]),
        ];
        let n = changes(nodes, list(&["a:1"]), 20);
        assert!(n <= 1, "{n} changes in 20 rounds");
    }

    /// The control: nodes that take whatever they do not see for dead replace each other's
    /// lists round after round, and the check above sees it.
    #[test]
    fn the_check_catches_nodes_taking_turns() {
        let nodes = vec![
            (Proposer::new("a:1", Duration::ZERO).trusting(), vec!["a:1"]),
            (Proposer::new("b:1", Duration::ZERO).trusting(), vec!["b:1"]),
        ];
        let n = changes(nodes, list(&["a:1"]), 20);
        assert!(n > 1, "the fault shows: {n} changes");
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
                    // A live address past its damping, or a member: one never seen alive
                    // is not taken for dead on a view alone.
                    prop_assert!(members.contains(&i) || (alive.contains(&i) && !young.contains(&i)));
                }
                prop_assert_ne!(list.clone(), current.clone());
            }
        }
    }
}
