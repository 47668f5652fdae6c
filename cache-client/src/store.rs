//! [`CachedStore`]: the cache behind `object_store`'s [`ObjectStore`] trait, so that Rust
//! code written against the ecosystem's storage trait gets the cache by wrapping one value.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    UploadPart,
};

use crate::{CacheClient, Error, Fetched};

/// The name errors carry for this store.
const STORE: &str = "cachelet";

/// An [`ObjectStore`] that reads and writes through a cachelet cache, over the store the
/// cache's nodes use (`inner`).
///
/// - Gets go through the cache: the key's home node, read-through, the same versions,
///   tiers and counters as [`CacheClient::get_entry`]. Ranges, `if_match`, `if_none_match`,
///   `if_modified_since`, `if_unmodified_since` and `head` are answered from the cached copy.
///   A get of a given `version`, and of an object larger than the cache's largest value, goes
///   to `inner`.
/// - Puts go through the cache, write-through, with [`PutMode`]: `Create` and `Update` are the
///   cache's conditional writes. A put with attributes or tags, which the cache does not keep,
///   or larger than the largest value, goes to `inner`, and then the key's home node forgets
///   its copy ([`CacheClient::forget`]). So do multipart uploads, when they complete, and
///   copies.
/// - Deletes go through the cache. Listings go to `inner`.
///
/// Every write that bypasses the cache is followed by `forget`: a write is complete only once
/// no node serves the old copy.
///
/// # Examples
/// A function that read its thumbnails straight from S3 keeps its code and wraps its store:
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use cache_client::{CacheClient, CachedStore};
/// use object_store::aws::AmazonS3Builder;
/// use object_store::path::Path;
/// use object_store::{ObjectStore, ObjectStoreExt};
///
/// // Before: let store: Arc<dyn ObjectStore> = Arc::new(AmazonS3Builder::from_env()...);
/// let s3 = Arc::new(AmazonS3Builder::from_env().with_bucket_name("thumbnails").build()?);
/// let cache = CacheClient::builder()
///     .app("thumbnails")
///     .nodes(["127.0.0.1:7070"])
///     .build()
///     .await?;
/// let store: Arc<dyn ObjectStore> = Arc::new(CachedStore::new(cache, s3));
///
/// // The rest of the function is unchanged.
/// let bytes = store.get(&Path::from("cats/1.png")).await?.bytes().await?;
/// # let _ = bytes;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CachedStore {
    cache: CacheClient,
    inner: Arc<dyn ObjectStore>,
}

impl CachedStore {
    /// Reads and writes through `cache`, whose nodes use `inner` as their store.
    pub fn new(cache: CacheClient, inner: Arc<dyn ObjectStore>) -> Self {
        Self { cache, inner }
    }

    /// The cache client.
    pub fn cache(&self) -> &CacheClient {
        &self.cache
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// A get of an object larger than the largest value: in chunks of one version through the
    /// cache, or, above the largest object the nodes serve in chunks, from `inner`.
    async fn get_chunked(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.as_ref();
        let first = match self.cache.get_chunk(key, "", 0).await {
            Ok(first) => first,
            Err(Error::ValueTooLarge(_)) => return self.inner.get_opts(location, options).await,
            Err(e) => return Err(store_error(location, e)),
        };
        let meta = meta_of(location, first.size, &first.version, first.modified_ms);
        let range = check(&options, &meta)?;
        if options.head {
            let empty = futures::stream::once(async { Ok(Bytes::new()) }).boxed();
            return Ok(result(meta, range, empty));
        }
        let location_owned = location.clone();
        let body = self
            .cache
            .stream_from(key, first, range.clone())
            .body
            .map(move |piece| piece.map_err(|e| store_error(&location_owned, e)))
            .boxed();
        Ok(result(meta, range, body))
    }

    /// Has the key's home node drop its copy after a write around the cache.
    async fn forget(&self, location: &Path) -> object_store::Result<()> {
        self.cache
            .forget(location.as_ref())
            .await
            .map_err(|e| store_error(location, e))
    }
}

impl fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore")
            .field("app", &self.cache.app())
            .field("inner", &self.inner)
            .finish()
    }
}

impl fmt::Display for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachedStore({}, {})", self.cache.app(), self.inner)
    }
}

/// The `object_store` error for a cache error.
fn store_error(location: &Path, err: Error) -> object_store::Error {
    let path = location.to_string();
    match err {
        Error::NotFound(_) => object_store::Error::NotFound {
            path,
            source: Box::new(err),
        },
        Error::VersionMismatch(_) => object_store::Error::Precondition {
            path,
            source: Box::new(err),
        },
        other => object_store::Error::Generic {
            store: STORE,
            source: Box::new(other),
        },
    }
}

/// An object's metadata, as the store would give it.
fn meta_of(location: &Path, size: u64, version: &str, modified_ms: Option<u64>) -> ObjectMeta {
    let last_modified = modified_ms
        .and_then(|ms| i64::try_from(ms).ok())
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default();
    ObjectMeta {
        location: location.clone(),
        last_modified,
        size,
        e_tag: Some(version.to_owned()),
        version: None,
    }
}

/// Checks a get's preconditions against `meta`, and resolves its range.
fn check(options: &GetOptions, meta: &ObjectMeta) -> object_store::Result<Range<u64>> {
    options.check_preconditions(meta)?;
    match &options.range {
        Some(r) => r
            .as_range(meta.size)
            .map_err(|e| object_store::Error::Generic {
                store: STORE,
                source: Box::new(e),
            }),
        None => Ok(0..meta.size),
    }
}

fn result(
    meta: ObjectMeta,
    range: Range<u64>,
    payload: BoxStream<'static, object_store::Result<Bytes>>,
) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(payload),
        meta,
        range,
        attributes: Attributes::default(),
        extensions: Default::default(),
    }
}

/// Answers a get from a cached copy: preconditions, then the range (or nothing, for `head`).
fn answer(
    location: &Path,
    fetched: Fetched,
    options: &GetOptions,
) -> object_store::Result<GetResult> {
    let size = fetched.value.len() as u64;
    let meta = meta_of(location, size, &fetched.version, fetched.modified_ms);
    let range = check(options, &meta)?;
    let bytes = if options.head {
        Bytes::new()
    } else {
        let (start, end) = (
            usize::try_from(range.start).unwrap_or(usize::MAX),
            usize::try_from(range.end).unwrap_or(usize::MAX),
        );
        fetched.value.slice(start..end)
    };
    let payload = futures::stream::once(async move { Ok(bytes) }).boxed();
    Ok(result(meta, range, payload))
}

#[async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let around = !opts.attributes.is_empty()
            || !opts.tags.encoded().is_empty()
            || payload.content_length() as u64 > self.cache.max_value_bytes();
        if around {
            let result = self.inner.put_opts(location, payload, opts).await?;
            self.forget(location).await?;
            return Ok(result);
        }
        let expected = match &opts.mode {
            PutMode::Overwrite => None,
            PutMode::Create => Some(String::new()),
            PutMode::Update(v) => {
                Some(
                    v.e_tag
                        .clone()
                        .ok_or_else(|| object_store::Error::NotImplemented {
                            operation: "an update by object version without an ETag".into(),
                            implementer: STORE.into(),
                        })?,
                )
            }
        };
        let written = self
            .cache
            .write(location.as_ref(), Bytes::from(payload), expected.as_deref())
            .await;
        match written {
            Ok(w) => Ok(PutResult {
                e_tag: Some(w.version),
                version: None,
                extensions: Default::default(),
            }),
            Err(e @ Error::VersionMismatch(_)) if matches!(opts.mode, PutMode::Create) => {
                Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: Box::new(e),
                })
            }
            Err(e) => Err(store_error(location, e)),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(ForgetOnComplete {
            upload,
            store: self.clone(),
            location: location.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.version.is_some() {
            return self.inner.get_opts(location, options).await;
        }
        match self.cache.get_entry(location.as_ref()).await {
            Ok(Some(fetched)) => answer(location, fetched, &options),
            Ok(None) => Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: "no such blob".into(),
            }),
            Err(Error::ValueTooLarge(_)) => self.get_chunked(location, options).await,
            // A key the cache does not take (the reserved prefix).
            Err(Error::InvalidKey(_)) => self.inner.get_opts(location, options).await,
            Err(e) => Err(store_error(location, e)),
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let cache = self.cache.clone();
        locations
            .and_then(move |location| {
                let cache = cache.clone();
                async move {
                    cache
                        .delete(location.as_ref())
                        .await
                        .map_err(|e| store_error(&location, e))?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        // A copy that fails (a create-only one onto an existing object) changed nothing.
        self.inner.copy_opts(from, to, options).await?;
        self.forget(to).await
    }
}

/// A multipart upload to the inner store that ends with the key's home node forgetting its
/// copy.
struct ForgetOnComplete {
    upload: Box<dyn MultipartUpload>,
    store: CachedStore,
    location: Path,
}

impl fmt::Debug for ForgetOnComplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForgetOnComplete")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for ForgetOnComplete {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let result = self.upload.complete().await?;
        self.store.forget(&self.location).await?;
        Ok(result)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.upload.abort().await
    }
}
