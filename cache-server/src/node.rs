//! [`CacheNode`]: one cachelet. It owns an [`EntryStore`], knows its members, and answers
//! gets, puts and deletes by reading through and writing through the application's blob store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use cache_core::fence::{Access, Ownership};
use cache_core::hot::FrequencySketch;
use cache_core::{
    Entry, EntryStore, Error, Limits, Lookup, Membership, Version, chunks, key_hash, validate_key,
};
use cache_proto::v1 as pb;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use tokio::sync::broadcast;
use tracing::Instrument;

use crate::budget::{Account, Held, ReplyBudget};

/// The default byte capacity of a node's cache: 64 MiB.
pub const DEFAULT_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// Counters per row of the node's read-frequency sketch.
const SKETCH_WIDTH: usize = 16 * 1024;

/// The read-frequency sketch halves its counts every this many reads of the node.
pub const HOT_WINDOW_READS: u64 = 16 * SKETCH_WIDTH as u64;

/// The default number of recent reads that make a key hot (see
/// [`CacheNodeBuilder::hot_threshold`]): 32 in [`HOT_WINDOW_READS`] (262,144), a share of
/// about 0.01% of the node's reads.
pub const DEFAULT_HOT_THRESHOLD: u32 = 32;

/// Invalidations buffered for a slow subscriber before it is told to reset.
const INVALIDATION_BACKLOG: usize = 8192;

/// Builds a [`CacheNode`].
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use cache_server::CacheNode;
/// use object_store::memory::InMemory;
///
/// let node = CacheNode::builder()
///     .app("thumbnails")
///     .store(Arc::new(InMemory::new()))
///     .capacity_bytes(16 << 20)
///     .members(["127.0.0.1:7070"])
///     .build()
///     .unwrap();
/// assert_eq!(node.app(), "thumbnails");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheNodeBuilder {
    app: Option<String>,
    store: Option<Arc<dyn ObjectStore>>,
    capacity_bytes: u64,
    limits: Limits,
    members: Vec<String>,
    advertise: Option<String>,
    store_timeout: Duration,
    abandon_writes_after: Duration,
    op_timeout: Duration,
    max_inflight_per_stream: usize,
    max_batch_ops: usize,
    pub(crate) connections: crate::connections::ConnLimits,
    hot_threshold: u32,
    fencing: bool,
    lease: Duration,
    leased_writes: bool,
    reply_budget_bytes: Option<u64>,
    bounded_replies: bool,
    pinned_chunks: bool,
    scale: crate::scale_state::ScaleConfig,
    discovery: crate::discovery::DiscoveryConfig,
    pub(crate) security: crate::security::Security,
}

impl Default for CacheNodeBuilder {
    fn default() -> Self {
        Self {
            app: None,
            store: None,
            capacity_bytes: DEFAULT_CAPACITY_BYTES,
            limits: Limits::default(),
            members: Vec::new(),
            advertise: None,
            store_timeout: Duration::from_secs(10),
            abandon_writes_after: DEFAULT_ABANDON_WRITES_AFTER,
            op_timeout: Duration::from_secs(5),
            max_inflight_per_stream: 1024,
            max_batch_ops: 4096,
            connections: Default::default(),
            hot_threshold: DEFAULT_HOT_THRESHOLD,
            fencing: true,
            lease: Duration::from_secs(2),
            leased_writes: true,
            reply_budget_bytes: None,
            bounded_replies: true,
            pinned_chunks: true,
            scale: crate::scale_state::ScaleConfig::default(),
            discovery: crate::discovery::DiscoveryConfig::default(),
            security: crate::security::Security::default(),
        }
    }
}

impl CacheNodeBuilder {
    /// The application whose cache this is. Required; requests naming another app are refused.
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.app = Some(app.into());
        self
    }

    /// The application's blob store. Required.
    pub fn store(mut self, store: Arc<dyn ObjectStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The cache's capacity in bytes (keys, values and per-entry overhead).
    /// Default: [`DEFAULT_CAPACITY_BYTES`] (64 MiB).
    pub fn capacity_bytes(mut self, bytes: u64) -> Self {
        self.capacity_bytes = bytes;
        self
    }

    /// Size limits. Default: [`Limits::default`] (values up to 16 MiB).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The member list to claim as epoch 1 when the application's store holds no epoch yet
    /// (a new cluster), as `host:port` addresses. A node that joins a running cluster adopts
    /// the store's newest epoch instead, and serves once a change of members adds it.
    /// Required.
    pub fn members<I, S>(mut self, members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.members = members.into_iter().map(Into::into).collect();
        self
    }

    /// Whether ownership is fenced (see [`cache_core::fence`]). Turning it off is unsafe: a
    /// scale event can then serve stale data. It exists only as a negative control, to show
    /// that the correctness checks catch that. Default: true.
    pub fn fencing(mut self, on: bool) -> Self {
        self.fencing = on;
        self
    }

    /// The length of the read leases the node grants to clients that hold local copies
    /// (see [`cache_core::lease`]); zero grants none. A write waits at most this long for a
    /// holder that does not acknowledge its invalidation. Default: 2 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Whether writes wait until every lease on their key is invalid. Turning it off is
    /// unsafe: leased copies can then be served after a write completed. It exists only as a
    /// negative control. Default: true.
    pub fn leased_writes(mut self, on: bool) -> Self {
        self.leased_writes = on;
        self
    }

    /// How long a node waits before it takes a peer that refuses connections (its process is
    /// gone) as fenced, and how long a node that just started waits before it answers fence
    /// requests when a process served on its address before: time for store writes a dead
    /// process had already sent to land. Never less
    /// than the lease length ([`CacheNodeBuilder::lease`]), since a process that ended may
    /// have granted leases that holders honour until they end; for the same reason, a node
    /// that starts in a cluster that already existed takes no write for one lease length.
    /// Default: 1 s.
    pub fn fence_grace(mut self, grace: Duration) -> Self {
        self.scale.fence_grace = grace;
        self
    }

    /// This node's address as it appears in the member list.
    /// Default: the local address of the listener passed to [`CacheNode::serve`].
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise = Some(addr.into());
        self
    }

    /// The longest a single blob-store call may take before the request fails with
    /// `StoreUnavailable`. Default: 10 s.
    ///
    /// A write's caller gets that answer (an unknown outcome) at this deadline, but the node
    /// does not cancel the write's store call: the call may still land, so the key stays
    /// fenced here until it ends (see [`CacheNodeBuilder::abandon_writes_after`]).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// How long a write's store call may go on after its caller was answered at the store
    /// deadline. While it goes on, the key stays fenced at this node: no other node takes a
    /// write for it, and a fence for a newer epoch waits. Past this, the node drops the call,
    /// logs it and counts it (`writes_abandoned`): a store that answers no call this long is
    /// taken as never applying it. Stores opened from a URL end every call sooner by
    /// themselves ([`crate::store::open_store`]). Default: [`DEFAULT_ABANDON_WRITES_AFTER`]
    /// (2 minutes).
    pub fn abandon_writes_after(mut self, limit: Duration) -> Self {
        self.abandon_writes_after = limit;
        self
    }

    /// The deadline of an op whose request sets none. Default: 5 s.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// How many ops of one stream may be in progress at once; beyond this the node stops
    /// reading the stream (backpressure). Default: 1024.
    pub fn max_inflight_per_stream(mut self, n: usize) -> Self {
        self.max_inflight_per_stream = n.max(1);
        self
    }

    /// The node's reply budget: the most value bytes it holds at once for replies that the
    /// transport has not taken yet, uncached store reads and handoff (see
    /// [`crate::budget`]). Default: half the capacity, at most 256 MiB, and at least room for
    /// two maximal values ([`crate::budget::default_budget`]).
    pub fn reply_budget_bytes(mut self, bytes: u64) -> Self {
        self.reply_budget_bytes = Some(bytes);
        self
    }

    /// Whether replies hold the reply budget at all. Default: true. Unsafe when false: only
    /// for checking that the memory tests catch a node without a budget.
    pub fn bounded_replies(mut self, on: bool) -> Self {
        self.bounded_replies = on;
        self
    }

    /// Whether a chunk read from the store must be of the version asked for. Default: true.
    /// Unsafe when false: only for checking that the tests catch a read that mixes two
    /// versions' bytes.
    #[doc(hidden)]
    pub fn pinned_chunks(mut self, on: bool) -> Self {
        self.pinned_chunks = on;
        self
    }

    /// The most ops one batch may carry. Default: 4096.
    pub fn max_batch_ops(mut self, n: usize) -> Self {
        self.max_batch_ops = n.max(1);
        self
    }

    /// How many reads of a key, within the last [`HOT_WINDOW_READS`] reads of the node (with
    /// older reads counting half, then a quarter, ...), make it hot. Replies for hot keys say
    /// so, and clients keep local copies of them first. Default: [`DEFAULT_HOT_THRESHOLD`].
    pub fn hot_threshold(mut self, reads: u32) -> Self {
        self.hot_threshold = reads.max(1);
        self
    }

    /// Whether a node hands its entries to their new owners when the member list changes.
    /// Turning it off gives groupcache's behaviour: keys that move become misses.
    /// Default: true.
    pub fn handoff(mut self, on: bool) -> Self {
        self.scale.handoff = on;
        self
    }

    /// How long after a change of members a node keeps the entries it gave up, for their new
    /// owners to fetch (`Peek`) and to be handed over. Default: 30 s.
    pub fn handoff_window(mut self, window: Duration) -> Self {
        self.scale.handoff_window = window;
        self
    }

    /// How often the node asks the store whether a newer epoch was claimed, and a random peer
    /// (of its current and previous lists) for its epoch. Default: 1 s.
    pub fn gossip_interval(mut self, interval: Duration) -> Self {
        self.scale.gossip_interval = interval;
        self
    }

    /// Whether the node writes hot-key manifests and loads them on start. Default: true.
    pub fn prewarm(mut self, on: bool) -> Self {
        self.scale.prewarm = on;
        self
    }

    /// The share of capacity that pre-warming may fill on start. Default: 0.5.
    pub fn prewarm_fraction(mut self, fraction: f64) -> Self {
        self.scale.prewarm_fraction = fraction.clamp(0.0, 1.0);
        self
    }

    /// How often the node writes its hot-key manifest (also written on graceful shutdown).
    /// Default: 60 s.
    pub fn manifest_interval(mut self, interval: Duration) -> Self {
        self.scale.manifest_interval = interval;
        self
    }

    /// The longest a node that is no longer a member spends handing its entries over when
    /// it shuts down. Default: 30 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.scale.drain_timeout = timeout;
        self
    }

    /// After a shutdown begins, how long requests in progress and open connections may take
    /// to finish before the node stops anyway. Default: 10 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.scale.shutdown_grace = grace;
        self
    }

    /// Where the node learns which nodes are alive: [`Discovery::Static`] (the members given
    /// here, changed only by `SetMembers`), the Kubernetes API, DNS or gossip. With a source,
    /// the node proposes new member lists itself (see [`crate::discovery`]). Default: static.
    ///
    /// [`Discovery::Static`]: crate::discovery::Discovery::Static
    pub fn discovery(mut self, source: crate::discovery::Discovery) -> Self {
        self.discovery.source = source;
        self
    }

    /// How long discovery must see a new node alive before it joins the member list, so that
    /// a node that flaps is not added and removed over and over. Default: 5 s
    /// ([`cache_core::discovery::DEFAULT_READY_FOR`]).
    pub fn join_after(mut self, period: Duration) -> Self {
        self.discovery.join_after = period;
        self
    }

    /// How long a member that this node's discovery never saw alive stays unseen before the
    /// node asks it, and proposes its removal if it does not answer. Default: 30 s
    /// ([`cache_core::discovery::DEFAULT_UNSEEN_FOR`]).
    pub fn unseen_for(mut self, period: Duration) -> Self {
        self.discovery.unseen_for = period;
        self
    }

    /// Where gossip discovery listens (UDP). Default: the member address's IP, port
    /// [`crate::discovery::DEFAULT_GOSSIP_PORT`].
    pub fn gossip_listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.discovery.gossip_listen = Some(addr);
        self
    }

    /// How often gossip discovery gossips; a dead node is detected after about 18 intervals
    /// of silence. Default: 250 ms.
    pub fn gossip_every(mut self, interval: Duration) -> Self {
        self.discovery.gossip_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How often DNS discovery resolves its name. Default: 2 s.
    pub fn dns_every(mut self, interval: Duration) -> Self {
        self.discovery.dns_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Proposes what discovery reports without asking the nodes: joins unchecked, and with
    /// gossip, leaves too. Unsafe: only for checking that the tests catch a node that is not
    /// a member of this app joining, and a live member removed on gossip's word.
    #[doc(hidden)]
    pub fn discovery_unchecked(mut self, on: bool) -> Self {
        self.discovery.unchecked = on;
        self
    }

    /// Takes every member that discovery does not report for dead, seen before or not.
    /// Unsafe: only for checking that the tests catch nodes whose views differ replacing
    /// each other's lists.
    #[doc(hidden)]
    pub fn discovery_trusting(mut self, on: bool) -> Self {
        self.discovery.trusting = on;
        self
    }

    /// Counts Kubernetes endpoints that are not ready as alive. Unsafe: only for checking
    /// that the tests catch a node that failed its readiness probe staying a member.
    #[doc(hidden)]
    pub fn discovery_count_unready(mut self, on: bool) -> Self {
        self.discovery.count_unready = on;
        self
    }

    /// The scaling advisor's thresholds. Default: [`cache_core::advisor::Thresholds::default`].
    pub fn advisor(mut self, thresholds: cache_core::advisor::Thresholds) -> Self {
        self.scale.advisor = thresholds;
        self
    }

    /// Builds the node.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when the app, the store or the members are missing, or the
    /// member list is invalid.
    pub fn build(self) -> crate::Result<CacheNode> {
        let app = self
            .app
            .filter(|a| !a.is_empty())
            .ok_or_else(|| crate::Error::Config("an app name is required".into()))?;
        let store = self
            .store
            .ok_or_else(|| crate::Error::Config("a blob store is required".into()))?;
        let membership =
            Membership::new(0, self.members).map_err(|e| crate::Error::Config(e.to_string()))?;
        let self_addr = OnceLock::new();
        if let Some(addr) = self.advertise {
            check_member(&membership, &addr)?;
            let _ = self_addr.set(addr);
        }
        let me = self_addr.get().cloned().unwrap_or_default();
        let ownership = Ownership::new(me, membership, self.fencing);
        let epochs = crate::epochs::Epochs::new(Arc::clone(&store), ownership, self.store_timeout);
        let budget = if self.bounded_replies {
            ReplyBudget::new(self.reply_budget_bytes.unwrap_or_else(|| {
                crate::budget::default_budget(self.capacity_bytes, self.limits.max_value_bytes)
            }))
        } else {
            ReplyBudget::unbounded()
        };
        Ok(CacheNode {
            inner: Arc::new(Inner {
                app,
                store,
                entries: EntryStore::with_suspect_window(
                    self.capacity_bytes,
                    // A write of unknown outcome may land up to a store call's timeout later.
                    self.store_timeout.saturating_mul(2),
                ),
                limits: self.limits,
                budget,
                leases: crate::leases::Leases::new(
                    cache_core::lease::LeaseConfig::with_lease(self.lease),
                    self.leased_writes,
                ),
                epochs,
                self_addr,
                store_timeout: self.store_timeout,
                abandon_writes_after: self.abandon_writes_after,
                op_timeout: self.op_timeout,
                max_inflight_per_stream: self.max_inflight_per_stream,
                max_batch_ops: self.max_batch_ops,
                connections: self.connections,
                counters: Counters::default(),
                s3: Arc::default(),
                unpinned_chunks: !self.pinned_chunks,
                large: chunks::LargeHint::new(LARGE_HINT_SLOTS),
                shutting_down: AtomicBool::new(false),
                sketch: FrequencySketch::new(SKETCH_WIDTH),
                scale: crate::scale_state::ScaleState::new(self.scale),
                discovery: self.discovery,
                discovery_counters: Default::default(),
                hot_threshold: self.hot_threshold,
                invalidations: broadcast::channel(INVALIDATION_BACKLOG).0,
                conditional: Default::default(),
                security: self.security,
            }),
        })
    }
}

/// The slots of the hint of keys too large to cache whole (8 bytes each).
const LARGE_HINT_SLOTS: usize = 4096;

/// How long a write's store call may go on after its caller was answered, by default.
pub const DEFAULT_ABANDON_WRITES_AFTER: Duration = Duration::from_secs(120);

/// A write task's way to answer its caller before the task ends: once, when it gives up
/// waiting for the store but still holds the key.
struct EarlyAnswer(Mutex<Option<tokio::sync::oneshot::Sender<Error>>>);

impl EarlyAnswer {
    fn give(&self, err: Error) {
        let tx = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(err);
        }
    }
}

fn check_member(membership: &Membership, addr: &str) -> crate::Result<()> {
    if membership.contains(addr) {
        Ok(())
    } else {
        Err(crate::Error::Config(format!(
            "this node's address {addr} is not in the member list {:?}",
            membership.members()
        )))
    }
}

#[derive(Debug, Default)]
struct Counters {
    gets: AtomicU64,
    chunk_reads: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    errors: AtomicU64,
    bytes_served: AtomicU64,
    fallback_reads: AtomicU64,
    store_reads: AtomicU64,
    store_writes: AtomicU64,
    store_deletes: AtomicU64,
    store_errors: AtomicU64,
    store_read_bytes: AtomicU64,
    store_heads: AtomicU64,
    not_modified: AtomicU64,
    invalidations_sent: AtomicU64,
    hot_replies: AtomicU64,
    unsettled_reads: AtomicU64,
    not_settled: AtomicU64,
    writes_outlived: AtomicU64,
    writes_abandoned: AtomicU64,
}

/// One cachelet: a byte-bounded cache in front of the application's blob store. Cheap to
/// clone; clones share the node.
#[derive(Debug, Clone)]
pub struct CacheNode {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) app: String,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) entries: EntryStore,
    limits: Limits,
    budget: ReplyBudget,
    pub(crate) leases: crate::leases::Leases,
    pub(crate) epochs: crate::epochs::Epochs,
    self_addr: OnceLock<String>,
    pub(crate) store_timeout: Duration,
    abandon_writes_after: Duration,
    op_timeout: Duration,
    max_inflight_per_stream: usize,
    max_batch_ops: usize,
    pub(crate) connections: crate::connections::ConnLimits,
    counters: Counters,
    /// The S3 endpoint's counters (zero when it is off).
    s3: Arc<crate::s3::S3Counters>,
    /// The fault of [`CacheNodeBuilder::pinned_chunks`]`(false)`.
    unpinned_chunks: bool,
    /// Keys lately too large to cache whole.
    large: chunks::LargeHint,
    shutting_down: AtomicBool,
    pub(crate) sketch: FrequencySketch,
    pub(crate) scale: crate::scale_state::ScaleState,
    pub(crate) discovery: crate::discovery::DiscoveryConfig,
    pub(crate) discovery_counters: crate::discovery::Counters,
    hot_threshold: u32,
    invalidations: broadcast::Sender<pb::Invalidation>,
    /// Serialises writes per stripe of keys, only on stores without conditional writes
    /// (see [`CacheNode::put`]).
    conditional: ConditionalFallback,
    /// TLS, credentials and the peer token (see [`crate::security`]).
    pub(crate) security: crate::security::Security,
}

/// Stripes of locks for stores that lack conditional writes, and what is known of the store.
#[derive(Debug)]
pub(crate) struct ConditionalFallback {
    /// [`UNKNOWN`], [`CHECKS`] or [`NO_CHECKS`].
    state: std::sync::atomic::AtomicU8,
    stripes: Box<[tokio::sync::Mutex<()>]>,
}

/// The reserved blob that [`CacheNode::probe_conditional_writes`] tries to write.
const PROBE_PATH: &str = "_cachelet/probe";

/// Not known yet whether the store checks versions: writes take turns, to be safe.
const UNKNOWN: u8 = 0;
/// The store checks versions itself: writes do not take turns.
const CHECKS: u8 = 1;
/// The store cannot check versions: writes take turns, and conditional writes are checked
/// by the node.
const NO_CHECKS: u8 = 2;

impl Default for ConditionalFallback {
    fn default() -> Self {
        Self {
            state: std::sync::atomic::AtomicU8::new(UNKNOWN),
            stripes: (0..1024).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl ConditionalFallback {
    /// Whether the store is known to check versions itself.
    #[cfg(test)]
    pub(crate) fn checks(&self) -> bool {
        self.get() == CHECKS
    }

    fn get(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    /// Records what a conditional write (`Update`) told of the store.
    pub(crate) fn learn(&self, result: &object_store::Result<object_store::PutResult>) {
        let state = match result {
            Err(object_store::Error::NotImplemented { .. }) => NO_CHECKS,
            Ok(_)
            | Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => CHECKS,
            Err(_) => return,
        };
        let _ = self
            .state
            .compare_exchange(UNKNOWN, state, Ordering::Relaxed, Ordering::Relaxed);
        if state == NO_CHECKS {
            self.state.store(NO_CHECKS, Ordering::Relaxed);
        }
    }
}

/// What a read asks for, beyond its key.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions<'a> {
    /// Serve for a home node that is down: read the store, cache nothing.
    pub fallback: bool,
    /// Ask the store for the blob's current version first.
    pub strict: bool,
    /// The version the caller holds, if any.
    pub if_none_match: Option<&'a str>,
    /// The membership epoch the caller routed by (0: none).
    pub epoch: u64,
    /// The caller's share of the reply budget, which a read of the store that is not cached
    /// holds its value against. `None`: the node budget alone.
    pub account: Option<&'a Account>,
    /// The holder a read lease is asked for (0: none).
    pub lease_holder: u64,
}

/// A read's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The blob, the tier that served it, and whether its key is hot.
    Value {
        /// The blob and its version.
        entry: Entry,
        /// The tier that served it.
        tier: pb::Tier,
        /// Whether the key is read often.
        hot: bool,
        /// The read lease granted on it, in milliseconds (0: none).
        lease_ms: u32,
    },
    /// The caller's version is current.
    NotModified {
        /// That version.
        version: Version,
        /// Whether the key is read often.
        hot: bool,
        /// The read lease granted on it, in milliseconds (0: none).
        lease_ms: u32,
    },
}

/// One chunk of a large object ([`cache_core::chunks`]).
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The chunk's bytes, and the object's version.
    pub entry: Entry,
    /// The tier that served it.
    pub tier: pb::Tier,
    /// The object's size, when this read asked the store (0: not asked).
    pub size: u64,
    /// The chunk size.
    pub chunk_bytes: u64,
}

impl CacheNode {
    /// A builder with every default; see [`CacheNodeBuilder`].
    pub fn builder() -> CacheNodeBuilder {
        CacheNodeBuilder::default()
    }

    /// The application this node serves.
    pub fn app(&self) -> &str {
        &self.inner.app
    }

    /// The node's current member list.
    pub fn membership(&self) -> Arc<Membership> {
        self.inner.epochs.current()
    }

    /// This node's address in the member list, once known.
    pub fn addr(&self) -> Option<&str> {
        self.inner.self_addr.get().map(String::as_str)
    }

    /// The counters of this node's S3 endpoint.
    pub fn s3_counters(&self) -> Arc<crate::s3::S3Counters> {
        Arc::clone(&self.inner.s3)
    }

    /// The application's blob store.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.inner.store)
    }

    /// The node's size limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The node's entry store (for inspection and embedding).
    pub fn entries(&self) -> &EntryStore {
        &self.inner.entries
    }

    pub(crate) fn max_inflight_per_stream(&self) -> usize {
        self.inner.max_inflight_per_stream
    }

    pub(crate) fn max_batch_ops(&self) -> usize {
        self.inner.max_batch_ops
    }

    /// The node's reply budget (see [`crate::budget`]).
    pub fn reply_budget(&self) -> &ReplyBudget {
        &self.inner.budget
    }

    /// Learns this node's address from its listener, unless `advertise` set it.
    pub(crate) fn set_addr(&self, addr: String) -> crate::Result<()> {
        if self.inner.self_addr.get().is_none() {
            check_member(&self.membership(), &addr)?;
            self.inner.epochs.set_me(&addr);
            let _ = self.inner.self_addr.set(addr);
        }
        Ok(())
    }

    pub(crate) fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether the node has begun shutting down.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// The deadline of an op whose request asked for `timeout_ms` (0: the node's default).
    pub(crate) fn op_budget(&self, timeout_ms: u32) -> Duration {
        if timeout_ms == 0 {
            self.inner.op_timeout
        } else {
            Duration::from_millis(timeout_ms.into())
        }
    }

    /// Checks that a request names this node's app.
    pub(crate) fn check_app(&self, app: &str) -> Result<(), Error> {
        if app == self.inner.app {
            Ok(())
        } else {
            Err(Error::UnknownApp {
                got: cache_core::error::echo(app),
                serves: self.inner.app.clone(),
            })
        }
    }

    /// How this node may serve `key` for a request routed by `epoch` (0: none), after
    /// adopting a newer epoch the request carries.
    async fn access(&self, key: &str, epoch: u64) -> Result<Access, Error> {
        if let Some(access) = self.inner.epochs.access(key, epoch)? {
            return Ok(access);
        }
        self.catch_up(epoch).await?;
        match self.inner.epochs.access(key, epoch)? {
            Some(access) => Ok(access),
            None => Err(self.inner.epochs.with(Ownership::wrong_owner)),
        }
    }

    /// The quick part of a get: validation, ownership and the cache lookup. `Ok(None)` means
    /// the read needs [`CacheNode::load`]: a miss, a strict read, a fallback read, a key not
    /// settled yet, or a request from a newer epoch. The returned flag says whether the key is
    /// hot.
    pub(crate) async fn lookup(
        &self,
        key: &str,
        opts: ReadOptions<'_>,
    ) -> Result<(Option<Answer>, bool), Error> {
        self.inner.counters.gets.fetch_add(1, Ordering::Relaxed);
        validate_key(key)?;
        let hot = self.inner.sketch.record(key_hash(key)) >= self.inner.hot_threshold;
        if opts.fallback || opts.strict {
            return Ok((None, hot));
        }
        let lease = self.lease_ticket(opts);
        if self.inner.epochs.access(key, opts.epoch)? != Some(Access::Cached) {
            return Ok((None, hot));
        }
        let answer = self
            .inner
            .entries
            .get(key)
            .await
            .map(|e| self.answer(e, pb::Tier::Home, hot, opts.if_none_match));
        Ok((answer.map(|a| self.leased(a, key, lease)), hot))
    }

    /// What a lease grant needs from before the value is read: the holder, the write mark,
    /// and the epoch the ownership check is made at. `None` when no lease is asked for.
    fn lease_ticket(&self, opts: ReadOptions<'_>) -> Option<(u64, u64, u64)> {
        (opts.lease_holder != 0).then(|| {
            (
                opts.lease_holder,
                self.inner.leases.mark(),
                self.inner.epochs.epoch(),
            )
        })
    }

    /// `answer`, with a lease on `key` when one was asked for and can be granted.
    fn leased(&self, mut answer: Answer, key: &str, ticket: Option<(u64, u64, u64)>) -> Answer {
        if let Some((holder, mark, epoch)) = ticket {
            let granted = self.inner.leases.grant(key, holder, mark, epoch);
            match &mut answer {
                Answer::Value { lease_ms, .. } | Answer::NotModified { lease_ms, .. } => {
                    *lease_ms = granted;
                }
            }
        }
        answer
    }

    /// The slow part of a get, after [`CacheNode::lookup`]:
    /// - a miss makes one store read for all concurrent misses of the key, cached as home;
    /// - a strict read asks the store for the current version (HEAD) and serves it from the
    ///   cache when held, else reads and caches it;
    /// - a key that is not settled yet is read from the store and not cached;
    /// - a fallback read, for a home node that is down, reads the store and caches nothing.
    ///
    /// A value read from the store and not cached comes back with its hold on the reply
    /// budget, taken before its body was read; a cached one with [`Held::none`].
    pub(crate) async fn load(
        &self,
        key: &str,
        opts: ReadOptions<'_>,
        hot: bool,
        budget: Duration,
    ) -> Result<(Answer, Held), Error> {
        if opts.fallback {
            self.inner
                .counters
                .fallback_reads
                .fetch_add(1, Ordering::Relaxed);
            let (entry, held) = self.read_store_held(key, budget, opts.account).await?;
            return Ok((
                self.answer(entry, pb::Tier::Store, hot, opts.if_none_match),
                held,
            ));
        }
        if self.access(key, opts.epoch).await? == Access::Unsettled {
            self.inner
                .counters
                .unsettled_reads
                .fetch_add(1, Ordering::Relaxed);
            let (entry, held) = self.read_store_held(key, budget, opts.account).await?;
            return Ok((
                self.answer(entry, pb::Tier::Store, hot, opts.if_none_match),
                held,
            ));
        }
        if opts.strict {
            return self.load_strict(key, opts, hot, budget).await;
        }
        let lease = self.lease_ticket(opts);
        let from_peer = AtomicBool::new(false);
        let (entry, how) = self
            .inner
            .entries
            .load(key, || async {
                // Just after a change of members, the key's previous owner may hold it.
                if let Some(entry) = self.peek_previous_owner(key).await {
                    from_peer.store(true, Ordering::Relaxed);
                    return Ok(entry);
                }
                self.read_store(key, budget).await
            })
            .await?;
        let tier = if how == Lookup::Loaded && from_peer.load(Ordering::Relaxed) {
            self.inner.scale.count_handoff_hit();
            pb::Tier::Handoff
        } else {
            tier_of(how)
        };
        let answer = self.answer(entry, tier, hot, opts.if_none_match);
        Ok((self.leased(answer, key, lease), Held::none()))
    }

    async fn load_strict(
        &self,
        key: &str,
        opts: ReadOptions<'_>,
        hot: bool,
        budget: Duration,
    ) -> Result<(Answer, Held), Error> {
        let current = match self.head_store(key, budget).await {
            Ok(version) => version,
            Err(Error::NotFound { key }) => {
                // Deleted behind the cache's back: drop any copy.
                if self.inner.entries.peek(&key).await.is_some() {
                    self.inner.entries.invalidate(&key).await;
                    self.publish(&key, None);
                }
                return Err(Error::NotFound { key });
            }
            Err(e) => return Err(e),
        };
        if opts.if_none_match == Some(current.as_str()) {
            return Ok((self.answer_not_modified(current, hot), Held::none()));
        }
        if let Some(entry) = self.inner.entries.get(key).await
            && entry.version == current
        {
            return Ok((self.answer(entry, pb::Tier::Home, hot, None), Held::none()));
        }
        // The cache holds another version, or none: read the store afresh.
        let (mut entry, how) = self
            .inner
            .entries
            .reload(key, || self.read_store(key, budget))
            .await?;
        let mut held = Held::none();
        if entry.version != current {
            // A load that began before the HEAD was joined; read once more, uncached.
            (entry, held) = self.read_store_held(key, budget, opts.account).await?;
        }
        self.publish(key, Some(&entry.version));
        Ok((
            self.answer(entry, tier_of(how), hot, opts.if_none_match),
            held,
        ))
    }

    fn answer(
        &self,
        entry: Entry,
        tier: pb::Tier,
        hot: bool,
        if_none_match: Option<&str>,
    ) -> Answer {
        if if_none_match == Some(entry.version.as_str()) {
            return self.answer_not_modified(entry.version, hot);
        }
        let c = &self.inner.counters;
        c.bytes_served.fetch_add(entry.size(), Ordering::Relaxed);
        if hot {
            c.hot_replies.fetch_add(1, Ordering::Relaxed);
        }
        Answer::Value {
            entry,
            tier,
            hot,
            lease_ms: 0,
        }
    }

    fn answer_not_modified(&self, version: Version, hot: bool) -> Answer {
        let c = &self.inner.counters;
        c.not_modified.fetch_add(1, Ordering::Relaxed);
        if hot {
            c.hot_replies.fetch_add(1, Ordering::Relaxed);
        }
        Answer::NotModified {
            version,
            hot,
            lease_ms: 0,
        }
    }

    /// Tells subscribers that `key` now has `version` (`None`: deleted).
    fn publish(&self, key: &str, version: Option<&Version>) {
        let invalidation = pb::Invalidation {
            key: key.to_owned(),
            version: version.map(|v| v.as_str().to_owned()).unwrap_or_default(),
        };
        // No subscribers is not an error.
        if self.inner.invalidations.send(invalidation).is_ok() {
            self.inner
                .counters
                .invalidations_sent
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many subscribers receive this node's invalidations now.
    pub fn watchers(&self) -> usize {
        self.inner.invalidations.receiver_count()
    }

    /// A new subscription to this node's invalidations.
    pub fn subscribe(&self) -> broadcast::Receiver<pb::Invalidation> {
        self.inner.invalidations.subscribe()
    }

    /// Reads a blob through the cache: validation, ownership, then the cache or the store.
    ///
    /// # Errors
    /// Invalid key, wrong owner, not found, store unavailable.
    pub async fn get(
        &self,
        key: &str,
        opts: ReadOptions<'_>,
        budget: Duration,
    ) -> Result<Answer, Error> {
        let span = tracing::debug_span!(
            "get",
            key_len = key.len(),
            fallback = opts.fallback,
            strict = opts.strict,
            tier = tracing::field::Empty
        );
        async {
            let result = match self.lookup(key, opts).await {
                Ok((Some(answer), _)) => Ok(answer),
                Ok((None, hot)) => self.load(key, opts, hot, budget).await.map(|(a, _)| a),
                Err(e) => Err(e),
            };
            if let Ok(Answer::Value { tier, .. }) = &result {
                tracing::Span::current().record("tier", tier.as_str_name());
            }
            self.count_error(result)
        }
        .instrument(span)
        .await
    }

    /// Writes a blob to the store, then caches it with the store's new version. With
    /// `if_match`, the write happens only if the blob's current version is that one (`""`:
    /// only if the blob does not exist), checked by the store itself where it supports
    /// conditional writes. The write is admitted only once the key is settled
    /// ([`cache_core::fence`]), and a fence for a newer epoch waits for it.
    ///
    /// # Errors
    /// Invalid key, value too large, wrong owner, not settled, version mismatch, store
    /// unavailable.
    pub async fn put(
        &self,
        key: &str,
        value: Bytes,
        if_match: Option<&str>,
        epoch: u64,
        budget: Duration,
    ) -> Result<Version, Error> {
        let (key, if_match) = (key.to_owned(), if_match.map(str::to_owned));
        self.detached(move |node, answer| async move {
            node.put_here(&key, value, if_match.as_deref(), epoch, budget, &answer)
                .await
        })
        .await
    }

    /// Runs a write in a task of its own, so that a caller that gives up (its deadline, a
    /// closed stream) does not end it: a write ends only when its store call has, and until
    /// then it holds the key's write guard. The caller is answered early when the task gives
    /// up waiting for the store ([`EarlyAnswer`]).
    async fn detached<T, F, Fut>(&self, write: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(CacheNode, EarlyAnswer) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let (tx, early) = tokio::sync::oneshot::channel();
        // The task's spans stay children of the request's.
        let write = write(self.clone(), EarlyAnswer(Mutex::new(Some(tx))));
        let task = tokio::spawn(write.instrument(tracing::Span::current()));
        tokio::select! {
            done = task => done.unwrap_or_else(|e| {
                Err(Error::StoreUnavailable(format!("the write ended early: {e}")))
            }),
            Ok(err) = early => Err(err),
        }
    }

    async fn put_here(
        &self,
        key: &str,
        value: Bytes,
        if_match: Option<&str>,
        epoch: u64,
        budget: Duration,
        answer: &EarlyAnswer,
    ) -> Result<Version, Error> {
        let span = tracing::debug_span!("put", key_len = key.len(), value_len = value.len(), epoch);
        async {
            self.inner.counters.puts.fetch_add(1, Ordering::Relaxed);
            let result = async {
                validate_key(key)?;
                self.inner.limits.check_value(value.len())?;
                let _guard = self.admit_write(key, epoch, budget).await?;
                // Leased copies of the old value go before anyone can read the new one.
                let _lease_write = self.inner.leases.begin_write(key).await;
                let written = self
                    .inner
                    .entries
                    .write_through(key, || async {
                        let version = self
                            .write_store(key, value.clone(), if_match, budget, answer)
                            .await?;
                        Ok(Some(Entry::new(value.clone(), version)))
                    })
                    .await;
                self.inner.scale.forget_departed(key);
                let written = written?;
                let version = written
                    .map(|e| e.version)
                    .ok_or_else(|| Error::InvalidRequest("write produced no entry".into()))?;
                self.publish(key, Some(&version));
                Ok(version)
            }
            .await;
            self.count_error(result)
        }
        .instrument(span)
        .await
    }

    /// Admits a write: adopts a newer epoch the request carries, refuses an older one, waits
    /// until the key is settled, and records the key as written in this epoch (before the
    /// store call, so that no handed-over copy lands over it).
    async fn admit_write(
        &self,
        key: &str,
        epoch: u64,
        budget: Duration,
    ) -> Result<crate::epochs::WriteGuard<'_>, Error> {
        self.access(key, epoch).await?;
        self.wait_quiet(budget).await?;
        let guard = self
            .inner
            .epochs
            .admit_write(key, budget)
            .await
            .inspect_err(|e| {
                if matches!(e, Error::NotSettled(_)) {
                    self.inner
                        .counters
                        .not_settled
                        .fetch_add(1, Ordering::Relaxed);
                }
            })?;
        self.inner.scale.mark_written(key, guard.epoch());
        Ok(guard)
    }

    /// Deletes a blob from the store, then from the cache. Deleting a missing blob succeeds.
    ///
    /// # Errors
    /// Invalid key, wrong owner, not settled, store unavailable.
    pub async fn delete(&self, key: &str, epoch: u64, budget: Duration) -> Result<(), Error> {
        let key = key.to_owned();
        self.detached(move |node, answer| async move {
            node.delete_here(&key, epoch, budget, &answer, true).await
        })
        .await
    }

    /// Drops the cached copy of a blob that was just written to the store around the cache,
    /// as a write through the cache would: under the key's write gate, after lease holders
    /// have dropped their copies, and told to watchers. The store is not touched.
    ///
    /// # Errors
    /// Invalid key, wrong owner, not settled.
    pub async fn forget(&self, key: &str, epoch: u64, budget: Duration) -> Result<(), Error> {
        let key = key.to_owned();
        self.detached(move |node, answer| async move {
            node.delete_here(&key, epoch, budget, &answer, false).await
        })
        .await
    }

    async fn delete_here(
        &self,
        key: &str,
        epoch: u64,
        budget: Duration,
        answer: &EarlyAnswer,
        in_store: bool,
    ) -> Result<(), Error> {
        let span = tracing::debug_span!("delete", key_len = key.len(), epoch, in_store);
        async {
            self.inner.counters.deletes.fetch_add(1, Ordering::Relaxed);
            let result = async {
                validate_key(key)?;
                let _guard = self.admit_write(key, epoch, budget).await?;
                let _lease_write = self.inner.leases.begin_write(key).await;
                let deleted = self
                    .inner
                    .entries
                    .write_through(key, || async {
                        if in_store {
                            self.delete_store(key, budget, answer).await?;
                        }
                        Ok(None)
                    })
                    .await;
                self.inner.scale.forget_departed(key);
                deleted?;
                self.publish(key, None);
                Ok(())
            }
            .await;
            self.count_error(result)
        }
        .instrument(span)
        .await
    }

    pub(crate) fn count_error<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        result.map_err(|e| self.failed(e))
    }

    /// Counts a failed request and returns its error.
    pub(crate) fn failed(&self, err: Error) -> Error {
        self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(error = %err, "request failed");
        err
    }

    fn store_deadline(&self, budget: Duration) -> Duration {
        self.inner.store_timeout.min(budget)
    }

    fn store_error(&self, key: &str, err: object_store::Error) -> Error {
        match err {
            object_store::Error::NotFound { .. } => Error::NotFound {
                key: key.to_owned(),
            },
            other => {
                self.inner
                    .counters
                    .store_errors
                    .fetch_add(1, Ordering::Relaxed);
                crate::store::request_error(&other)
            }
        }
    }

    fn store_timed_out(&self, limit: Duration) -> Error {
        self.inner
            .counters
            .store_errors
            .fetch_add(1, Ordering::Relaxed);
        Error::StoreUnavailable(format!("the blob store did not answer within {limit:?}"))
    }

    /// Reads a blob from the store, holding its size against the node's reply budget while
    /// the body arrives.
    pub(crate) async fn read_store(&self, key: &str, budget: Duration) -> Result<Entry, Error> {
        self.read_store_held(key, budget, None)
            .await
            .map(|(e, _)| e)
    }

    /// Reads a blob from the store, and returns it with its hold on the reply budget: taken
    /// against `account` (or the node budget alone) once the store has said the blob's size
    /// and before its body is read.
    pub(crate) async fn read_store_held(
        &self,
        key: &str,
        budget: Duration,
        account: Option<&Account>,
    ) -> Result<(Entry, Held), Error> {
        let path = blob_path(key)?;
        let c = &self.inner.counters;
        let max = self.inner.limits.max_value_bytes;
        let hash = key_hash(key);
        if self.inner.large.is_large(hash) {
            // Lately too large to cache whole: ask its size before reading it all.
            let meta = self.head_meta(key, budget).await?;
            if meta.size > max {
                return Err(Error::ValueTooLarge {
                    size: meta.size,
                    max,
                });
            }
            self.inner.large.clear(hash);
        }
        c.store_reads.fetch_add(1, Ordering::Relaxed);
        let read = async {
            let result = self
                .inner
                .store
                .get(&path)
                .await
                .map_err(|e| self.store_error(key, e))?;
            if result.meta.size > max {
                self.inner.large.mark(hash);
                return Err(Error::ValueTooLarge {
                    size: result.meta.size,
                    max,
                });
            }
            let version = Version::from_meta(&result.meta);
            let held = match account {
                Some(account) => account.hold(result.meta.size, budget).await?,
                None => {
                    self.inner
                        .budget
                        .node_account()
                        .hold(result.meta.size, budget)
                        .await?
                }
            };
            let value = result.bytes().await.map_err(|e| self.store_error(key, e))?;
            Ok((Entry::new(value, version), held))
        };
        let limit = self.store_deadline(budget);
        let (entry, held) = tokio::time::timeout(limit, read)
            .await
            .map_err(|_| self.store_timed_out(limit))??;
        c.store_read_bytes
            .fetch_add(entry.size(), Ordering::Relaxed);
        Ok((entry, held))
    }

    /// Reads chunk `index` of the large object `key` (see [`cache_core::chunks`]) at
    /// `version`, or, when `version` is empty, at the version the store holds now (asked with
    /// a metadata call, which also gives the object's size). The settled owner serves the chunk
    /// from its cache, or loads it with a ranged read of the store and caches it; a fallback
    /// read, or a key not settled yet, reads the store and caches nothing. A chunk read from
    /// the store is checked to be of `version`: a write in the middle of a read fails it with
    /// a version mismatch instead of mixing two versions' bytes.
    ///
    /// # Errors
    /// Invalid key or request, wrong owner, not found, a version mismatch, an object larger
    /// than [`Limits::max_object_bytes`], store unavailable.
    pub(crate) async fn read_chunk(
        &self,
        key: &str,
        version: &str,
        index: u64,
        fallback: bool,
        epoch: u64,
        budget: Duration,
    ) -> Result<Chunk, Error> {
        let span = tracing::debug_span!("chunk", key_len = key.len(), index, fallback);
        async {
            self.inner
                .counters
                .chunk_reads
                .fetch_add(1, Ordering::Relaxed);
            validate_key(key)?;
            let limits = self.inner.limits;
            let cached = !fallback && self.access(key, epoch).await? == Access::Cached;
            let (version, size) = if version.is_empty() {
                let meta = self.head_meta(key, budget).await?;
                if meta.size > limits.max_object_bytes {
                    return Err(Error::ValueTooLarge {
                        size: meta.size,
                        max: limits.max_object_bytes,
                    });
                }
                (Version::from_meta(&meta), meta.size)
            } else {
                (Version::new(version), 0)
            };
            let bound = if size > 0 {
                size
            } else {
                limits.max_object_bytes
            };
            if index >= chunks::chunk_count(bound, limits.chunk_bytes) {
                return Err(Error::InvalidRequest(format!(
                    "chunk {index} of an object of {size} bytes"
                )));
            }
            let chunk = limits.chunk_bytes;
            let (entry, tier) = if cached {
                // The part that holds the chunk, from the cache or in one ranged read.
                let part_bytes = limits.part_bytes();
                let (part, within) = chunks::locate(index, chunk, part_bytes);
                let name = chunks::part_key(key, version.as_str(), part);
                let load = || self.load_range(key, &version, part * part_bytes, part_bytes, budget);
                let (entry, how) = self.inner.entries.get_or_load(&name, load).await?;
                let end = usize::try_from(within.end)
                    .map_or(entry.value.len(), |e| e.min(entry.value.len()));
                let start = usize::try_from(within.start).map_or(end, |s| s.min(end));
                let value = entry.value.slice(start..end);
                (Entry::new(value, entry.version), tier_of(how))
            } else {
                let start = index.saturating_mul(chunk);
                let entry = self.load_range(key, &version, start, chunk, budget).await?;
                (entry, pb::Tier::Store)
            };
            self.inner
                .counters
                .bytes_served
                .fetch_add(entry.size(), Ordering::Relaxed);
            Ok(Chunk {
                entry,
                tier,
                size,
                chunk_bytes: limits.chunk_bytes,
            })
        }
        .instrument(span)
        .await
    }

    /// `len` bytes of `version` of `key` from `start` (fewer at the end), read from the
    /// store with a ranged read.
    async fn load_range(
        &self,
        key: &str,
        version: &Version,
        start: u64,
        len: u64,
        budget: Duration,
    ) -> Result<Entry, Error> {
        let path = blob_path(key)?;
        let c = &self.inner.counters;
        c.store_reads.fetch_add(1, Ordering::Relaxed);
        let read = async {
            let options = GetOptions {
                range: Some(GetRange::Bounded(start..start.saturating_add(len))),
                ..GetOptions::default()
            };
            let result = self
                .inner
                .store
                .get_opts(&path, options)
                .await
                .map_err(|e| self.store_error(key, e))?;
            let found = Version::from_meta(&result.meta);
            // The pin: these bytes are of the version asked for, or the read fails.
            if found != *version && !self.inner.unpinned_chunks {
                return Err(Error::VersionMismatch {
                    expected: version.as_str().to_owned(),
                    found: found.as_str().to_owned(),
                });
            }
            let modified = found.modified_ms().unwrap_or(0);
            let bytes = result.bytes().await.map_err(|e| self.store_error(key, e))?;
            Ok(Entry::new(
                bytes,
                version.clone().with_modified_ms(modified),
            ))
        };
        let limit = self.store_deadline(budget);
        let entry = tokio::time::timeout(limit, read)
            .await
            .map_err(|_| self.store_timed_out(limit))??;
        c.store_read_bytes
            .fetch_add(entry.size(), Ordering::Relaxed);
        Ok(entry)
    }

    /// The store's metadata of `key`.
    async fn head_meta(&self, key: &str, budget: Duration) -> Result<ObjectMeta, Error> {
        let path = blob_path(key)?;
        self.inner
            .counters
            .store_heads
            .fetch_add(1, Ordering::Relaxed);
        let head = async {
            self.inner
                .store
                .head(&path)
                .await
                .map_err(|e| self.store_error(key, e))
        };
        let limit = self.store_deadline(budget);
        tokio::time::timeout(limit, head)
            .await
            .map_err(|_| self.store_timed_out(limit))?
    }

    async fn head_store(&self, key: &str, budget: Duration) -> Result<Version, Error> {
        self.head_meta(key, budget)
            .await
            .map(|meta| Version::from_meta(&meta))
    }

    async fn write_store(
        &self,
        key: &str,
        value: Bytes,
        if_match: Option<&str>,
        budget: Duration,
        answer: &EarlyAnswer,
    ) -> Result<Version, Error> {
        let path = blob_path(key)?;
        self.inner
            .counters
            .store_writes
            .fetch_add(1, Ordering::Relaxed);
        let fallback = &self.inner.conditional;
        let write = async {
            let _turn = self.turn(key).await;
            let payload = PutPayload::from(value);
            let result = match if_match {
                None => self.inner.store.put(&path, payload).await,
                Some(expected) if !expected.is_empty() && fallback.get() == NO_CHECKS => {
                    // Known not to check versions itself: check here.
                    drop(_turn);
                    return self.write_checked(key, &path, payload, expected).await;
                }
                Some(expected) => {
                    let mode = if expected.is_empty() {
                        PutMode::Create
                    } else {
                        PutMode::Update(UpdateVersion {
                            e_tag: Some(expected.to_owned()),
                            version: None,
                        })
                    };
                    let opts = PutOptions {
                        mode,
                        ..PutOptions::default()
                    };
                    let result = self
                        .inner
                        .store
                        .put_opts(&path, payload.clone(), opts)
                        .await;
                    if !expected.is_empty() {
                        fallback.learn(&result);
                    }
                    match result {
                        Err(object_store::Error::NotImplemented { .. }) => {
                            drop(_turn);
                            return self.write_checked(key, &path, payload, expected).await;
                        }
                        other => other,
                    }
                }
            };
            let result = match result {
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ) => return Err(self.mismatch(key, if_match.unwrap_or_default()).await),
                other => other.map_err(|e| self.store_error(key, e))?,
            };
            self.written_version(key, &path, &result).await
        };
        self.outlive(key, write, budget, answer).await
    }

    /// Runs a write's store call. Past the store deadline the caller is answered (an unknown
    /// outcome), but the call goes on, and so does the write holding its guards: a call that
    /// is dropped may still land (a file written on a blocking thread, a request already
    /// sent), and it must not land after the key has moved on. Only past
    /// [`CacheNodeBuilder::abandon_writes_after`] is the call dropped.
    async fn outlive<T>(
        &self,
        key: &str,
        call: impl Future<Output = Result<T, Error>>,
        budget: Duration,
        answer: &EarlyAnswer,
    ) -> Result<T, Error> {
        let limit = self.store_deadline(budget);
        let mut call = std::pin::pin!(call);
        if let Ok(done) = tokio::time::timeout(limit, call.as_mut()).await {
            return done;
        }
        let err = self.store_timed_out(limit);
        self.inner.entries.mark_suspect(key);
        answer.give(Error::StoreUnavailable(err.to_string()));
        let c = &self.inner.counters;
        c.writes_outlived.fetch_add(1, Ordering::Relaxed);
        let rest = self.inner.abandon_writes_after;
        if tokio::time::timeout(rest, call).await.is_err() {
            c.writes_abandoned.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                after = ?limit + rest,
                "a write's store call was dropped unfinished; the store is taken as never \
                 applying it"
            );
        }
        // Whatever the call did, its caller was told the outcome is unknown, and the write
        // leaves the key suspect.
        Err(err)
    }

    /// Asks the store whether it checks versions itself, before the node serves: a
    /// conditional write of a reserved blob, on a version no blob has. A store that refuses it
    /// checks versions; one that cannot do it, or that writes the blob anyway, does not. Until
    /// this is known, writes take turns.
    pub(crate) async fn probe_conditional_writes(&self) {
        let path = Path::from(PROBE_PATH);
        let opts = PutOptions {
            mode: PutMode::Update(UpdateVersion {
                e_tag: Some("cachelet-probe-matches-no-version".into()),
                version: None,
            }),
            ..PutOptions::default()
        };
        let probe = self
            .inner
            .store
            .put_opts(&path, PutPayload::default(), opts);
        let fallback = &self.inner.conditional;
        match tokio::time::timeout(self.inner.store_timeout, probe).await {
            Ok(Ok(_)) => fallback.state.store(NO_CHECKS, Ordering::Relaxed),
            Ok(result) => fallback.learn(&result),
            Err(_) => {}
        }
    }

    /// On a store without conditional writes, or one not known to have them yet, writes and
    /// deletes of one key take turns on this node, so that a conditional write's check and
    /// write are not split by another.
    async fn turn(&self, key: &str) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let fallback = &self.inner.conditional;
        if fallback.get() == CHECKS {
            return None;
        }
        let stripe = key_hash(key) as usize % fallback.stripes.len();
        Some(fallback.stripes[stripe].lock().await)
    }

    /// A conditional write on a store that cannot check the condition itself: HEAD, compare,
    /// then write, with every write of the key on this node taking turns. A writer that goes
    /// straight to the store can still slip in between; the stores that check conditions
    /// themselves (in memory, S3, Azure, GCS) do not have this gap.
    async fn write_checked(
        &self,
        key: &str,
        path: &Path,
        payload: PutPayload,
        expected: &str,
    ) -> Result<Version, Error> {
        let fallback = &self.inner.conditional;
        let stripe = key_hash(key) as usize % fallback.stripes.len();
        let _turn = fallback.stripes[stripe].lock().await;
        let found = self.current_version(key, path).await?;
        if found != expected {
            return Err(Error::VersionMismatch {
                expected: expected.to_owned(),
                found,
            });
        }
        let result = self
            .inner
            .store
            .put(path, payload)
            .await
            .map_err(|e| self.store_error(key, e))?;
        self.written_version(key, path, &result).await
    }

    /// The blob's current version as a string, `""` when it does not exist.
    async fn current_version(&self, key: &str, path: &Path) -> Result<String, Error> {
        self.inner
            .counters
            .store_heads
            .fetch_add(1, Ordering::Relaxed);
        match self.inner.store.head(path).await {
            Ok(meta) => Ok(Version::from_meta(&meta).as_str().to_owned()),
            Err(object_store::Error::NotFound { .. }) => Ok(String::new()),
            Err(e) => Err(self.store_error(key, e)),
        }
    }

    /// The error for a conditional write the store refused, naming the version found (best
    /// effort: empty when the store cannot say).
    async fn mismatch(&self, key: &str, expected: &str) -> Error {
        let found = match blob_path(key) {
            Ok(path) => self.current_version(key, &path).await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        Error::VersionMismatch {
            expected: expected.to_owned(),
            found,
        }
    }

    async fn written_version(
        &self,
        key: &str,
        path: &Path,
        result: &object_store::PutResult,
    ) -> Result<Version, Error> {
        match Version::from_put(result) {
            // The store says no write time: the node's clock, read once the write is done.
            Some(v) => Ok(v.with_modified_ms(crate::scale_state::unix_ms())),
            // The store reports no version on writes; ask for it.
            None => self
                .inner
                .store
                .head(path)
                .await
                .map(|meta| Version::from_meta(&meta))
                .map_err(|e| self.store_error(key, e)),
        }
    }

    async fn delete_store(
        &self,
        key: &str,
        budget: Duration,
        answer: &EarlyAnswer,
    ) -> Result<(), Error> {
        let path = blob_path(key)?;
        self.inner
            .counters
            .store_deletes
            .fetch_add(1, Ordering::Relaxed);
        let delete = async {
            let _turn = self.turn(key).await;
            match self.inner.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.store_error(key, e)),
            }
        };
        self.outlive(key, delete, budget, answer).await
    }

    /// The node's counters now.
    pub fn stats(&self) -> pb::NodeStats {
        let e = self.inner.entries.stats();
        let c = &self.inner.counters;
        let membership = self.membership();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut stats = pb::NodeStats {
            app: self.inner.app.clone(),
            node: self.addr().unwrap_or_default().to_owned(),
            epoch: membership.epoch(),
            sealed: self.inner.epochs.with(Ownership::sealed),
            unsettled_reads: load(&c.unsettled_reads),
            not_settled: load(&c.not_settled),
            entries: e.entries,
            bytes_used: e.bytes_used,
            capacity_bytes: e.capacity_bytes,
            hits: e.hits,
            misses: e.misses,
            inserts: e.inserts,
            evictions: e.evictions,
            store_reads: load(&c.store_reads),
            store_writes: load(&c.store_writes),
            store_deletes: load(&c.store_deletes),
            store_errors: load(&c.store_errors),
            store_read_bytes: load(&c.store_read_bytes),
            fallback_reads: load(&c.fallback_reads),
            reply_budget_bytes: self.inner.budget.bytes(),
            leases_granted: self.inner.leases.granted.load(Ordering::Relaxed),
            lease_expiry_wait_us: self.inner.leases.expiry_wait_us.load(Ordering::Relaxed),
            lease_expiry_wait_max_us: self.inner.leases.expiry_wait_max_us.load(Ordering::Relaxed),
            writes_outlived: load(&c.writes_outlived),
            writes_abandoned: load(&c.writes_abandoned),
            leases_active: self.inner.leases.active(),
            lease_invalidations: self.inner.leases.invalidations.load(Ordering::Relaxed),
            lease_expiry_waits: self.inner.leases.expiry_waits.load(Ordering::Relaxed),
            reply_held_bytes: self.inner.budget.held_bytes(),
            gets: load(&c.gets),
            chunk_reads: load(&c.chunk_reads),
            puts: load(&c.puts),
            deletes: load(&c.deletes),
            errors: load(&c.errors),
            bytes_served: load(&c.bytes_served),
            not_modified: load(&c.not_modified),
            store_heads: load(&c.store_heads),
            invalidations_sent: load(&c.invalidations_sent),
            hot_replies: load(&c.hot_replies),
            ghost_hits: e.ghost_hits,
            s3_requests: load(&self.inner.s3.ok),
            s3_client_errors: load(&self.inner.s3.client_errors),
            s3_server_errors: load(&self.inner.s3.server_errors),
            s3_around_reads: load(&self.inner.s3.around_reads),
            s3_around_writes: load(&self.inner.s3.around_writes),
            ..self.inner.scale.stats()
        };
        self.inner.discovery_counters.fill(&mut stats);
        stats
    }
}

fn tier_of(how: Lookup) -> pb::Tier {
    match how {
        Lookup::Hit => pb::Tier::Home,
        Lookup::Loaded => pb::Tier::Store,
    }
}

fn blob_path(key: &str) -> Result<Path, Error> {
    Path::parse(key).map_err(|e| Error::InvalidKey {
        reason: format!("not a valid object path: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Before it serves, a node knows whether its store checks versions, so that the first
    /// writes already take turns where they must: a plain write that does not could slip in
    /// between the version check and the write of the first conditional write (`cache-bench
    /// check` found exactly that: both acknowledged, and the conditional write's value read).
    #[tokio::test]
    async fn a_node_knows_before_it_serves_whether_its_store_checks_versions() {
        let dir = tempfile::tempdir().unwrap();
        let files = format!("file://{}", dir.path().display());
        for (url, checks) in [("memory:///", true), (files.as_str(), false)] {
            let node = CacheNode::builder()
                .app("probe")
                .store(crate::store::open_store(url).unwrap())
                .members(["127.0.0.1:1"])
                .build()
                .unwrap();
            assert!(
                !node.inner.conditional.checks(),
                "not known before the probe"
            );
            node.probe_conditional_writes().await;
            assert_eq!(node.inner.conditional.checks(), checks, "{url}");
        }
    }
}
