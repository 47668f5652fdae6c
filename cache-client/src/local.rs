//! The local tier: in-process copies of blobs this instance has read, with their versions,
//! and the tasks that apply the nodes' invalidations to them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::clock::Clock;
use cache_core::{Membership, SharedMembership};
use cache_proto::v1 as pb;
use moka::sync::Cache;

/// Which blobs the local tier keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalAdmission {
    /// Every blob this instance reads or writes (within capacity; moka's frequency-based
    /// admission decides what stays).
    #[default]
    All,
    /// Only blobs that their home node reports hot: a mirror of the application's hottest
    /// keys, in the spirit of groupcache's hot cache, but versioned.
    HotOnly,
}

/// A local copy: the bytes, their version, and when the version was last known current.
#[derive(Debug)]
pub(crate) struct LocalCopy {
    pub value: Bytes,
    pub version: String,
    /// When the version was written, as [`Fetched::modified_ms`](crate::Fetched::modified_ms).
    pub modified_ms: Option<u64>,
    /// Nanoseconds since the tier's epoch at which the version was last confirmed current
    /// (the start of the request that confirmed it).
    validated_ns: AtomicU64,
}

impl LocalCopy {
    /// When this copy was last confirmed current, as an age in `clock` time.
    pub fn age(&self, tier: &LocalTier) -> Duration {
        let now = tier.now_ns();
        Duration::from_nanos(now.saturating_sub(self.validated_ns.load(Ordering::Acquire)))
    }

    /// Records that the version was current at `at_ns`.
    pub fn confirm(&self, at_ns: u64) {
        self.validated_ns.fetch_max(at_ns, Ordering::AcqRel);
    }
}

/// The in-process cache of copies. Cheap to clone.
#[derive(Clone)]
pub(crate) struct LocalTier {
    cache: Cache<String, Arc<LocalCopy>>,
    clock: Arc<dyn Clock>,
    epoch: Instant,
    pub admission: LocalAdmission,
}

impl LocalTier {
    pub fn new(capacity_bytes: u64, admission: LocalAdmission, clock: Arc<dyn Clock>) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|k: &String, c: &Arc<LocalCopy>| {
                let w = k.len() + c.value.len() + c.version.len() + 64;
                u32::try_from(w).unwrap_or(u32::MAX)
            })
            .build();
        let epoch = clock.now();
        Self {
            cache,
            clock,
            epoch,
            admission,
        }
    }

    /// Now, in nanoseconds since the tier was made, on the tier's clock.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(
            self.clock
                .now()
                .saturating_duration_since(self.epoch)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    pub fn get(&self, key: &str) -> Option<Arc<LocalCopy>> {
        self.cache.get(key)
    }

    /// Keeps a copy whose version was current at `validated_ns`, if admission allows.
    pub fn offer(
        &self,
        key: &str,
        value: Bytes,
        (version, modified_ms): (String, Option<u64>),
        hot: bool,
        validated_ns: u64,
    ) {
        let admit = match self.admission {
            LocalAdmission::All => true,
            LocalAdmission::HotOnly => hot || self.cache.contains_key(key),
        };
        if admit {
            let copy = LocalCopy {
                value,
                version,
                modified_ms,
                validated_ns: AtomicU64::new(validated_ns),
            };
            self.cache.insert(key.to_owned(), Arc::new(copy));
        }
    }

    pub fn remove(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// Drops the copy of `key` unless it already holds `version`.
    fn invalidate(&self, key: &str, version: &str) {
        if self.cache.get(key).is_some_and(|c| c.version != version) {
            self.cache.invalidate(key);
        }
    }

    /// Drops every copy whose key `home` owns.
    fn drop_homed(&self, membership: &Membership, home: &str) {
        let keys: Vec<Arc<String>> = self
            .cache
            .iter()
            .map(|(k, _)| k)
            .filter(|k| membership.owner(k) == home)
            .collect();
        for k in keys {
            self.cache.invalidate(k.as_str());
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}

/// Applies one node's invalidations to the local tier until aborted. When the stream breaks,
/// invalidations may have been missed, so the copies of that node's keys are dropped; then it
/// reconnects with backoff.
pub(crate) async fn watch_node(
    tier: LocalTier,
    channel: crate::conn::Transport,
    app: String,
    membership: SharedMembership,
    home: String,
    received: Arc<AtomicU64>,
    (min_backoff, max_backoff): (Duration, Duration),
) {
    let mut backoff = min_backoff;
    loop {
        let mut client = pb::data_client::DataClient::new(channel.clone());
        if let Ok(response) = client.watch(pb::WatchRequest { app: app.clone() }).await {
            backoff = min_backoff;
            let mut stream = response.into_inner();
            while let Ok(Some(message)) = stream.message().await {
                if message.reset {
                    tier.drop_homed(&membership.load(), &home);
                }
                received.fetch_add(message.keys.len() as u64, Ordering::Relaxed);
                for inv in message.keys {
                    tier.invalidate(&inv.key, &inv.version);
                }
            }
        }
        tier.drop_homed(&membership.load(), &home);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}
