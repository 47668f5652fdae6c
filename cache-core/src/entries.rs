//! The entry store: a byte-bounded `moka` cache of blobs with their versions.
//!
//! # Consistency with the blob store
//! The node writes the store first and the cache second, and reads the store on a miss. No
//! lock is held while the store is called; instead each stripe of keys has a *generation*,
//! bumped under a short lock whenever a write begins or ends, an entry is invalidated, or the
//! node's ownership changes ([`EntryStore::bump_all`]):
//! - **A write** ([`EntryStore::write_through`]) first drops the cached copy, so that no
//!   read served from the cache can return the old content once the store may hold the new
//!   one. After the store call it caches the new entry only if the stripe's generation is the
//!   one its start left: no other write, invalidation or ownership change overlapped it, so
//!   the cache cannot end up with an older version than the store. A write that definitely
//!   failed (such as a conditional write whose condition did not hold) puts the old copy
//!   back on the same terms.
//! - **A miss** ([`EntryStore::load`]) reads the generation before it calls the store and
//!   caches the result only if it is unchanged and no write of the stripe is in progress. A load that raced a write is returned to its
//!   caller, which asked before the write finished, but is not cached.
//! - **An unknown outcome.** A write that failed in a way that may still have reached the
//!   store (a timeout, an outage) leaves nothing cached, and marks its key *suspect* for a
//!   while ([`EntryStore::with_suspect_window`]): loads of a suspect key are served but not
//!   cached, so a write that lands late cannot leave an older copy behind for good.
//!
//! Concurrent misses on one key share one load (moka's `try_get_with`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use moka::notification::RemovalCause;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::error::Error;
use crate::ring::key_hash;
use crate::version::Version;

/// Bytes charged to each entry on top of its key, value and version, for the entry's own
/// bookkeeping: the cache's tables and queues, and the allocations of the key, the version and
/// the value's handle. Measured, not guessed: 200,000 empty entries cost 425 bytes of resident
/// memory each beyond their key and version (`tests/overhead.rs`, which fails when the charge
/// no longer covers the cost).
pub const ENTRY_OVERHEAD_BYTES: u64 = 512;

const STRIPES: usize = 4096;

/// How long a key stays suspect after a write of unknown outcome, unless configured.
pub const DEFAULT_SUSPECT_FOR: Duration = Duration::from_secs(10);

/// Keys remembered as suspect at most (a bound on memory; past it the oldest are forgotten
/// early, which only shortens their window).
const MAX_SUSPECTS: u64 = 64 * 1024;

/// A cached blob: its bytes and the version the store gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The blob's bytes.
    pub value: Bytes,
    /// The store's version of these bytes.
    pub version: Version,
}

impl Entry {
    /// A new entry.
    pub fn new(value: Bytes, version: Version) -> Self {
        Self { value, version }
    }

    /// The value's size in bytes.
    pub fn size(&self) -> u64 {
        self.value.len() as u64
    }
}

/// How a read was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The cache held the entry.
    Hit,
    /// The entry was loaded from the store (by this caller or one it waited for).
    Loaded,
}

/// A snapshot of an entry store's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EntryStats {
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now, as the weigher counts them (key, value and overhead).
    pub bytes_used: u64,
    /// The byte capacity.
    pub capacity_bytes: u64,
    /// Reads the cache answered.
    pub hits: u64,
    /// Reads the cache could not answer.
    pub misses: u64,
    /// Entries inserted, by loads and by writes.
    pub inserts: u64,
    /// Entries evicted to keep within capacity.
    pub evictions: u64,
    /// Misses on keys evicted lately: reads that more capacity would have served.
    pub ghost_hits: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    ghost_hits: AtomicU64,
}

/// Why a load did not produce an entry to cache. Internal: the load's own result travels
/// through moka's shared error slot so that every waiter of one load receives it.
#[derive(Debug)]
enum LoadOutcome {
    /// The load succeeded; the entry was cached, or not if a write raced it.
    Loaded(Entry),
    Failed(Error),
}

/// The state of one stripe of keys.
#[derive(Debug, Default)]
struct Stripe {
    /// Bumped when a write begins or ends, an entry is invalidated, or ownership changes.
    generation: u64,
    /// Writes whose store call is in progress.
    writing: u32,
    /// Writes in progress by key hash. A miss on such a key waits for them (on the stripe's
    /// `ended` signal) rather than read the store. Hashes, not keys: nothing is allocated per
    /// write, and a collision only makes a miss wait for an unrelated write.
    keys: std::collections::HashMap<u64, u32>,
}

/// A byte-bounded cache of entries keyed by blob name.
#[derive(Clone)]
pub struct EntryStore {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Cache<Arc<str>, Entry>,
    // Hashes of keys evicted lately (a "ghost list"), bounded in entries.
    ghosts: moka::sync::Cache<u64, ()>,
    capacity: u64,
    counters: Arc<Counters>,
    // Each stripe's state (see the module docs), under a lock held only briefly.
    stripes: Box<[Mutex<Stripe>]>,
    // Per stripe: signalled whenever the last write in progress of some key ends.
    ended: Box<[tokio::sync::Notify]>,
    // Hashes of keys whose last write has an unknown outcome, until their window ends.
    suspects: moka::sync::Cache<u64, ()>,
    // How long a miss waits for a write of its key in progress before it reads the store.
    write_wait: Duration,
}

impl std::fmt::Debug for EntryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryStore")
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

/// The weight of an entry: key, value, version and fixed overhead, saturating at `u32::MAX`.
pub fn entry_weight(key: &str, entry: &Entry) -> u32 {
    let w = key.len() as u64
        + entry.size()
        + entry.version.as_str().len() as u64
        + ENTRY_OVERHEAD_BYTES;
    u32::try_from(w).unwrap_or(u32::MAX)
}

impl EntryStore {
    /// A store that holds at most `capacity_bytes`, counted by [`entry_weight`], with the
    /// default suspect window ([`DEFAULT_SUSPECT_FOR`]).
    pub fn new(capacity_bytes: u64) -> Self {
        Self::with_suspect_window(capacity_bytes, DEFAULT_SUSPECT_FOR)
    }

    /// A store that holds at most `capacity_bytes`, and keeps a key whose write had an unknown
    /// outcome uncached for `suspect_for` (set it to twice the store call timeout).
    ///
    /// A miss on a key with a write in progress waits for that write for at most half of
    /// `suspect_for` (the store call timeout): a write still going on after that has an
    /// unknown outcome for its caller, so the miss reads the store, and, while the write goes
    /// on, caches nothing.
    pub fn with_suspect_window(capacity_bytes: u64, suspect_for: Duration) -> Self {
        let counters = Arc::new(Counters::default());
        let on_evict = Arc::clone(&counters);
        // Remember about as many evicted keys as fit in the cache at 1 KiB each.
        let ghosts = moka::sync::Cache::new((capacity_bytes / 1024).clamp(1024, 1 << 20));
        let ghost_list = ghosts.clone();
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|k: &Arc<str>, e: &Entry| entry_weight(k, e))
            .eviction_listener(move |k: Arc<Arc<str>>, _v, cause| {
                if cause == RemovalCause::Size {
                    on_evict.evictions.fetch_add(1, Ordering::Relaxed);
                    ghost_list.insert(key_hash(&k), ());
                }
            })
            .build();
        let stripes = (0..STRIPES)
            .map(|_| Mutex::new(Stripe::default()))
            .collect();
        let ended = (0..STRIPES).map(|_| tokio::sync::Notify::new()).collect();
        let suspects = moka::sync::Cache::builder()
            .max_capacity(MAX_SUSPECTS)
            .time_to_live(suspect_for.max(Duration::from_millis(1)))
            .build();
        Self {
            inner: Arc::new(Inner {
                cache,
                ghosts,
                capacity: capacity_bytes,
                counters,
                stripes,
                ended,
                suspects,
                write_wait: suspect_for / 2,
            }),
        }
    }

    fn stripe(&self, key: &str) -> &Mutex<Stripe> {
        &self.inner.stripes[(key_hash(key) % STRIPES as u64) as usize]
    }

    fn ended(&self, hash: u64) -> &tokio::sync::Notify {
        &self.inner.ended[(hash % STRIPES as u64) as usize]
    }

    /// The cached entry for `key`, counting a hit or a miss.
    pub async fn get(&self, key: &str) -> Option<Entry> {
        let found = self.inner.cache.get(key).await;
        let c = &self.inner.counters;
        if found.is_some() {
            c.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            c.misses.fetch_add(1, Ordering::Relaxed);
            if self.inner.ghosts.contains_key(&key_hash(key)) {
                c.ghost_hits.fetch_add(1, Ordering::Relaxed);
            }
        }
        found
    }

    /// The cached entry for `key`, without counting (for inspection and tests).
    pub async fn peek(&self, key: &str) -> Option<Entry> {
        self.inner.cache.get(key).await
    }

    /// The entry for `key`: from the cache, or else from `load`, as [`EntryStore::load`].
    ///
    /// # Errors
    /// The error `load` returned.
    pub async fn get_or_load<F, Fut>(&self, key: &str, load: F) -> Result<(Entry, Lookup), Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Entry, Error>>,
    {
        if let Some(entry) = self.get(key).await {
            return Ok((entry, Lookup::Hit));
        }
        self.load(key, load).await
    }

    /// Loads the entry for `key` after a miss. The result of `load` is cached unless a write
    /// to the key finished while it ran. Concurrent callers for one key share one call of
    /// `load`; a caller that finds the key cached meanwhile gets [`Lookup::Hit`].
    ///
    /// # Errors
    /// The error `load` returned.
    pub async fn load<F, Fut>(&self, key: &str, load: F) -> Result<(Entry, Lookup), Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Entry, Error>>,
    {
        let stripe = self.stripe(key);
        let cache = &self.inner.cache;
        // A write of the key is in progress: its result is cached when it ends (unless
        // another overlapped it), so wait for it instead of reading the store, for as long
        // as a store call may take.
        let hash = key_hash(key);
        let mut waited = false;
        let give_up = tokio::time::Instant::now() + self.inner.write_wait;
        loop {
            let ended = self.ended(hash).notified();
            tokio::pin!(ended);
            // Registered before the check, so that an end between the check and the wait is
            // not missed.
            ended.as_mut().enable();
            // A suspect key's write has an unknown outcome already: nothing to wait for.
            if !stripe.lock().await.keys.contains_key(&hash) || self.is_suspect(key) {
                break;
            }
            if tokio::time::timeout_at(give_up, ended).await.is_err() {
                // Outlived its store deadline: read the store (the write in progress keeps
                // the result uncached).
                break;
            }
            waited = true;
        }
        if waited && let Some(entry) = cache.get(key).await {
            return Ok((entry, Lookup::Hit));
        }
        let init = async {
            let generation = stripe.lock().await.generation;
            let entry = match load().await {
                Ok(entry) => entry,
                Err(e) => return Err(LoadOutcome::Failed(e)),
            };
            let current = stripe.lock().await;
            // Not while a write of the stripe is in progress either: the store may hold its
            // value already, and a read of the store (a strict read) may have seen it.
            if current.generation == generation && current.writing == 0 && !self.is_suspect(key) {
                cache.insert(Arc::from(key), entry.clone()).await;
                self.inner.counters.inserts.fetch_add(1, Ordering::Relaxed);
            }
            drop(current);
            // Always "fail" so that moka does not insert after the stripe lock is released;
            // the entry is inserted above, under the lock, when it is safe to.
            Err::<Entry, _>(LoadOutcome::Loaded(entry))
        };
        match cache.try_get_with(Arc::<str>::from(key), init).await {
            // Another task inserted the key while this one waited.
            Ok(entry) => Ok((entry, Lookup::Hit)),
            Err(outcome) => match &*outcome {
                LoadOutcome::Loaded(entry) => Ok((entry.clone(), Lookup::Loaded)),
                LoadOutcome::Failed(e) => Err(e.clone()),
            },
        }
    }

    /// Runs `write` (the store call) with no lock held, then applies its result to the cache:
    /// `Some(entry)` is cached, `None` (a delete) leaves the key uncached. The cached copy is
    /// dropped before `write` runs. When another write, an invalidation or a change of
    /// ownership overlapped this one, nothing is cached: which of them the store applied last
    /// is unknown, and the next read loads it. A failed write leaves the key uncached; one
    /// whose outcome is unknown ([`Error::outcome_unknown`]) also makes it suspect.
    ///
    /// # Errors
    /// The error `write` returned.
    pub async fn write_through<F, Fut>(&self, key: &str, write: F) -> Result<Option<Entry>, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Entry>, Error>>,
    {
        let stripe = self.stripe(key);
        let (started, before) = {
            let mut state = stripe.lock().await;
            state.generation += 1;
            state.writing += 1;
            *state.keys.entry(key_hash(key)).or_insert(0) += 1;
            (state.generation, self.inner.cache.remove(key).await)
        };
        let written = write().await;
        let mut state = stripe.lock().await;
        state.writing -= 1;
        let hash = key_hash(key);
        let last = state.keys.get_mut(&hash).is_some_and(|n| {
            *n -= 1;
            *n == 0
        });
        if last {
            state.keys.remove(&hash);
        }
        let alone = state.generation == started;
        match &written {
            Ok(Some(entry)) if alone => {
                self.inner.cache.insert(Arc::from(key), entry.clone()).await;
                self.inner.counters.inserts.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => self.inner.cache.invalidate(key).await,
            Err(e) if e.outcome_unknown() => {
                self.inner.suspects.insert(key_hash(key), ());
                self.inner.cache.invalidate(key).await;
            }
            // The store is unchanged: put back what was cached, unless something overlapped.
            Err(_) => match before {
                Some(entry) if alone => self.inner.cache.insert(Arc::from(key), entry).await,
                _ => self.inner.cache.invalidate(key).await,
            },
        }
        state.generation += 1;
        drop(state);
        if last {
            self.ended(hash).notify_waiters();
        }
        written
    }

    /// Marks `key` suspect: loads of it are not cached for the suspect window, and misses
    /// stop waiting for its writes in progress.
    pub fn mark_suspect(&self, key: &str) {
        let hash = key_hash(key);
        self.inner.suspects.insert(hash, ());
        self.ended(hash).notify_waiters();
    }

    /// Whether `key` is suspect (see [`EntryStore::write_through`]).
    pub fn is_suspect(&self, key: &str) -> bool {
        self.inner.suspects.contains_key(&key_hash(key))
    }

    /// Bumps every stripe's generation, so that no load or write in progress caches its
    /// result. Called when the node's ownership changes.
    pub async fn bump_all(&self) {
        for stripe in self.inner.stripes.iter() {
            stripe.lock().await.generation += 1;
        }
    }

    /// Drops any cached entry for `key` and loads it afresh with `load`, as [`EntryStore::load`].
    /// A load already in progress may be joined, so the caller must check that the entry is
    /// as new as it needs.
    ///
    /// # Errors
    /// The error `load` returned.
    pub async fn reload<F, Fut>(&self, key: &str, load: F) -> Result<(Entry, Lookup), Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Entry, Error>>,
    {
        self.invalidate(key).await;
        self.load(key, load).await
    }

    /// Caches `entry` for `key` unless `refuse()`, asked under the stripe's lock, says not to,
    /// or the key is cached already (a copy loaded or written here is at least as new), or
    /// the key is suspect. Used for entries handed over from another node. Returns whether it
    /// cached the entry.
    pub async fn insert_unless<F>(&self, key: &str, entry: Entry, refuse: F) -> bool
    where
        F: FnOnce() -> bool,
    {
        let mut state = self.stripe(key).lock().await;
        if refuse()
            || state.writing > 0
            || self.is_suspect(key)
            || self.inner.cache.contains_key(key)
        {
            return false;
        }
        state.generation += 1;
        self.inner.cache.insert(Arc::from(key), entry).await;
        self.inner.counters.inserts.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Every cached key with its entry (a point-in-time copy; values are shared, not copied).
    pub fn snapshot(&self) -> Vec<(Arc<str>, Entry)> {
        self.inner
            .cache
            .iter()
            .map(|(k, v)| (Arc::clone(&*k), v))
            .collect()
    }

    /// Removes `key` from the cache only (the store is not touched).
    pub async fn invalidate(&self, key: &str) {
        self.stripe(key).lock().await.generation += 1;
        self.inner.cache.invalidate(key).await;
    }

    /// Applies pending evictions and bookkeeping now (moka batches them).
    pub async fn sync(&self) {
        self.inner.cache.run_pending_tasks().await;
    }

    /// The counters and sizes now.
    pub fn stats(&self) -> EntryStats {
        let c = &self.inner.counters;
        EntryStats {
            entries: self.inner.cache.entry_count(),
            bytes_used: self.inner.cache.weighted_size(),
            capacity_bytes: self.inner.capacity,
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            inserts: c.inserts.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            ghost_hits: c.ghost_hits.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn entry(v: &str, tag: &str) -> Entry {
        Entry::new(Bytes::from(v.to_owned()), Version::new(tag))
    }

    type Written = tokio::task::JoinHandle<Result<Option<Entry>, Error>>;

    /// Starts a write of `key` that stays inside its store call until the returned sender
    /// fires; returns once it is there.
    async fn write_held(
        store: &EntryStore,
        key: &'static str,
        written: Entry,
    ) -> (tokio::sync::oneshot::Sender<()>, Written) {
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let (started, in_store_call) = tokio::sync::oneshot::channel::<()>();
        let store = store.clone();
        let writer = tokio::spawn(async move {
            store
                .write_through(key, || async move {
                    started.send(()).unwrap();
                    wait.await.unwrap();
                    Ok(Some(written))
                })
                .await
        });
        in_store_call.await.unwrap();
        (release, writer)
    }

    type Loaded = tokio::task::JoinHandle<(Entry, Lookup)>;

    /// Starts a miss of `key` whose store read stays in progress until the returned sender
    /// fires; returns once it is there.
    async fn load_held(
        store: &EntryStore,
        key: &'static str,
        loaded: Entry,
    ) -> (tokio::sync::oneshot::Sender<()>, Loaded) {
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let misses = store.stats().misses;
        let loader = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .get_or_load(key, || async move {
                        wait.await.unwrap();
                        Ok(loaded)
                    })
                    .await
                    .unwrap()
            })
        };
        while store.stats().misses == misses {
            tokio::task::yield_now().await;
        }
        (release, loader)
    }

    #[tokio::test]
    async fn hit_miss_and_load() {
        let store = EntryStore::new(1 << 20);
        assert_eq!(store.get("k").await, None);
        let (e, how) = store
            .get_or_load("k", || async { Ok(entry("v", "1")) })
            .await
            .unwrap();
        assert_eq!((e.value.as_ref(), how), (&b"v"[..], Lookup::Loaded));
        let (_, how) = store
            .get_or_load("k", || async { panic!("must not load") })
            .await
            .unwrap();
        assert_eq!(how, Lookup::Hit);
        let s = store.stats();
        assert_eq!((s.hits, s.misses, s.inserts), (1, 2, 1));
    }

    #[tokio::test]
    async fn failed_load_is_not_cached() {
        let store = EntryStore::new(1 << 20);
        let err = store
            .get_or_load("k", || async { Err(Error::NotFound { key: "k".into() }) })
            .await
            .unwrap_err();
        assert_eq!(err, Error::NotFound { key: "k".into() });
        assert_eq!(store.peek("k").await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_load() {
        let store = EntryStore::new(1 << 20);
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (store, loads) = (store.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .get_or_load("k", || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(entry("v", "1"))
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().0.value.as_ref(), b"v");
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_load_that_raced_a_write_is_not_cached() {
        let store = EntryStore::new(1 << 20);
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let loader = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .get_or_load("k", || async move {
                        // The store read returns the old content, after the write finished.
                        wait.await.unwrap();
                        Ok(entry("old", "1"))
                    })
                    .await
                    .unwrap()
            })
        };
        tokio::task::yield_now().await;
        while store.stats().misses == 0 {
            tokio::task::yield_now().await;
        }
        store
            .write_through("k", || async { Ok(Some(entry("new", "2"))) })
            .await
            .unwrap();
        release.send(()).unwrap();
        let (seen, _) = loader.await.unwrap();
        assert_eq!(seen.version.as_str(), "1");
        assert_eq!(store.peek("k").await.unwrap().version.as_str(), "2");
    }

    #[tokio::test]
    async fn delete_removes_and_a_definite_failure_keeps_the_copy() {
        let store = EntryStore::new(1 << 20);
        store
            .write_through("k", || async { Ok(Some(entry("v", "1"))) })
            .await
            .unwrap();
        let err = store
            .write_through("k", || async {
                Err(Error::VersionMismatch {
                    expected: "0".into(),
                    found: "1".into(),
                })
            })
            .await;
        assert!(err.is_err());
        assert_eq!(
            store.peek("k").await.unwrap().version.as_str(),
            "1",
            "a definite failure changed nothing: the copy is back"
        );
        assert!(!store.is_suspect("k"), "a definite failure is not suspect");
        store
            .write_through("k", || async { Ok(Some(entry("v", "2"))) })
            .await
            .unwrap();
        store
            .write_through("k", || async { Ok(None) })
            .await
            .unwrap();
        assert_eq!(store.peek("k").await, None);
    }

    /// A write whose outcome is unknown (it may land in the store later) leaves the key
    /// uncached, and loads of it are served but not cached while it is suspect.
    #[tokio::test]
    async fn an_unknown_outcome_makes_the_key_suspect() {
        let store = EntryStore::with_suspect_window(1 << 20, Duration::from_millis(200));
        store
            .write_through("k", || async { Ok(Some(entry("old", "1"))) })
            .await
            .unwrap();
        let err = store
            .write_through("k", || async {
                Err(Error::StoreUnavailable("timed out".into()))
            })
            .await;
        assert!(err.is_err());
        assert_eq!(store.peek("k").await, None);
        assert!(store.is_suspect("k"));
        let (seen, how) = store
            .get_or_load("k", || async { Ok(entry("old", "1")) })
            .await
            .unwrap();
        assert_eq!((seen.version.as_str(), how), ("1", Lookup::Loaded));
        assert_eq!(
            store.peek("k").await,
            None,
            "a suspect key's load is not cached"
        );
        assert!(
            !store.insert_unless("k", entry("old", "1"), || false).await,
            "nor a handed-over copy"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!store.is_suspect("k"));
        store
            .get_or_load("k", || async { Ok(entry("new", "2")) })
            .await
            .unwrap();
        assert_eq!(store.peek("k").await.unwrap().version.as_str(), "2");
    }

    /// A miss waits for a write of its key in progress, but no longer than a store call may
    /// take (half the suspect window): past that, it reads the store, and caches nothing
    /// while the write goes on.
    #[tokio::test]
    async fn a_miss_stops_waiting_for_a_write_that_outlived_its_store_deadline() {
        let store = EntryStore::with_suspect_window(1 << 20, Duration::from_millis(400));
        let (release, writer) = write_held(&store, "k", entry("new", "2")).await;
        let started = std::time::Instant::now();
        let (seen, how) = store
            .get_or_load("k", || async { Ok(entry("old", "1")) })
            .await
            .unwrap();
        assert_eq!((seen.version.as_str(), how), ("1", Lookup::Loaded));
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(
            store.peek("k").await,
            None,
            "not cached while the write goes on"
        );
        release.send(()).unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(store.peek("k").await.unwrap().version.as_str(), "2");

        // A write whose caller was already told its outcome is unknown: no wait at all.
        let (release, writer) = write_held(&store, "k", entry("newer", "3")).await;
        store.mark_suspect("k");
        let started = std::time::Instant::now();
        store
            .get_or_load("k", || async { Ok(entry("new", "2")) })
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(200));
        release.send(()).unwrap();
        writer.await.unwrap().unwrap();
    }

    /// Two writes of one key that overlap leave nothing cached: the store may have applied
    /// them in either order.
    #[tokio::test]
    async fn overlapping_writes_cache_nothing() {
        let store = EntryStore::new(1 << 20);
        let (release, first) = write_held(&store, "k", entry("first", "1")).await;
        // No lock is held across the first write's store call: this one runs meanwhile.
        store
            .write_through("k", || async { Ok(Some(entry("second", "2"))) })
            .await
            .unwrap();
        assert_eq!(store.peek("k").await.unwrap().version.as_str(), "2");
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(
            store.peek("k").await,
            None,
            "which write landed last is unknown"
        );
    }

    /// A miss on a key whose write is in progress waits for the write, and is served its
    /// result, instead of reading the store (which may or may not hold the write yet).
    #[tokio::test]
    async fn a_miss_during_a_write_waits_for_it() {
        let store = EntryStore::new(1 << 20);
        let (release, writer) = write_held(&store, "k", entry("new", "2")).await;
        let reader = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .get_or_load("k", || async { panic!("must not read the store") })
                    .await
                    .unwrap()
            })
        };
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "the miss waits for the write");
        release.send(()).unwrap();
        writer.await.unwrap().unwrap();
        let (seen, how) = reader.await.unwrap();
        assert_eq!((seen.version.as_str(), how), ("2", Lookup::Hit));
    }

    /// A load already reading the store when a write begins is served, but not cached: the
    /// store may hold the write's value by the time the load ends.
    #[tokio::test]
    async fn a_load_overlapping_a_write_is_not_cached() {
        let store = EntryStore::new(1 << 20);
        let (release_load, loader) = load_held(&store, "k", entry("old", "1")).await;
        let (release_write, writer) = write_held(&store, "k", entry("new", "2")).await;
        release_load.send(()).unwrap();
        assert_eq!(loader.await.unwrap().1, Lookup::Loaded);
        assert_eq!(
            store.peek("k").await,
            None,
            "not cached while the write runs"
        );
        release_write.send(()).unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(store.peek("k").await.unwrap().version.as_str(), "2");
    }

    #[tokio::test]
    async fn a_change_of_ownership_stops_loads_in_progress_from_caching() {
        let store = EntryStore::new(1 << 20);
        let (release, loader) = load_held(&store, "k", entry("v", "1")).await;
        store.bump_all().await;
        release.send(()).unwrap();
        assert_eq!(loader.await.unwrap().1, Lookup::Loaded);
        assert_eq!(store.peek("k").await, None);
    }

    #[tokio::test]
    async fn evicted_keys_that_come_back_count_as_ghost_hits() {
        let store = EntryStore::new(64 * 1024);
        let value = Bytes::from(vec![1u8; 1000]);
        for i in 0..500 {
            let key = format!("k{i}");
            store
                .write_through(&key, || async {
                    Ok(Some(Entry::new(value.clone(), Version::new("1"))))
                })
                .await
                .unwrap();
        }
        store.sync().await;
        let mut evicted = None;
        for i in 0..500 {
            let key = format!("k{i}");
            if store.peek(&key).await.is_none() {
                evicted = Some(key);
                break;
            }
        }
        let evicted = evicted.expect("something was evicted");
        assert_eq!(store.get(&evicted).await, None);
        assert_eq!(store.get("never-seen").await, None);
        assert_eq!(store.stats().ghost_hits, 1);
    }

    #[tokio::test]
    async fn insert_unless_respects_refusal() {
        let store = EntryStore::new(1 << 20);
        assert!(store.insert_unless("a", entry("v", "1"), || false).await);
        assert!(!store.insert_unless("b", entry("v", "1"), || true).await);
        assert!(
            !store.insert_unless("a", entry("w", "0"), || false).await,
            "a cached copy is at least as new"
        );
        assert_eq!(store.peek("a").await.unwrap().version.as_str(), "1");
        assert_eq!(store.peek("b").await, None);
        assert_eq!(store.snapshot().len(), 1);
    }

    #[tokio::test]
    async fn byte_capacity_holds() {
        let capacity = 256 * 1024;
        let store = EntryStore::new(capacity);
        let value = Bytes::from(vec![7u8; 1000]);
        // Ten times the capacity, in distinct keys.
        let n = 10 * capacity as usize / 1000;
        for i in 0..n {
            let key = format!("k{i}");
            store
                .write_through(&key, || async {
                    Ok(Some(Entry::new(value.clone(), Version::new("1"))))
                })
                .await
                .unwrap();
        }
        store.sync().await;
        let s = store.stats();
        assert!(s.bytes_used <= capacity, "{s:?}");
        assert!(s.bytes_used > capacity / 2, "{s:?}");
        assert!(s.evictions > 0, "{s:?}");
    }
}
