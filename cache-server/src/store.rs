//! Blob stores: opening one from a URL, and [`InstrumentedStore`], a wrapper that counts calls
//! and injects latency and failures so that tests can exercise a slow or failing store.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::error::{Error, Result};

/// Opens the blob store at `url`.
///
/// | URL | store |
/// |---|---|
/// | `file:///DIR` | local files under `DIR` (created if missing) |
/// | `memory:///` | an in-process store, empty at start |
/// | `s3://BUCKET[/PREFIX]` | S3; endpoint and credentials from `AWS_*` variables (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, ...) |
/// | `az://CONTAINER[/PREFIX]` | Azure Blob; from `AZURE_*` variables (`AZURE_STORAGE_USE_EMULATOR=true` for Azurite) |
/// | `gs://BUCKET[/PREFIX]` | Google Cloud Storage; from `GOOGLE_*` variables |
///
/// A `PREFIX` scopes the cache to the blobs under it: key `k` is the blob `PREFIX/k`.
///
/// # Errors
/// [`Error::Store`] for an unknown scheme, or a store the builder refuses.
pub fn open_store(url: &str) -> Result<Arc<dyn ObjectStore>> {
    let fail = |reason: String| Error::Store {
        url: url.to_owned(),
        reason,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| fail("expected SCHEME://...".into()))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    let store: Arc<dyn ObjectStore> = match scheme {
        "memory" => Arc::new(InMemory::new()),
        "file" => {
            if !bucket.is_empty() && bucket != "localhost" {
                return Err(fail("a file URL has no host: use file:///DIR".into()));
            }
            let dir = format!("/{prefix}");
            std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
            let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| fail(e.to_string()))?;
            return Ok(Arc::new(fs));
        }
        "s3" | "s3a" => Arc::new(
            AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(store_retries())
                .build()
                .map_err(|e| fail(e.to_string()))?,
        ),
        "az" | "azure" | "abfs" | "abfss" => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_retry(store_retries())
                .build()
                .map_err(|e| fail(e.to_string()))?,
        ),
        "gs" => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(store_retries())
                .build()
                .map_err(|e| fail(e.to_string()))?,
        ),
        other => return Err(fail(format!("unknown scheme {other:?}"))),
    };
    if prefix.is_empty() || scheme == "memory" {
        Ok(store)
    } else {
        Ok(Arc::new(PrefixStore::new(store, prefix)))
    }
}

/// Retries of a remote store opened from a URL. A call then ends, retries included, within
/// about a minute: 30 s of retries after its first attempt, each attempt at most 30 s
/// (object_store's request timeout). A write the node stops waiting for at its store deadline
/// keeps its key fenced until its call ends, so this bound is also how long a store outage can
/// hold a key; it stays inside [`crate::node::DEFAULT_ABANDON_WRITES_AFTER`].
fn store_retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

/// Calls made to an [`InstrumentedStore`], by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCalls {
    /// Reads of a blob's bytes.
    pub gets: u64,
    /// Metadata-only reads (HEAD).
    pub heads: u64,
    /// Writes.
    pub puts: u64,
    /// Deletes.
    pub deletes: u64,
    /// Listings.
    pub lists: u64,
}

#[derive(Debug, Default)]
struct Faults {
    gets: AtomicU64,
    heads: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    lists: AtomicU64,
    failing: AtomicBool,
    latency_us: AtomicU64,
    acks_lost: AtomicBool,
    put_latency_us: AtomicU64,
    late_put_us: AtomicU64,
}

/// A store wrapper that counts calls, adds latency, and fails on demand. Clones share their
/// counters and settings.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use cache_server::store::InstrumentedStore;
/// use object_store::memory::InMemory;
///
/// let store = InstrumentedStore::new(Arc::new(InMemory::new()));
/// store.set_failing(true); // every call now fails as if the store were down
/// assert_eq!(store.calls().gets, 0);
/// ```
#[derive(Clone)]
pub struct InstrumentedStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl fmt::Debug for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstrumentedStore({})", self.inner)
    }
}

impl fmt::Display for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstrumentedStore({})", self.inner)
    }
}

impl InstrumentedStore {
    /// Wraps `inner`. At first it adds no latency and fails nothing.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            faults: Arc::default(),
        }
    }

    /// While `failing`, every call fails with a generic store error.
    pub fn set_failing(&self, failing: bool) {
        self.faults.failing.store(failing, Ordering::SeqCst);
    }

    /// Adds `latency` before every call.
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.faults.latency_us.store(us, Ordering::SeqCst);
    }

    /// Adds `latency` before every write, on top of [`InstrumentedStore::set_latency`].
    pub fn set_put_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.faults.put_latency_us.store(us, Ordering::SeqCst);
    }

    /// While set, writes are applied but their answers never come: the caller times out
    /// although its write landed (an unknown outcome).
    pub fn set_write_acks_lost(&self, lost: bool) {
        self.faults.acks_lost.store(lost, Ordering::SeqCst);
    }

    /// Adds `delay` before every write, as a write that has left the caller does: the write
    /// lands after `delay` even when its caller has given up waiting for it (a local file
    /// written on a blocking thread, or a request already sent to a remote store).
    pub fn set_late_writes(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.faults.late_put_us.store(us, Ordering::SeqCst);
    }

    /// The calls made so far.
    pub fn calls(&self) -> StoreCalls {
        let f = &self.faults;
        StoreCalls {
            gets: f.gets.load(Ordering::SeqCst),
            heads: f.heads.load(Ordering::SeqCst),
            puts: f.puts.load(Ordering::SeqCst),
            deletes: f.deletes.load(Ordering::SeqCst),
            lists: f.lists.load(Ordering::SeqCst),
        }
    }

    async fn before(&self, counter: &AtomicU64) -> object_store::Result<()> {
        counter.fetch_add(1, Ordering::SeqCst);
        let us = self.faults.latency_us.load(Ordering::SeqCst);
        if us > 0 {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
        if self.faults.failing.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "instrumented",
                source: "injected failure".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for InstrumentedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.before(&self.faults.puts).await?;
        let us = self.faults.put_latency_us.load(Ordering::SeqCst);
        if us > 0 {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
        let late = self.faults.late_put_us.load(Ordering::SeqCst);
        let result = if late > 0 {
            let (inner, location) = (Arc::clone(&self.inner), location.clone());
            let landing = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(late)).await;
                inner.put_opts(&location, payload, opts).await
            });
            landing.await.unwrap_or_else(|e| {
                Err(object_store::Error::Generic {
                    store: "instrumented",
                    source: e.into(),
                })
            })
        } else {
            self.inner.put_opts(location, payload, opts).await
        };
        if self.faults.acks_lost.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.before(&self.faults.puts).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let counter = if options.head {
            &self.faults.heads
        } else {
            &self.faults.gets
        };
        self.before(counter).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.before(&self.faults.gets).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let this = self.clone();
        let checked = locations
            .then(move |location| {
                let this = this.clone();
                async move {
                    this.before(&this.faults.deletes).await?;
                    location
                }
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.faults.lists.fetch_add(1, Ordering::SeqCst);
        if self.faults.failing.load(Ordering::SeqCst) {
            return futures::stream::once(async {
                Err(object_store::Error::Generic {
                    store: "instrumented",
                    source: "injected failure".into(),
                })
            })
            .boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.before(&self.faults.lists).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.before(&self.faults.puts).await?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn file_urls_are_rooted_at_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("foo"), b"bar").unwrap();
        let store = open_store(&format!("file://{}", dir.path().display())).unwrap();
        let got = store.get(&Path::from("foo")).await.unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), b"bar");
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for url in ["nope", "ftp://x", "file://host/dir"] {
            let err = open_store(url).err().unwrap().to_string();
            assert!(err.contains(url), "{err}");
        }
        open_store("memory:///").unwrap();
    }

    #[tokio::test]
    async fn instrumented_counts_and_fails() {
        let store = InstrumentedStore::new(Arc::new(InMemory::new()));
        let path = Path::from("k");
        store
            .put(&path, Bytes::from_static(b"v").into())
            .await
            .unwrap();
        store.head(&path).await.unwrap();
        store.get(&path).await.unwrap();
        store.set_failing(true);
        assert!(store.get(&path).await.is_err());
        assert!(store.delete(&path).await.is_err());
        store.set_failing(false);
        store.delete(&path).await.unwrap();
        let c = store.calls();
        assert_eq!((c.puts, c.heads, c.gets, c.deletes), (1, 1, 2, 2));
    }
}

/// The request error for a failed blob-store call, after the caller has handled the errors
/// that mean something of their own (`NotFound`, `AlreadyExists`, `Precondition`,
/// `NotImplemented`): [`cache_core::Error::StoreRejected`] when retrying cannot help, else
/// [`cache_core::Error::StoreUnavailable`]. Its text names no path of the store (a local
/// store's errors carry absolute paths); the whole error goes to the node's log instead.
///
/// Permanent: an invalid path, an unsupported operation, missing permission or credentials,
/// and, from local files, a parent that is a file, a directory where a file should be, a
/// read-only file system or a name the file system cannot hold. Everything else (timeouts,
/// connection errors, server errors) is taken as transient.
pub fn request_error(err: &object_store::Error) -> cache_core::Error {
    use object_store::Error as E;
    let rejected = match err {
        E::InvalidPath { .. } => Some("the path is not valid for the store"),
        E::NotSupported { .. } | E::NotImplemented { .. } => {
            Some("the store does not support the operation")
        }
        E::PermissionDenied { .. } => Some("permission denied"),
        E::Unauthenticated { .. } => Some("the store refused the node's credentials"),
        E::UnknownConfigurationKey { .. } => Some("the store is misconfigured"),
        other => io_cause(other).and_then(permanent_io),
    };
    match rejected {
        Some(why) => {
            tracing::warn!(error = %err, "the blob store refused a call");
            cache_core::Error::StoreRejected(why.to_owned())
        }
        None => {
            tracing::warn!(error = %err, "blob store call failed");
            cache_core::Error::StoreUnavailable(format!(
                "a call to the blob store failed ({}); the node's log has the details",
                variant_name(err)
            ))
        }
    }
}

/// The first I/O error in `err`'s chain of sources.
fn io_cause(err: &object_store::Error) -> Option<std::io::ErrorKind> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = e.source();
    }
    None
}

/// Why an I/O error of this kind will happen again, if it will.
fn permanent_io(kind: std::io::ErrorKind) -> Option<&'static str> {
    use std::io::ErrorKind as K;
    match kind {
        K::NotADirectory => Some("a parent of the key is a blob, not a directory"),
        K::IsADirectory => Some("the key names a directory of the store"),
        K::PermissionDenied => Some("permission denied"),
        K::ReadOnlyFilesystem => Some("the store is read-only"),
        K::InvalidFilename => Some("the key is not a valid file name for the store"),
        K::FileTooLarge => Some("the blob is too large for the store"),
        K::InvalidInput => Some("the store refused the request as invalid"),
        _ => None,
    }
}

/// The error's variant, which names no path.
fn variant_name(err: &object_store::Error) -> &'static str {
    use object_store::Error as E;
    match err {
        E::Generic { store, .. } => store,
        E::NotFound { .. } => "not found",
        E::JoinError { .. } => "task failed",
        E::AlreadyExists { .. } => "already exists",
        E::Precondition { .. } => "precondition failed",
        E::NotModified { .. } => "not modified",
        _ => "other",
    }
}

#[cfg(test)]
mod error_tests {
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    /// The errors a local store gives for keys it can never hold: rejected, with no path.
    #[tokio::test]
    async fn a_key_under_a_file_is_rejected_without_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        store
            .put(&Path::from("file"), PutPayload::from_static(b"x"))
            .await
            .unwrap();
        let under = Path::from("file/child");
        let put = store
            .put(&under, PutPayload::from_static(b"y"))
            .await
            .unwrap_err();
        let get = store.get(&under).await.unwrap_err();
        for err in [put, get] {
            let shown = request_error(&err);
            let cache_core::Error::StoreRejected(text) = &shown else {
                panic!("{err:?} became {shown:?}");
            };
            let root = dir.path().to_string_lossy();
            assert!(!text.contains(&*root), "{text}");
            assert!(!shown.to_string().contains("file/child"), "{shown}");
        }
    }

    #[test]
    fn other_errors_are_transient_and_name_no_path() {
        let err = object_store::Error::Generic {
            store: "S3",
            source: "connection reset at /secret/path".into(),
        };
        let shown = request_error(&err);
        assert!(
            matches!(&shown, cache_core::Error::StoreUnavailable(t) if !t.contains("/secret")),
            "{shown:?}"
        );
    }
}
