//! The state of a node's scaling machinery, apart from the node itself: settings, the
//! entries it gave up, the keys it wrote this epoch, peer channels, and counters. The
//! behaviour lives in `scale` (rebalancing), `prewarm` and `advice`, which use it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_core::advisor::{Advisor, Thresholds};
use cache_core::{Entry, Membership};
use cache_proto::v1 as pb;
use tokio::sync::watch;
use tonic::transport::Channel;

/// Keys written in one epoch that a node remembers; past this, it refuses every handed-off
/// entry and asks no previous owner until the next epoch (safe, only less warm).
const MAX_WRITTEN_KEYS: usize = 1 << 20;

/// Settings of the scaling machinery; see the setters of [`crate::CacheNodeBuilder`].
#[derive(Debug, Clone)]
pub(crate) struct ScaleConfig {
    pub handoff: bool,
    pub handoff_window: Duration,
    pub gossip_interval: Duration,
    pub prewarm: bool,
    pub prewarm_fraction: f64,
    pub manifest_interval: Duration,
    pub drain_timeout: Duration,
    pub shutdown_grace: Duration,
    pub fence_grace: Duration,
    pub advisor: Thresholds,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        Self {
            handoff: true,
            handoff_window: Duration::from_secs(30),
            gossip_interval: Duration::from_secs(1),
            prewarm: true,
            prewarm_fraction: 0.5,
            manifest_interval: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            fence_grace: Duration::from_secs(1),
            advisor: Thresholds::default(),
        }
    }
}

/// Entries of keys this node gave up at `epoch`, as they were once its older writes had
/// finished: what their new owners may fetch during the window.
#[derive(Debug)]
pub(crate) struct Departed {
    pub epoch: u64,
    pub until: Instant,
    pub entries: HashMap<Arc<str>, Entry>,
}

/// Keys this node wrote at `epoch`, during the window after it adopted it: handed-over and
/// peeked copies of them are older, and refused. Past `until`, no such copy is taken, so no
/// write needs recording.
#[derive(Debug)]
pub(crate) struct Written {
    pub epoch: u64,
    pub until: Instant,
    pub keys: HashSet<String>,
    pub overflow: bool,
}

impl Written {
    /// An empty record for `epoch`'s window, which ends at `until`.
    pub fn new(epoch: u64, until: Instant) -> Self {
        Self {
            epoch,
            until,
            keys: HashSet::new(),
            overflow: false,
        }
    }
}

/// What a node knows of the change it adopted last, for asking previous owners.
#[derive(Debug)]
pub(crate) struct Gained {
    pub epoch: u64,
    pub previous: Arc<Membership>,
    pub until: Instant,
}

/// Cumulative figures of the whole cluster, for rates between two advice calls.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    pub reads: u64,
    pub ghost_hits: u64,
    pub requests: u64,
    pub bytes_served: u64,
}

/// A node's scaling state.
#[derive(Debug)]
pub(crate) struct ScaleState {
    pub config: ScaleConfig,
    pub departed: Mutex<Option<Departed>>,
    pub written: Mutex<Written>,
    pub gained: Mutex<Option<Gained>>,
    pub peers: Mutex<HashMap<String, Channel>>,
    /// The fence loop and the handoff of the epoch adopted last.
    pub tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Held while an epoch is adopted and the cache is cleaned up for it: fence answers wait
    /// for it, so no entry for the new epoch can arrive before the clean-up is over.
    pub adopting: tokio::sync::Mutex<()>,
    pub drained: AtomicBool,
    /// True once the node has its epoch from the store (see [`CacheNode::ready`]).
    pub ready: watch::Sender<bool>,
    pub advisor: Mutex<(Advisor, Option<(Instant, Totals)>)>,
    pub started: Instant,
    /// Until when writes wait, when the node started in a cluster that already existed: a
    /// previous process on its address may have granted leases that holders still honour.
    pub quiet_until: Mutex<Option<Instant>>,
    /// Whether a process served on this node's address before this one.
    pub restarted: AtomicBool,
    pub handoff_hits: AtomicU64,
    pub handoff_sent: AtomicU64,
    pub handoff_received: AtomicU64,
    pub handoff_refused: AtomicU64,
    pub prewarmed: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent, even if it panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ScaleState {
    pub fn new(config: ScaleConfig) -> Self {
        Self {
            advisor: Mutex::new((Advisor::new(config.advisor), None)),
            config,
            departed: Mutex::default(),
            written: Mutex::new(Written::new(0, Instant::now())),
            gained: Mutex::default(),
            peers: Mutex::default(),
            tasks: Mutex::default(),
            adopting: tokio::sync::Mutex::new(()),
            drained: AtomicBool::new(false),
            ready: watch::channel(false).0,
            started: Instant::now(),
            quiet_until: Mutex::default(),
            restarted: AtomicBool::new(false),
            handoff_hits: AtomicU64::new(0),
            handoff_sent: AtomicU64::new(0),
            handoff_received: AtomicU64::new(0),
            handoff_refused: AtomicU64::new(0),
            prewarmed: AtomicU64::new(0),
        }
    }

    pub fn count_handoff_hit(&self) {
        self.handoff_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A write of `key` ended (after its store call, before it lets fences go by): the copy
    /// of it this node set aside when it gave the key up, if any, is no longer the store's
    /// version, and is neither handed over nor peeked. The copy was set aside when the node
    /// adopted the epoch that moved the key; a write admitted before that may have still been
    /// waiting (for lease holders, or for its turn) with the old copy cached.
    pub fn forget_departed(&self, key: &str) {
        if let Some(d) = lock(&self.departed).as_mut() {
            d.entries.remove(key);
        }
    }

    /// Records a write of `key` admitted at `epoch` (before its store call), while copies
    /// from elsewhere may still be taken for that epoch.
    pub fn mark_written(&self, key: &str, epoch: u64) {
        let mut written = lock(&self.written);
        if epoch < written.epoch {
            // A write admitted before the node moved on: no copy for its epoch is taken now.
            return;
        }
        if epoch > written.epoch {
            // Adopted, and the clean-up has not opened the window yet: open it now.
            *written = Written::new(epoch, Instant::now() + self.config.handoff_window);
        }
        if Instant::now() >= written.until {
            return;
        }
        if written.keys.len() < MAX_WRITTEN_KEYS {
            written.keys.insert(key.to_owned());
        } else {
            written.overflow = true;
        }
    }

    /// Whether a copy of `key` from elsewhere must be refused at `epoch`: the key may have been
    /// written here since, or the window for such copies is over.
    pub fn was_written(&self, key: &str, epoch: u64) -> bool {
        let written = lock(&self.written);
        written.epoch != epoch
            || Instant::now() >= written.until
            || written.overflow
            || written.keys.contains(key)
    }

    pub fn stats(&self) -> pb::NodeStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        pb::NodeStats {
            handoff_hits: l(&self.handoff_hits),
            handoff_sent: l(&self.handoff_sent),
            handoff_received: l(&self.handoff_received),
            handoff_refused: l(&self.handoff_refused),
            prewarmed: l(&self.prewarmed),
            drained: self.drained.load(Ordering::SeqCst),
            ..Default::default()
        }
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
