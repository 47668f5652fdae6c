//! The workload of `cache-bench check`: client processes that read, write, write
//! conditionally and delete a small set of keys, one op at a time each, recording every op;
//! a process that writes straight to the store; and the final reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cache_client::{CacheClient, Consistency, Error};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use cache_testkit::history::{HistoryOp, OpKind, Recorder};

/// Bytes of every value: its tag, `|`, then padding.
const VALUE_BYTES: usize = 100;
/// The longest a single op may take before its outcome counts as unknown.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// The deadline a client sets on its calls (under [`OP_TIMEOUT`]).
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most a process waits between two ops.
const THINK_MAX: Duration = Duration::from_millis(2);
/// How long a process waits after an op that failed.
const FAILURE_PAUSE: Duration = Duration::from_millis(100);
/// How often the direct writer writes.
const DIRECT_PERIOD: Duration = Duration::from_millis(25);
/// Attempts at each final read before it is given up.
const FINAL_READ_ATTEMPTS: usize = 3;

/// The keys of a run, under a prefix of its own so that they start missing.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// Keys that take most of the traffic.
    pub hot: Vec<String>,
    /// The rest of the keys written through the cache.
    pub cold: Vec<String>,
    /// Keys written only straight to the store, read only with `Strict`.
    pub direct: Vec<String>,
}

impl Keys {
    /// `keys` keys under `prefix`, of which `hot` are hot, and `direct` direct keys.
    pub fn new(prefix: &str, keys: usize, hot: usize, direct: usize) -> Self {
        let hot_n = hot.min(keys);
        Self {
            hot: (0..hot_n).map(|i| format!("{prefix}/hot/{i}")).collect(),
            cold: (hot_n..keys)
                .map(|i| format!("{prefix}/cold/{i}"))
                .collect(),
            direct: (0..direct)
                .map(|i| format!("{prefix}/direct/{i}"))
                .collect(),
        }
    }

    /// A key written through the cache: a hot one 80% of the time.
    fn pick(&self, rng: &mut StdRng) -> &str {
        let hot = self.cold.is_empty() || (!self.hot.is_empty() && rng.random_bool(0.8));
        let from = if hot { &self.hot } else { &self.cold };
        &from[rng.random_range(0..from.len())]
    }

    /// Every key written through the cache.
    pub fn cached(&self) -> impl Iterator<Item = &String> {
        self.hot.iter().chain(&self.cold)
    }
}

/// A client process's read mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// [`Consistency::Strong`].
    Strong,
    /// [`Consistency::Strict`].
    Strict,
}

impl Mode {
    fn consistency(self) -> Consistency {
        match self {
            Mode::Strong => Consistency::Strong,
            Mode::Strict => Consistency::Strict,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Strong => "strong",
            Mode::Strict => "strict",
        }
    }
}

/// Failure counts of a run.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    failed_by_code: Mutex<BTreeMap<String, u64>>,
    /// When each failed request ended, on the history's clock (the first million).
    failed_at: Mutex<Vec<u64>>,
    /// Reads that failed (recorded, ignored by the checker).
    pub failed_reads: AtomicU64,
    /// Writes, conditional writes and deletes whose outcome is unknown.
    pub unknown_writes: AtomicU64,
    /// Conditional writes refused because the version had changed.
    pub cas_mismatches: AtomicU64,
    /// `Strong` reads that succeeded.
    pub strong_reads: AtomicU64,
    /// When client processes were frozen, on the history's clock, and which.
    pauses: Mutex<Vec<(u64, u64, usize)>>,
}

impl Tally {
    fn failed(&self, code: &str, at_ns: u64) {
        let mut map = self
            .failed_by_code
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *map.entry(code.to_owned()).or_default() += 1;
        let mut at = self.failed_at.lock().unwrap_or_else(|e| e.into_inner());
        if at.len() < 1 << 20 {
            at.push(at_ns);
        }
    }

    /// The windows in which a client process was frozen.
    pub fn pause_windows(&self) -> Vec<(u64, u64)> {
        self.pauses()
            .into_iter()
            .map(|(start, end, _)| (start, end))
            .collect()
    }

    /// The windows in which a client process was frozen, with the process's index.
    pub fn pauses(&self) -> Vec<(u64, u64, usize)> {
        self.pauses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Failed requests that ended outside every fault window, widened by `slack` on either
    /// side (an op may start before a fault and end after it).
    pub fn failed_outside(&self, windows: &[(u64, u64)], slack: Duration) -> u64 {
        let slack = u64::try_from(slack.as_nanos()).unwrap_or(u64::MAX);
        let at = self.failed_at.lock().unwrap_or_else(|e| e.into_inner());
        at.iter()
            .filter(|&&t| {
                !windows
                    .iter()
                    .any(|&(s, e)| t + slack >= s && t <= e.saturating_add(slack))
            })
            .count() as u64
    }

    /// Failed requests by error code.
    pub fn failed_by_code(&self) -> BTreeMap<String, u64> {
        self.failed_by_code
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A stable name for a client error.
pub(crate) fn code_name(e: &Error) -> &'static str {
    match e {
        Error::InvalidKey(_) => "invalid_key",
        Error::ValueTooLarge(_) => "value_too_large",
        Error::UnknownApp(_) => "unknown_app",
        Error::InvalidRequest(_) => "invalid_request",
        Error::NotFound(_) => "not_found",
        // Why it was unavailable: the store, a key whose previous owners were not fenced in
        // time, or a node that could not be reached.
        Error::Unavailable(why) if why.contains("blob store") => "unavailable_store",
        Error::Unavailable(why) if why.contains("not settled") => "unavailable_not_settled",
        Error::Unavailable(_) => "unavailable_node",
        Error::Timeout(_) => "timeout",
        Error::WrongOwner { .. } => "wrong_owner",
        Error::VersionMismatch(_) => "version_mismatch",
        Error::Overloaded(_) => "overloaded",
        Error::Config(_) => "config",
        Error::Internal(_) => "internal",
        _ => "other",
    }
}

/// A read's tier, as the history's mode label shows it after the read mode.
fn tier_name(tier: cache_client::Tier) -> &'static str {
    match tier {
        cache_client::Tier::Local => "local",
        cache_client::Tier::Home => "home",
        cache_client::Tier::Handoff => "handoff",
        cache_client::Tier::Store => "store",
    }
}

/// The bytes written for a value tag.
fn value_of(tag: &str) -> Bytes {
    let mut v = Vec::with_capacity(VALUE_BYTES.max(tag.len() + 1));
    v.extend_from_slice(tag.as_bytes());
    v.push(b'|');
    v.resize(VALUE_BYTES.max(v.len()), b'.');
    Bytes::from(v)
}

/// The tag of a value read; a value in another shape comes back as (the start of) its text,
/// which no write wrote.
fn tag_of(value: &[u8]) -> String {
    match value.iter().position(|&b| b == b'|') {
        Some(end) => String::from_utf8_lossy(&value[..end]).into_owned(),
        None => String::from_utf8_lossy(&value[..value.len().min(64)]).into_owned(),
    }
}

/// What every process shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// Where ops go.
    pub recorder: Recorder,
    /// The keys.
    pub keys: Keys,
    /// Failure counts.
    pub tally: Tally,
    /// Process ids advance by this when a process starts afresh after an op of unknown
    /// outcome (which stays open forever), so that ids never repeat.
    pub stride: u64,
    /// `Strong` processes read a key again, up to twice, right after reading it: the reads
    /// that leased copies serve, racing the writes of other processes.
    pub rereads: bool,
}

/// One op as it is about to be recorded.
struct Op<'a> {
    process: u64,
    key: &'a str,
    kind: OpKind,
    value: Option<String>,
    expected: Option<String>,
    mode: Option<String>,
    invoke_ns: u64,
}

impl Ctx {
    fn record(&self, op: Op<'_>, version: Option<String>, ok: Option<bool>) {
        self.recorder.record(HistoryOp {
            process: op.process,
            key: op.key.to_owned(),
            op: op.kind,
            value: op.value,
            version,
            expected: op.expected,
            invoke_ns: op.invoke_ns,
            complete_ns: self.recorder.now_ns(),
            ok,
            mode: op.mode,
        });
    }

    /// One read, recorded. Returns what it read, when it succeeded.
    async fn read(
        &self,
        client: &CacheClient,
        process: u64,
        key: &str,
        mode: Mode,
    ) -> Option<(Option<String>, String)> {
        let invoke_ns = self.recorder.now_ns();
        let result =
            tokio::time::timeout(OP_TIMEOUT, client.get_entry_with(key, mode.consistency())).await;
        let mut op = Op {
            process,
            key,
            kind: OpKind::Read,
            value: None,
            expected: None,
            mode: Some(mode.name().to_owned()),
            invoke_ns,
        };
        let failed = |code: &str| {
            self.tally.failed(code, self.recorder.now_ns());
            self.tally.failed_reads.fetch_add(1, Ordering::Relaxed);
        };
        if mode == Mode::Strong && matches!(result, Ok(Ok(_))) {
            self.tally.strong_reads.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(Ok(Some(fetched))) => {
                op.mode = Some(format!("{}/{}", mode.name(), tier_name(fetched.tier)));
                let tag = tag_of(&fetched.value);
                op.value = Some(tag.clone());
                self.record(op, Some(fetched.version.clone()), Some(true));
                Some((Some(tag), fetched.version))
            }
            Ok(Ok(None)) => {
                self.record(op, None, Some(true));
                Some((None, String::new()))
            }
            Ok(Err(e)) => {
                failed(code_name(&e));
                self.record(op, None, None);
                None
            }
            Err(_) => {
                failed("timeout");
                self.record(op, None, None);
                None
            }
        }
    }
}

/// The last value tag and version a process saw for a key (a missing key: no tag, "").
type Known = HashMap<String, (Option<String>, String)>;

/// How often a client process is frozen, and for how long: shorter than a read lease (2 s),
/// so that a frozen holder comes back with leases it still takes for valid.
const PAUSE_EVERY: std::ops::Range<Duration> = Duration::from_secs(2)..Duration::from_secs(5);
const PAUSE_FOR: std::ops::Range<Duration> =
    Duration::from_millis(300)..Duration::from_millis(1500);

/// Freezes the client process it runs in, now and then until `deadline`: it blocks the
/// process's only runtime thread, so that nothing of the process runs, its lease streams
/// included, as when a platform stops scheduling an instance.
pub(crate) async fn pauses(ctx: Arc<Ctx>, index: usize, seed: u64, deadline: Instant) {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let next = Instant::now() + rng.random_range(PAUSE_EVERY);
        if next + PAUSE_FOR.end >= deadline {
            return;
        }
        tokio::time::sleep_until(next).await;
        let start = ctx.recorder.now_ns();
        std::thread::sleep(rng.random_range(PAUSE_FOR));
        let end = ctx.recorder.now_ns();
        ctx.tally
            .pauses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((start, end, index));
    }
}

/// One client process: ops one at a time until `deadline`.
pub(crate) async fn client_process(
    ctx: Arc<Ctx>,
    index: usize,
    client: CacheClient,
    mode: Mode,
    seed: u64,
    deadline: Instant,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = index as u64;
    let mut seq = 0u64;
    let mut known = Known::new();
    let direct_reads = mode == Mode::Strict && !ctx.keys.direct.is_empty();
    // Like function instances, clients learn of changes of members at different times: each
    // asks the nodes for the newest list now and then, on its own schedule.
    let refresh_every = Duration::from_millis(rng.random_range(1000..5000));
    let mut next_refresh = Instant::now() + refresh_every;
    while Instant::now() < deadline {
        if Instant::now() >= next_refresh {
            let _ = tokio::time::timeout(OP_TIMEOUT, client.refresh_members()).await;
            next_refresh = Instant::now() + refresh_every;
        }
        let roll = rng.random_range(0..100);
        let failed = if roll < 70 {
            let key = if direct_reads && rng.random_bool(0.15) {
                ctx.keys.direct[rng.random_range(0..ctx.keys.direct.len())].clone()
            } else {
                ctx.keys.pick(&mut rng).to_owned()
            };
            let mut seen = ctx.read(&client, process, &key, mode).await;
            if ctx.rereads && mode == Mode::Strong {
                for _ in 0..rng.random_range(0..=2) {
                    if seen.is_none() {
                        break;
                    }
                    tokio::time::sleep(rng.random_range(Duration::ZERO..=THINK_MAX)).await;
                    seen = ctx.read(&client, process, &key, mode).await;
                }
            }
            let failed = seen.is_none();
            if let Some(seen) = seen {
                known.insert(key, seen);
            }
            failed
        } else {
            let key = ctx.keys.pick(&mut rng).to_owned();
            let kind = match roll {
                70..90 => OpKind::Write,
                90..98 => OpKind::Cas,
                _ => OpKind::Delete,
            };
            // A conditional write expects what a read of the key just returned, so that it
            // mostly races other writers rather than the process's own stale knowledge.
            let read_failed = kind == OpKind::Cas
                && match ctx.read(&client, process, &key, mode).await {
                    Some(seen) => {
                        known.insert(key.clone(), seen);
                        false
                    }
                    None => true,
                };
            if read_failed {
                true
            } else {
                seq += 1;
                let certain = mutate(&ctx, &client, process, &key, kind, seq, &mut known).await;
                if !certain {
                    // The op may still take effect: it stays open, and the process goes on
                    // under a new id.
                    process += ctx.stride;
                }
                !certain
            }
        };
        // After a failure, a pause, as a client backs off, rather than a burst of failing ops
        // against a node that is down.
        let pause = if failed {
            FAILURE_PAUSE
        } else {
            rng.random_range(Duration::ZERO..=THINK_MAX)
        };
        tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
    }
}

/// A write, conditional write or delete, recorded. Returns false when its outcome is unknown.
async fn mutate(
    ctx: &Ctx,
    client: &CacheClient,
    process: u64,
    key: &str,
    kind: OpKind,
    seq: u64,
    known: &mut Known,
) -> bool {
    let tag = format!("p{process}-{seq}");
    let (expected, expected_version) = known.get(key).cloned().unwrap_or((None, String::new()));
    let mut op = Op {
        process,
        key,
        kind,
        value: (kind != OpKind::Delete).then(|| tag.clone()),
        expected: None,
        mode: None,
        invoke_ns: ctx.recorder.now_ns(),
    };
    let result = match kind {
        OpKind::Write => tokio::time::timeout(OP_TIMEOUT, client.put(key, value_of(&tag)))
            .await
            .map(|r| r.map(Some)),
        OpKind::Cas => {
            op.expected = expected;
            tokio::time::timeout(
                OP_TIMEOUT,
                client.put_if_version(key, value_of(&tag), &expected_version),
            )
            .await
            .map(|r| r.map(Some))
        }
        _ => tokio::time::timeout(OP_TIMEOUT, client.delete(key))
            .await
            .map(|r| r.map(|()| None)),
    };
    match result {
        Ok(Ok(version)) => {
            let seen = match (&version, kind) {
                (Some(v), OpKind::Write | OpKind::Cas) => (Some(tag), v.clone()),
                _ => (None, String::new()),
            };
            known.insert(key.to_owned(), seen);
            ctx.record(op, version, Some(true));
            true
        }
        Ok(Err(Error::VersionMismatch(_))) if kind == OpKind::Cas => {
            ctx.tally.cas_mismatches.fetch_add(1, Ordering::Relaxed);
            known.remove(key);
            ctx.record(op, None, Some(false));
            true
        }
        Ok(Err(e)) => {
            ctx.tally.failed(code_name(&e), ctx.recorder.now_ns());
            ctx.tally.unknown_writes.fetch_add(1, Ordering::Relaxed);
            known.remove(key);
            ctx.record(op, None, None);
            false
        }
        Err(_) => {
            ctx.tally.failed("timeout", ctx.recorder.now_ns());
            ctx.tally.unknown_writes.fetch_add(1, Ordering::Relaxed);
            known.remove(key);
            ctx.record(op, None, None);
            false
        }
    }
}

/// The process that writes the direct keys straight to the store, bypassing the cache,
/// until `deadline`.
pub(crate) async fn direct_process(
    ctx: Arc<Ctx>,
    store: Arc<dyn ObjectStore>,
    first_id: u64,
    seed: u64,
    deadline: Instant,
) {
    if ctx.keys.direct.is_empty() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = first_id;
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let key = ctx.keys.direct[rng.random_range(0..ctx.keys.direct.len())].clone();
        seq += 1;
        let delete = rng.random_bool(0.05);
        let tag = format!("d{process}-{seq}");
        let op = Op {
            process,
            key: &key,
            kind: if delete {
                OpKind::Delete
            } else {
                OpKind::Write
            },
            value: (!delete).then(|| tag.clone()),
            expected: None,
            mode: Some("direct".to_owned()),
            invoke_ns: ctx.recorder.now_ns(),
        };
        let path = Path::from(key.as_str());
        let result = if delete {
            tokio::time::timeout(OP_TIMEOUT, async {
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await
        } else {
            tokio::time::timeout(
                OP_TIMEOUT,
                store.put(&path, PutPayload::from(value_of(&tag))),
            )
            .await
            .map(|r| r.map(|put| put.e_tag))
        };
        match result {
            Ok(Ok(version)) => ctx.record(op, version, Some(true)),
            other => {
                ctx.tally.failed(
                    if other.is_err() {
                        "direct_timeout"
                    } else {
                        "direct_store_error"
                    },
                    ctx.recorder.now_ns(),
                );
                ctx.tally.unknown_writes.fetch_add(1, Ordering::Relaxed);
                ctx.record(op, None, None);
                process += ctx.stride;
            }
        }
        tokio::time::sleep_until((Instant::now() + DIRECT_PERIOD).min(deadline)).await;
    }
}

/// After the faults are healed: a `Strict` read of every key, then a `Strong` read of every
/// key written through the cache, by one fresh client, so that lost writes show up. Each read
/// is tried a few times.
pub(crate) async fn final_reads(ctx: &Ctx, client: &CacheClient, process: u64) {
    let strict = ctx.keys.cached().chain(&ctx.keys.direct);
    let reads = strict
        .map(|k| (k, Mode::Strict))
        .chain(ctx.keys.cached().map(|k| (k, Mode::Strong)));
    for (key, mode) in reads {
        for _ in 0..FINAL_READ_ATTEMPTS {
            if ctx.read(client, process, key, mode).await.is_some() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_through_values() {
        let v = value_of("p3-17");
        assert_eq!(v.len(), VALUE_BYTES);
        assert_eq!(tag_of(&v), "p3-17");
        assert_eq!(tag_of(b"garbage"), "garbage");
    }

    #[test]
    fn keys_split_hot_cold_and_direct() {
        let keys = Keys::new("r", 64, 8, 4);
        assert_eq!(
            (keys.hot.len(), keys.cold.len(), keys.direct.len()),
            (8, 56, 4)
        );
        assert_eq!(keys.cached().count(), 64);
        let mut rng = StdRng::seed_from_u64(1);
        let hot = (0..1000)
            .filter(|_| keys.pick(&mut rng).starts_with("r/hot/"))
            .count();
        assert!((700..900).contains(&hot), "{hot}");
    }
}
