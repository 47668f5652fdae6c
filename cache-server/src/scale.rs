//! Scale events: adopting a new member list, handing entries to their new owners, draining,
//! pre-warming after scale-to-zero, and scaling advice.
//!
//! # A change of members, on one node
//! ```text
//! SetMembers(epoch E+1) ──▶ relay to every old and new member ──▶ adopt E+1
//!                                                                   │
//!       ┌───────────────────────────────────────────────────────────┘
//!       ▼
//!  wait for writes in progress (barrier) ──▶ list cached entries whose home moved
//!       ──▶ hottest first, one stream per new owner, a few batches in flight (backpressure)
//!       ──▶ not a member any more? then drained
//! ```
//! For `handoff_window` after adopting, a node that misses on a key it now owns asks the
//! key's previous owner before the store (tier `handoff`), and accepts entries handed to it,
//! except for keys it wrote since the change, whose versions are newer. Serving never waits
//! for any of this.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cache_core::advisor::{Advisor, Observation, Thresholds};
use cache_core::prewarm::{MANIFEST_PREFIX, Manifest, ManifestEntry, plan};
use cache_core::{Entry, Membership, Version, key_hash};
use cache_proto::v1 as pb;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::node::CacheNode;

/// A handoff batch is closed at this many value bytes.
const HANDOFF_BATCH_BYTES: usize = 256 * 1024;
/// Batches in flight per destination: with the batch size, the bound on bytes in flight.
const HANDOFF_BATCHES_IN_FLIGHT: usize = 4;
/// Keys written during a handoff window that a node remembers; past this, it refuses every
/// handed-off entry until the window ends (safe, only less warm).
const MAX_WRITTEN_KEYS: usize = 1 << 20;
/// How long a peer call of the scaling machinery may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a miss waits for the previous owner before going to the store.
const PEEK_TIMEOUT: Duration = Duration::from_millis(250);
/// Manifests older than this are ignored and deleted.
const MANIFEST_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

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
            advisor: Thresholds::default(),
        }
    }
}

/// The window after a change of members.
#[derive(Debug)]
struct Window {
    previous: Arc<Membership>,
    until: Instant,
    written: HashSet<String>,
    overflow: bool,
}

/// Cumulative figures of the whole cluster, for rates between two advice calls.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    reads: u64,
    ghost_hits: u64,
    requests: u64,
    bytes_served: u64,
}

/// A node's scaling state.
#[derive(Debug)]
pub(crate) struct ScaleState {
    pub config: ScaleConfig,
    window: Mutex<Option<Window>>,
    peers: Mutex<HashMap<String, Channel>>,
    handoff_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    drained: AtomicBool,
    /// True once the start-up announcement is done (see [`CacheNode::announced`]).
    announced: watch::Sender<bool>,
    advisor: Mutex<(Advisor, Option<(Instant, Totals)>)>,
    started: Instant,
    handoff_hits: AtomicU64,
    handoff_sent: AtomicU64,
    handoff_received: AtomicU64,
    handoff_refused: AtomicU64,
    prewarmed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent, even if it panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ScaleState {
    pub fn new(config: ScaleConfig) -> Self {
        Self {
            advisor: Mutex::new((Advisor::new(config.advisor), None)),
            config,
            window: Mutex::default(),
            peers: Mutex::default(),
            handoff_task: Mutex::default(),
            drained: AtomicBool::new(false),
            announced: watch::channel(false).0,
            started: Instant::now(),
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

    /// Records a write of `key` made by this node (under its write lock). During a handoff
    /// window, entries handed over for it are refused from now on.
    pub fn mark_written(&self, key: &str) {
        let mut window = lock(&self.window);
        if let Some(w) = window.as_mut() {
            if w.written.len() < MAX_WRITTEN_KEYS {
                w.written.insert(key.to_owned());
            } else {
                w.overflow = true;
            }
        }
    }

    /// The window, if it is still open (an expired one is dropped).
    fn open_window<R>(&self, f: impl FnOnce(&Window) -> R) -> Option<R> {
        let mut window = lock(&self.window);
        if window.as_ref().is_some_and(|w| Instant::now() >= w.until) {
            *window = None;
        }
        window.as_ref().map(f)
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl CacheNode {
    fn scale(&self) -> &ScaleState {
        &self.inner.scale
    }

    fn me(&self) -> String {
        self.addr().unwrap_or_default().to_owned()
    }

    /// A channel to a peer node, opened lazily and reused.
    pub(crate) fn peer(&self, addr: &str) -> Channel {
        let mut peers = lock(&self.scale().peers);
        peers
            .entry(addr.to_owned())
            .or_insert_with(|| {
                Endpoint::from_shared(format!("http://{addr}"))
                    .map(|e| {
                        e.connect_timeout(PEER_TIMEOUT)
                            .tcp_nodelay(true)
                            .connect_lazy()
                    })
                    .unwrap_or_else(|_| {
                        // An address that is no URI authority cannot be a peer; calls to it
                        // fail at once.
                        Endpoint::from_static("http://invalid.invalid").connect_lazy()
                    })
            })
            .clone()
    }

    /// Sets the member list for `epoch`, as the platform does on a scale event. The node
    /// passes the list to every old and new member, then adopts it. A list whose epoch is
    /// lower than the node's is ignored; the node's own current list is passed on again (so
    /// a push that reached a node that already had it still spreads). Returns whether the
    /// node adopted it.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for an empty or malformed list.
    pub async fn set_members<I, S>(&self, epoch: u64, members: I) -> crate::Result<bool>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let next =
            Membership::new(epoch, members).map_err(|e| crate::Error::Config(e.to_string()))?;
        let current = self.membership();
        let same = next.epoch() == current.epoch() && next.members() == current.members();
        if next.epoch() < current.epoch() || (next.epoch() == current.epoch() && !same) {
            return Ok(false);
        }
        self.relay(&current, &next).await;
        Ok(self.adopt(next))
    }

    /// Passes `next` to every member of `current` and `next` but this node, as a relay.
    async fn relay(&self, current: &Membership, next: &Membership) {
        let me = self.me();
        let targets: HashSet<&String> = current
            .members()
            .iter()
            .chain(next.members())
            .filter(|m| **m != me)
            .collect();
        let request = pb::SetMembersRequest {
            epoch: next.epoch(),
            members: next.members().to_vec(),
            relay: true,
        };
        futures::future::join_all(targets.into_iter().map(|addr| {
            let mut admin = pb::admin_client::AdminClient::new(self.peer(addr));
            let request = request.clone();
            async move {
                match tokio::time::timeout(PEER_TIMEOUT, admin.set_members(request)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        tracing::warn!(peer = %addr, %status, "relay of members failed")
                    }
                    Err(_) => tracing::warn!(peer = %addr, "relay of members timed out"),
                }
            }
        }))
        .await;
    }

    /// On start: asks every peer for its member list. When some peer is behind (this node was
    /// started with a newer list, as on a scale-out), the node opens its handoff window with
    /// the peers' older list, so that it can take handed-off entries and ask previous owners,
    /// and then passes its own list on.
    pub(crate) async fn announce(&self) {
        let current = self.membership();
        let me = self.me();
        let replies =
            futures::future::join_all(current.members().iter().filter(|m| **m != me).map(|peer| {
                let mut admin = pb::admin_client::AdminClient::new(self.peer(peer));
                async move {
                    match tokio::time::timeout(PEER_TIMEOUT, admin.members(pb::MembersRequest {}))
                        .await
                    {
                        Ok(Ok(reply)) => Some(reply.into_inner()),
                        _ => None,
                    }
                }
            }))
            .await;
        let older = replies
            .into_iter()
            .flatten()
            .filter(|r| r.epoch < current.epoch())
            .max_by_key(|r| r.epoch);
        if let Some(reply) = older {
            if let Ok(previous) = Membership::new(reply.epoch, reply.members) {
                self.open_window(Arc::new(previous));
            }
            self.relay(&current, &current).await;
        }
        self.scale().announced.send_replace(true);
    }

    /// Completes once the node, after it started serving, has compared its member list with
    /// its peers' (and, if it was started with a newer list, opened its handoff window and
    /// passed the list on). A platform that starts a node for a scale-out and then pushes the
    /// new list waits for this first, so that the new node is ready to take handed-off
    /// entries.
    pub async fn announced(&self) {
        let mut done = self.scale().announced.subscribe();
        let _ = done.wait_for(|d| *d).await;
    }

    fn open_window(&self, previous: Arc<Membership>) {
        *lock(&self.scale().window) = Some(Window {
            previous,
            until: Instant::now() + self.scale().config.handoff_window,
            written: HashSet::new(),
            overflow: false,
        });
    }

    /// Adopts `next` if its epoch is higher than the node's, and starts handing entries
    /// over. Returns whether it did.
    pub(crate) fn adopt(&self, next: Membership) -> bool {
        let previous = self.membership();
        if !self.inner.membership.replace_if_newer(next) {
            return false;
        }
        let current = self.membership();
        let me = self.me();
        tracing::info!(
            epoch = current.epoch(),
            members = ?current.members(),
            member = current.contains(&me),
            "adopted a new member list"
        );
        if previous.members() == current.members() {
            // Only the epoch changed: no key moved, and any open window stays as it is.
            return true;
        }
        let config = &self.scale().config;
        self.open_window(Arc::clone(&previous));
        self.scale().drained.store(false, Ordering::SeqCst);
        let mut task = lock(&self.scale().handoff_task);
        if let Some(running) = task.take() {
            running.abort();
        }
        if config.handoff {
            let node = self.clone();
            *task = Some(tokio::spawn(async move {
                hand_off(&node, &current).await;
            }));
        } else if !current.contains(&me) {
            self.scale().drained.store(true, Ordering::SeqCst);
        }
        true
    }

    /// During a handoff window: the previous owner's copy of `key`, if it holds one and this
    /// node has not written the key since the change.
    pub(crate) async fn peek_previous_owner(&self, key: &str) -> Option<Entry> {
        if !self.scale().config.handoff {
            return None;
        }
        let me = self.me();
        let previous = self
            .scale()
            .open_window(|w| {
                let owner = w.previous.owner(key);
                (owner != me && !w.overflow && !w.written.contains(key)).then(|| owner.to_owned())
            })
            .flatten()?;
        let mut peer = pb::peer_client::PeerClient::new(self.peer(&previous));
        let request = pb::PeekRequest {
            app: self.app().to_owned(),
            key: key.to_owned(),
        };
        match tokio::time::timeout(PEEK_TIMEOUT, peer.peek(request)).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                reply
                    .found
                    .then(|| Entry::new(reply.value, Version::new(reply.version)))
            }
            _ => None,
        }
    }

    /// The node's cached copy of `key`, for a peer; never reads the store.
    pub(crate) async fn peek_local(&self, key: &str) -> Option<Entry> {
        self.inner.entries.peek(key).await
    }

    /// Takes one entry handed over by a previous owner. Refused when this node does not own
    /// the key, is outside a handoff window, or wrote the key since the change.
    pub(crate) async fn accept_handoff(&self, key: &str, value: Bytes, version: String) -> bool {
        let accepted = cache_core::validate_key(key).is_ok()
            && self.check_owner(key).is_ok()
            && self.scale().open_window(|_| ()).is_some()
            && self
                .inner
                .entries
                .insert_unless(key, Entry::new(value, Version::new(version)), || {
                    self.scale()
                        .open_window(|w| w.overflow || w.written.contains(key))
                        .unwrap_or(true)
                })
                .await;
        let counter = if accepted {
            &self.scale().handoff_received
        } else {
            &self.scale().handoff_refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        accepted
    }

    /// Whether this node, no longer a member, has handed all its entries over.
    pub fn is_drained(&self) -> bool {
        self.scale().drained.load(Ordering::SeqCst)
    }

    /// Waits until the node is drained, for at most `timeout`. Returns whether it is.
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_drained() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Writes this node's hot-key manifest to the store, for pre-warming after a restart.
    ///
    /// # Errors
    /// [`crate::Error::Store`] when the store refuses the write.
    pub async fn write_manifest(&self) -> crate::Result<()> {
        let me = self.me();
        let entries: Vec<ManifestEntry> = self
            .inner
            .entries
            .snapshot()
            .into_iter()
            .map(|(key, entry)| ManifestEntry {
                freq: self.inner.sketch.estimate(key_hash(&key)),
                size: entry.size(),
                version: entry.version.as_str().to_owned(),
                key: key.to_string(),
            })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let manifest = Manifest::new(&me, self.membership().epoch(), unix_ms(), entries);
        let json =
            serde_json::to_vec(&manifest).map_err(|e| crate::Error::Config(e.to_string()))?;
        let path = Path::from(Manifest::path_for(&me));
        self.inner
            .store
            .put(&path, PutPayload::from(json))
            .await
            .map_err(|e| crate::Error::Store {
                url: path.to_string(),
                reason: e.to_string(),
            })?;
        tracing::info!(keys = manifest.entries.len(), "wrote the hot-key manifest");
        Ok(())
    }

    /// Reads every manifest in the store and loads the keys this node owns, hottest first,
    /// up to the pre-warm share of its capacity. Returns how many entries it loaded.
    pub async fn prewarm(&self) -> u64 {
        let store = &self.inner.store;
        let prefix = Path::from(MANIFEST_PREFIX.trim_end_matches('/'));
        let listed: Vec<_> = store.list(Some(&prefix)).collect().await;
        let mut manifests = Vec::new();
        let oldest = unix_ms().saturating_sub(MANIFEST_MAX_AGE.as_millis() as u64);
        for meta in listed.into_iter().flatten() {
            if meta.size > 8 << 20 {
                continue;
            }
            let Ok(got) = store.get(&meta.location).await else {
                continue;
            };
            let Ok(bytes) = got.bytes().await else {
                continue;
            };
            match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) if m.written_unix_ms >= oldest => manifests.push(m),
                Ok(_) => {
                    let _ = store.delete(&meta.location).await;
                }
                Err(e) => {
                    tracing::warn!(manifest = %meta.location, error = %e, "unreadable manifest")
                }
            }
        }
        let me = self.me();
        let capacity = self.inner.entries.stats().capacity_bytes;
        let budget = (capacity as f64 * self.scale().config.prewarm_fraction) as u64;
        let membership = self.membership();
        let chosen = plan(&manifests, |k| membership.owner(k) == me, budget);
        let loaded = AtomicU64::new(0);
        futures::stream::iter(chosen)
            .for_each_concurrent(8, |entry| {
                let loaded = &loaded;
                async move {
                    let key = entry.key.as_str();
                    if self.check_owner(key).is_err()
                        || self.inner.entries.peek(key).await.is_some()
                    {
                        return;
                    }
                    let budget = Duration::from_secs(10);
                    if self
                        .inner
                        .entries
                        .load(key, || self.read_store(key, budget))
                        .await
                        .is_ok()
                    {
                        loaded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .await;
        let loaded = loaded.into_inner();
        self.scale().prewarmed.fetch_add(loaded, Ordering::Relaxed);
        tracing::info!(manifests = manifests.len(), loaded, "pre-warmed");
        loaded
    }

    /// Until `stop`: asks a random peer for its member list now and then, adopting a newer
    /// one, so a change that reached only some nodes reaches all.
    pub(crate) async fn gossip(&self, mut stop: watch::Receiver<bool>) {
        let interval = self.scale().config.gossip_interval;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(interval) => {}
            }
            let membership = self.membership();
            let me = self.me();
            let others: Vec<&String> = membership.members().iter().filter(|m| **m != me).collect();
            if others.is_empty() {
                continue;
            }
            let peer = others[rand::random_range(0..others.len())];
            let mut admin = pb::admin_client::AdminClient::new(self.peer(peer));
            if let Ok(Ok(reply)) =
                tokio::time::timeout(PEER_TIMEOUT, admin.members(pb::MembersRequest {})).await
            {
                let reply = reply.into_inner();
                if reply.epoch > membership.epoch()
                    && let Ok(next) = Membership::new(reply.epoch, reply.members)
                {
                    self.adopt(next);
                }
            }
        }
    }

    /// Until `stop`: writes the hot-key manifest every `manifest_interval`.
    pub(crate) async fn write_manifests(&self, mut stop: watch::Receiver<bool>) {
        let interval = self.scale().config.manifest_interval;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.write_manifest().await {
                tracing::warn!(error = %e, "could not write the hot-key manifest");
            }
        }
    }

    /// Scaling advice from every member's counters, with rates since the previous call.
    pub async fn advice(&self) -> pb::AdviceReply {
        let membership = self.membership();
        let me = self.me();
        let stats = futures::future::join_all(membership.members().iter().map(|addr| {
            let node = self.clone();
            let me = me.clone();
            async move {
                if *addr == me {
                    node.inner.entries.sync().await;
                    return Some(node.stats());
                }
                let mut admin = pb::admin_client::AdminClient::new(node.peer(addr));
                match tokio::time::timeout(PEER_TIMEOUT, admin.stats(pb::StatsRequest {})).await {
                    Ok(Ok(r)) => Some(r.into_inner()),
                    _ => None,
                }
            }
        }))
        .await;
        let stats: Vec<pb::NodeStats> = stats.into_iter().flatten().collect();
        let totals = Totals {
            reads: stats.iter().map(|s| s.hits + s.misses).sum(),
            ghost_hits: stats.iter().map(|s| s.ghost_hits).sum(),
            requests: stats.iter().map(|s| s.gets + s.puts + s.deletes).sum(),
            bytes_served: stats.iter().map(|s| s.bytes_served).sum(),
        };
        let now = Instant::now();
        let mut guard = lock(&self.scale().advisor);
        let (since, before) = guard.1.unwrap_or((self.scale().started, Totals::default()));
        let secs = now.saturating_duration_since(since).as_secs_f64().max(1e-3);
        let reads = totals.reads.saturating_sub(before.reads);
        let served = totals.bytes_served.saturating_sub(before.bytes_served);
        let obs = Observation {
            nodes: membership.members().len() as u32,
            bytes_used: stats.iter().map(|s| s.bytes_used).sum(),
            capacity_bytes: stats.iter().map(|s| s.capacity_bytes).sum(),
            reads,
            ghost_hits: totals.ghost_hits.saturating_sub(before.ghost_hits),
            requests_per_s: totals.requests.saturating_sub(before.requests) as f64 / secs,
            bytes_served_per_s: served as f64 / secs,
            mean_object_bytes: if reads == 0 {
                0.0
            } else {
                served as f64 / reads as f64
            },
        };
        guard.1 = Some((now, totals));
        let advice = guard.0.advise(&obs, now);
        pb::AdviceReply {
            current_nodes: obs.nodes,
            desired_nodes: advice.desired_nodes,
            reason: advice.reason,
            bytes_used: obs.bytes_used,
            capacity_bytes: obs.capacity_bytes,
            ghost_hit_ratio: obs.ghost_ratio(),
            requests_per_s: obs.requests_per_s,
            bytes_served_per_s: obs.bytes_served_per_s,
            mean_object_bytes: obs.mean_object_bytes,
        }
    }
}

/// Hands every cached entry whose home moved to its new owner, hottest first, then marks the
/// node drained if it is no longer a member. Entries that moved are dropped from this node's
/// cache once the handoff window ends.
async fn hand_off(node: &CacheNode, current: &Arc<Membership>) {
    // Writes that passed their ownership check under the old list finish first.
    node.inner.entries.barrier().await;
    let me = node.me();
    let mut moved: Vec<(u32, Arc<str>, Entry, String)> = node
        .inner
        .entries
        .snapshot()
        .into_iter()
        .filter_map(|(key, entry)| {
            let owner = current.owner(&key);
            (owner != me).then(|| {
                let freq = node.inner.sketch.estimate(key_hash(&key));
                (freq, key, entry, owner.to_owned())
            })
        })
        .collect();
    moved.sort_by_key(|m| std::cmp::Reverse(m.0));
    let mut by_owner: HashMap<String, Vec<(Arc<str>, Entry)>> = HashMap::new();
    for (_, key, entry, owner) in moved {
        by_owner.entry(owner).or_default().push((key, entry));
    }
    let total: usize = by_owner.values().map(Vec::len).sum();
    tracing::info!(
        entries = total,
        owners = by_owner.len(),
        "handing entries over"
    );
    futures::future::join_all(
        by_owner
            .iter()
            .map(|(owner, entries)| send_to(node, current, owner, entries)),
    )
    .await;
    if !current.contains(&me) {
        node.scale().drained.store(true, Ordering::SeqCst);
        tracing::info!("drained");
        return;
    }
    // Keep the moved entries while new owners may still ask for them, then let them go.
    tokio::time::sleep(node.scale().config.handoff_window).await;
    if node.membership().epoch() == current.epoch() {
        for entries in by_owner.values() {
            for (key, _) in entries {
                if node.membership().owner(key) != me {
                    node.inner.entries.invalidate(key).await;
                }
            }
        }
    }
}

/// Streams `entries` to `owner` in batches, with a few batches in flight at most.
async fn send_to(
    node: &CacheNode,
    current: &Membership,
    owner: &str,
    entries: &[(Arc<str>, Entry)],
) {
    let epoch = current.epoch();
    let members = current.members().to_vec();
    let (tx, rx) = mpsc::channel::<pb::HandoffBatch>(HANDOFF_BATCHES_IN_FLIGHT);
    let mut peer = pb::peer_client::PeerClient::new(node.peer(owner))
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    let app = node.app().to_owned();
    let produce = async move {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (key, entry) in entries {
            bytes += entry.value.len();
            batch.push(pb::HandoffEntry {
                key: key.to_string(),
                value: entry.value.clone(),
                version: entry.version.as_str().to_owned(),
            });
            if bytes >= HANDOFF_BATCH_BYTES || batch.len() >= 1024 {
                let entries = std::mem::take(&mut batch);
                bytes = 0;
                let message = pb::HandoffBatch {
                    app: app.clone(),
                    epoch,
                    entries,
                    members: members.clone(),
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx
                .send(pb::HandoffBatch {
                    app,
                    epoch,
                    entries: batch,
                    members,
                })
                .await;
        }
    };
    let window = node.scale().config.handoff_window;
    let call = tokio::time::timeout(window, peer.handoff(ReceiverStream::new(rx)));
    let (reply, ()) = tokio::join!(call, produce);
    match reply {
        Ok(Ok(reply)) => {
            let reply = reply.into_inner();
            node.scale()
                .handoff_sent
                .fetch_add(reply.accepted, Ordering::Relaxed);
            tracing::info!(%owner, accepted = reply.accepted, refused = reply.refused, "handed over");
        }
        Ok(Err(status)) => tracing::warn!(%owner, %status, "handoff failed"),
        Err(_) => tracing::warn!(%owner, "handoff did not finish within the window"),
    }
}
