//! Pre-warming after scale-to-zero: hot-key manifests written to the store, and loaded by the
//! nodes that own their keys when the application starts again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_core::fence::Access;
use cache_core::key_hash;
use cache_core::prewarm::{MANIFEST_PREFIX, Manifest, ManifestEntry, plan};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tokio::sync::watch;

use crate::node::CacheNode;
use crate::scale::MANIFEST_MAX_AGE;
use crate::scale_state::unix_ms;

impl CacheNode {
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
            // Chunks of large objects are the cache's own entries, not keys to pre-warm.
            .filter(|(key, _)| !key.starts_with(cache_core::limits::RESERVED_PREFIX))
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
                    if self.inner.epochs.access(key, 0) != Ok(Some(Access::Cached))
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
}
