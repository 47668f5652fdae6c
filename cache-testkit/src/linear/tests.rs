use std::collections::HashMap;
use std::time::Instant;

use proptest::prelude::*;

use super::*;
use crate::staleness;

fn w(p: u64, v: &str, a: u64, b: u64) -> HistoryOp {
    HistoryOp::write(p, "k", v, a, b)
}

fn r(p: u64, v: Option<&str>, a: u64, b: u64) -> HistoryOp {
    HistoryOp::read(p, "k", v, a, b)
}

fn del(p: u64, a: u64, b: u64) -> HistoryOp {
    HistoryOp::delete(p, "k", a, b)
}

fn cas(p: u64, expected: Option<&str>, v: &str, a: u64, b: u64) -> HistoryOp {
    HistoryOp::cas(p, "k", expected, v, a, b)
}

fn kinds(report: &Report) -> Vec<AnomalyKind> {
    report.anomalies.iter().map(|a| a.kind).collect()
}

fn assert_passes(h: &[HistoryOp]) {
    let report = check(h);
    assert!(report.is_ok(), "{report}");
}

fn assert_fails(h: &[HistoryOp]) -> Report {
    let report = check(h);
    assert!(!report.anomalies.is_empty(), "should fail: {h:#?}");
    assert!(report.unchecked.is_empty(), "{report}");
    report
}

#[test]
fn a_linearizable_history_passes() {
    let h = [
        w(1, "a", 0, 10),
        r(2, Some("a"), 5, 15),
        w(1, "b", 20, 40),
        r(2, Some("a"), 25, 30),
        r(3, Some("b"), 35, 50),
        r(2, Some("b"), 60, 70),
    ];
    let report = check(&h);
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.ops, report.keys), (6, 1));
    assert!(report.to_string().ends_with("linearizable"));
    assert_passes(&[]);
}

#[test]
fn reads_that_disagree_on_the_order_of_concurrent_writes_fail() {
    // Writes 1 and 2 overlap, so either may be last. A read saw 2, and a later read saw 1: no
    // single order explains both.
    let h = [
        w(1, "1", 0, 100),
        w(2, "2", 0, 100),
        r(3, Some("2"), 110, 120),
        r(4, Some("1"), 130, 140),
    ];
    // A check of each read on its own accepts it.
    let events = staleness::events_from_history(&h, |_| true).unwrap();
    staleness::check(&events, 0).unwrap();
    let report = assert_fails(&h);
    assert_eq!(kinds(&report), [AnomalyKind::NonLinearizable]);
    assert_eq!(report.anomalies[0].ops, h);
    // Either read alone is fine.
    assert_passes(&h[..3]);
    assert_passes(&[h[0].clone(), h[1].clone(), h[3].clone()]);
}

#[test]
fn a_plain_stale_read_fails() {
    let h = [
        w(1, "a", 0, 10),
        w(1, "b", 20, 30),
        r(2, Some("a"), 40, 50),
        r(3, Some("b"), 60, 70),
    ];
    let report = assert_fails(&h);
    assert_eq!(kinds(&report), [AnomalyKind::StaleRead]);
    assert_eq!(report.anomalies[0].ops, h[..3]);
    assert_eq!(report.lost_writes(), 0);
    assert!(
        report.anomalies[0].explanation.contains("write of \"b\""),
        "{}",
        report.anomalies[0]
    );
}

#[test]
fn a_write_no_later_read_returns_is_lost_and_counted_once() {
    let h = [
        w(1, "a", 0, 10),
        w(2, "b", 20, 30),
        r(3, Some("a"), 40, 50),
        r(4, Some("a"), 60, 70),
        r(3, Some("a"), 80, 90),
    ];
    let report = assert_fails(&h);
    assert_eq!(kinds(&report), [AnomalyKind::LostWrite]);
    assert_eq!(report.lost_writes(), 1);
    assert_eq!(report.anomalies[0].ops, h[..3]);
    let counts = report.counts();
    assert_eq!(counts.len(), 5);
    assert_eq!((counts["lost_write"], counts["stale_read"]), (1, 0));
}

#[test]
fn the_initial_state_counts_as_written_before_the_history() {
    let initial = || [("k".to_owned(), Some("0".to_owned()))];
    // Reading the initial value while the first write is in flight is fine...
    let h = [w(1, "a", 0, 10), r(2, Some("0"), 5, 15)];
    assert!(check_with_initial(&h, initial()).is_ok());
    // ...but not once it finished.
    let h = [
        w(1, "a", 0, 10),
        r(2, Some("0"), 20, 30),
        r(2, Some("a"), 40, 50),
    ];
    let report = check_with_initial(&h, initial());
    assert_eq!(kinds(&report), [AnomalyKind::StaleRead]);
    assert_eq!(report.anomalies[0].ops, h[..2]);
    assert!(report.anomalies[0].explanation.contains("initial state"));
    // Without the initial state, "0" was never written.
    assert_eq!(kinds(&check(&h)), [AnomalyKind::UnknownValue]);
}

#[test]
fn a_value_never_written_fails() {
    let h = [w(1, "a", 0, 10), r(2, Some("zz"), 5, 15)];
    let report = assert_fails(&h);
    assert_eq!(kinds(&report), [AnomalyKind::UnknownValue]);
    assert_eq!(report.anomalies[0].ops, h[1..]);
    // A successful cas that replaced a value never written is as impossible.
    let report = assert_fails(&[cas(1, Some("zz"), "a", 0, 10)]);
    assert_eq!(kinds(&report), [AnomalyKind::UnknownValue]);
}

#[test]
fn two_cas_winners_on_one_expected_value_fail() {
    let h = [
        w(1, "a", 0, 10),
        cas(2, Some("a"), "b", 20, 40),
        cas(3, Some("a"), "c", 25, 45),
    ];
    let report = assert_fails(&h);
    assert_eq!(kinds(&report), [AnomalyKind::DoubleCasWinner]);
    assert_eq!(report.anomalies[0].ops, h);
    // Two creates of a missing key.
    let h = [cas(1, None, "a", 0, 10), cas(2, None, "b", 5, 15)];
    let report = assert_fails(&h);
    assert_eq!(kinds(&report), [AnomalyKind::DoubleCasWinner]);
    // Missing can come back after a delete, so two creates can both win.
    assert_passes(&[
        cas(1, None, "a", 0, 10),
        del(2, 20, 30),
        cas(3, None, "b", 40, 50),
    ]);
    // One winner and one loser is the normal outcome.
    assert_passes(&[
        w(1, "a", 0, 10),
        cas(2, Some("a"), "b", 20, 40),
        cas(3, Some("a"), "c", 25, 45).with_ok(Some(false)),
        r(1, Some("b"), 50, 60),
    ]);
}

#[test]
fn an_unknown_write_that_is_read_later_passes() {
    // The caller gave up at 30; the write took effect much later.
    assert_passes(&[
        w(1, "a", 0, 10),
        w(2, "b", 20, 30).with_ok(None),
        r(3, Some("a"), 40, 50),
        r(3, Some("b"), 1000, 1010),
        r(4, Some("b"), 2000, 2010),
    ]);
    // An unknown cas too.
    assert_passes(&[
        w(1, "a", 0, 10),
        cas(2, Some("a"), "b", 20, 30).with_ok(None),
        r(3, Some("a"), 40, 50),
        r(3, Some("b"), 60, 70),
    ]);
}

#[test]
fn an_unknown_write_never_seen_passes() {
    assert_passes(&[
        w(1, "a", 0, 10),
        w(2, "b", 20, 30).with_ok(None),
        r(3, Some("a"), 40, 50),
        r(4, Some("a"), 60, 70),
        cas(4, None, "c", 80, 90).with_ok(None),
    ]);
}

#[test]
fn an_unknown_write_cannot_be_undone_once_seen() {
    let report = assert_fails(&[
        w(1, "a", 0, 10),
        w(2, "b", 20, 30).with_ok(None),
        r(3, Some("b"), 40, 50),
        r(4, Some("a"), 60, 70),
    ]);
    assert_eq!(report.anomalies[0].ops.len(), 4, "{report}");
    // It cannot take effect before it was invoked either.
    assert_fails(&[r(3, Some("b"), 0, 10), w(2, "b", 20, 30).with_ok(None)]);
    // An unknown cas applies only where its condition held.
    assert_fails(&[
        w(1, "a", 0, 10),
        w(1, "c", 20, 30),
        cas(2, Some("a"), "b", 40, 50).with_ok(None),
        r(3, Some("b"), 60, 70),
    ]);
}

#[test]
fn deletes_and_missing_reads() {
    assert_passes(&[
        r(1, None, 0, 5),
        w(1, "a", 10, 20),
        del(2, 30, 40),
        r(3, None, 50, 60),
        w(1, "b", 70, 80),
        r(3, Some("b"), 90, 100),
        del(2, 110, 120),
        r(1, None, 130, 140),
    ]);
    let report = assert_fails(&[w(1, "a", 0, 10), del(2, 20, 30), r(3, Some("a"), 40, 50)]);
    assert_eq!(kinds(&report), [AnomalyKind::StaleRead]);
    assert!(report.anomalies[0].explanation.contains("delete"));
    // Missing after a later write: the write looks lost.
    let report = assert_fails(&[
        w(1, "a", 0, 10),
        del(2, 20, 30),
        w(1, "b", 40, 50),
        r(3, None, 60, 70),
    ]);
    assert_eq!(kinds(&report), [AnomalyKind::LostWrite]);
    // A delete of unknown outcome may or may not have happened, but not both.
    assert_passes(&[
        w(1, "a", 0, 10),
        del(2, 20, 30).with_ok(None),
        r(3, None, 40, 50),
        r(3, None, 60, 70),
    ]);
    assert_passes(&[
        w(1, "a", 0, 10),
        del(2, 20, 30).with_ok(None),
        r(3, Some("a"), 40, 50),
        r(3, None, 60, 70),
    ]);
    assert_fails(&[
        w(1, "a", 0, 10),
        del(2, 20, 30).with_ok(None),
        r(3, None, 40, 50),
        r(3, Some("a"), 60, 70),
    ]);
}

#[test]
fn a_contradicted_cas_mismatch_fails() {
    // The register held "a" for the whole cas, yet the cas failed.
    let h = [
        w(1, "a", 0, 10),
        cas(2, Some("a"), "b", 20, 30).with_ok(Some(false)),
        r(3, Some("a"), 40, 50),
    ];
    let report = assert_fails(&h);
    assert_eq!(kinds(&report), [AnomalyKind::NonLinearizable]);
    assert_eq!(report.anomalies[0].ops, h[..2]);
    // A create that failed although the key was missing throughout.
    assert_fails(&[cas(1, None, "a", 0, 10).with_ok(Some(false))]);
    // A mismatch while another write replaced "a" is fine.
    assert_passes(&[
        w(1, "a", 0, 10),
        w(1, "c", 15, 35),
        cas(2, Some("a"), "b", 20, 30).with_ok(Some(false)),
        r(3, Some("c"), 40, 50),
    ]);
}

#[test]
fn an_unseen_unknown_write_stays_when_a_failed_cas_needs_it() {
    // Nothing reads "x", yet only "x" explains why the cas on "a" failed: pruning "x" as
    // unobserved would report a false anomaly.
    let h = [
        w(1, "a", 0, 10),
        w(2, "x", 20, 25).with_ok(None),
        cas(3, Some("a"), "b", 30, 40).with_ok(Some(false)),
    ];
    assert_passes(&h);
    assert_fails(&[h[0].clone(), h[2].clone()]);
    // The same when the failed cas comes long after, past quiescent points.
    let h = [
        w(1, "a", 0, 10),
        w(2, "x", 20, 25).with_ok(None),
        r(3, Some("a"), 30, 40),
        r(3, Some("a"), 500, 510),
        cas(3, Some("a"), "b", 1000, 1010).with_ok(Some(false)),
    ];
    assert_passes(&h);
    assert_fails(&[h[0].clone(), h[2].clone(), h[3].clone(), h[4].clone()]);
    // Once read, "x" took effect before its reader: it cannot explain a later failure.
    assert_fails(&[
        w(1, "a", 0, 10),
        w(2, "x", 20, 25).with_ok(None),
        r(3, Some("x"), 30, 40),
        w(1, "a2", 50, 60),
        r(3, Some("a2"), 500, 510),
        cas(3, Some("a2"), "b", 1000, 1010).with_ok(Some(false)),
    ]);
}

#[test]
fn failed_reads_and_writes_say_nothing() {
    assert_passes(&[
        w(1, "a", 0, 10),
        w(2, "b", 20, 30).with_ok(Some(false)),
        del(2, 20, 30).with_ok(Some(false)),
        r(3, Some("zz"), 40, 50).with_ok(None),
        r(3, Some("q"), 40, 50).with_ok(Some(false)),
        r(4, Some("a"), 60, 70),
    ]);
}

#[test]
fn parts_carry_every_state_they_can_end_in() {
    // The first part ends in either order of two concurrent writes; later parts decide.
    for last in ["a", "b"] {
        assert_passes(&[
            w(1, "a", 0, 10),
            w(2, "b", 0, 10),
            r(3, Some(last), 100, 110),
            w(4, "c", 150, 160).with_ok(Some(false)),
            r(3, Some(last), 200, 210),
        ]);
    }
    assert_fails(&[
        w(1, "a", 0, 10),
        w(2, "b", 0, 10),
        r(3, Some("a"), 100, 110),
        r(3, Some("b"), 200, 210),
    ]);
    // Backtracking across several parts: the choice in the first part is refuted three parts
    // later.
    assert_passes(&[
        w(1, "a", 0, 10),
        w(2, "b", 0, 10),
        cas(3, Some("b"), "c", 20, 30).with_ok(Some(false)),
        r(4, None, 40, 50).with_ok(None),
        cas(3, Some("b"), "d", 60, 70).with_ok(Some(false)),
        r(4, Some("a"), 80, 90),
    ]);
}

#[test]
fn an_unknown_write_is_carried_across_quiescent_points() {
    let mut h = vec![
        w(1, "x", 0, 10).with_ok(None),
        w(2, "a", 100, 110),
        r(3, Some("a"), 120, 130),
        w(2, "b", 200, 210),
        r(3, Some("b"), 220, 230),
        r(3, Some("x"), 300, 310),
        r(4, Some("x"), 400, 410),
    ];
    assert_passes(&h);
    h.push(r(4, Some("b"), 500, 510));
    assert_fails(&h);
}

#[test]
fn a_budget_too_small_leaves_the_key_unchecked() {
    let h = [
        w(1, "1", 0, 100),
        w(2, "2", 0, 100),
        r(3, Some("2"), 110, 120),
        r(4, Some("1"), 130, 140),
    ];
    let report = check_with(&h, CheckOptions::default().with_budget(2));
    assert!(report.anomalies.is_empty());
    assert_eq!(report.unchecked, ["k"]);
    assert!(!report.is_ok());
    assert!(report.to_string().contains("unchecked"));
}

#[test]
fn keys_are_checked_independently() {
    let mut h = vec![
        HistoryOp::write(1, "good", "a", 0, 10),
        HistoryOp::read(2, "good", Some("a"), 20, 30),
    ];
    // On its own key, this read of "a" is a read of a value never written.
    h.push(HistoryOp::read(2, "bad", Some("a"), 20, 30));
    let report = check(&h);
    assert_eq!((report.ops, report.keys), (3, 2));
    assert_eq!(kinds(&report), [AnomalyKind::UnknownValue]);
    assert_eq!(report.anomalies[0].key, "bad");
    assert_eq!(report.counts()["unknown_value"], 1);
}

#[test]
fn a_buried_anomaly_shrinks_to_its_core() {
    let mut h = Vec::new();
    let mut t = 0;
    for i in 0..100 {
        let v = i.to_string();
        h.push(w(1, &v, t, t + 10));
        h.push(r(2, Some(&v), t + 5, t + 30));
        t += 40;
    }
    // The inversion, then more of the same.
    h.push(w(1, "x", t, t + 100));
    h.push(w(2, "y", t, t + 100));
    h.push(r(3, Some("y"), t + 110, t + 120));
    h.push(r(4, Some("x"), t + 130, t + 140));
    t += 200;
    for i in 100..200 {
        let v = i.to_string();
        h.push(w(1, &v, t, t + 10));
        h.push(r(2, Some(&v), t + 5, t + 30));
        t += 40;
    }
    let report = assert_fails(&h);
    assert_eq!(kinds(&report), [AnomalyKind::NonLinearizable]);
    let core = &report.anomalies[0].ops;
    assert_eq!(core.len(), 4, "{}", report.anomalies[0]);
    assert!(
        core.iter()
            .all(|o| ["x", "y"].contains(&o.value.as_deref().unwrap()))
    );
    assert!(report.anomalies[0].explanation.contains("shrunk from 404"));
}

#[test]
fn display_shows_one_line_per_op_in_microseconds_from_the_first() {
    let h = [
        w(7, "a", 1_000_000, 1_010_000),
        w(7, "b", 1_020_000, 1_030_500),
        r(8, Some("a"), 1_040_000, 1_050_000),
    ];
    let report = check(&h);
    let text = report.anomalies[0].to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("lost_write on key \"k\": "), "{text}");
    assert!(lines[1].contains("process 7") && lines[1].contains("[0.0 .. 10.0] µs"));
    assert!(lines[2].contains("wrote \"b\"") && lines[2].contains("[20.0 .. 30.5] µs"));
    assert!(lines[3].contains("read") && lines[3].contains("returned \"a\""));
    assert!(lines[3].contains(" ok "), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Generated histories.

/// A tiny deterministic generator, so that large histories need no extra dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

#[derive(Debug, Clone, Copy)]
enum Gen {
    Read,
    Write,
    Delete,
    CasHit,
    CasMiss,
    UnknownApplied,
    UnknownLost,
    FailedWrite,
    FailedRead,
}

/// Turns a sequential execution (operation `i` takes effect at `lins[i]`) into a history,
/// simulating the registers. Every write's tag is unique.
fn execute(steps: &[(String, u64, Gen, u64, u64)], lins: &[u64]) -> Vec<HistoryOp> {
    let mut order: Vec<usize> = (0..steps.len()).collect();
    order.sort_by_key(|&i| lins[i]);
    let mut state: HashMap<&str, Option<String>> = HashMap::new();
    let mut past: HashMap<&str, Vec<String>> = HashMap::new();
    let mut out = Vec::new();
    for i in order {
        let (key, p, g, invoke, complete) = &steps[i];
        let (p, invoke, complete) = (*p, *invoke, *complete);
        let cur = state.entry(key).or_default();
        let v = format!("v{i}");
        let op = match g {
            Gen::Read => HistoryOp::read(p, key, cur.as_deref(), invoke, complete),
            Gen::Write => HistoryOp::write(p, key, &v, invoke, complete),
            Gen::Delete => HistoryOp::delete(p, key, invoke, complete),
            Gen::CasHit => HistoryOp::cas(p, key, cur.as_deref(), &v, invoke, complete),
            Gen::CasMiss => {
                let old = past
                    .get(key.as_str())
                    .and_then(|vs| vs.iter().rev().find(|o| Some(*o) != cur.as_ref()))
                    .cloned();
                let expected = match (old, cur.is_some()) {
                    (Some(o), _) => Some(o),
                    (None, true) => None,
                    (None, false) => Some("never".to_owned()),
                };
                HistoryOp::cas(p, key, expected.as_deref(), &v, invoke, complete)
                    .with_ok(Some(false))
            }
            Gen::UnknownApplied | Gen::UnknownLost => {
                HistoryOp::write(p, key, &v, invoke, complete).with_ok(None)
            }
            Gen::FailedWrite => HistoryOp::write(p, key, &v, invoke, complete).with_ok(Some(false)),
            Gen::FailedRead => {
                HistoryOp::read(p, key, Some("garbage"), invoke, complete).with_ok(None)
            }
        };
        let next = match g {
            Gen::Write | Gen::CasHit | Gen::UnknownApplied => Some(Some(v)),
            Gen::Delete => Some(None),
            _ => None,
        };
        if let Some(next) = next {
            if let Some(old) = cur.take() {
                past.entry(key).or_default().push(old);
            }
            *cur = next;
        }
        out.push(op);
    }
    out.sort_by_key(|o| o.invoke_ns);
    out
}

/// Reads whose value can be replaced by an older, overwritten one that no linearization
/// allows: a value written by an acknowledged write `w`, replaced by an acknowledged change
/// that began after `w` completed and completed before the read began. At most `per_read`
/// values for each read, the latest first.
fn stale_candidates(h: &[HistoryOp], per_read: usize) -> Vec<(usize, String)> {
    let acked = |o: &&HistoryOp| o.ok == Some(true);
    let mut out = Vec::new();
    let mut keys: Vec<&str> = h.iter().map(|o| o.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let on_key = |o: &&HistoryOp| o.key == key;
        // Acknowledged writes, by completion.
        let mut writes: Vec<&HistoryOp> = h
            .iter()
            .filter(on_key)
            .filter(acked)
            .filter(|o| matches!(o.op, OpKind::Write | OpKind::Cas))
            .collect();
        writes.sort_by_key(|o| o.complete_ns);
        let mut changes: Vec<&HistoryOp> = h
            .iter()
            .filter(on_key)
            .filter(acked)
            .filter(|o| o.op != OpKind::Read)
            .filter(|o| !(o.op == OpKind::Cas && o.ok == Some(false)))
            .collect();
        changes.sort_by_key(|o| o.complete_ns);
        for (ri, read) in h.iter().enumerate() {
            if read.key != key || read.op != OpKind::Read || read.ok != Some(true) {
                continue;
            }
            // The change invoked last among those completed before the read began: a write
            // completed before it began is overwritten for good.
            let Some(latest) = changes
                .iter()
                .take_while(|c| c.complete_ns < read.invoke_ns)
                .map(|c| c.invoke_ns)
                .max()
            else {
                continue;
            };
            let n = writes.partition_point(|o| o.complete_ns < latest);
            for old in writes[..n].iter().rev().take(per_read) {
                if let Some(v) = &old.value {
                    out.push((ri, v.clone()));
                }
            }
        }
    }
    out
}

fn gen_kind() -> impl Strategy<Value = Gen> {
    prop_oneof![
        4 => Just(Gen::Read),
        3 => Just(Gen::Write),
        1 => Just(Gen::Delete),
        1 => Just(Gen::CasHit),
        1 => Just(Gen::CasMiss),
        1 => Just(Gen::UnknownApplied),
        1 => Just(Gen::UnknownLost),
        1 => Just(Gen::FailedWrite),
        1 => Just(Gen::FailedRead),
    ]
}

prop_compose! {
    /// A random sequential execution on 1 to 3 keys by 4 processes, each operation widened
    /// into an interval that still holds its linearization point.
    fn linearizable_history()(
        keys in 1..=3usize,
        steps in prop::collection::vec((0..3usize, 0..4u64, gen_kind(), 0..250u64, 0..250u64), 1..60),
    ) -> Vec<HistoryOp> {
        let lins: Vec<u64> = (0..steps.len() as u64).map(|i| 1_000 + 100 * i).collect();
        let steps: Vec<(String, u64, Gen, u64, u64)> = steps
            .iter()
            .zip(&lins)
            .map(|(&(k, p, g, before, after), &lin)| {
                (format!("k{}", k % keys), p, g, lin - before, lin + after)
            })
            .collect();
        execute(&steps, &lins)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn widened_sequential_executions_are_linearizable(h in linearizable_history()) {
        let report = check(&h);
        prop_assert!(report.is_ok(), "{}", report);
    }

    #[test]
    fn reading_an_overwritten_value_is_caught(
        mut h in linearizable_history(),
        pick in any::<prop::sample::Index>(),
    ) {
        let candidates = stale_candidates(&h, usize::MAX);
        if candidates.is_empty() {
            return Ok(());
        }
        let (ri, old) = candidates[pick.index(candidates.len())].clone();
        h[ri].value = Some(old);
        let report = check(&h);
        prop_assert!(!report.anomalies.is_empty(), "{:#?}", h[ri]);
        prop_assert!(report.unchecked.is_empty());
        prop_assert!(report.anomalies.iter().any(|a| a.key == h[ri].key));
        // Each reported sub-history fails on its own, and is small: a read, what it missed,
        // and where its value came from (which, for a cas, includes the chain of cas ops
        // before it, and for missing, the deletes).
        for a in &report.anomalies {
            let links = a.ops.iter().filter(|o| matches!(o.op, OpKind::Cas | OpKind::Delete));
            prop_assert!(!a.ops.is_empty() && a.ops.len() <= 4 + links.count(), "{}", a);
            prop_assert!(!check(&a.ops).anomalies.is_empty(), "{}", a);
        }
    }
}

/// A history of `n` operations by `processes` sequential clients on `keys` keys: each client
/// waits a little between operations, each operation takes effect somewhere inside its
/// interval, so concurrent operations overlap.
fn simulated(n: usize, keys: usize, processes: u64, seed: u64) -> Vec<HistoryOp> {
    let mut rng = Rng(seed);
    let mut clock = vec![0u64; processes as usize];
    let mut steps = Vec::with_capacity(n);
    let mut lins = Vec::with_capacity(n);
    for i in 0..n {
        let p = i as u64 % processes;
        let t = &mut clock[p as usize];
        let invoke = *t + rng.below(20);
        let lin = invoke + 1 + rng.below(100);
        let complete = lin + 1 + rng.below(100);
        *t = complete;
        let g = match rng.below(100) {
            0..50 => Gen::Read,
            50..78 => Gen::Write,
            78..83 => Gen::Delete,
            83..89 => Gen::CasHit,
            89..94 => Gen::CasMiss,
            94..97 => Gen::UnknownApplied,
            _ => Gen::UnknownLost,
        };
        let key = format!("key{}", rng.below(keys as u64));
        steps.push((key, p, g, invoke, complete));
        lins.push(lin);
    }
    execute(&steps, &lins)
}

#[test]
fn twenty_thousand_ops_on_sixteen_keys() {
    let h = simulated(20_000, 16, 8, 7);
    let started = Instant::now();
    let report = check(&h);
    let took = started.elapsed();
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.ops, report.keys), (20_000, 16));
    println!(
        "checked {} ops on {} keys in {took:?}",
        report.ops, report.keys
    );

    let mut bad = h.clone();
    let candidates = stale_candidates(&bad, 1);
    let (ri, old) = candidates[candidates.len() / 2].clone();
    bad[ri].value = Some(old);
    let started = Instant::now();
    let report = check(&bad);
    println!(
        "found {} anomalies in {:?}",
        report.anomalies.len(),
        started.elapsed()
    );
    assert_eq!(report.anomalies.len(), 1, "{report}");
    assert_eq!(report.anomalies[0].key, bad[ri].key);
    assert!(report.anomalies[0].ops.len() <= 4, "{report}");
}

#[test]
fn eight_processes_on_one_hot_key() {
    // Always some operation pending: one long part.
    let h = simulated(4_000, 1, 8, 11);
    let started = Instant::now();
    let report = check(&h);
    println!(
        "checked {} ops on one key in {:?}",
        h.len(),
        started.elapsed()
    );
    assert!(report.is_ok(), "{report}");

    let mut bad = h.clone();
    let candidates = stale_candidates(&bad, 1);
    let (ri, old) = candidates[candidates.len() / 2].clone();
    bad[ri].value = Some(old.clone());
    let report = check(&bad);
    assert!(report.unchecked.is_empty(), "{report}");
    assert_eq!(report.anomalies.len(), 1, "{report}");
    let a = &report.anomalies[0];
    assert!(a.ops.iter().any(|o| o == &bad[ri]), "{a}");
    assert!(matches!(
        a.kind,
        AnomalyKind::StaleRead | AnomalyKind::LostWrite
    ));
}
