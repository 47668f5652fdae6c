//! A linearizability checker for histories of single-register operations, one register per
//! key.
//!
//! # Semantics
//! Each key is a register holding a value tag or nothing (missing), missing at first unless
//! [`CheckOptions::initial`] says otherwise. An acknowledged operation takes effect at one
//! instant between its invoke and its completion:
//! - a read returns the register's tag (`None`: missing);
//! - a write sets its tag, a delete sets missing;
//! - a cas that succeeded needs the register to hold `expected` and sets its tag;
//! - a cas that failed (`ok: Some(false)`) needs the register not to hold `expected`, and
//!   changes nothing.
//!
//! A write, delete or cas of unknown outcome (`ok: None`) may take effect at any instant after
//! its invoke, or never. Reads that did not succeed, and writes and deletes that definitely
//! failed, say nothing and are left out. A history is linearizable when one total order of
//! the operations that matter respects real time (an operation that completed before another
//! was invoked comes first) and explains every result. Keys are independent registers, so
//! each key is checked on its own.
//!
//! # Search
//! The search is Wing and Gong's, with Lowe's improvements, as in Porcupine and Knossos. The
//! operations' invoke and completion events sit in one time-ordered, doubly linked list. Only
//! a *minimal* operation can be linearized next: one invoked before the earliest completion
//! of any operation still pending, that is, one whose invoke event comes before the first
//! completion event left in the list. The search tries each minimal operation whose effect is
//! legal in the current register state, lifts its two events out of the list, and goes on;
//! when a completion event is reached first, the operation at the top of the stack is put back
//! and the next candidate tried. A memo of (operations linearized, as a bitset; register
//! state) pairs already explored cuts every repeated configuration. The number of memo
//! entries is the search's cost: past [`CheckOptions::budget`] the key is reported
//! [`Report::unchecked`], never as fine and never as an anomaly.
//!
//! # Unknown outcomes
//! An operation of unknown outcome has no completion event: it may be linearized whenever it
//! is invoked and pending, and the key is linearizable once every *acknowledged* operation is
//! linearized (an unknown one never linearized is one that never took effect).
//!
//! Such an operation would stay pending to the end of the history, and tie every later part
//! (see *Partitions*) to it. The rules below prevent that. They rest on one argument. Take a
//! linearization in which an unknown write `u` of tag `t` takes effect at a point `p` after
//! which nothing mentions `t`: no read returns it and no cas expects it. Then `t` sits in the
//! register from `p` until the next change. In that window there is no read (it would return
//! `t`), no successful cas (it would expect `t`), and every unknown cas is a no-op, which may
//! as well never have happened. Removing `u` from the order puts the previous state `s` in
//! the window instead, and what is left of the order is still legal, except for one kind of
//! operation: **a failed cas** in the window whose `expected` is `s`. The register held `t`,
//! which made that cas fail; without `u` it would hold `s`, and the cas should have
//! succeeded. So, per key:
//!
//! 1. *Pruning.* An unknown write or cas whose tag nothing mentions after its invoke is
//!    dropped before the search, unless a failed cas completes after that invoke. Dropping
//!    cascades: an unknown cas that expected a dropped tag may lose its last observer. An
//!    unknown delete is dropped likewise when nothing mentions missing after its invoke.
//! 2. *Junk.* When a failed cas does complete later, such an unknown write or delete is kept,
//!    as a write of a *junk* tag that nothing mentions either: the same thing, for the search.
//! 3. *Horizons.* An unknown write (or cas) that alone writes a tag that an acknowledged
//!    operation observes took effect before that observer completed: the earliest such
//!    completion is its horizon. Otherwise its horizon is the latest completion of any
//!    operation mentioning its tag (for an unknown one, that one's horizon, to a fixed
//!    point). Past its horizon, nothing mentions its tag: taking effect then is writing junk.
//! 4. *The pool.* When a part ends, its unknown writes and deletes that were not linearized
//!    join a pool carried into the later parts. Each may still take effect, once, at any
//!    time, and that is writing junk, which matters only to a failed cas whose `expected` the
//!    register holds: such a cas may draw one write from the pool to take effect just before
//!    it. The pool's size is part of the memo key, capped at the number of failed cas ops
//!    left. An unknown cas is not pooled (it applies only in the state it expects); its
//!    horizon extends instead to the last completion of a failed cas on the key.
//!
//! # Partitions
//! Each key's operations are split at quiescent points: instants before which every
//! operation completed (or, if unknown, reached its horizon) and after which every operation
//! was invoked. Linearizations of the whole are exactly concatenations of linearizations of
//! the parts, but a part can end in several states (two concurrent writes end in either
//! order), so the search runs through the parts in turn, carrying the register state and the
//! pool across each boundary, and backtracking across boundaries when a later part fails from
//! the state an earlier one ended in. Memo entries hold the part's bitset compactly (leading
//! full words are counted, not stored), so they stay small however long a part is.
//!
//! # Reports
//! A sub-history that fails on its own shows that the whole fails too, when what was left
//! out *may be removed*: removing it could not by itself have broken a linearization. Reads
//! and failed cas ops may always be removed; a change may be, by the argument above, unless a
//! remaining operation that observes its tag, or a remaining failed cas, could fall in its
//! window (see `may_remove` for the details).
//!
//! For each key the checker first looks for anomalies of known shapes (see [`AnomalyKind`]),
//! each with a small witness: the operations involved, completed with the changes that may
//! not be removed around them (the writes of the tags they observe), which must fail on its
//! own. Such a witness settles the key without the whole search, which can take long when a
//! key fails in a long part. Otherwise the search decides. For a key that fails without a
//! known shape, the history is shrunk greedily, delta-debugging style (shortest failing
//! prefix, then suffix, then chunks of halving size, then single operations), keeping a
//! removal only when the rest still fails and the removal is allowed. Removing a write also
//! removes what observes its tag, so that no read is left returning a value nothing wrote.
//! What is left, typically 2 to 4 operations, is reported.

use std::collections::BTreeMap;
use std::fmt;

use fnv::{FnvHashMap, FnvHashSet};
use serde::Serialize;

use crate::history::{HistoryOp, OpKind};

/// The default [`CheckOptions::budget`]: memo entries per key.
pub const DEFAULT_BUDGET: u64 = 2_000_000;

/// The default [`CheckOptions::shrink_checks`].
pub const DEFAULT_SHRINK_CHECKS: u32 = 400;

/// The budget of each check made while shrinking or confirming a sub-history.
const SMALL_BUDGET: u64 = 200_000;

/// What kind of anomaly a failing key shows. A search decides that a key fails (on a witness
/// or on the whole history); the kind only labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A read returned the value of a write (or the initial state) while another acknowledged
    /// write or delete started after that write finished and finished before the read began.
    StaleRead,
    /// A stale read missed a write whose value no read that began after it returned, although
    /// such reads exist: the write looks lost. A read that missed a lost write is reported
    /// under that write.
    LostWrite,
    /// Non-linearizable in a way none of the other kinds describes.
    NonLinearizable,
    /// Two acknowledged cas operations replaced the same expected value.
    DoubleCasWinner,
    /// A read (or a successful cas) saw a value tag that nothing wrote and that is not the
    /// initial state.
    UnknownValue,
}

impl AnomalyKind {
    /// Every kind, in report order.
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::StaleRead,
        AnomalyKind::LostWrite,
        AnomalyKind::NonLinearizable,
        AnomalyKind::DoubleCasWinner,
        AnomalyKind::UnknownValue,
    ];

    /// The snake_case name used in [`Report::counts`].
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::StaleRead => "stale_read",
            AnomalyKind::LostWrite => "lost_write",
            AnomalyKind::NonLinearizable => "non_linearizable",
            AnomalyKind::DoubleCasWinner => "double_cas_winner",
            AnomalyKind::UnknownValue => "unknown_value",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One anomaly on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// The key.
    pub key: String,
    /// What it looks like.
    pub kind: AnomalyKind,
    /// A small sub-history of the key that is not linearizable on its own (from the same
    /// initial state), by invoke time.
    pub ops: Vec<HistoryOp>,
    /// What went wrong, in words.
    pub explanation: String,
}

impl fmt::Display for Anomaly {
    /// The kind, key and explanation, then one line per operation with times in microseconds
    /// since the first operation shown was invoked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on key {:?}: {}",
            self.kind, self.key, self.explanation
        )?;
        let t0 = self.ops.iter().map(|o| o.invoke_ns).min().unwrap_or(0);
        let us = |t: u64| t.saturating_sub(t0) as f64 / 1000.0;
        for op in &self.ops {
            let detail = match op.op {
                OpKind::Read => format!("returned {}", tag(op.value.as_deref())),
                OpKind::Write => format!("wrote {}", tag(op.value.as_deref())),
                OpKind::Delete => String::new(),
                OpKind::Cas => format!(
                    "{} -> {}",
                    tag(op.expected.as_deref()),
                    tag(op.value.as_deref())
                ),
            };
            let ok = match op.ok {
                Some(true) => "ok",
                Some(false) => "failed",
                None => "unknown",
            };
            write!(
                f,
                "\n  process {:<4} {:<6} {:<28} {:<7} [{:.1} .. {:.1}] µs",
                op.process,
                op.op,
                detail,
                ok,
                us(op.invoke_ns),
                us(op.complete_ns)
            )?;
        }
        Ok(())
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Operations in the history, counted before any was left out.
    pub ops: usize,
    /// Distinct keys in the history.
    pub keys: usize,
    /// The anomalies found, by key; at least one per failing key.
    pub anomalies: Vec<Anomaly>,
    /// Keys whose search ran out of budget: neither shown linearizable nor shown not to be.
    pub unchecked: Vec<String>,
}

impl Report {
    /// Whether every key was shown linearizable: no anomaly, and no key left unchecked.
    pub fn is_ok(&self) -> bool {
        self.anomalies.is_empty() && self.unchecked.is_empty()
    }

    /// Anomalies by kind, with every kind present, by snake_case name: `stale_read`,
    /// `lost_write`, `non_linearizable`, `double_cas_winner`, `unknown_value`.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut counts: BTreeMap<String, u64> = AnomalyKind::ALL
            .iter()
            .map(|k| (k.name().to_owned(), 0))
            .collect();
        for a in &self.anomalies {
            *counts.entry(a.kind.name().to_owned()).or_default() += 1;
        }
        counts
    }

    /// How many writes look lost ([`AnomalyKind::LostWrite`] anomalies; one per write).
    pub fn lost_writes(&self) -> u64 {
        self.anomalies
            .iter()
            .filter(|a| a.kind == AnomalyKind::LostWrite)
            .count() as u64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ops on {} keys: ", self.ops, self.keys)?;
        if self.is_ok() {
            return f.write_str("linearizable");
        }
        write!(f, "{} anomalies", self.anomalies.len())?;
        if !self.unchecked.is_empty() {
            write!(f, ", unchecked keys {:?}", self.unchecked)?;
        }
        for a in &self.anomalies {
            write!(f, "\n{a}")?;
        }
        Ok(())
    }
}

/// How to check. Build it with [`CheckOptions::default`] and the `with_*` setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckOptions {
    /// The most memo entries (explored search states) per key before the key is given up on
    /// and listed in [`Report::unchecked`]. Default: [`DEFAULT_BUDGET`].
    pub budget: u64,
    /// Each key's value tag before the history (`None`: missing). Keys not listed start
    /// missing. Default: empty.
    pub initial: BTreeMap<String, Option<String>>,
    /// The most checks spent shrinking one failing key's history to a minimal one. Default:
    /// [`DEFAULT_SHRINK_CHECKS`].
    pub shrink_checks: u32,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            budget: DEFAULT_BUDGET,
            initial: BTreeMap::new(),
            shrink_checks: DEFAULT_SHRINK_CHECKS,
        }
    }
}

impl CheckOptions {
    /// Sets [`CheckOptions::budget`].
    #[must_use]
    pub fn with_budget(mut self, budget: u64) -> Self {
        self.budget = budget;
        self
    }

    /// Sets `key`'s initial value tag (`None`: missing).
    #[must_use]
    pub fn with_initial(mut self, key: impl Into<String>, value: Option<&str>) -> Self {
        self.initial.insert(key.into(), value.map(str::to_owned));
        self
    }

    /// Sets [`CheckOptions::shrink_checks`].
    #[must_use]
    pub fn with_shrink_checks(mut self, checks: u32) -> Self {
        self.shrink_checks = checks;
        self
    }
}

/// Checks every key of `history` with the default options: every key starts missing.
///
/// # Examples
/// ```
/// use cache_testkit::history::HistoryOp;
/// use cache_testkit::linear::{AnomalyKind, check};
///
/// let history = [
///     HistoryOp::write(1, "k", "a", 0, 10),
///     HistoryOp::write(1, "k", "b", 20, 30),
///     HistoryOp::read(2, "k", Some("a"), 40, 50),
///     HistoryOp::read(3, "k", Some("b"), 60, 70),
/// ];
/// let report = check(&history);
/// assert_eq!(report.anomalies[0].kind, AnomalyKind::StaleRead);
/// // The write, the write it missed, the read.
/// assert_eq!(report.anomalies[0].ops, history[..3]);
/// assert!(check(&[history[0].clone(), history[1].clone(), history[3].clone()]).is_ok());
/// ```
pub fn check(history: &[HistoryOp]) -> Report {
    check_with(history, CheckOptions::default())
}

/// Checks every key of `history`, each starting from its state in `initial` (keys not listed
/// start missing).
pub fn check_with_initial(
    history: &[HistoryOp],
    initial: impl IntoIterator<Item = (String, Option<String>)>,
) -> Report {
    let mut opts = CheckOptions::default();
    opts.initial.extend(initial);
    check_with(history, opts)
}

/// Checks every key of `history` with `opts`.
pub fn check_with(history: &[HistoryOp], opts: CheckOptions) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&HistoryOp>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut report = Report {
        ops: history.len(),
        keys: by_key.len(),
        ..Report::default()
    };
    for (key, ops) in by_key {
        let mut ops: Vec<&HistoryOp> = ops.into_iter().filter(|o| matters(o)).collect();
        ops.sort_by_key(|o| (o.invoke_ns, o.complete_ns));
        let initial = opts.initial.get(key).and_then(|v| v.as_deref());
        // Known shapes of anomaly first: each found is shown by a small search, which also
        // spares the whole key's search when it would be long.
        let labelled = label(key, &ops, initial, &opts);
        if !labelled.is_empty() {
            report.anomalies.extend(labelled);
            continue;
        }
        match decide(&ops, initial, opts.budget) {
            Verdict::Linearizable => {}
            Verdict::OutOfBudget => report.unchecked.push(key.to_owned()),
            Verdict::Violation => {
                let core = shrink(&ops, initial, opts.shrink_checks);
                let explanation = format!(
                    "no order of these {} operations that respects real time explains every \
                     result (shrunk from {})",
                    core.len(),
                    ops.len()
                );
                report.anomalies.push(Anomaly {
                    key: key.to_owned(),
                    kind: AnomalyKind::NonLinearizable,
                    ops: core.into_iter().cloned().collect(),
                    explanation,
                });
            }
        }
    }
    report
}

/// Whether an operation says anything about the register (see the module docs).
fn matters(op: &HistoryOp) -> bool {
    match op.op {
        OpKind::Read => op.ok == Some(true),
        OpKind::Write | OpKind::Delete => op.ok != Some(false),
        OpKind::Cas => true,
    }
}

/// The tag an operation may leave in the register (`Some(None)`: missing), if it may change
/// it.
fn written(op: &HistoryOp) -> Option<Option<&str>> {
    match (op.op, op.ok) {
        (OpKind::Write | OpKind::Cas, Some(true) | None) => Some(op.value.as_deref()),
        (OpKind::Delete, Some(true) | None) => Some(None),
        _ => None,
    }
}

/// The tag an operation needs the register to hold (`Some(None)`: missing), if any.
fn observed(op: &HistoryOp) -> Option<Option<&str>> {
    match (op.op, op.ok) {
        (OpKind::Read, Some(true)) => Some(op.value.as_deref()),
        (OpKind::Cas, Some(true) | None) => Some(op.expected.as_deref()),
        _ => None,
    }
}

fn is_failed_cas(op: &HistoryOp) -> bool {
    op.op == OpKind::Cas && op.ok == Some(false)
}

fn tag(v: Option<&str>) -> String {
    v.map_or_else(|| "missing".to_owned(), |v| format!("{v:?}"))
}

// ---------------------------------------------------------------------------------------------
// The search.

/// A value tag, interned per key; `MISSING` is the empty register.
type Tag = u32;
const MISSING: Tag = 0;
/// No entry in a linked list.
const NIL: u32 = u32::MAX;
/// The completion time of an operation that may take effect at any time after its invoke.
const NEVER: u64 = u64::MAX;
/// The tag of unknown writes whose own tag nothing mentions (module docs: *Unknown
/// outcomes*).
const JUNK: Tag = Tag::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Linearizable,
    Violation,
    OutOfBudget,
}

/// An operation's effect on the register. A delete is a write of `MISSING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Read(Tag),
    Write(Tag),
    Cas { expected: Tag, value: Tag },
    CasFailed { expected: Tag },
}

impl Step {
    /// The state after the step, or `None` when the step cannot happen in `state`. An
    /// unknown-outcome cas in a state other than `expected` is a no-op, the same as never
    /// taking effect, so it is not tried there either.
    fn apply(self, state: Tag) -> Option<Tag> {
        match self {
            Step::Read(v) => (state == v).then_some(state),
            Step::Write(v) => Some(v),
            Step::Cas { expected, value } => (state == expected).then_some(value),
            Step::CasFailed { expected } => (state != expected).then_some(state),
        }
    }

    fn writes(self) -> Option<Tag> {
        match self {
            Step::Write(v) | Step::Cas { value: v, .. } => Some(v),
            Step::Read(_) | Step::CasFailed { .. } => None,
        }
    }

    /// The tag the register must hold for the step.
    fn observes(self) -> Option<Tag> {
        match self {
            Step::Read(v) | Step::Cas { expected: v, .. } => Some(v),
            Step::Write(_) | Step::CasFailed { .. } => None,
        }
    }

    /// The tag the step's legality depends on.
    fn mentions(self) -> Option<Tag> {
        match self {
            Step::CasFailed { expected } => Some(expected),
            _ => self.observes(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Op {
    step: Step,
    invoke: u64,
    /// `NEVER` for an operation of unknown outcome.
    complete: u64,
    /// Acknowledged (must be linearized), or of unknown outcome (may be).
    required: bool,
}

impl Op {
    /// An unknown write or delete: if still unused when its part ends, it joins the pool.
    fn pooled(&self) -> bool {
        !self.required && matches!(self.step, Step::Write(_))
    }
}

#[derive(Default)]
struct Tags<'a> {
    ids: FnvHashMap<&'a str, Tag>,
}

impl<'a> Tags<'a> {
    fn tag(&mut self, v: Option<&'a str>) -> Tag {
        let Some(v) = v else { return MISSING };
        let next = Tag::try_from(self.ids.len() + 1).unwrap_or(JUNK - 1);
        *self.ids.entry(v).or_insert(next)
    }
}

/// Converts one operation that [`matters`]. A write without a value tag acts as a delete.
fn to_op<'a>(h: &'a HistoryOp, tags: &mut Tags<'a>) -> Op {
    let step = match h.op {
        OpKind::Read => Step::Read(tags.tag(h.value.as_deref())),
        OpKind::Write => Step::Write(tags.tag(h.value.as_deref())),
        OpKind::Delete => Step::Write(MISSING),
        OpKind::Cas => {
            let expected = tags.tag(h.expected.as_deref());
            if h.ok == Some(false) {
                Step::CasFailed { expected }
            } else {
                Step::Cas {
                    expected,
                    value: tags.tag(h.value.as_deref()),
                }
            }
        }
    };
    let required = h.ok.is_some();
    Op {
        step,
        invoke: h.invoke_ns,
        complete: if required {
            h.complete_ns.max(h.invoke_ns)
        } else {
            NEVER
        },
        required,
    }
}

/// Whether the key's operations (which all [`matters`], sorted by invoke) are linearizable
/// from `initial`.
fn decide(ops: &[&HistoryOp], initial: Option<&str>, budget: u64) -> Verdict {
    let mut tags = Tags::default();
    let initial = tags.tag(initial);
    let ops: Vec<Op> = ops.iter().map(|h| to_op(h, &mut tags)).collect();
    let mut parts: Vec<Part> = partition(&ops, initial)
        .into_iter()
        .map(Part::new)
        .collect();
    search(&mut parts, initial, budget)
}

/// Prunes unknown-outcome operations that cannot matter, and splits the rest at quiescent
/// points (module docs: *Unknown outcomes*, *Partitions*).
fn partition(ops: &[Op], initial: Tag) -> Vec<Vec<Op>> {
    let mut ops = ops.to_vec();
    let last_failed_cas = ops
        .iter()
        .filter(|o| matches!(o.step, Step::CasFailed { .. }))
        .map(|o| o.complete)
        .max();
    let late_failed_cas = |t: u64| last_failed_cas.is_some_and(|c| c > t);
    let unknown: Vec<usize> = (0..ops.len()).filter(|&i| !ops[i].required).collect();
    let mut alive = vec![true; ops.len()];
    // How far each operation reaches: its completion, or an unknown one's horizon.
    let mut reach: Vec<u64> = ops
        .iter()
        .map(|o| if o.required { o.complete } else { o.invoke })
        .collect();
    // An unknown operation that alone writes a tag an acknowledged operation observes must
    // take effect before the first such observer completes: that is its horizon, fixed.
    let mut writers: FnvHashMap<Tag, u32> = FnvHashMap::default();
    let mut first_seen: FnvHashMap<Tag, u64> = FnvHashMap::default();
    for o in &ops {
        if let Some(t) = o.step.writes() {
            *writers.entry(t).or_default() += 1;
        }
        if let (Some(t), true) = (o.step.observes(), o.required) {
            let c = first_seen.entry(t).or_insert(o.complete);
            *c = (*c).min(o.complete);
        }
    }
    // Fixed: pinned operations, and unknown writes turned into writes of `JUNK`.
    let mut fixed = vec![false; ops.len()];
    for &u in &unknown {
        if let Some(t) = ops[u].step.writes()
            && t != initial
            && writers.get(&t) == Some(&1)
            && let Some(&c) = first_seen.get(&t)
        {
            reach[u] = c.max(ops[u].invoke);
            fixed[u] = true;
        }
    }
    let mut rounds = 0;
    loop {
        // The latest reach of the operations that mention each tag.
        let mut mentions: FnvHashMap<Tag, u64> = FnvHashMap::default();
        for (i, o) in ops.iter().enumerate() {
            if let (true, Some(t)) = (alive[i], o.step.mentions()) {
                let r = mentions.entry(t).or_insert(0);
                *r = (*r).max(reach[i]);
            }
        }
        let mut changed = false;
        for &u in &unknown {
            let (Some(t), true, false) = (ops[u].step.writes(), alive[u], fixed[u]) else {
                continue;
            };
            let invoke = ops[u].invoke;
            let seen = mentions.get(&t).copied().filter(|&r| r >= invoke);
            let is_write = matches!(ops[u].step, Step::Write(_));
            let mut horizon = match seen {
                Some(r) => r.max(invoke),
                None if !late_failed_cas(invoke) => {
                    alive[u] = false;
                    changed = true;
                    continue;
                }
                None if is_write => {
                    ops[u].step = Step::Write(JUNK);
                    fixed[u] = true;
                    changed = true;
                    continue;
                }
                None => invoke,
            };
            // An unknown cas is not pooled: it must not outlive the failed cas ops.
            if !is_write && let Some(c) = last_failed_cas.filter(|&c| c > horizon) {
                horizon = c;
            }
            if horizon > reach[u] {
                reach[u] = horizon;
                changed = true;
            }
        }
        rounds += 1;
        if !changed {
            break;
        }
        if rounds > unknown.len() + 2 {
            // Cannot happen (`alive`, `fixed` and `reach` each move one way only); be safe.
            for &u in &unknown {
                if !fixed[u] {
                    reach[u] = NEVER;
                }
            }
            break;
        }
    }
    let mut order: Vec<usize> = (0..ops.len()).filter(|&i| alive[i]).collect();
    order.sort_by_key(|&i| (ops[i].invoke, reach[i]));
    let mut parts: Vec<Vec<Op>> = Vec::new();
    let mut until = None;
    for i in order {
        match (until, parts.last_mut()) {
            (Some(t), Some(part)) if ops[i].invoke <= t => {
                part.push(ops[i]);
                until = Some(t.max(reach[i]));
            }
            _ => {
                parts.push(vec![ops[i]]);
                until = Some(reach[i]);
            }
        }
    }
    parts
}

/// One part of a key's history, with its events in a time-ordered linked list. Entry 0 is the
/// list's head.
struct Part {
    ops: Vec<Op>,
    required: usize,
    /// Failed cas operations in the part.
    failed_cas: usize,
    /// Words in a bitset of the part's operations.
    words: usize,
    entry_op: Vec<u32>,
    entry_is_call: Vec<bool>,
    next: Vec<u32>,
    prev: Vec<u32>,
    call: Vec<u32>,
    ret: Vec<u32>,
}

impl Part {
    fn new(ops: Vec<Op>) -> Self {
        // (time, is a completion, op): at equal times invokes come first, since operations
        // that meet at an instant overlap.
        let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(NIL);
            events.push((o.invoke, false, i));
            if o.required {
                events.push((o.complete, true, i));
            }
        }
        events.sort_unstable();
        let m = events.len();
        let mut part = Part {
            required: ops.iter().filter(|o| o.required).count(),
            failed_cas: ops
                .iter()
                .filter(|o| matches!(o.step, Step::CasFailed { .. }))
                .count(),
            words: ops.len().div_ceil(64),
            entry_op: vec![NIL; m + 1],
            entry_is_call: vec![false; m + 1],
            next: (1..=m + 1)
                .map(|e| if e <= m { e as u32 } else { NIL })
                .collect(),
            prev: (0..=m)
                .map(|e| if e == 0 { NIL } else { e as u32 - 1 })
                .collect(),
            call: vec![NIL; ops.len()],
            ret: vec![NIL; ops.len()],
            ops,
        };
        for (k, &(_, is_ret, i)) in events.iter().enumerate() {
            let e = k as u32 + 1;
            part.entry_op[k + 1] = i;
            part.entry_is_call[k + 1] = !is_ret;
            if is_ret {
                part.ret[i as usize] = e;
            } else {
                part.call[i as usize] = e;
            }
        }
        part
    }

    /// Takes an operation's events out of the list.
    fn lift(&mut self, op: usize) {
        for e in [self.call[op], self.ret[op]] {
            if e != NIL {
                let (p, n) = (self.prev[e as usize], self.next[e as usize]);
                self.next[p as usize] = n;
                if n != NIL {
                    self.prev[n as usize] = p;
                }
            }
        }
    }

    /// Puts back the events of the operation lifted last.
    fn unlift(&mut self, op: usize) {
        for e in [self.ret[op], self.call[op]] {
            if e != NIL {
                let (p, n) = (self.prev[e as usize], self.next[e as usize]);
                self.next[p as usize] = e;
                if n != NIL {
                    self.prev[n as usize] = e;
                }
            }
        }
    }
}

enum Frame {
    /// An operation was linearized in state `state`, with `pool` unknown writes in the pool.
    Op { op: usize, state: Tag, pool: usize },
    /// The previous part ended with these operations linearized.
    Part { bits: Vec<u64> },
}

/// The configurations already explored: (part, register state, pool, operations
/// linearized).
struct Memo {
    seen: FnvHashSet<Box<[u64]>>,
    scratch: Vec<u64>,
}

impl Memo {
    /// Records a configuration: false when it was explored before. The search linearizes
    /// operations roughly in invoke order, so the bitset is stored as the number of leading
    /// full words, then the words up to the last non-zero one: a few words, however long the
    /// part.
    fn insert(&mut self, part: usize, state: Tag, pool: usize, bits: &[u64]) -> bool {
        let full = bits.iter().take_while(|&&w| w == u64::MAX).count();
        let end = bits
            .iter()
            .rposition(|&w| w != 0)
            .map_or(0, |i| i + 1)
            .max(full);
        self.scratch.clear();
        self.scratch.extend([
            ((part as u64) << 32) | u64::from(state),
            ((pool as u64) << 32) | full as u64,
        ]);
        self.scratch.extend_from_slice(&bits[full..end]);
        if self.seen.contains(&self.scratch[..]) {
            return false;
        }
        self.seen.insert(self.scratch.clone().into_boxed_slice());
        true
    }

    fn len(&self) -> u64 {
        self.seen.len() as u64
    }
}

/// Depth-first search for a linearization through `parts` in turn (module docs: *Search*).
fn search(parts: &mut [Part], initial: Tag, budget: u64) -> Verdict {
    if parts.is_empty() {
        return Verdict::Linearizable;
    }
    let mut memo = Memo {
        seen: FnvHashSet::default(),
        scratch: Vec::new(),
    };
    // Failed cas operations in the parts after each part: more pooled writes than that are
    // of no use.
    let mut later_failed = vec![0; parts.len()];
    for p in (0..parts.len() - 1).rev() {
        later_failed[p] = later_failed[p + 1] + parts[p + 1].failed_cas;
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut p = 0;
    // The operations of part `p` linearized so far.
    let mut bits = vec![0u64; parts[0].words];
    memo.insert(0, initial, 0, &bits);
    let mut state = initial;
    // Unknown writes of earlier parts never linearized, which may still take effect.
    let mut pool = 0;
    let mut left = parts[0].required;
    let mut cursor = parts[0].next[0];
    loop {
        if left == 0 {
            // This part is done: go on to the next, unless it was entered in this state
            // before.
            if p + 1 == parts.len() {
                return Verdict::Linearizable;
            }
            let unused = parts[p]
                .ops
                .iter()
                .enumerate()
                .filter(|&(i, o)| o.pooled() && bits[i / 64] & (1 << (i % 64)) == 0)
                .count();
            let next_pool = (pool + unused).min(later_failed[p]);
            let fresh = vec![0u64; parts[p + 1].words];
            if memo.insert(p + 1, state, next_pool, &fresh) {
                if memo.len() > budget {
                    return Verdict::OutOfBudget;
                }
                let done = std::mem::replace(&mut bits, fresh);
                stack.push(Frame::Part { bits: done });
                pool = next_pool;
                p += 1;
                left = parts[p].required;
                cursor = parts[p].next[0];
                continue;
            }
        } else if cursor != NIL && parts[p].entry_is_call[cursor as usize] {
            let part = &mut parts[p];
            let i = part.entry_op[cursor as usize] as usize;
            let op = part.ops[i];
            // A failed cas that the state contradicts may still be explained by a pooled
            // write taking effect just before it.
            let step = match (op.step.apply(state), op.step) {
                (Some(next), _) => Some((next, pool)),
                (None, Step::CasFailed { .. }) if pool > 0 => Some((JUNK, pool - 1)),
                (None, _) => None,
            };
            if let Some((next_state, next_pool)) = step {
                let (w, bit) = (i / 64, 1u64 << (i % 64));
                bits[w] |= bit;
                if memo.insert(p, next_state, next_pool, &bits) {
                    if memo.len() > budget {
                        return Verdict::OutOfBudget;
                    }
                    stack.push(Frame::Op { op: i, state, pool });
                    state = next_state;
                    pool = next_pool;
                    part.lift(i);
                    if op.required {
                        left -= 1;
                    }
                    cursor = part.next[0];
                    continue;
                }
                bits[w] &= !bit;
            }
            cursor = part.next[cursor as usize];
            continue;
        }
        // A dead end: a completion event came first, or the configuration was explored.
        loop {
            match stack.pop() {
                None => return Verdict::Violation,
                Some(Frame::Part { bits: done }) => {
                    // State and pool are restored with the part's last operation, popped
                    // next.
                    p -= 1;
                    bits = done;
                    left = 0;
                }
                Some(Frame::Op {
                    op,
                    state: s,
                    pool: n,
                }) => {
                    let part = &mut parts[p];
                    part.unlift(op);
                    bits[op / 64] &= !(1u64 << (op % 64));
                    state = s;
                    pool = n;
                    if part.ops[op].required {
                        left += 1;
                    }
                    cursor = part.next[part.call[op] as usize];
                    break;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reports.

/// Intervals of operations, to ask whether any overlaps a span of time.
struct Spans {
    /// Invoke times, sorted.
    invokes: Vec<u64>,
    /// The latest completion among the first `i + 1` intervals.
    reach: Vec<u64>,
}

impl Spans {
    fn new<'o>(ops: impl Iterator<Item = &'o HistoryOp>) -> Self {
        let mut spans: Vec<(u64, u64)> = ops.map(|o| (o.invoke_ns, end_of(o))).collect();
        spans.sort_unstable();
        let mut latest = 0;
        Spans {
            invokes: spans.iter().map(|s| s.0).collect(),
            reach: spans
                .iter()
                .map(|s| {
                    latest = latest.max(s.1);
                    latest
                })
                .collect(),
        }
    }

    /// Whether some interval meets `[from, to]`.
    fn meets(&self, from: u64, to: u64) -> bool {
        let n = self.invokes.partition_point(|&i| i <= to);
        n > 0 && self.reach[n - 1] >= from
    }
}

/// When an operation can no longer take effect.
fn end_of(op: &HistoryOp) -> u64 {
    if op.ok.is_some() {
        op.complete_ns.max(op.invoke_ns)
    } else {
        NEVER
    }
}

/// Whether taking `removed` away from a history, leaving `kept`, cannot by itself make the
/// history fail: whether `kept` is linearizable whenever `kept` and `removed` together are.
///
/// Removing reads and failed cas ops only removes constraints. Removing a change `o` of tag
/// `t` puts, in any linearization, the previous state in place of `t` for the window from `o`
/// to the next change (module docs: *Unknown outcomes*). That is harmless unless an operation
/// of `kept` that depends on the state could fall in the window: one that observes `t`, or a
/// failed cas. The window starts no earlier than `o`'s invoke and, for an acknowledged `o`,
/// ends before any acknowledged change invoked after `o` completed has completed. For a value
/// tag, which only `o` writes, an observer anywhere keeps `o` (else the observer would be
/// left reading a value nothing wrote); missing is written by every delete, so for a delete
/// only observers of missing that could fall in its window count, and none at all when the
/// key starts missing and every value written in `kept` is written after the delete: then the
/// previous state is missing too.
fn may_remove(kept: &[&HistoryOp], removed: &[&HistoryOp], initial: Option<&str>) -> bool {
    if removed.iter().all(|o| written(o).is_none()) {
        return true;
    }
    let around = Around::new(kept, initial);
    removed.iter().all(|o| around.may_remove(o))
}

/// What [`may_remove`] needs to know of the operations kept.
struct Around<'k> {
    initial: Option<&'k str>,
    /// Value tags observed.
    values: FnvHashSet<&'k str>,
    failed_cas: Spans,
    /// Failed cas ops and observers of missing.
    on_missing: Spans,
    /// Acknowledged changes by invoke, and the earliest completion from each on.
    enders: Vec<u64>,
    soonest_from: Vec<u64>,
    /// The earliest invoke of a write of a value.
    first_value: u64,
}

impl<'k> Around<'k> {
    fn new(kept: &[&'k HistoryOp], initial: Option<&'k str>) -> Self {
        let mut enders: Vec<(u64, u64)> = kept
            .iter()
            .filter(|o| o.ok == Some(true) && written(o).is_some())
            .map(|o| (o.invoke_ns, end_of(o)))
            .collect();
        enders.sort_unstable();
        let mut soonest = NEVER;
        let mut soonest_from: Vec<u64> = enders
            .iter()
            .rev()
            .map(|e| {
                soonest = soonest.min(e.1);
                soonest
            })
            .collect();
        soonest_from.reverse();
        Around {
            initial,
            values: kept.iter().filter_map(|o| observed(o).flatten()).collect(),
            failed_cas: Spans::new(kept.iter().copied().filter(|o| is_failed_cas(o))),
            on_missing: Spans::new(
                kept.iter()
                    .copied()
                    .filter(|o| is_failed_cas(o) || observed(o) == Some(None)),
            ),
            enders: enders.into_iter().map(|e| e.0).collect(),
            soonest_from,
            first_value: kept
                .iter()
                .filter(|o| matches!(written(o), Some(Some(_))))
                .map(|o| o.invoke_ns)
                .min()
                .unwrap_or(NEVER),
        }
    }

    /// The latest instant at which a change of the kept operations' tags may matter: no
    /// change invoked later can be kept from removal by a failed cas or an observer of
    /// missing.
    fn horizon(&self) -> u64 {
        self.on_missing.reach.last().copied().unwrap_or(0)
    }

    /// Whether `o` may be removed from around the kept operations.
    fn may_remove(&self, o: &HistoryOp) -> bool {
        let Some(tag) = written(o) else { return true };
        if tag.is_some_and(|v| self.values.contains(v)) {
            return false;
        }
        if tag.is_none()
            && self.initial.is_none()
            && o.ok == Some(true)
            && self.first_value > o.complete_ns
        {
            return true;
        }
        let until = if o.ok == Some(true) {
            let i = self.enders.partition_point(|&e| e <= o.complete_ns);
            self.soonest_from.get(i).copied().unwrap_or(NEVER)
        } else {
            NEVER
        };
        let sensitive = if tag.is_none() {
            &self.on_missing
        } else {
            &self.failed_cas
        };
        !sensitive.meets(o.invoke_ns, until)
    }
}

/// Shrinks a failing history (sorted by invoke) to a small one that still fails, within
/// `max_checks` checks.
fn shrink<'a>(ops: &[&'a HistoryOp], initial: Option<&str>, max_checks: u32) -> Vec<&'a HistoryOp> {
    let checks = std::cell::Cell::new(0);
    // Removes the operations marked in `drop`, with every operation that observes a value tag
    // one of them writes (transitively), and returns what is left if it still fails.
    let attempt = |cur: &[&'a HistoryOp], mut drop: Vec<bool>| {
        loop {
            let gone: FnvHashSet<&str> = cur
                .iter()
                .zip(&drop)
                .filter(|&(_, &d)| d)
                .filter_map(|(o, _)| written(o).flatten())
                .collect();
            let mut grew = false;
            for (o, d) in cur.iter().zip(drop.iter_mut()) {
                if !*d && observed(o).flatten().is_some_and(|v| gone.contains(v)) {
                    *d = true;
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        let mut kept: Vec<&'a HistoryOp> = Vec::new();
        let mut removed: Vec<&'a HistoryOp> = Vec::new();
        for (&o, d) in cur.iter().zip(drop) {
            if d { &mut removed } else { &mut kept }.push(o);
        }
        if kept.is_empty() || checks.get() >= max_checks || !may_remove(&kept, &removed, initial) {
            return None;
        }
        checks.set(checks.get() + 1);
        (decide(&kept, initial, SMALL_BUDGET) == Verdict::Violation).then_some(kept)
    };
    let mut cur = ops.to_vec();
    // The shortest failing prefix, by bisection (`cur[..hi]` fails, with `best` left).
    let (mut lo, mut hi, mut best) = (0, cur.len(), None);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match attempt(&cur, (0..cur.len()).map(|i| i >= mid).collect()) {
            Some(kept) => (hi, best) = (mid, Some(kept)),
            None => lo = mid,
        }
    }
    cur = best.unwrap_or(cur);
    // Then the shortest failing suffix of that.
    let (mut lo, mut hi, mut best) = (0, cur.len(), None);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match attempt(&cur, (0..cur.len()).map(|i| i < mid).collect()) {
            Some(kept) => (lo, best) = (mid, Some(kept)),
            None => hi = mid,
        }
    }
    cur = best.unwrap_or(cur);
    // Then chunks of halving size, ending with single operations until none can go.
    let mut chunk = (cur.len() / 2).max(1);
    loop {
        let mut removed_any = false;
        let mut i = 0;
        while i < cur.len() {
            let end = (i + chunk).min(cur.len());
            match attempt(
                &cur,
                (0..cur.len()).map(|j| (i..end).contains(&j)).collect(),
            ) {
                Some(kept) => (cur, removed_any) = (kept, true),
                None => i = end,
            }
        }
        if checks.get() >= max_checks || (chunk == 1 && !removed_any) {
            return cur;
        }
        chunk = (chunk / 2).max(1);
    }
}

/// Finds the anomalies of known shapes in a key's history (see [`AnomalyKind`]), each with a
/// witness: a sub-history that fails on its own and [`may_remove`] allows to cut from the
/// history, so that the history fails too.
fn label<'a>(
    key: &str,
    ops: &[&'a HistoryOp],
    initial: Option<&str>,
    opts: &CheckOptions,
) -> Vec<Anomaly> {
    // The writes of each value tag, and the deletes.
    let mut writers: FnvHashMap<&str, Vec<&'a HistoryOp>> = FnvHashMap::default();
    let mut deletes: Vec<&HistoryOp> = Vec::new();
    for &o in ops {
        match written(o) {
            Some(Some(v)) => writers.entry(v).or_default().push(o),
            Some(None) => deletes.push(o),
            None => {}
        }
    }
    // Whether a witness shows an anomaly that the whole history has. It is first completed
    // with every change that may not be removed from around it: the writes of each value tag
    // it observes, then the changes that a failed cas or an observer of missing in it keeps
    // (see `may_remove`), until nothing more is needed. A large one is then shrunk.
    let confirmed = |witness: &mut Vec<&'a HistoryOp>| {
        let inside = |w: &[&HistoryOp], o: &HistoryOp| w.iter().any(|x| std::ptr::eq(*x, o));
        for _ in 0..ops.len() {
            let mut more: Vec<&HistoryOp> = Vec::new();
            for o in witness.iter() {
                if let Some(Some(v)) = observed(o) {
                    more.extend(writers.get(v).into_iter().flatten());
                }
            }
            let around = Around::new(witness, initial);
            let horizon = around.horizon();
            // Changes invoked after the horizon can only be kept by the value tags above.
            let early = ops.partition_point(|o| o.invoke_ns <= horizon);
            more.extend(ops[..early].iter().filter(|o| !around.may_remove(o)));
            more.retain(|o| !inside(witness, o));
            more.sort_by_key(|o| std::ptr::from_ref(*o));
            more.dedup_by(|a, b| std::ptr::eq(*a, *b));
            if more.is_empty() {
                break;
            }
            witness.extend(more);
        }
        witness.sort_by_key(|o| (o.invoke_ns, o.complete_ns));
        if decide(witness, initial, SMALL_BUDGET.min(opts.budget)) != Verdict::Violation {
            return false;
        }
        if witness.len() > 4 {
            *witness = shrink(witness, initial, opts.shrink_checks.min(100));
        }
        true
    };
    let anomaly = |kind, witness: Vec<&HistoryOp>, explanation: String| Anomaly {
        key: key.to_owned(),
        kind,
        ops: witness.into_iter().cloned().collect(),
        explanation,
    };
    let mut found = Vec::new();

    // Tags that nothing wrote.
    for &o in ops {
        if let (Some(Some(v)), Some(true)) = (observed(o), o.ok)
            && !writers.contains_key(v)
            && initial != Some(v)
        {
            let mut witness = vec![o];
            if confirmed(&mut witness) {
                let what = if o.op == OpKind::Read {
                    "returned"
                } else {
                    "replaced"
                };
                let text = format!(
                    "{} by process {} {what} {}, which nothing wrote and is not the initial state",
                    o.op,
                    o.process,
                    tag(Some(v))
                );
                found.push(anomaly(AnomalyKind::UnknownValue, witness, text));
            }
        }
    }

    // Two cas winners on one expected value.
    let mut winners: BTreeMap<Option<&str>, Vec<&HistoryOp>> = BTreeMap::new();
    for &o in ops {
        if o.op == OpKind::Cas && o.ok == Some(true) {
            winners.entry(o.expected.as_deref()).or_default().push(o);
        }
    }
    for (expected, group) in &winners {
        let [a, b, ..] = group[..] else { continue };
        // Completing the witness adds the write of `expected`, or the deletes that might
        // bring missing back between the two.
        let mut witness = vec![a, b];
        if confirmed(&mut witness) {
            let text = format!(
                "{} acknowledged cas operations replaced {}; processes {} and {} wrote {} and {}",
                group.len(),
                tag(*expected),
                a.process,
                b.process,
                tag(a.value.as_deref()),
                tag(b.value.as_deref())
            );
            found.push(anomaly(AnomalyKind::DoubleCasWinner, witness, text));
        }
    }

    // Stale reads and lost writes.
    let mut changes: Vec<&HistoryOp> = ops
        .iter()
        .copied()
        .filter(|o| o.ok == Some(true) && written(o).is_some())
        .collect();
    changes.sort_by_key(|o| o.complete_ns);
    // Of the first k changes to complete: the one invoked last, and the one invoked last of
    // those that leave a value (not missing).
    let latest = |only_values: bool| {
        let mut best: Option<&HistoryOp> = None;
        changes
            .iter()
            .map(|&c| {
                if (!only_values || written(c) != Some(None))
                    && best.is_none_or(|b| c.invoke_ns > b.invoke_ns)
                {
                    best = Some(c);
                }
                best
            })
            .collect::<Vec<_>>()
    };
    let (latest_any, latest_value) = (latest(false), latest(true));
    let reads: Vec<&HistoryOp> = ops
        .iter()
        .copied()
        .filter(|o| o.op == OpKind::Read && o.ok == Some(true))
        .collect();
    let last_read_invoke = reads.iter().map(|r| r.invoke_ns).max();
    let mut last_read_of: FnvHashMap<Option<&str>, u64> = FnvHashMap::default();
    for r in &reads {
        let t = last_read_of.entry(r.value.as_deref()).or_insert(0);
        *t = (*t).max(r.invoke_ns);
    }
    let mut lost: FnvHashSet<*const HistoryOp> = FnvHashSet::default();
    for &r in &reads {
        let x = r.value.as_deref();
        // Where the value read came from: its writes, deletes, or the initial state.
        let sources: &[&HistoryOp] = match x {
            Some(v) => writers.get(v).map_or(&[], Vec::as_slice),
            None => &deletes,
        };
        let from_initial = initial == x;
        if (sources.is_empty() && !from_initial) || sources.iter().any(|s| s.ok != Some(true)) {
            continue;
        }
        let k = changes.partition_point(|c| c.complete_ns < r.invoke_ns);
        let Some(missed) = k.checked_sub(1).and_then(|k| {
            if x.is_none() {
                latest_value[k]
            } else {
                latest_any[k]
            }
        }) else {
            continue;
        };
        if written(missed) == Some(x) || sources.iter().any(|s| s.complete_ns >= missed.invoke_ns) {
            continue;
        }
        let source = match (sources, from_initial) {
            ([s], false) => format!("written by process {}", s.process),
            ([], true) => "the initial state".to_owned(),
            _ if x.is_none() => "after every delete".to_owned(),
            _ => "after every write of it".to_owned(),
        };
        let change = match written(missed) {
            Some(Some(v)) => format!("{} of {}", missed.op, tag(Some(v))),
            _ => "delete".to_owned(),
        };
        let mut witness = vec![missed, r];
        let is_lost = matches!(written(missed), Some(Some(_)))
            && last_read_invoke.is_some_and(|t| t > missed.complete_ns)
            && last_read_of
                .get(&written(missed).flatten())
                .is_none_or(|&t| t <= missed.complete_ns);
        if is_lost {
            let id: *const HistoryOp = missed;
            if lost.contains(&id) {
                continue;
            }
            if confirmed(&mut witness) {
                lost.insert(id);
                let later = reads
                    .iter()
                    .filter(|o| o.invoke_ns > missed.complete_ns)
                    .count();
                let text = format!(
                    "the acknowledged {change} by process {} looks lost: none of the {later} \
                     reads that began after it completed returned it; the first to miss it, by \
                     process {}, returned {} ({source})",
                    missed.process,
                    r.process,
                    tag(x)
                );
                found.push(anomaly(AnomalyKind::LostWrite, witness, text));
            }
        } else if confirmed(&mut witness) {
            let after = if sources.is_empty() {
                ""
            } else {
                "began after that and "
            };
            let text = format!(
                "read by process {} returned {} ({source}), but the {change} by process {} \
                 {after}completed before the read began",
                r.process,
                tag(x),
                missed.process
            );
            found.push(anomaly(AnomalyKind::StaleRead, witness, text));
        }
    }

    found
}

#[cfg(test)]
mod tests;
