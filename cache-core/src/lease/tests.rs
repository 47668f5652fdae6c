//! Unit tests, and a model of one home node and its holders driven through random
//! interleavings, with writes that do not wait for invalidations as the negative control.

use std::collections::{HashMap, VecDeque};

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::*;

const LEASE: Duration = Duration::from_millis(2000);

fn config() -> LeaseConfig {
    LeaseConfig::with_lease(LEASE)
}

#[test]
fn a_write_waits_for_its_holders_until_they_ack_or_expire() {
    let t0 = Instant::now();
    let mut dir = Directory::new(config());
    let mark = dir.write_mark();
    assert_eq!(dir.grant("k", 1, mark, 0, t0), Some(LEASE));
    assert_eq!(dir.grant("k", 2, mark, 0, t0), Some(LEASE));
    let sends = dir.begin_write("k", t0);
    assert_eq!(sends.len(), 2);
    // No lease while the write is in progress.
    assert_eq!(dir.grant("k", 3, dir.write_mark(), 0, t0), None);
    assert_eq!(dir.wait_until("k", t0), Some(t0 + LEASE));
    dir.ack(sends[0].holder, "k", sends[0].seq);
    assert_eq!(dir.wait_until("k", t0), Some(t0 + LEASE));
    // The other holder is gone: the write waits for its lease to end, and no longer.
    assert_eq!(dir.wait_until("k", t0 + LEASE), None);
    dir.end_write("k");
    dir.expire(t0 + LEASE);
    assert_eq!(dir.active(), 0);
}

#[test]
fn a_read_that_saw_the_value_before_a_write_gets_no_lease() {
    let t0 = Instant::now();
    let mut dir = Directory::new(config());
    let mark = dir.write_mark();
    let _ = dir.begin_write("k", t0);
    dir.end_write("k");
    assert_eq!(dir.grant("k", 1, mark, 0, t0), None);
    assert_eq!(dir.grant("k", 1, dir.write_mark(), 0, t0), Some(LEASE));
}

#[test]
fn a_new_epoch_refuses_older_grants_and_revokes_leases_on_keys_given_up() {
    let t0 = Instant::now();
    let mut dir = Directory::new(config());
    let mark = dir.write_mark();
    assert!(dir.grant("mine", 1, mark, 1, t0).is_some());
    assert!(dir.grant("moved", 1, mark, 1, t0).is_some());
    assert!(dir.grant("moved", 2, mark, 1, t0).is_some());
    dir.set_epoch(2);
    // An ownership check made at epoch 1 no longer counts.
    assert_eq!(dir.grant("moved", 3, mark, 1, t0), None);
    let sends = dir.revoke(|k| k == "mine", t0);
    assert_eq!(sends.len(), 2);
    assert!(sends.iter().all(|s| &*s.key == "moved"));
    assert_eq!(dir.wait_until_all(t0), Some(t0 + LEASE));
    for s in &sends {
        dir.ack(s.holder, &s.key, s.seq);
    }
    assert_eq!(dir.wait_until_all(t0), None);
    assert_eq!(dir.active(), 1);
}

#[test]
fn the_directory_is_bounded() {
    let t0 = Instant::now();
    let mut dir = Directory::new(LeaseConfig {
        max_leases: 2,
        ..config()
    });
    let mark = dir.write_mark();
    assert!(dir.grant("a", 1, mark, 0, t0).is_some());
    assert!(dir.grant("b", 1, mark, 0, t0).is_some());
    assert_eq!(dir.grant("c", 1, mark, 0, t0), None);
    // Renewing a lease held already is not a new one.
    assert!(dir.grant("a", 1, mark, 0, t0).is_some());
}

#[test]
fn a_holder_takes_no_lease_from_a_reply_an_invalidation_overtook() {
    let t0 = Instant::now();
    let mut holder = Holder::new(config());
    holder.connected();
    let ticket = holder.begin_read("k", t0);
    holder.invalidate("k");
    assert!(!holder.granted("k", "v1", ticket, LEASE));
    assert!(!holder.valid("k", "v1", t0));
    let ticket = holder.begin_read("k", t0);
    assert!(holder.granted("k", "v1", ticket, LEASE));
    assert!(holder.valid("k", "v1", t0));
    // Only for the version it was granted on.
    assert!(!holder.valid("k", "v0", t0));
    // Timed from the send, less the margin.
    assert!(!holder.valid("k", "v1", t0 + LEASE - config().margin));
    holder.broken();
    assert!(!holder.valid("k", "v1", t0));
}

/// What the model found wrong, if anything (printed when a case fails).
#[derive(Debug)]
#[allow(dead_code)]
struct Stale {
    holder: usize,
    key: usize,
    served: u64,
    completed: u64,
}

struct Client {
    holder: Holder,
    copies: HashMap<usize, u64>,
    /// Replies on the data stream: key, version, lease, ticket.
    replies: VecDeque<(usize, u64, Option<Duration>, Ticket)>,
    /// Invalidations on the invalidation stream.
    invalidations: VecDeque<Invalidation>,
    /// Acknowledgements on their way to the home node.
    acks: VecDeque<Invalidation>,
}

enum Phase {
    /// Invalidations sent; waiting for them before changing anything.
    Began,
    /// The store and the cache hold the new value.
    Applied { version: u64 },
}

struct Write {
    key: usize,
    phase: Phase,
}

struct Model {
    now: Instant,
    dir: Directory,
    clients: Vec<Client>,
    applied: Vec<u64>,
    completed: Vec<u64>,
    /// Per key, the newest version a finished read returned.
    seen: Vec<u64>,
    /// Reads that reached the home node: holder, key, ticket, then the mark and version once
    /// the value is read.
    reads: VecDeque<(usize, usize, Ticket)>,
    reading: VecDeque<(usize, usize, Ticket, u64, u64)>,
    writes: Vec<Write>,
    /// A fault to inject, for the negative controls.
    fault: Fault,
}

/// The faults the negative controls inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Writes complete without waiting for invalidations.
    UnleasedWrites,
    /// Grants ignore writes that overlapped the read of the value.
    NoWriteMark,
    /// A lease covers whatever copy the holder has, not the version it was granted on.
    AnyCopy,
}

const KEYS: usize = 2;
const HOLDERS: usize = 2;

fn name(key: usize) -> String {
    format!("k{key}")
}

impl Model {
    fn new(fault: Fault) -> Self {
        let clients = (0..HOLDERS)
            .map(|_| {
                let mut holder = Holder::new(config());
                holder.connected();
                Client {
                    holder,
                    copies: HashMap::new(),
                    replies: VecDeque::new(),
                    invalidations: VecDeque::new(),
                    acks: VecDeque::new(),
                }
            })
            .collect();
        Self {
            now: Instant::now(),
            dir: Directory::new(config()),
            clients,
            applied: vec![0; KEYS],
            completed: vec![0; KEYS],
            seen: vec![0; KEYS],
            reads: VecDeque::new(),
            reading: VecDeque::new(),
            writes: Vec::new(),
            fault,
        }
    }

    fn step(&mut self, op: u8, a: u8, b: u8, ms: u16) -> Result<(), Stale> {
        let h = usize::from(a) % HOLDERS;
        let k = usize::from(b) % KEYS;
        // Reads and their replies are the common steps; time and broken streams the rare ones.
        const STEPS: [u8; 16] = [0, 1, 0, 2, 3, 4, 4, 5, 6, 7, 8, 9, 2, 3, 10, 11];
        match STEPS[usize::from(op % 16)] {
            // A read: local under a valid lease, else sent to the home node.
            0 | 1 => {
                let c = &mut self.clients[h];
                let copy = c.copies.get(&k).copied();
                if let Some(served) = copy
                    && (c.holder.valid(&name(k), &served.to_string(), self.now)
                        || self.fault == Fault::AnyCopy && c.holder.valid_any(&name(k), self.now))
                {
                    // A read never misses a completed write, nor goes back behind what a read
                    // that finished before it returned.
                    let floor = self.completed[k].max(self.seen[k]);
                    if served < floor {
                        return Err(Stale {
                            holder: h,
                            key: k,
                            served,
                            completed: floor,
                        });
                    }
                    self.seen[k] = served;
                } else {
                    let ticket = c.holder.begin_read(&name(k), self.now);
                    self.reads.push_back((h, k, ticket));
                }
            }
            // The home node reads the value of the oldest read that reached it.
            2 => {
                let pick = usize::from(ms) % self.reads.len().max(1);
                if let Some((h, k, ticket)) = self.reads.remove(pick) {
                    let mark = if self.fault == Fault::NoWriteMark {
                        u64::MAX
                    } else {
                        self.dir.write_mark()
                    };
                    self.reading
                        .push_back((h, k, ticket, mark, self.applied[k]));
                }
            }
            // ...and asks for the lease, and replies.
            3 => {
                if let Some((h, k, ticket, mark, version)) = self.reading.pop_front() {
                    let lease = self.dir.grant(&name(k), h as u64, mark, 0, self.now);
                    self.clients[h]
                        .replies
                        .push_back((k, version, lease, ticket));
                }
            }
            // A reply arrives: its value replaces the copy, and its lease is taken if it may be.
            4 => {
                let c = &mut self.clients[h];
                // Replies come back in the order their ops finish, not the order they were sent.
                let pick = usize::from(ms) % c.replies.len().max(1);
                if let Some((k, version, lease, ticket)) = c.replies.remove(pick) {
                    self.seen[k] = self.seen[k].max(version);
                    c.copies.insert(k, version);
                    if let Some(lease) = lease {
                        c.holder
                            .granted(&name(k), &version.to_string(), ticket, lease);
                    }
                }
            }
            // A write begins, or changes the store and the cache and tells the holders.
            5 => {
                for inv in self.dir.begin_write(&name(k), self.now) {
                    let c = &mut self.clients[inv.holder as usize];
                    if c.holder.is_connected() {
                        c.invalidations.push_back(inv);
                    }
                }
                self.writes.push(Write {
                    key: k,
                    phase: Phase::Began,
                });
            }
            // A write whose invalidations are all acknowledged or ended changes the store.
            6 => {
                let (dir, now) = (&self.dir, self.now);
                let unleased = self.fault == Fault::UnleasedWrites;
                if let Some(w) = self.writes.iter_mut().find(|w| {
                    matches!(w.phase, Phase::Began)
                        && (unleased || dir.wait_until(&name(w.key), now).is_none())
                }) {
                    self.applied[w.key] += 1;
                    w.phase = Phase::Applied {
                        version: self.applied[w.key],
                    };
                }
            }
            // An applied write completes.
            7 => {
                if let Some(i) = self
                    .writes
                    .iter()
                    .position(|w| matches!(w.phase, Phase::Applied { .. }))
                {
                    let w = self.writes.remove(i);
                    self.dir.end_write(&name(w.key));
                    if let Phase::Applied { version } = w.phase {
                        self.completed[w.key] = self.completed[w.key].max(version);
                    }
                }
            }
            // An invalidation arrives: the copy goes, then the acknowledgement.
            8 => {
                let c = &mut self.clients[h];
                if let Some(inv) = c.invalidations.pop_front() {
                    c.holder.invalidate(&inv.key);
                    let key: usize = inv.key[1..].parse().unwrap();
                    c.copies.remove(&key);
                    c.acks.push_back(inv);
                }
            }
            9 => {
                if let Some(inv) = self.clients[h].acks.pop_front() {
                    self.dir.ack(inv.holder, &inv.key, inv.seq);
                }
            }
            // Time passes, and leases end.
            10 => {
                self.now += Duration::from_millis(u64::from(ms % 1500));
                self.dir.expire(self.now);
                for c in &mut self.clients {
                    c.holder.expire(self.now);
                }
            }
            // The invalidation stream breaks (what was on it is lost), or opens again.
            _ => {
                let c = &mut self.clients[h];
                if c.holder.is_connected() && ms.is_multiple_of(2) {
                    c.holder.broken();
                    c.invalidations.clear();
                    c.acks.clear();
                } else if !c.holder.is_connected() {
                    c.holder.connected();
                }
            }
        }
        Ok(())
    }

    fn run(fault: Fault, ops: &[(u8, u8, u8, u16)]) -> Result<(), Stale> {
        let mut model = Self::new(fault);
        for &(op, a, b, ms) in ops {
            model.step(op, a, b, ms)?;
        }
        Ok(())
    }
}

fn schedule() -> impl Strategy<Value = Vec<(u8, u8, u8, u16)>> {
    proptest::collection::vec(any::<(u8, u8, u8, u16)>(), 1..400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// No local read misses a write that completed before it.
    #[test]
    fn leased_reads_see_every_completed_write(ops in schedule()) {
        if let Err(stale) = Model::run(Fault::None, &ops) {
            prop_assert!(false, "stale local read: {stale:?}");
        }
    }
}

/// How many of 2,048 schedules find a stale local read with `fault` injected.
fn stale_schedules(fault: Fault) -> usize {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    (0..2048)
        .filter(|_| {
            let ops = schedule().new_tree(&mut runner).unwrap().current();
            Model::run(fault, &ops).is_err()
        })
        .count()
}

/// A negative control: when writes complete without waiting for invalidations, the model
/// finds local reads that miss completed writes.
#[test]
fn writes_that_do_not_wait_are_caught() {
    let found = stale_schedules(Fault::UnleasedWrites);
    eprintln!("unleased writes: stale reads in {found} of 2048 schedules");
    assert!(found >= 10, "stale reads in only {found} of 2048 schedules");
}

/// A negative control: when a lease covers whatever copy the holder has, a late reply to an
/// older read replaces the leased copy and the model finds stale local reads.
#[test]
fn leases_that_cover_any_copy_are_caught() {
    let found = stale_schedules(Fault::AnyCopy);
    eprintln!("leases over any copy: stale reads in {found} of 2048 schedules");
    assert!(found >= 1, "no stale read in 2048 schedules");
}

/// A negative control: when a grant ignores a write that overlapped the read of its value,
/// the model finds local reads that miss completed writes.
#[test]
fn grants_that_ignore_overlapping_writes_are_caught() {
    let found = stale_schedules(Fault::NoWriteMark);
    eprintln!("grants without the write mark: stale reads in {found} of 2048 schedules");
    assert!(found >= 1, "no stale read in 2048 schedules");
}
