//! [`CacheNode`]: one cachelet. It owns an [`EntryStore`], knows its members, and answers
//! gets, puts and deletes by reading through and writing through the application's blob store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use cache_core::{
    Entry, EntryStore, Error, Limits, Lookup, Membership, SharedMembership, Version, validate_key,
};
use cache_proto::v1 as pb;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tracing::Instrument;

/// The default byte capacity of a node's cache: 64 MiB.
pub const DEFAULT_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

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
    epoch: u64,
    advertise: Option<String>,
    store_timeout: Duration,
    op_timeout: Duration,
    max_inflight_per_stream: usize,
    max_batch_ops: usize,
}

impl Default for CacheNodeBuilder {
    fn default() -> Self {
        Self {
            app: None,
            store: None,
            capacity_bytes: DEFAULT_CAPACITY_BYTES,
            limits: Limits::default(),
            members: Vec::new(),
            epoch: 1,
            advertise: None,
            store_timeout: Duration::from_secs(10),
            op_timeout: Duration::from_secs(5),
            max_inflight_per_stream: 1024,
            max_batch_ops: 4096,
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

    /// The full member list, this node included, as `host:port` addresses. Required.
    pub fn members<I, S>(mut self, members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.members = members.into_iter().map(Into::into).collect();
        self
    }

    /// The epoch of the initial member list. Default: 1.
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
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
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
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

    /// The most ops one batch may carry. Default: 4096.
    pub fn max_batch_ops(mut self, n: usize) -> Self {
        self.max_batch_ops = n.max(1);
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
        let membership = Membership::new(self.epoch, self.members)
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        let self_addr = OnceLock::new();
        if let Some(addr) = self.advertise {
            check_member(&membership, &addr)?;
            let _ = self_addr.set(addr);
        }
        Ok(CacheNode {
            inner: Arc::new(Inner {
                app,
                store,
                entries: EntryStore::new(self.capacity_bytes),
                limits: self.limits,
                membership: SharedMembership::new(membership),
                self_addr,
                store_timeout: self.store_timeout,
                op_timeout: self.op_timeout,
                max_inflight_per_stream: self.max_inflight_per_stream,
                max_batch_ops: self.max_batch_ops,
                counters: Counters::default(),
                shutting_down: AtomicBool::new(false),
            }),
        })
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
}

/// One cachelet: a byte-bounded cache in front of the application's blob store. Cheap to
/// clone; clones share the node.
#[derive(Debug, Clone)]
pub struct CacheNode {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    app: String,
    store: Arc<dyn ObjectStore>,
    entries: EntryStore,
    limits: Limits,
    membership: SharedMembership,
    self_addr: OnceLock<String>,
    store_timeout: Duration,
    op_timeout: Duration,
    max_inflight_per_stream: usize,
    max_batch_ops: usize,
    counters: Counters,
    shutting_down: AtomicBool,
}

/// A read's result: the entry and the tier that served it.
pub(crate) type Served = (Entry, pb::Tier);

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
        self.inner.membership.load()
    }

    /// This node's address in the member list, once known.
    pub fn addr(&self) -> Option<&str> {
        self.inner.self_addr.get().map(String::as_str)
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

    /// Learns this node's address from its listener, unless `advertise` set it.
    pub(crate) fn set_addr(&self, addr: String) -> crate::Result<()> {
        if self.inner.self_addr.get().is_none() {
            check_member(&self.membership(), &addr)?;
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
                got: app.to_owned(),
                serves: self.inner.app.clone(),
            })
        }
    }

    fn check_owner(&self, key: &str) -> Result<(), Error> {
        let membership = self.inner.membership.load();
        match self.inner.self_addr.get() {
            Some(me) if membership.owner(key) == me => Ok(()),
            _ => Err(Error::WrongOwner {
                epoch: membership.epoch(),
                members: membership.members().to_vec(),
            }),
        }
    }

    /// The quick part of a get: validation, ownership and the cache lookup. `Ok(None)` means a
    /// miss that needs [`CacheNode::load`] (or, for `fallback`, a plain store read).
    pub(crate) async fn lookup(&self, key: &str, fallback: bool) -> Result<Option<Served>, Error> {
        self.inner.counters.gets.fetch_add(1, Ordering::Relaxed);
        validate_key(key)?;
        if fallback {
            return Ok(None);
        }
        self.check_owner(key)?;
        Ok(self
            .inner
            .entries
            .get(key)
            .await
            .map(|e| self.served(e, pb::Tier::Home)))
    }

    /// The slow part of a get, after [`CacheNode::lookup`] missed: one store read for all
    /// concurrent misses of the key, cached as home; or, for `fallback`, an uncached read for
    /// a home node that is down.
    pub(crate) async fn load(
        &self,
        key: &str,
        fallback: bool,
        budget: Duration,
    ) -> Result<Served, Error> {
        if fallback {
            self.inner
                .counters
                .fallback_reads
                .fetch_add(1, Ordering::Relaxed);
            let entry = self.read_store(key, budget).await?;
            return Ok(self.served(entry, pb::Tier::Store));
        }
        let (entry, how) = self
            .inner
            .entries
            .load(key, || self.read_store(key, budget))
            .await?;
        let tier = match how {
            Lookup::Hit => pb::Tier::Home,
            Lookup::Loaded => pb::Tier::Store,
        };
        Ok(self.served(entry, tier))
    }

    fn served(&self, entry: Entry, tier: pb::Tier) -> Served {
        self.inner
            .counters
            .bytes_served
            .fetch_add(entry.size(), Ordering::Relaxed);
        (entry, tier)
    }

    /// Reads a blob through the cache: validation, ownership, then the cache or the store.
    ///
    /// # Errors
    /// Invalid key, wrong owner, not found, store unavailable.
    pub async fn get(&self, key: &str, fallback: bool, budget: Duration) -> Result<Served, Error> {
        let span = tracing::debug_span!(
            "get",
            key_len = key.len(),
            fallback,
            tier = tracing::field::Empty
        );
        async {
            let result = match self.lookup(key, fallback).await {
                Ok(Some(hit)) => Ok(hit),
                Ok(None) => self.load(key, fallback, budget).await,
                Err(e) => Err(e),
            };
            if let Ok((_, tier)) = &result {
                tracing::Span::current().record("tier", tier.as_str_name());
            }
            self.count_error(result)
        }
        .instrument(span)
        .await
    }

    /// Writes a blob to the store, then caches it with the store's new version.
    ///
    /// # Errors
    /// Invalid key, value too large, wrong owner, store unavailable.
    pub async fn put(&self, key: &str, value: Bytes, budget: Duration) -> Result<Version, Error> {
        let span = tracing::debug_span!("put", key_len = key.len(), value_len = value.len());
        async {
            self.inner.counters.puts.fetch_add(1, Ordering::Relaxed);
            let result = async {
                validate_key(key)?;
                self.inner.limits.check_value(value.len())?;
                self.check_owner(key)?;
                let written = self
                    .inner
                    .entries
                    .write_through(key, || async {
                        let version = self.write_store(key, value.clone(), budget).await?;
                        Ok(Some(Entry::new(value.clone(), version)))
                    })
                    .await?;
                written
                    .map(|e| e.version)
                    .ok_or_else(|| Error::InvalidRequest("write produced no entry".into()))
            }
            .await;
            self.count_error(result)
        }
        .instrument(span)
        .await
    }

    /// Deletes a blob from the store, then from the cache. Deleting a missing blob succeeds.
    ///
    /// # Errors
    /// Invalid key, wrong owner, store unavailable.
    pub async fn delete(&self, key: &str, budget: Duration) -> Result<(), Error> {
        let span = tracing::debug_span!("delete", key_len = key.len());
        async {
            self.inner.counters.deletes.fetch_add(1, Ordering::Relaxed);
            let result = async {
                validate_key(key)?;
                self.check_owner(key)?;
                self.inner
                    .entries
                    .write_through(key, || async {
                        self.delete_store(key, budget).await?;
                        Ok(None)
                    })
                    .await?;
                Ok(())
            }
            .await;
            self.count_error(result)
        }
        .instrument(span)
        .await
    }

    pub(crate) fn count_error<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &result {
            self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "request failed");
        }
        result
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
                tracing::warn!(error = %other, "blob store call failed");
                Error::StoreUnavailable(other.to_string())
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

    async fn read_store(&self, key: &str, budget: Duration) -> Result<Entry, Error> {
        let path = blob_path(key)?;
        let c = &self.inner.counters;
        c.store_reads.fetch_add(1, Ordering::Relaxed);
        let max = self.inner.limits.max_value_bytes;
        let read = async {
            let result = self
                .inner
                .store
                .get(&path)
                .await
                .map_err(|e| self.store_error(key, e))?;
            if result.meta.size > max {
                return Err(Error::ValueTooLarge {
                    size: result.meta.size,
                    max,
                });
            }
            let version = Version::from_meta(&result.meta);
            let value = result.bytes().await.map_err(|e| self.store_error(key, e))?;
            Ok(Entry::new(value, version))
        };
        let limit = self.store_deadline(budget);
        let entry = tokio::time::timeout(limit, read)
            .await
            .map_err(|_| self.store_timed_out(limit))??;
        c.store_read_bytes
            .fetch_add(entry.size(), Ordering::Relaxed);
        Ok(entry)
    }

    async fn write_store(
        &self,
        key: &str,
        value: Bytes,
        budget: Duration,
    ) -> Result<Version, Error> {
        let path = blob_path(key)?;
        self.inner
            .counters
            .store_writes
            .fetch_add(1, Ordering::Relaxed);
        let store = &self.inner.store;
        let write = async {
            let result = store
                .put(&path, PutPayload::from(value))
                .await
                .map_err(|e| self.store_error(key, e))?;
            match Version::from_put(&result) {
                Some(v) => Ok(v),
                // The store reports no version on writes; ask for it.
                None => store
                    .head(&path)
                    .await
                    .map(|meta| Version::from_meta(&meta))
                    .map_err(|e| self.store_error(key, e)),
            }
        };
        let limit = self.store_deadline(budget);
        tokio::time::timeout(limit, write)
            .await
            .map_err(|_| self.store_timed_out(limit))?
    }

    async fn delete_store(&self, key: &str, budget: Duration) -> Result<(), Error> {
        let path = blob_path(key)?;
        self.inner
            .counters
            .store_deletes
            .fetch_add(1, Ordering::Relaxed);
        let delete = async {
            match self.inner.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.store_error(key, e)),
            }
        };
        let limit = self.store_deadline(budget);
        tokio::time::timeout(limit, delete)
            .await
            .map_err(|_| self.store_timed_out(limit))?
    }

    /// The node's counters now.
    pub fn stats(&self) -> pb::NodeStats {
        let e = self.inner.entries.stats();
        let c = &self.inner.counters;
        let membership = self.membership();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        pb::NodeStats {
            app: self.inner.app.clone(),
            node: self.addr().unwrap_or_default().to_owned(),
            epoch: membership.epoch(),
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
            gets: load(&c.gets),
            puts: load(&c.puts),
            deletes: load(&c.deletes),
            errors: load(&c.errors),
            bytes_served: load(&c.bytes_served),
        }
    }
}

fn blob_path(key: &str) -> Result<Path, Error> {
    Path::parse(key).map_err(|e| Error::InvalidKey {
        reason: format!("not a valid object path: {e}"),
    })
}
