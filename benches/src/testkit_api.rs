//! A minimal stand-in for `cache_testkit::{history, linear}`: the same types and functions,
//! with a simpler checker (stale reads, reads from the future, lost writes, unknown values,
//! double CAS winners).
#![allow(dead_code)]

pub mod history {
    //! Operations as a history records them.

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use serde::{Deserialize, Serialize};

    /// What an operation did.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum OpKind {
        /// A read.
        Read,
        /// An unconditional write.
        Write,
        /// A delete.
        Delete,
        /// A conditional write.
        Cas,
    }

    /// One operation of one process.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HistoryOp {
        /// The process that made it.
        pub process: u64,
        /// The key.
        pub key: String,
        /// What it did.
        pub op: OpKind,
        /// Read: the value tag returned; write and cas: the value tag written.
        pub value: Option<String>,
        /// The version (ETag), informational.
        pub version: Option<String>,
        /// Cas: the value tag the key must hold (`None`: must be missing).
        pub expected: Option<String>,
        /// When it was invoked.
        pub invoke_ns: u64,
        /// When it completed.
        pub complete_ns: u64,
        /// `Some(true)` acknowledged, `Some(false)` no effect, `None` unknown.
        pub ok: Option<bool>,
        /// "strong", "strict" or "direct".
        pub mode: Option<String>,
    }

    /// Writes `ops` as JSON lines.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_jsonl(mut w: impl std::io::Write, ops: &[HistoryOp]) -> std::io::Result<()> {
        for op in ops {
            serde_json::to_writer(&mut w, op)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    }

    /// Collects operations from many tasks, up to a bound.
    #[derive(Debug)]
    pub struct Recorder {
        start: Instant,
        max_ops: usize,
        ops: Mutex<Vec<HistoryOp>>,
        dropped: AtomicU64,
    }

    impl Recorder {
        /// A recorder that keeps at most `max_ops` operations.
        pub fn new(max_ops: usize) -> Self {
            Self {
                start: Instant::now(),
                max_ops,
                ops: Mutex::new(Vec::new()),
                dropped: AtomicU64::new(0),
            }
        }

        /// Nanoseconds since the recorder was made.
        pub fn now_ns(&self) -> u64 {
            u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
        }

        /// Records one operation (dropped beyond the bound).
        pub fn record(&self, op: HistoryOp) {
            let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
            if ops.len() < self.max_ops {
                ops.push(op);
            } else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }

        /// Every operation recorded so far.
        pub fn take(&self) -> Vec<HistoryOp> {
            std::mem::take(&mut *self.ops.lock().unwrap_or_else(|e| e.into_inner()))
        }

        /// Operations dropped beyond the bound.
        pub fn dropped(&self) -> u64 {
            self.dropped.load(Ordering::Relaxed)
        }
    }
}

pub mod linear {
    //! The checker.

    use std::collections::{BTreeMap, HashMap};
    use std::fmt;

    use super::history::{HistoryOp, OpKind};

    /// The kind of an anomaly.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum AnomalyKind {
        /// A read missed a write that finished before it began.
        StaleRead,
        /// The final read missed an acknowledged write.
        LostWrite,
        /// A read returned a value written after it finished.
        NonLinearizable,
        /// Two conditional writes on the same expected value both won.
        DoubleCasWinner,
        /// A read returned a value no write wrote.
        UnknownValue,
    }

    impl AnomalyKind {
        fn name(self) -> &'static str {
            match self {
                AnomalyKind::StaleRead => "stale_read",
                AnomalyKind::LostWrite => "lost_write",
                AnomalyKind::NonLinearizable => "non_linearizable",
                AnomalyKind::DoubleCasWinner => "double_cas_winner",
                AnomalyKind::UnknownValue => "unknown_value",
            }
        }
    }

    /// One anomaly with the operations that show it.
    #[derive(Debug, Clone)]
    pub struct Anomaly {
        /// The key.
        pub key: String,
        /// Its kind.
        pub kind: AnomalyKind,
        /// The operations involved.
        pub ops: Vec<HistoryOp>,
        /// What went wrong.
        pub explanation: String,
    }

    impl fmt::Display for Anomaly {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            writeln!(
                f,
                "{} on {:?}: {}",
                self.kind.name(),
                self.key,
                self.explanation
            )?;
            for op in &self.ops {
                writeln!(
                    f,
                    "  p{} {:?} value={:?} expected={:?} ok={:?} mode={:?} [{} .. {}]",
                    op.process,
                    op.op,
                    op.value,
                    op.expected,
                    op.ok,
                    op.mode,
                    op.invoke_ns,
                    op.complete_ns
                )?;
            }
            Ok(())
        }
    }

    /// The checker's findings.
    #[derive(Debug, Clone, Default)]
    pub struct Report {
        /// Operations checked.
        pub ops: usize,
        /// Keys checked.
        pub keys: usize,
        /// Every anomaly found.
        pub anomalies: Vec<Anomaly>,
        /// Keys that could not be checked.
        pub unchecked: Vec<String>,
    }

    impl Report {
        /// Whether no anomaly was found.
        pub fn is_ok(&self) -> bool {
            self.anomalies.is_empty()
        }

        /// Anomalies by kind.
        pub fn counts(&self) -> BTreeMap<String, u64> {
            let mut counts: BTreeMap<String, u64> = [
                AnomalyKind::StaleRead,
                AnomalyKind::LostWrite,
                AnomalyKind::NonLinearizable,
                AnomalyKind::DoubleCasWinner,
                AnomalyKind::UnknownValue,
            ]
            .iter()
            .map(|k| (k.name().to_owned(), 0))
            .collect();
            for a in &self.anomalies {
                *counts.entry(a.kind.name().to_owned()).or_default() += 1;
            }
            counts
        }

        /// Acknowledged writes that the final reads did not see.
        pub fn lost_writes(&self) -> u64 {
            self.anomalies
                .iter()
                .filter(|a| a.kind == AnomalyKind::LostWrite)
                .count() as u64
        }
    }

    fn is_write(op: &HistoryOp) -> bool {
        op.op != OpKind::Read && op.ok != Some(false)
    }

    /// Checks `history`.
    pub fn check(history: &[HistoryOp]) -> Report {
        let mut by_key: BTreeMap<&str, Vec<&HistoryOp>> = BTreeMap::new();
        for op in history {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
        let mut report = Report {
            ops: history.len(),
            keys: by_key.len(),
            ..Report::default()
        };
        for (key, ops) in by_key {
            check_key(key, &ops, &mut report.anomalies);
        }
        report
    }

    fn check_key(key: &str, ops: &[&HistoryOp], out: &mut Vec<Anomaly>) {
        let writes: Vec<&HistoryOp> = ops.iter().copied().filter(|o| is_write(o)).collect();
        let mut by_value: HashMap<&str, &HistoryOp> = HashMap::new();
        for w in &writes {
            if let (Some(v), OpKind::Write | OpKind::Cas) = (&w.value, w.op) {
                by_value.insert(v.as_str(), w);
            }
        }
        let end = |w: &HistoryOp| {
            if w.ok == Some(true) {
                w.complete_ns
            } else {
                u64::MAX
            }
        };
        let last_read = ops
            .iter()
            .filter(|o| o.op == OpKind::Read && o.ok == Some(true))
            .map(|o| o.invoke_ns)
            .max();
        let mut cas_winners: HashMap<Option<&str>, &HistoryOp> = HashMap::new();
        for op in ops {
            if op.op == OpKind::Cas
                && op.ok == Some(true)
                && let (Some(expected), Some(other)) = (
                    op.expected.as_deref(),
                    cas_winners.insert(op.expected.as_deref(), op),
                )
            {
                out.push(Anomaly {
                    key: key.to_owned(),
                    kind: AnomalyKind::DoubleCasWinner,
                    ops: vec![other.clone(), (*op).clone()],
                    explanation: format!("two conditional writes expecting {expected:?} won"),
                });
            }
            if op.op != OpKind::Read || op.ok != Some(true) {
                continue;
            }
            // The writes that could have produced what was read; none for the initial state.
            let sources: Vec<&HistoryOp> = match &op.value {
                Some(v) => match by_value.get(v.as_str()) {
                    Some(w) => vec![*w],
                    None => {
                        out.push(Anomaly {
                            key: key.to_owned(),
                            kind: AnomalyKind::UnknownValue,
                            ops: vec![(*op).clone()],
                            explanation: format!("read {v:?}, which no write wrote"),
                        });
                        continue;
                    }
                },
                None => writes
                    .iter()
                    .copied()
                    .filter(|w| w.op == OpKind::Delete)
                    .collect(),
            };
            if let [w] = sources.as_slice()
                && op.value.is_some()
                && w.invoke_ns > op.complete_ns
            {
                out.push(Anomaly {
                    key: key.to_owned(),
                    kind: AnomalyKind::NonLinearizable,
                    ops: vec![(*w).clone(), (*op).clone()],
                    explanation: "the read returned a value written after it finished".into(),
                });
                continue;
            }
            // The newest end among the sources (the initial state ends at 0).
            let source_end = sources
                .iter()
                .filter(|w| w.invoke_ns <= op.complete_ns)
                .map(|w| end(w))
                .max()
                .unwrap_or(0);
            let missed = writes.iter().find(|w| {
                w.ok == Some(true)
                    && w.value != op.value
                    && source_end < w.invoke_ns
                    && w.complete_ns < op.invoke_ns
            });
            if let Some(w) = missed {
                let lost = Some(op.invoke_ns) == last_read
                    && !writes.iter().any(|x| x.invoke_ns > w.complete_ns);
                out.push(Anomaly {
                    key: key.to_owned(),
                    kind: if lost {
                        AnomalyKind::LostWrite
                    } else {
                        AnomalyKind::StaleRead
                    },
                    ops: vec![(*w).clone(), (*op).clone()],
                    explanation: format!(
                        "read {:?}, but a write of {:?} finished before the read began",
                        op.value, w.value
                    ),
                });
            }
        }
    }
}
