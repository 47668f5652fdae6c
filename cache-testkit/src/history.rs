//! The history format: one [`HistoryOp`] per operation a client made, stored as JSON lines,
//! and the [`Recorder`] that concurrent tasks share to collect them.
//!
//! Every write writes a value tag that is unique in the history, so a read's tag names the
//! write it observed. Times are nanoseconds on one monotonic clock shared by all processes.

use std::fmt;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What an operation did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Read the key's value tag.
    Read,
    /// Wrote a value tag.
    Write,
    /// Removed the key.
    Delete,
    /// Wrote a value tag if the key held the `expected` one (compare-and-set).
    Cas,
}

impl OpKind {
    /// The lowercase name, as in the JSON format.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Delete => "delete",
            OpKind::Cas => "cas",
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One operation on one key, as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOp {
    /// Which client (process) issued it.
    pub process: u64,
    /// The key it addressed.
    pub key: String,
    /// What it did.
    pub op: OpKind,
    /// read: the value tag it returned (None: the key was missing). write/cas: the value tag it
    /// wrote (every write writes a value tag unique in the history). delete: None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The store's version (ETag) read or written, when known. Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// cas only: the value tag the register must hold for the cas to apply (None: the key must
    /// be missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// When it was invoked, in nanoseconds.
    pub invoke_ns: u64,
    /// When it returned (or the caller gave up on it), in nanoseconds.
    pub complete_ns: u64,
    /// Some(true): completed and acknowledged. Some(false): definitely had no effect; for a cas
    /// this means the condition failed, which is an observation that the register did not hold
    /// `expected` at some point in [invoke, complete]. For read/write/delete Some(false) ops
    /// are ignored. None: outcome unknown (timeout, unavailable): a write/delete/cas may have
    /// taken effect at any time after invoke, or never; a read with None is ignored.
    pub ok: Option<bool>,
    /// Free-form label for reports, e.g. "strong", "strict", "direct". Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl HistoryOp {
    fn new(process: u64, key: String, op: OpKind, invoke_ns: u64, complete_ns: u64) -> Self {
        Self {
            process,
            key,
            op,
            value: None,
            version: None,
            expected: None,
            invoke_ns,
            complete_ns,
            ok: Some(true),
            mode: None,
        }
    }

    /// An acknowledged read that returned `value` (`None`: the key was missing).
    pub fn read(
        process: u64,
        key: impl Into<String>,
        value: Option<&str>,
        invoke_ns: u64,
        complete_ns: u64,
    ) -> Self {
        let mut op = Self::new(process, key.into(), OpKind::Read, invoke_ns, complete_ns);
        op.value = value.map(str::to_owned);
        op
    }

    /// An acknowledged write of `value`.
    pub fn write(
        process: u64,
        key: impl Into<String>,
        value: &str,
        invoke_ns: u64,
        complete_ns: u64,
    ) -> Self {
        let mut op = Self::new(process, key.into(), OpKind::Write, invoke_ns, complete_ns);
        op.value = Some(value.to_owned());
        op
    }

    /// An acknowledged delete.
    pub fn delete(process: u64, key: impl Into<String>, invoke_ns: u64, complete_ns: u64) -> Self {
        Self::new(process, key.into(), OpKind::Delete, invoke_ns, complete_ns)
    }

    /// An acknowledged compare-and-set: `value` replaced `expected` (`None`: the key was
    /// missing). Use [`HistoryOp::with_ok`] for a cas whose condition failed.
    pub fn cas(
        process: u64,
        key: impl Into<String>,
        expected: Option<&str>,
        value: &str,
        invoke_ns: u64,
        complete_ns: u64,
    ) -> Self {
        let mut op = Self::new(process, key.into(), OpKind::Cas, invoke_ns, complete_ns);
        op.expected = expected.map(str::to_owned);
        op.value = Some(value.to_owned());
        op
    }

    /// The same operation with outcome `ok` (see [`HistoryOp::ok`]).
    #[must_use]
    pub fn with_ok(mut self, ok: Option<bool>) -> Self {
        self.ok = ok;
        self
    }

    /// The same operation with the store's `version`.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The same operation labelled with `mode`.
    #[must_use]
    pub fn with_mode(mut self, mode: impl Into<String>) -> Self {
        self.mode = Some(mode.into());
        self
    }
}

/// Writes `ops` as JSON lines: one operation per line.
///
/// # Errors
/// Any error of `w`.
pub fn write_jsonl(mut w: impl Write, ops: &[HistoryOp]) -> std::io::Result<()> {
    for op in ops {
        serde_json::to_writer(&mut w, op)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Reads operations written by [`write_jsonl`]. Blank lines are skipped.
///
/// # Errors
/// [`Error::Parse`] naming the first line that is not an operation, or [`Error::Io`].
pub fn read_jsonl(r: impl BufRead) -> Result<Vec<HistoryOp>> {
    let mut ops = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            line: i + 1,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|source| Error::Parse {
            line: i + 1,
            source,
        })?;
        ops.push(op);
    }
    Ok(ops)
}

/// How many operations a [`Recorder`] made with [`Recorder::new`] holds.
pub const DEFAULT_MAX_OPS: usize = 1 << 20;

type Now = dyn Fn() -> Instant + Send + Sync;

struct Inner {
    origin: Instant,
    now: Box<Now>,
    max_ops: usize,
    ops: Mutex<Vec<HistoryOp>>,
    dropped: AtomicU64,
}

/// Collects operations from many tasks, timed on one clock. Clones share the same history.
///
/// Bounded: it holds at most `max_ops` operations at a time; further ones are counted by
/// [`Recorder::dropped`] and not stored.
///
/// # Examples
/// ```
/// use cache_testkit::history::{HistoryOp, Recorder};
///
/// let rec = Recorder::bounded(1);
/// let start = rec.now_ns();
/// rec.record(HistoryOp::write(1, "k", "a", start, rec.now_ns()));
/// rec.record(HistoryOp::read(2, "k", Some("a"), rec.now_ns(), rec.now_ns()));
/// assert_eq!((rec.take().len(), rec.dropped()), (1, 1));
/// ```
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("max_ops", &self.inner.max_ops)
            .field("len", &self.len())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder on the system's monotonic clock holding up to [`DEFAULT_MAX_OPS`].
    pub fn new() -> Self {
        Self::bounded(DEFAULT_MAX_OPS)
    }

    /// A recorder on the system's monotonic clock holding up to `max_ops` operations.
    pub fn bounded(max_ops: usize) -> Self {
        Self::with_clock(max_ops, Instant::now)
    }

    /// A recorder holding up to `max_ops` operations, timed by `now` (for example a test's
    /// manual clock). `now` must never go backwards; time 0 is its reading here.
    pub fn with_clock(max_ops: usize, now: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        let origin = now();
        Self {
            inner: Arc::new(Inner {
                origin,
                now: Box::new(now),
                max_ops,
                ops: Mutex::default(),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Nanoseconds since the recorder was made.
    pub fn now_ns(&self) -> u64 {
        let elapsed = (self.inner.now)().saturating_duration_since(self.inner.origin);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Stores `op`, or counts it as dropped when the recorder is full.
    pub fn record(&self, op: HistoryOp) {
        let mut ops = self.lock();
        if ops.len() < self.inner.max_ops {
            ops.push(op);
        } else {
            drop(ops);
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the operations recorded so far, leaving room for as many again.
    pub fn take(&self) -> Vec<HistoryOp> {
        std::mem::take(&mut *self.lock())
    }

    /// The number of operations held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no operation is held now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many operations were not stored because the recorder was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HistoryOp>> {
        // A panic while holding the lock cannot leave the vector inconsistent.
        self.inner
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trips_and_omits_absent_fields() {
        let ops = vec![
            HistoryOp::write(1, "k", "a", 0, 10).with_version("e1"),
            HistoryOp::read(2, "k", None, 5, 20).with_mode("strong"),
            HistoryOp::cas(3, "k", Some("a"), "b", 30, 40).with_ok(Some(false)),
            HistoryOp::delete(1, "k", 50, 60).with_ok(None),
        ];
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &ops).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().count(), 4);
        let first = text.lines().next().unwrap();
        assert!(first.contains(r#""op":"write""#), "{first}");
        assert!(!first.contains("expected"), "{first}");
        assert!(text.lines().nth(3).unwrap().contains(r#""ok":null"#));
        assert_eq!(read_jsonl(&buf[..]).unwrap(), ops);
    }

    #[test]
    fn a_bad_line_is_named() {
        let good = serde_json::to_string(&HistoryOp::delete(1, "k", 0, 1)).unwrap();
        let text = format!("{good}\n\n{good}\n{{\"process\":1}}\n");
        let err = read_jsonl(text.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Parse { line: 4, .. }), "{err}");
        assert!(err.to_string().contains("line 4"), "{err}");
    }

    #[test]
    fn the_recorder_is_bounded_and_shared() {
        let rec = Recorder::bounded(3);
        let clone = rec.clone();
        let t0 = rec.now_ns();
        for i in 0..5 {
            clone.record(HistoryOp::write(i, "k", &i.to_string(), t0, clone.now_ns()));
        }
        assert_eq!((rec.len(), rec.dropped()), (3, 2));
        assert!(rec.now_ns() >= t0);
        assert_eq!(rec.take().len(), 3);
        assert!(rec.is_empty());
        rec.record(HistoryOp::delete(9, "k", 0, 1));
        assert_eq!((rec.len(), rec.dropped()), (1, 2));
    }

    #[test]
    fn the_recorder_follows_an_injected_clock() {
        let now = Arc::new(Mutex::new(Instant::now()));
        let source = now.clone();
        let rec = Recorder::with_clock(10, move || *source.lock().unwrap());
        assert_eq!(rec.now_ns(), 0);
        *now.lock().unwrap() += std::time::Duration::from_micros(7);
        assert_eq!(rec.now_ns(), 7_000);
    }
}
