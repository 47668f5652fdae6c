//! The fencing rules, driven through adversarial interleavings by a small model of a cluster:
//! nodes that adopt epochs late, writes that reach the store after their node moved on, acks
//! delivered in any order, crashes and restarts. Two invariants are checked after every step:
//! at most one node may serve a key from its cache, and a cached copy that may be served is
//! the store's current content. The same runs with fencing off must break them.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::*;

const NODES: [&str; 3] = ["n0:1", "n1:1", "n2:1"];
const KEYS: [&str; 4] = ["a", "b", "c", "d"];

/// A write a node admitted: the epoch it was admitted at, and whether it reached the store.
#[derive(Debug, Clone)]
struct InFlight {
    key: &'static str,
    epoch: u64,
    value: u64,
    stored: bool,
}

#[derive(Debug, Clone)]
struct Node {
    up: bool,
    own: Ownership,
    cache: HashMap<&'static str, u64>,
    writes: Vec<InFlight>,
    /// Loads in progress: key, value read from the store, generation when read.
    loads: Vec<(&'static str, u64, u64)>,
    generation: u64,
}

#[derive(Debug)]
struct Model {
    fencing: bool,
    records: BTreeMap<u64, Membership>,
    store: HashMap<&'static str, u64>,
    next_value: u64,
    nodes: Vec<Node>,
}

impl Model {
    fn new(fencing: bool) -> Self {
        let first = Membership::new(1, NODES).unwrap();
        let nodes = NODES
            .iter()
            .map(|me| Node {
                up: true,
                own: Ownership::new(*me, first.clone(), fencing),
                cache: HashMap::new(),
                writes: Vec::new(),
                loads: Vec::new(),
                generation: 0,
            })
            .collect();
        Self {
            fencing,
            records: BTreeMap::from([(1, first)]),
            store: HashMap::new(),
            next_value: 1,
            nodes,
        }
    }

    fn latest(&self) -> u64 {
        *self.records.keys().next_back().unwrap()
    }

    fn adopt(&mut self, n: usize, epoch: u64) {
        let between: Vec<Membership> = self
            .records
            .range(self.nodes[n].own.epoch() + 1..epoch)
            .map(|(_, m)| m.clone())
            .collect();
        let next = self.records[&epoch].clone();
        let node = &mut self.nodes[n];
        if let Some(adopted) = node.own.adopt(next, between) {
            // In-flight loads may not land, and copies of keys not kept are dropped.
            node.generation += 1;
            let me = node.own.me().to_owned();
            node.cache.retain(|k, _| adopted.kept(k, &me));
        }
    }

    /// Applies one step chosen by `choice`; steps that are not enabled do nothing.
    fn step(&mut self, choice: (u8, u8, u8, u8)) {
        let (kind, a, b, c) = choice;
        let n = a as usize % NODES.len();
        let key = KEYS[b as usize % KEYS.len()];
        match kind % 10 {
            // A controller claims a new epoch with a random non-empty subset of the nodes.
            0 => {
                let mask = (b % 7) + 1;
                let members: Vec<&str> = NODES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, m)| *m)
                    .collect();
                let epoch = self.latest() + 1;
                self.records
                    .insert(epoch, Membership::new(epoch, members).unwrap());
            }
            // A node learns some newer epoch (not necessarily the latest).
            1 => {
                if self.nodes[n].up {
                    let from = self.nodes[n].own.epoch();
                    let span = self.latest() - from;
                    if span > 0 {
                        self.adopt(n, from + 1 + u64::from(c) % span);
                    }
                }
            }
            // Node `a` asks node `b` to ack its epoch; `b` answers only when it is at that
            // epoch or later and none of its older writes is in flight. A node that is down
            // is presumed fenced (its process is gone).
            2 => {
                let m = b as usize % NODES.len();
                if !self.nodes[n].up {
                    return;
                }
                if n == m {
                    // A node fences itself, on the same terms as for a peer.
                    let node = &self.nodes[n];
                    let oldest = node.writes.iter().map(|w| w.epoch).min();
                    let epoch = oldest.map_or(node.own.epoch(), |w| w.min(node.own.epoch()));
                    let (me, sealed) = (NODES[n], node.own.sealed());
                    self.nodes[n].own.record_ack(me, epoch, sealed);
                    return;
                }
                let want = self.nodes[n].own.epoch();
                if self.nodes[m].up {
                    if self.nodes[m].own.epoch() < want {
                        self.adopt(m, want);
                    }
                    // The ack names the epoch below which no write of `b` is in flight: its
                    // current epoch, or its oldest write in flight's, whichever is lower.
                    let other = &self.nodes[m];
                    let oldest = other.writes.iter().map(|w| w.epoch).min();
                    let epoch = oldest.map_or(other.own.epoch(), |w| w.min(other.own.epoch()));
                    if epoch < want {
                        return;
                    }
                    let sealed = other.own.sealed();
                    let me = NODES[m];
                    self.nodes[n].own.record_ack(me, epoch, sealed);
                } else {
                    self.nodes[n].own.record_ack(NODES[m], want, 0);
                }
            }
            // A write is admitted: the node owns the key and it is settled.
            3 => {
                let node = &mut self.nodes[n];
                if node.up && node.own.access(key) == Ok(Access::Cached) {
                    node.cache.remove(key);
                    node.generation += 1;
                    node.writes.push(InFlight {
                        key,
                        epoch: node.own.epoch(),
                        value: self.next_value,
                        stored: false,
                    });
                    self.next_value += 1;
                }
            }
            // An admitted write reaches the store (possibly long after its node moved on).
            4 => {
                let node = &mut self.nodes[n];
                if let Some(w) = node.writes.iter_mut().find(|w| !w.stored) {
                    w.stored = true;
                    self.store.insert(w.key, w.value);
                }
            }
            // A stored write finishes: the node caches it if nothing raced it.
            5 => {
                let node = &mut self.nodes[n];
                if let Some(i) = node.writes.iter().position(|w| w.stored) {
                    let w = node.writes.remove(i);
                    let raced = node.writes.iter().any(|o| o.key == w.key);
                    if !raced && node.own.access(w.key) == Ok(Access::Cached) {
                        node.cache.insert(w.key, w.value);
                    }
                    node.generation += 1;
                }
            }
            // A miss reads the store...
            6 => {
                let node = &mut self.nodes[n];
                if node.up && node.own.access(key) == Ok(Access::Cached) {
                    let value = self.store.get(key).copied().unwrap_or(0);
                    node.loads.push((key, value, node.generation));
                }
            }
            // ...and caches what it read, unless the node moved on or a write raced it.
            7 => {
                let node = &mut self.nodes[n];
                if let Some((key, value, generation)) = node.loads.pop()
                    && generation == node.generation
                    && node.own.access(key) == Ok(Access::Cached)
                    && !node.writes.iter().any(|w| w.key == key)
                {
                    node.cache.insert(key, value);
                }
            }
            // A crash: the cache and the loads are gone; writes not yet stored never are.
            8 => {
                let node = &mut self.nodes[n];
                if node.up && c % 4 == 0 {
                    node.up = false;
                    node.cache.clear();
                    node.loads.clear();
                    node.writes.clear();
                }
            }
            // A restart, at the latest epoch in the store, knowing nothing else.
            _ => {
                if !self.nodes[n].up {
                    let latest = self.records[&self.latest()].clone();
                    let node = &mut self.nodes[n];
                    node.up = true;
                    node.own = Ownership::new(NODES[n], latest, self.fencing);
                    node.generation += 1;
                }
            }
        }
    }

    /// At most one node may serve each key from its cache, and what it would serve is the
    /// store's current content.
    fn check(&self) -> Result<(), String> {
        for key in KEYS {
            let serving: Vec<usize> = (0..NODES.len())
                .filter(|&n| {
                    let node = &self.nodes[n];
                    node.up && node.own.access(key) == Ok(Access::Cached)
                })
                .collect();
            if serving.len() > 1 {
                return Err(format!("{key} may be served by nodes {serving:?}"));
            }
            for &n in &serving {
                let stored = self.store.get(key).copied().unwrap_or(0);
                if let Some(&cached) = self.nodes[n].cache.get(key)
                    && cached != stored
                {
                    return Err(format!(
                        "node {n} serves {key}={cached} while the store holds {stored}"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn run(fencing: bool, steps: &[(u8, u8, u8, u8)]) -> Result<(), String> {
    let mut model = Model::new(fencing);
    for (i, &step) in steps.iter().enumerate() {
        model.step(step);
        model
            .check()
            .map_err(|e| format!("after step {i} {step:?}: {e}"))?;
    }
    Ok(())
}

fn steps() -> impl Strategy<Value = Vec<(u8, u8, u8, u8)>> {
    proptest::collection::vec(any::<(u8, u8, u8, u8)>(), 1..400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// With fencing, no interleaving breaks the invariants.
    #[test]
    fn fenced_ownership_holds_under_any_interleaving(steps in steps()) {
        prop_assert_eq!(run(true, &steps), Ok(()));
    }
}

/// The negative control: the same model with fencing off breaks the invariants, and the
/// search finds such a run quickly.
#[test]
fn unfenced_ownership_is_caught() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut failures = 0;
    for _ in 0..200 {
        let steps = steps().new_tree(&mut runner).unwrap().current();
        if run(false, &steps).is_err() {
            failures += 1;
        }
    }
    assert!(failures > 0, "no run without fencing broke an invariant");
}

#[test]
fn a_new_owner_waits_for_the_previous_owners_ack() {
    let one = Membership::new(1, ["a:1", "b:1"]).unwrap();
    let two = Membership::new(2, ["a:1", "b:1", "c:1"]).unwrap();
    let moved = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| one.owner(k) == "a:1" && two.owner(k) == "c:1")
        .unwrap();
    let stayed = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| one.owner(k) == "b:1" && two.owner(k) == "b:1")
        .unwrap();
    let mut c = Ownership::new("c:1", one.clone(), true);
    c.adopt(two.clone(), Vec::new()).unwrap();
    assert_eq!(c.access(&moved), Ok(Access::Unsettled));
    assert_eq!(c.fence_targets(), ["a:1", "b:1"]);
    c.record_ack("a:1", 2, 1);
    assert_eq!(
        c.access(&moved),
        Ok(Access::Cached),
        "a, the only previous owner, acked"
    );
    assert!(!c.is_sealed(), "b has not acked yet");
    c.record_ack("b:1", 2, 1);
    assert!(c.is_sealed());
    assert_eq!(c.fence_targets(), Vec::<String>::new());
    assert!(matches!(
        c.access(&stayed),
        Err(Error::WrongOwner { epoch: 2, .. })
    ));

    // b owned the key throughout: it stays settled at once.
    let mut b = Ownership::new("b:1", one, true);
    let adopted = b.adopt(two, Vec::new()).unwrap();
    assert!(adopted.kept(&stayed, "b:1"));
    assert_eq!(b.access(&stayed), Ok(Access::Cached));
}

#[test]
fn a_node_counts_itself_in_a_seal_only_once_it_has_fenced_itself() {
    // Epoch 1 is a alone; at epoch 2, b joins. Others take a's seal as a fact, so it must not
    // count a's ack before a has fenced itself (its epoch-1 writes ended, its leases on keys
    // it gave up revoked), although a's own decisions count it at its current epoch.
    let first = Membership::new(1, ["a:1"]).unwrap();
    let mut a = Ownership::new("a:1", first, true);
    a.adopt(Membership::new(2, ["a:1", "b:1"]).unwrap(), vec![])
        .unwrap();
    assert_eq!(a.acked("a:1"), 2);
    assert!(!a.is_sealed(), "sealed before a fenced itself");
    a.record_ack("a:1", 2, 1);
    assert!(a.is_sealed());
}

#[test]
fn seals_pass_between_nodes_and_unknown_lists_keep_keys_unsettled() {
    let lists: Vec<Membership> = (1..=4)
        .map(|e| {
            Membership::new(e, ["a:1", "b:1"].iter().take(1 + e as usize % 2).copied()).unwrap()
        })
        .collect();
    // A node that starts at epoch 4 knows no older list: nothing it gained is settled.
    let mut a = Ownership::new("a:1", lists[3].clone(), true);
    assert!(!a.is_sealed());
    assert_eq!(a.missing_lists(), [3, 2, 1]);
    assert!(!a.settled("anything"));
    // A peer says epoch 4 is sealed: everything is.
    a.learn_seal(9);
    assert_eq!(a.sealed(), 4);
    assert!(a.settled("anything"));
}

#[test]
fn epoch_records_round_trip_and_refuse_mismatches() {
    let m = Membership::new(7, ["x:1", "y:1"]).unwrap();
    let record = EpochRecord::of(&m);
    let path = EpochRecord::path(7);
    assert_eq!(path, "_cachelet/epochs/00000000000000000007");
    assert_eq!(EpochRecord::epoch_of_path(&path), Some(7));
    assert_eq!(EpochRecord::epoch_of_path("_cachelet/epochs/7"), None);
    assert_eq!(
        EpochRecord::parse(7, &record.to_bytes()),
        Ok(record.clone())
    );
    assert!(EpochRecord::parse(8, &record.to_bytes()).is_err());
    assert!(EpochRecord::parse(7, b"not json").is_err());
    assert!(EpochRecord::parse(0, br#"{"epoch":0,"members":["x:1"]}"#).is_err());
}
