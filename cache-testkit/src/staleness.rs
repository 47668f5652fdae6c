//! A bounded-staleness checker for histories of reads and writes on keys: does every read
//! return a value at least as new as every write that finished before the read began, less an
//! allowed lag?
//!
//! This is what `Bounded` reads promise, and linearizability (see [`crate::linear`]) cannot
//! express it. It judges each read on its own, so it accepts some histories that are not
//! linearizable (two reads that disagree on the order of two concurrent writes).
//!
//! Each write writes a unique value id. A read of key `k` that returned the value of write
//! `w_v` (or the key's initial state) is **stale** when some other write `w` of `k` started
//! after `w_v` finished, and finished before the read began, less an allowed `staleness`:
//! `w_v.end < w.start` and `w.end + staleness < r.start`. A read that returns the value of a
//! write that began after the read finished is also a violation. Writes can be limited to a
//! subset (for example: only writes made through the cache), which then are the only ones
//! that can make a read stale; a read may still return any write's value.
//!
//! This needs no total order of versions: the order comes from real time alone, so it is
//! sound for concurrent writers.

use std::collections::HashMap;
use std::fmt;

use crate::error::Error;
use crate::history::{HistoryOp, OpKind};

/// What an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Wrote `value` (`None`: deleted).
    Write {
        /// The unique id of the value written, or `None` for a delete.
        value: Option<u64>,
        /// Whether this write counts for the check (see [`check`]).
        counted: bool,
    },
    /// Read `value` (`None`: absent).
    Read {
        /// The value id read, or `None` when the key was absent.
        value: Option<u64>,
    },
}

/// One completed operation, timed in nanoseconds on a clock shared by all clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The key.
    pub key: String,
    /// The operation.
    pub action: Action,
    /// When it was invoked.
    pub start: u64,
    /// When it returned.
    pub end: u64,
    /// Who made it (for reports).
    pub client: String,
}

/// The first stale read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The stale read.
    pub read: Event,
    /// A write it should have seen.
    pub missed: Event,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stale read of {:?} by {} during [{}, {}] returned {:?}, but a write of {:?} by {} \
             finished at {}",
            self.read.key,
            self.read.client,
            self.read.start,
            self.read.end,
            self.read.action,
            self.missed.action,
            self.missed.client,
            self.missed.end
        )
    }
}

/// Converts a history in the [`crate::history`] format into events, for histories whose value
/// tags are decimal ids. Acknowledged writes, deletes and applied cas ops become writes that
/// count when `counted` says so; writes of unknown outcome become writes that never count (a
/// read may return them, but they make no read stale); acknowledged reads become reads;
/// everything else is left out. The event's client is the process number.
///
/// # Errors
/// [`Error::ValueTag`] for a value tag that is not a decimal id.
pub fn events_from_history(
    history: &[HistoryOp],
    counted: impl Fn(&HistoryOp) -> bool,
) -> Result<Vec<Event>, Error> {
    let id = |tag: &Option<String>| -> Result<Option<u64>, Error> {
        tag.as_deref()
            .map(|t| t.parse().map_err(|_| Error::ValueTag { tag: t.to_owned() }))
            .transpose()
    };
    let mut events = Vec::with_capacity(history.len());
    for op in history {
        let action = match (op.op, op.ok) {
            (OpKind::Read, Some(true)) => Action::Read {
                value: id(&op.value)?,
            },
            (OpKind::Write | OpKind::Cas, Some(true) | None)
            | (OpKind::Delete, Some(true) | None) => {
                let value = if op.op == OpKind::Delete {
                    None
                } else {
                    id(&op.value)?
                };
                Action::Write {
                    value,
                    counted: op.ok == Some(true) && counted(op),
                }
            }
            _ => continue,
        };
        events.push(Event {
            key: op.key.clone(),
            action,
            start: op.invoke_ns,
            end: op.complete_ns,
            client: op.process.to_string(),
        });
    }
    Ok(events)
}

/// Checks `events` (see the module docs), allowing reads to be stale by `staleness`
/// nanoseconds. Values that no write produced are the keys' initial state, taken to be
/// written before time 0. Returns the first violation, in order of the reads' start.
///
/// # Errors
/// The first [`Violation`].
pub fn check(events: &[Event], staleness: u64) -> Result<(), Box<Violation>> {
    // For each key: its writes, and the writes by value id.
    let mut writes: HashMap<&str, Vec<&Event>> = HashMap::new();
    let mut by_value: HashMap<(&str, Option<u64>), &Event> = HashMap::new();
    for e in events {
        if let Action::Write { value, .. } = e.action {
            writes.entry(&e.key).or_default().push(e);
            by_value.insert((&e.key, value), e);
        }
    }
    let mut reads: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.action, Action::Read { .. }))
        .collect();
    reads.sort_by_key(|e| e.start);
    for read in reads {
        let Action::Read { value } = read.action else {
            continue;
        };
        // When the value read was written; an unknown value is the initial state.
        let written = by_value.get(&(read.key.as_str(), value)).copied();
        if let Some(w) = written
            && w.start > read.end
        {
            return Err(Box::new(Violation {
                read: read.clone(),
                missed: w.clone(),
            }));
        }
        // A counted write that began after the value's write ended, and ended (less the
        // allowed staleness) before the read began, should have been seen.
        let missed = writes.get(read.key.as_str()).and_then(|ws| {
            ws.iter().find(|w| {
                matches!(w.action, Action::Write { counted: true, .. })
                    && written.is_none_or(|v| v.end < w.start)
                    && w.end.saturating_add(staleness) < read.start
            })
        });
        if let Some(w) = missed {
            return Err(Box::new(Violation {
                read: read.clone(),
                missed: (*w).clone(),
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(value: u64, start: u64, end: u64) -> Event {
        Event {
            key: "k".into(),
            action: Action::Write {
                value: Some(value),
                counted: true,
            },
            start,
            end,
            client: "w".into(),
        }
    }

    fn r(value: Option<u64>, start: u64, end: u64) -> Event {
        Event {
            key: "k".into(),
            action: Action::Read { value },
            start,
            end,
            client: "r".into(),
        }
    }

    #[test]
    fn fresh_reads_pass() {
        let h = [
            w(1, 0, 10),
            w(2, 20, 30),
            r(Some(2), 40, 50),
            r(Some(1), 5, 15),
        ];
        check(&h, 0).unwrap();
    }

    #[test]
    fn concurrent_writes_may_be_read_in_either_order() {
        // Writes 1 and 2 overlap: after both, a read may return either.
        let h = [
            w(1, 0, 30),
            w(2, 10, 20),
            r(Some(1), 40, 50),
            r(Some(2), 60, 70),
        ];
        check(&h, 0).unwrap();
    }

    #[test]
    fn a_read_overlapping_a_write_may_return_old_or_new() {
        let h = [
            w(1, 0, 10),
            w(2, 20, 40),
            r(Some(1), 30, 35),
            r(Some(2), 30, 35),
        ];
        check(&h, 0).unwrap();
    }

    #[test]
    fn a_stale_read_is_found() {
        let h = [w(1, 0, 10), w(2, 20, 30), r(Some(1), 40, 50)];
        let v = check(&h, 0).unwrap_err();
        assert_eq!(v.missed, w(2, 20, 30));
        assert!(v.to_string().contains("stale read"));
    }

    #[test]
    fn the_initial_state_is_stale_once_a_write_finished() {
        assert!(check(&[w(1, 0, 10), r(None, 20, 30)], 0).is_err());
        check(&[w(1, 0, 10), r(None, 5, 30)], 0).unwrap();
    }

    #[test]
    fn reading_the_future_is_a_violation() {
        assert!(check(&[r(Some(1), 0, 10), w(1, 20, 30)], 0).is_err());
    }

    #[test]
    fn staleness_allows_bounded_lag() {
        let h = [w(1, 0, 10), w(2, 20, 30), r(Some(1), 40, 50)];
        check(&h, 15).unwrap();
        assert!(check(&h, 5).is_err());
    }

    #[test]
    fn histories_convert_to_events() {
        let h = [
            HistoryOp::write(1, "k", "1", 0, 10),
            HistoryOp::write(2, "k", "2", 20, 30).with_mode("direct"),
            HistoryOp::write(2, "k", "3", 20, 30).with_ok(None),
            HistoryOp::write(2, "k", "4", 20, 30).with_ok(Some(false)),
            HistoryOp::read(3, "k", Some("1"), 40, 50),
            HistoryOp::read(3, "k", Some("1"), 40, 50).with_ok(None),
            HistoryOp::delete(1, "k", 60, 70),
        ];
        let events = events_from_history(&h, |op| op.mode.is_none()).unwrap();
        let actions: Vec<Action> = events.iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            [
                Action::Write {
                    value: Some(1),
                    counted: true
                },
                Action::Write {
                    value: Some(2),
                    counted: false
                },
                Action::Write {
                    value: Some(3),
                    counted: false
                },
                Action::Read { value: Some(1) },
                Action::Write {
                    value: None,
                    counted: true
                },
            ]
        );
        assert_eq!(
            (events[3].start, events[3].end, events[3].client.as_str()),
            (40, 50, "3")
        );
        // The direct write is not counted, so the read is not stale; counting it finds it.
        check(&events, 0).unwrap();
        let all = events_from_history(&h, |_| true).unwrap();
        assert_eq!(check(&all, 0).unwrap_err().missed.start, 20);
        let bad = [HistoryOp::write(1, "k", "one", 0, 1)];
        assert!(matches!(
            events_from_history(&bad, |_| true),
            Err(Error::ValueTag { tag }) if tag == "one"
        ));
    }

    #[test]
    fn uncounted_writes_never_make_a_read_stale() {
        let mut direct = w(2, 20, 30);
        direct.action = Action::Write {
            value: Some(2),
            counted: false,
        };
        let h = [w(1, 0, 10), direct, r(Some(1), 40, 50)];
        check(&h, 0).unwrap();
    }
}
