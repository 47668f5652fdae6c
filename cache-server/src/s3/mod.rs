//! The S3-compatible endpoint (`cache-server --s3 ADDR`): function code in any language reads
//! and writes through the cache with its own S3 SDK, changing only the endpoint URL.
//!
//! The S3 REST protocol (routing, XML, SigV4) is the `s3s` crate's; this module implements its
//! [`s3s::S3`] trait on a [`CacheClient`], so that a request takes the same path as
//! `CacheClient`'s own calls: the key's home node (a direct call when that is this node),
//! read-through and write-through, the same versions, tiers and counters. Any node's endpoint
//! serves any key. The bucket is the application's name, addressed path-style
//! (`http://HOST:PORT/APP/KEY`).
//!
//! What goes around the cache: listings, which the store answers; the parts of a multipart
//! upload, which are staged in the store under the reserved prefix until the upload completes
//! and the object is written through the cache; and objects larger than the cache's largest
//! value, which stream between client and store in parts (`large`), a write of one ending
//! with the home node forgetting its cached copy.
//!
//! # Layout
//! - this file: [`S3Gateway`], the operations.
//! - `large`: objects above the largest value: ranged, parallel, version-pinned reads from
//!   the store, and multipart writes to it.
//! - `auth`: [`AccessKeys`] (SigV4 secrets from `--s3-keys`), and the rule for unsigned
//!   requests.
//! - `serve`: [`serve_s3`], HTTP/1.1 connections on a bound listener, bounded in number and in
//!   how long a request's headers may take.

mod auth;
mod large;
mod serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use cache_client::{CacheClient, Fetched};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use s3s::dto::{self, ETag, ETagCondition, StreamingBlob, Timestamp};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

pub use auth::AccessKeys;
pub(crate) use auth::{Anonymous, Caller};
pub use serve::{S3Settings, serve_s3};

/// Where the parts of multipart uploads wait for their upload to complete.
const UPLOADS_PREFIX: &str = "_cachelet/uploads/";
/// The most keys in one listing page, and in one DeleteObjects request (as S3).
const MAX_KEYS: usize = 1000;
/// The most parts of one multipart upload (as S3).
const MAX_PARTS: i32 = 10_000;
/// The gateway's memory budget, by default.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;
/// The most bytes one PutObject or UploadPart carries (as S3: 5 GiB).
const MAX_PUT_BYTES: u64 = 5 << 30;

/// The S3 endpoint's counters, kept by the node and reported in its stats.
#[derive(Debug, Default)]
pub struct S3Counters {
    /// Requests answered with 2xx or 3xx.
    pub ok: AtomicU64,
    /// Requests refused with 4xx.
    pub client_errors: AtomicU64,
    /// Requests that failed with 5xx.
    pub server_errors: AtomicU64,
    /// Reads of objects too large for the cache, served from the store.
    pub around_reads: AtomicU64,
    /// Writes of objects too large for the cache, made to the store.
    pub around_writes: AtomicU64,
}

impl S3Counters {
    /// Counts one answered request by its status.
    pub fn count(&self, status: u16) {
        match status {
            500.. => &self.server_errors,
            400.. => &self.client_errors,
            _ => &self.ok,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// The S3 operations of one application's cache.
pub struct S3Gateway {
    client: CacheClient,
    store: Arc<dyn ObjectStore>,
    max_value: u64,
    unbounded_reads: bool,
    counters: Arc<S3Counters>,
    memory: Memory,
}

/// The bytes the gateway may hold at once for bodies it reads, large writes and large reads,
/// counted in KiB permits; a request that cannot get its share in time is answered
/// `SlowDown`.
#[derive(Debug, Clone)]
struct Memory {
    permits: Arc<tokio::sync::Semaphore>,
    kib: u32,
    wait: Duration,
}

impl Memory {
    fn new(bytes: u64, wait: Duration) -> Self {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(kib as usize)),
            kib,
            wait,
        }
    }

    /// Holds `bytes` (at most the whole budget) until the permit is dropped.
    async fn reserve(&self, bytes: u64) -> S3Result<tokio::sync::OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.kib);
        let acquire = Arc::clone(&self.permits).acquire_many_owned(kib);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(s3_error!(
                SlowDown,
                "the endpoint holds as many bytes as it may; retry"
            )),
        }
    }
}

impl std::fmt::Debug for S3Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Gateway")
            .field("app", &self.client.app())
            .field("max_value", &self.max_value)
            .finish_non_exhaustive()
    }
}

impl S3Gateway {
    /// A gateway that reads and writes through `client`, and lists and stages multipart
    /// parts in `store` (the application's store). Objects may be at most `max_value` bytes,
    /// the nodes' largest value.
    pub fn new(client: CacheClient, store: Arc<dyn ObjectStore>, max_value: u64) -> Self {
        Self {
            client,
            store,
            max_value,
            unbounded_reads: false,
            counters: Arc::default(),
            memory: Memory::new(DEFAULT_MEMORY_BYTES, Duration::from_secs(10)),
        }
    }

    /// The most bytes the gateway holds at once for the bodies it reads and the large
    /// objects it streams, and how long a request waits for its share before it is answered
    /// `SlowDown`. Default: 256 MiB, 10 s.
    pub fn memory(mut self, bytes: u64, wait: Duration) -> Self {
        self.memory = Memory::new(bytes, wait);
        self
    }

    /// Keeps its counters in `counters` (the node's: [`crate::CacheNode::s3_counters`]).
    /// Default: counters of its own.
    pub fn counters(mut self, counters: Arc<S3Counters>) -> Self {
        self.counters = counters;
        self
    }

    pub(crate) fn counters_handle(&self) -> Arc<S3Counters> {
        Arc::clone(&self.counters)
    }

    /// Reads each large object whole into memory before serving it. Unsafe: only for checking
    /// that the memory test catches a gateway that buffers large objects.
    #[doc(hidden)]
    pub fn unbounded_reads(mut self, on: bool) -> Self {
        self.unbounded_reads = on;
        self
    }

    fn bucket(&self, bucket: &str) -> S3Result<()> {
        if bucket == self.client.app() {
            Ok(())
        } else {
            Err(s3_error!(
                NoSuchBucket,
                "this endpoint serves the bucket {:?}",
                self.client.app()
            ))
        }
    }

    /// Reads `key` through the cache; an object too large for it is only looked up in the
    /// store.
    async fn fetch(&self, key: &str) -> S3Result<Found> {
        match self.client.get_entry(key).await {
            Ok(Some(fetched)) => Ok(Found::Cached(fetched)),
            Ok(None) => Err(s3_error!(NoSuchKey)),
            Err(cache_client::Error::ValueTooLarge(_)) => {
                match self.client.get_chunk(key, "", 0).await {
                    Ok(first) => return Ok(Found::Chunked(first)),
                    Err(cache_client::Error::ValueTooLarge(_)) => {}
                    Err(e) => return Err(s3_err(e)),
                }
                self.counters.around_reads.fetch_add(1, Ordering::Relaxed);
                let path = object_path(key)?;
                let meta = self.store.head(&path).await.map_err(store_err)?;
                Ok(Found::Large(path, meta))
            }
            Err(e) => Err(s3_err(e)),
        }
    }

    /// Reads a request body: whole, when it is at most `max_value` bytes; else its first
    /// `max_value` bytes and the stream of the rest.
    async fn body(
        &self,
        body: Option<StreamingBlob>,
        declared: Option<i64>,
    ) -> S3Result<(Body, tokio::sync::OwnedSemaphorePermit)> {
        let max = self.max_value;
        let declared = declared.map(|len| u64::try_from(len).unwrap_or(u64::MAX));
        if declared.is_some_and(|len| len > MAX_PUT_BYTES) {
            return Err(s3_error!(
                EntityTooLarge,
                "one PUT carries at most {MAX_PUT_BYTES} bytes; use a multipart upload"
            ));
        }
        // What this body may hold in memory: itself, up to the largest value.
        let permit = self
            .memory
            .reserve(declared.unwrap_or(max).min(max))
            .await?;
        let Some(mut body) = body else {
            return Ok((Body::Small(Bytes::new()), permit));
        };
        if declared.is_some_and(|len| len > max) {
            return Ok((Body::Large(Bytes::new(), bounded(body, 0)), permit));
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "reading the body: {e}"))?;
            buf.extend_from_slice(&chunk);
            if buf.len() as u64 > max {
                let seen = buf.len() as u64;
                return Ok((Body::Large(buf.freeze(), bounded(body, seen)), permit));
            }
        }
        Ok((Body::Small(buf.freeze()), permit))
    }

    /// Writes a large object to the store, then has the key's home node forget any cached
    /// copy, as a write through the cache would.
    async fn write_large<S, E>(&self, key: &str, head: Bytes, rest: S) -> S3Result<String>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = object_path(key)?;
        self.counters.around_writes.fetch_add(1, Ordering::Relaxed);
        let _buffers = self.memory.reserve(large::WRITE_BUFFER).await?;
        let put = large::write(self.store.as_ref(), &path, head, rest).await?;
        self.forget(key).await?;
        Ok(put.e_tag.unwrap_or_default())
    }

    /// Has the key's home node drop its copy of a blob just written around the cache. Until
    /// it has, the write is not done: a failure is the caller's to retry.
    async fn forget(&self, key: &str) -> S3Result<()> {
        self.client.forget(key).await.map_err(|e| {
            let mut err = s3_err(e);
            err.set_message(format!(
                "the object was written to the store, but the cache could not be told; retry the write: {}",
                err.message().unwrap_or_default()
            ));
            err
        })
    }

    /// Writes `value` through the cache, under S3's conditions: `If-None-Match: *` creates
    /// only, `If-Match` replaces only the version named.
    async fn write(
        &self,
        key: &str,
        value: Bytes,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> S3Result<cache_client::Written> {
        let expected = match (if_match, if_none_match) {
            (None, None) => None,
            (None, Some(c)) if c.is_any() => Some(String::new()),
            (None, Some(_)) => {
                return Err(s3_error!(
                    NotImplemented,
                    "If-None-Match on a write takes only `*`"
                ));
            }
            (Some(c), None) => Some(self.current_version(key, c).await?),
            (Some(_), Some(_)) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "If-Match and If-None-Match together"
                ));
            }
        };
        self.client
            .write(key, value, expected.as_deref())
            .await
            .map_err(s3_err)
    }

    /// The current version of `key`, as the cache holds it, if it matches `condition`.
    async fn current_version(&self, key: &str, condition: &ETagCondition) -> S3Result<String> {
        let (version, _, _) = self.fetch(key).await?.meta();
        if matches(condition, &version) {
            Ok(version)
        } else {
            Err(s3_error!(PreconditionFailed))
        }
    }
}

impl Found {
    /// The object's version, write time and size.
    fn meta(&self) -> (String, Option<u64>, u64) {
        match self {
            Found::Cached(f) => (f.version.clone(), f.modified_ms, f.value.len() as u64),
            Found::Chunked(c) => (c.version.clone(), c.modified_ms, c.size),
            Found::Large(_, meta) => {
                let version = cache_core::Version::from_meta(meta);
                (
                    version.as_str().to_owned(),
                    version.modified_ms(),
                    meta.size,
                )
            }
        }
    }
}

/// A body of unknown length, cut off with an error past [`MAX_PUT_BYTES`] (`seen` bytes were
/// read already).
fn bounded(body: StreamingBlob, mut seen: u64) -> StreamingBlob {
    StreamingBlob::wrap(body.map(move |chunk| match chunk {
        Ok(chunk) => {
            seen += chunk.len() as u64;
            if seen > MAX_PUT_BYTES {
                Err(std::io::Error::other(format!(
                    "larger than {MAX_PUT_BYTES} bytes, the most one PUT carries"
                )))
            } else {
                Ok(chunk)
            }
        }
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }))
}

/// A key's object: from the cache, or, too large for it, in the store.
enum Found {
    Cached(Fetched),
    /// Larger than a whole value: its first chunk, which gives its version and size.
    Chunked(cache_client::Chunk),
    /// Larger than the nodes serve in chunks: in the store.
    Large(Path, object_store::ObjectMeta),
}

/// A request body.
enum Body {
    /// At most the largest value.
    Small(Bytes),
    /// Larger: the bytes read so far, and the rest.
    Large(Bytes, StreamingBlob),
}

fn object_path(key: &str) -> S3Result<Path> {
    cache_core::limits::validate_key(key).map_err(|e| s3_error!(InvalidArgument, "{e}"))?;
    Path::parse(key).map_err(|e| s3_error!(InvalidArgument, "{e}"))
}

/// The S3 error for a cache error, with the usual code for its kind.
fn s3_err(err: cache_client::Error) -> S3Error {
    use cache_client::Error as E;
    let code = match &err {
        E::NotFound(_) => S3ErrorCode::NoSuchKey,
        E::InvalidKey(_) => S3ErrorCode::InvalidArgument,
        E::ValueTooLarge(_) => S3ErrorCode::EntityTooLarge,
        E::VersionMismatch(_) => S3ErrorCode::PreconditionFailed,
        E::Overloaded(_) => S3ErrorCode::SlowDown,
        E::Unavailable(_) | E::Timeout(_) | E::WrongOwner { .. } => S3ErrorCode::ServiceUnavailable,
        E::Unauthenticated(_) | E::PermissionDenied(_) => S3ErrorCode::AccessDenied,
        _ => S3ErrorCode::InternalError,
    };
    if matches!(
        code,
        S3ErrorCode::ServiceUnavailable | S3ErrorCode::SlowDown | S3ErrorCode::InternalError
    ) {
        tracing::warn!(error = %err, "S3 request failed");
    }
    S3Error::with_message(code, err.to_string())
}

fn large_conditional(max: u64) -> S3Error {
    s3_error!(
        NotImplemented,
        "conditional writes of objects above {max} bytes (the largest the cache holds)"
    )
}

/// The ETag S3 clients see for a version: the store's tag without the quotes some stores
/// keep in it.
fn etag(version: &str) -> ETag {
    ETag::Strong(version.trim_matches('"').to_owned())
}

fn matches(condition: &ETagCondition, version: &str) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => tag.value() == version.trim_matches('"'),
    }
}

fn modified(ms: Option<u64>) -> Option<Timestamp> {
    ms.map(|ms| Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)))
}

fn listed_time(meta: &object_store::ObjectMeta) -> Timestamp {
    let ms = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

/// What a read under `If-Match` / `If-None-Match` returns: the object, or an error.
fn check_read_conditions(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    version: &str,
) -> S3Result<()> {
    if let Some(c) = if_match
        && !matches(c, version)
    {
        return Err(s3_error!(PreconditionFailed));
    }
    if let Some(c) = if_none_match
        && matches(c, version)
    {
        return Err(s3_error!(NotModified));
    }
    Ok(())
}

fn store_err(err: object_store::Error) -> S3Error {
    match err {
        object_store::Error::NotFound { .. } => s3_error!(NoSuchKey),
        other => S3Error::with_message(S3ErrorCode::ServiceUnavailable, other.to_string()),
    }
}

fn upload_dir(upload_id: &str) -> S3Result<Path> {
    if upload_id.is_empty()
        || upload_id.len() > 64
        || !upload_id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(s3_error!(NoSuchUpload));
    }
    Ok(Path::from(format!("{UPLOADS_PREFIX}{upload_id}")))
}

fn part_path(upload_id: &str, part: i32) -> S3Result<Path> {
    if !(1..=MAX_PARTS).contains(&part) {
        return Err(s3_error!(
            InvalidArgument,
            "part numbers run from 1 to {MAX_PARTS}"
        ));
    }
    Ok(upload_dir(upload_id)?.join(format!("{part:05}")))
}

#[async_trait::async_trait]
impl S3 for S3Gateway {
    #[tracing::instrument(level = "debug", skip_all, fields(key_len = req.input.key.len()))]
    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        if input.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "GET by part number"));
        }
        let found = self.fetch(&input.key).await?;
        let (version, modified_ms, full) = found.meta();
        check_read_conditions(
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            &version,
        )?;
        let (range, content_range) = match &input.range {
            None => (0..full, None),
            Some(range) => {
                let r = range
                    .check(full)
                    .map_err(|_| s3_error!(InvalidRange, "the object is {full} bytes"))?;
                let header = format!("bytes {}-{}/{full}", r.start, r.end.saturating_sub(1));
                (r, Some(header))
            }
        };
        let length = range.end - range.start;
        let (start, end) = (
            usize::try_from(range.start).unwrap_or(usize::MAX),
            usize::try_from(range.end).unwrap_or(usize::MAX),
        );
        let body = match found {
            Found::Cached(f) => StreamingBlob::from(s3s::Body::from(f.value.slice(start..end))),
            Found::Chunked(first) => {
                // The chunks in flight, and the one being handed over.
                let held = first.chunk_bytes * (cache_client::objects::CHUNKS_IN_FLIGHT as u64 + 1);
                let permit = self.memory.reserve(held).await?;
                let streamed = self.client.stream_from(&input.key, first, range);
                if self.unbounded_reads {
                    let whole = large::collect(streamed.body).await?;
                    StreamingBlob::from(s3s::Body::from(whole))
                } else {
                    large::blob(streamed.body, permit)
                }
            }
            Found::Large(path, _) if self.unbounded_reads => {
                let whole = self
                    .store
                    .get(&path)
                    .await
                    .map_err(store_err)?
                    .bytes()
                    .await
                    .map_err(store_err)?;
                StreamingBlob::from(s3s::Body::from(whole.slice(start..end)))
            }
            Found::Large(path, meta) => {
                let permit = self.memory.reserve(large::READ_BUFFER).await?;
                large::read(Arc::clone(&self.store), path, range, meta.e_tag, permit)
            }
        };
        let output = dto::GetObjectOutput {
            content_length: Some(i64::try_from(length).unwrap_or(i64::MAX)),
            body: Some(body),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&version)),
            last_modified: modified(modified_ms),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key_len = req.input.key.len()))]
    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        let (version, modified_ms, size) = self.fetch(&input.key).await?.meta();
        check_read_conditions(
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            &version,
        )?;
        let output = dto::HeadObjectOutput {
            content_length: Some(i64::try_from(size).unwrap_or(i64::MAX)),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&version)),
            last_modified: modified(modified_ms),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key_len = req.input.key.len()))]
    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        let (body, _held) = self.body(input.body, input.content_length).await?;
        let tag = match body {
            Body::Small(value) => {
                self.write(
                    &input.key,
                    value,
                    input.if_match.as_ref(),
                    input.if_none_match.as_ref(),
                )
                .await?
                .version
            }
            Body::Large(head, rest) => {
                if input.if_match.is_some() || input.if_none_match.is_some() {
                    return Err(large_conditional(self.max_value));
                }
                self.write_large(&input.key, head, rest).await?
            }
        };
        Ok(S3Response::new(dto::PutObjectOutput {
            e_tag: Some(etag(&tag)),
            ..Default::default()
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key_len = req.input.key.len()))]
    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        if input.if_match.is_some() {
            return Err(s3_error!(NotImplemented, "conditional deletes"));
        }
        self.client.delete(&input.key).await.map_err(s3_err)?;
        Ok(S3Response::new(dto::DeleteObjectOutput::default()))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        let objects = input.delete.objects;
        if objects.len() > MAX_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "at most {MAX_KEYS} keys in one request"
            ));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let results: Vec<_> = futures::stream::iter(objects)
            .map(|o| async move {
                let result = self.client.delete(&o.key).await;
                (o.key, result)
            })
            .buffered(16)
            .collect()
            .await;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for (key, result) in results {
            match result {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(dto::DeletedObject {
                    key: Some(key),
                    ..Default::default()
                }),
                Err(e) => {
                    let err = s3_err(e);
                    errors.push(dto::Error {
                        code: Some(err.code().as_str().to_owned()),
                        key: Some(key),
                        message: err.message().map(str::to_owned),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(dto::DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let max_keys = usize::try_from(input.max_keys.unwrap_or(MAX_KEYS as i32))
            .unwrap_or(0)
            .min(MAX_KEYS);
        let resume = match &input.continuation_token {
            Some(token) => Some(Resume::parse(token)?),
            None => input.start_after.clone().map(Resume::After),
        };
        let page = list_page(
            self.store.as_ref(),
            &prefix,
            delimiter.as_deref(),
            max_keys,
            resume,
        )
        .await?;
        let contents: Vec<dto::Object> = page
            .objects
            .into_iter()
            .map(|meta| dto::Object {
                e_tag: meta.e_tag.as_deref().map(etag),
                key: Some(meta.location.to_string()),
                last_modified: Some(listed_time(&meta)),
                size: Some(i64::try_from(meta.size).unwrap_or(i64::MAX)),
                ..Default::default()
            })
            .collect();
        let common_prefixes: Vec<dto::CommonPrefix> = page
            .prefixes
            .into_iter()
            .map(|p| dto::CommonPrefix { prefix: Some(p) })
            .collect();
        let key_count = (contents.len() + common_prefixes.len()) as i32;
        Ok(S3Response::new(dto::ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            max_keys: Some(max_keys as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            is_truncated: Some(page.next.is_some()),
            next_continuation_token: page.next.map(|r| r.token()),
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            ..Default::default()
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key_len = req.input.key.len()))]
    async fn copy_object(
        &self,
        req: S3Request<dto::CopyObjectInput>,
    ) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        let dto::CopySource::Bucket { bucket, key, .. } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "copies from access points"));
        };
        self.bucket(bucket)?;
        let source = self.fetch(key).await?;
        let (version, _, _) = source.meta();
        if let Some(c) = &input.copy_source_if_match
            && !matches(c, &version)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        if let Some(c) = &input.copy_source_if_none_match
            && matches(c, &version)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        let (tag, modified_ms) = match source {
            Found::Cached(f) => {
                let written = self.write(&input.key, f.value, None, None).await?;
                (written.version, written.modified_ms)
            }
            Found::Chunked(first) => {
                let size = first.size;
                let held = first.chunk_bytes * cache_client::objects::CHUNKS_IN_FLIGHT as u64;
                let _reading = self.memory.reserve(held).await?;
                let body = self.client.stream_from(key, first, 0..size).body;
                let tag = self.write_large(&input.key, Bytes::new(), body).await?;
                (tag, None)
            }
            Found::Large(from, meta) => {
                // Pinned to the version checked above: a copy of a newer one fails.
                let options = object_store::GetOptions {
                    if_match: meta.e_tag,
                    ..Default::default()
                };
                let body = self
                    .store
                    .get_opts(&from, options)
                    .await
                    .map_err(store_err)?
                    .into_stream();
                let tag = self.write_large(&input.key, Bytes::new(), body).await?;
                (tag, None)
            }
        };
        Ok(S3Response::new(dto::CopyObjectOutput {
            copy_object_result: Some(dto::CopyObjectResult {
                e_tag: Some(etag(&tag)),
                last_modified: modified(modified_ms),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.bucket(&req.input.bucket)?;
        Ok(S3Response::new(dto::HeadBucketOutput::default()))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key_len = req.input.key.len()))]
    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        cache_core::limits::validate_key(&input.key)
            .map_err(|e| s3_error!(InvalidArgument, "{e}"))?;
        let upload_id = format!("{:032x}", rand::random::<u128>());
        // The upload's key, so that parts can only complete the object they were sent for.
        let marker = upload_dir(&upload_id)?.join("key");
        self.store
            .put(&marker, Bytes::from(input.key.clone()).into())
            .await
            .map_err(store_err)?;
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(part = req.input.part_number))]
    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        self.upload_key(&input.upload_id, &input.key).await?;
        let path = part_path(&input.upload_id, input.part_number)?;
        let (body, _held) = self.body(input.body, input.content_length).await?;
        let result = match body {
            Body::Small(value) => self
                .store
                .put(&path, value.into())
                .await
                .map_err(store_err)?,
            Body::Large(head, rest) => {
                let _buffers = self.memory.reserve(large::WRITE_BUFFER).await?;
                large::write(self.store.as_ref(), &path, head, rest).await?
            }
        };
        let tag = result
            .e_tag
            .unwrap_or_else(|| format!("part-{}", input.part_number));
        Ok(S3Response::new(dto::UploadPartOutput {
            e_tag: Some(etag(&tag)),
            ..Default::default()
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_parts(
        &self,
        req: S3Request<dto::ListPartsInput>,
    ) -> S3Result<S3Response<dto::ListPartsOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        self.upload_key(&input.upload_id, &input.key).await?;
        let marker = input.part_number_marker.unwrap_or(0);
        let max = usize::try_from(input.max_parts.unwrap_or(MAX_KEYS as i32))
            .unwrap_or(0)
            .min(MAX_KEYS);
        let mut parts = self.parts(&input.upload_id).await?;
        parts.retain(|(n, _)| *n > marker);
        let truncated = parts.len() > max;
        parts.truncate(max);
        let next = parts.last().map(|(n, _)| *n);
        Ok(S3Response::new(dto::ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            is_truncated: Some(truncated),
            next_part_number_marker: next.filter(|_| truncated),
            max_parts: Some(max as i32),
            parts: Some(
                parts
                    .into_iter()
                    .map(|(n, meta)| dto::Part {
                        part_number: Some(n),
                        size: Some(i64::try_from(meta.size).unwrap_or(i64::MAX)),
                        e_tag: meta.e_tag.as_deref().map(etag),
                        last_modified: Some(listed_time(&meta)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        self.upload_key(&input.upload_id, &input.key).await?;
        let staged = self.parts(&input.upload_id).await?;
        let wanted: Vec<i32> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.part_number.unwrap_or(0))
            .collect();
        if wanted.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts named"));
        }
        if wanted.windows(2).any(|w| w[0] >= w[1]) {
            return Err(s3_error!(InvalidPartOrder));
        }
        let mut chosen = Vec::with_capacity(wanted.len());
        for n in &wanted {
            match staged.iter().find(|(m, _)| m == n) {
                Some((_, meta)) => chosen.push(meta.clone()),
                None => return Err(s3_error!(InvalidPart, "part {n} was not uploaded")),
            }
        }
        let total: u64 = chosen.iter().map(|m| m.size).sum();
        if total > self.max_value {
            if input.if_match.is_some() || input.if_none_match.is_some() {
                return Err(large_conditional(self.max_value));
            }
            let paths = chosen.into_iter().map(|m| m.location).collect();
            let staged = large::concat(Arc::clone(&self.store), paths);
            let tag = self.write_large(&input.key, Bytes::new(), staged).await?;
            self.discard(&input.upload_id).await;
            return Ok(S3Response::new(dto::CompleteMultipartUploadOutput {
                bucket: Some(input.bucket),
                key: Some(input.key),
                e_tag: Some(etag(&tag)),
                ..Default::default()
            }));
        }
        let _held = self.memory.reserve(total).await?;
        let mut value = BytesMut::with_capacity(usize::try_from(total).unwrap_or(0));
        for meta in &chosen {
            let bytes = self
                .store
                .get(&meta.location)
                .await
                .map_err(store_err)?
                .bytes()
                .await
                .map_err(store_err)?;
            value.extend_from_slice(&bytes);
        }
        let written = self
            .write(
                &input.key,
                value.freeze(),
                input.if_match.as_ref(),
                input.if_none_match.as_ref(),
            )
            .await?;
        self.discard(&input.upload_id).await;
        Ok(S3Response::new(dto::CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag(&written.version)),
            ..Default::default()
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        self.upload_key(&input.upload_id, &input.key).await?;
        self.discard(&input.upload_id).await;
        Ok(S3Response::new(dto::AbortMultipartUploadOutput::default()))
    }
}

impl S3Gateway {
    /// Checks that the upload exists and is for `key`.
    async fn upload_key(&self, upload_id: &str, key: &str) -> S3Result<()> {
        let marker = upload_dir(upload_id)?.join("key");
        let stored = match self.store.get(&marker).await {
            Ok(r) => r.bytes().await.map_err(store_err)?,
            Err(object_store::Error::NotFound { .. }) => return Err(s3_error!(NoSuchUpload)),
            Err(e) => return Err(store_err(e)),
        };
        if stored.as_ref() == key.as_bytes() {
            Ok(())
        } else {
            Err(s3_error!(NoSuchUpload, "the upload is for another key"))
        }
    }

    /// The staged parts of an upload, by part number.
    async fn parts(&self, upload_id: &str) -> S3Result<Vec<(i32, object_store::ObjectMeta)>> {
        let dir = upload_dir(upload_id)?;
        let metas: Vec<_> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(store_err)?;
        let mut parts: Vec<_> = metas
            .into_iter()
            .filter_map(|m| {
                let n = m.location.filename()?.parse::<i32>().ok()?;
                Some((n, m))
            })
            .collect();
        parts.sort_by_key(|(n, _)| *n);
        Ok(parts)
    }

    /// Removes an upload's staged parts and marker. Failures leave garbage under the
    /// reserved prefix, never a wrong object, so they are logged only.
    async fn discard(&self, upload_id: &str) {
        let Ok(dir) = upload_dir(upload_id) else {
            return;
        };
        let paths = self.store.list(Some(&dir)).map_ok(|m| m.location).boxed();
        let mut deleted = self.store.delete_stream(paths);
        while let Some(result) = deleted.next().await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not remove a staged multipart part");
            }
        }
    }
}

/// Where a listing resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resume {
    /// After this key.
    After(String),
    /// After every key under this common prefix.
    Past(String),
}

impl Resume {
    fn token(&self) -> String {
        match self {
            Resume::After(k) => format!("k{k}"),
            Resume::Past(p) => format!("p{p}"),
        }
    }

    fn parse(token: &str) -> S3Result<Self> {
        match token.split_at_checked(1) {
            Some(("k", k)) => Ok(Resume::After(k.to_owned())),
            Some(("p", p)) => Ok(Resume::Past(p.to_owned())),
            _ => Err(s3_error!(InvalidArgument, "not a continuation token")),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Default)]
struct Page {
    objects: Vec<object_store::ObjectMeta>,
    prefixes: Vec<String>,
    next: Option<Resume>,
}

/// Lists the store's keys that start with `prefix` (a string prefix, as in S3, not a path),
/// grouping those with `delimiter` after the prefix into common prefixes, at most `max` of
/// both, from `resume`. The reserved prefix is never listed.
async fn list_page(
    store: &dyn ObjectStore,
    prefix: &str,
    delimiter: Option<&str>,
    max: usize,
    resume: Option<Resume>,
) -> S3Result<Page> {
    // The store lists by path: list the deepest directory that holds every match.
    let dir = prefix.rfind('/').map(|i| Path::from(&prefix[..i]));
    let offset = resume.as_ref().map(|r| match r {
        Resume::After(k) | Resume::Past(k) => Path::from(k.as_str()),
    });
    let listing = match &offset {
        Some(offset) => store.list_with_offset(dir.as_ref(), offset),
        None => store.list(dir.as_ref()),
    };
    // Not every store lists in key order (a directory tree does not): gather the matches,
    // then sort them. A page therefore costs a listing from its resume point on.
    let mut matched: Vec<object_store::ObjectMeta> = listing
        .try_filter(|meta| {
            let key = meta.location.as_ref();
            futures::future::ready(
                key.starts_with(prefix) && !key.starts_with(cache_core::limits::RESERVED_PREFIX),
            )
        })
        .try_collect()
        .await
        .map_err(store_err)?;
    matched.sort_by(|a, b| a.location.cmp(&b.location));
    let mut page = Page::default();
    let mut last: Option<Resume> = None;
    for meta in matched {
        let key = meta.location.as_ref();
        if let Some(Resume::Past(p)) = &resume
            && key.starts_with(p.as_str())
        {
            continue;
        }
        let group = delimiter.and_then(|d| {
            key[prefix.len()..]
                .find(d)
                .map(|i| key[..prefix.len() + i + d.len()].to_owned())
        });
        if let Some(group) = &group
            && page.prefixes.last() == Some(group)
        {
            continue;
        }
        if page.objects.len() + page.prefixes.len() == max {
            page.next = last;
            return Ok(page);
        }
        match group {
            Some(group) => {
                last = Some(Resume::Past(group.clone()));
                page.prefixes.push(group);
            }
            None => {
                last = Some(Resume::After(key.to_owned()));
                page.objects.push(meta);
            }
        }
    }
    Ok(page)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A gateway for bucket `photos` whose only node is not there: requests that pass the
    /// checks before the cache fail later, with 503.
    pub(in crate::s3) async fn gateway() -> S3Gateway {
        let client = cache_client::CacheClient::builder()
            .app("photos")
            .nodes(["127.0.0.1:1"])
            .connect_timeout(Duration::from_millis(200))
            .timeout(Duration::from_millis(500))
            .build()
            .await
            .unwrap();
        let store = Arc::new(object_store::memory::InMemory::new());
        S3Gateway::new(client, store, 1 << 20)
    }

    #[tokio::test]
    async fn one_put_carries_at_most_5_gib() {
        let gateway = gateway().await;
        let over = i64::try_from(MAX_PUT_BYTES + 1).unwrap();
        let err = gateway.body(None, Some(over)).await.err().expect("refused");
        assert_eq!(err.code(), &S3ErrorCode::EntityTooLarge);
        let (body, _held) = gateway.body(None, Some(5)).await.unwrap();
        assert!(matches!(body, Body::Small(b) if b.is_empty()));

        // A body of unknown length is cut off past the bound: the control without the bound
        // passes every byte.
        let seen = MAX_PUT_BYTES - 10;
        let piece = || Ok::<_, std::io::Error>(Bytes::from_static(&[0; 8]));
        let body = || StreamingBlob::wrap(futures::stream::iter([piece(), piece()]));
        let cut: Vec<_> = bounded(body(), seen).collect().await;
        assert!(cut[0].is_ok() && cut[1].is_err(), "cut off at the bound");
        let whole: Vec<_> = body().collect().await;
        assert!(whole.iter().all(Result::is_ok), "the control passes all");
    }
    use object_store::memory::InMemory;

    async fn store(keys: &[&str]) -> InMemory {
        let store = InMemory::new();
        for k in keys {
            store
                .put(&Path::from(*k), Bytes::from_static(b"x").into())
                .await
                .unwrap();
        }
        store
    }

    async fn all(
        store: &InMemory,
        prefix: &str,
        delimiter: Option<&str>,
        max: usize,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut resume = None;
        loop {
            let page = list_page(store, prefix, delimiter, max, resume)
                .await
                .unwrap();
            assert!(page.objects.len() + page.prefixes.len() <= max);
            out.extend(page.objects.iter().map(|m| m.location.to_string()));
            out.extend(page.prefixes.iter().map(|p| format!("{p}*")));
            match page.next {
                Some(next) => resume = Some(Resume::parse(&next.token()).unwrap()),
                None => return out,
            }
        }
    }

    #[tokio::test]
    async fn listings_page_through_string_prefixes_and_common_prefixes() {
        let s = store(&[
            "a/1",
            "a/2",
            "a/b/3",
            "a/b/4",
            "a/c/5",
            "ab",
            "b/6",
            "_cachelet/uploads/x/key",
        ])
        .await;
        for max in [1, 2, 3, 1000] {
            assert_eq!(
                all(&s, "", None, max).await,
                ["a/1", "a/2", "a/b/3", "a/b/4", "a/c/5", "ab", "b/6"],
                "max {max}"
            );
            assert_eq!(
                all(&s, "", Some("/"), max).await.len(),
                3,
                "a/, ab, b/ at max {max}"
            );
            let mut grouped = all(&s, "a/", Some("/"), max).await;
            grouped.sort();
            assert_eq!(grouped, ["a/1", "a/2", "a/b/*", "a/c/*"], "max {max}");
            assert_eq!(all(&s, "a", None, max).await.len(), 6, "max {max}");
            assert_eq!(all(&s, "a/b/", None, max).await, ["a/b/3", "a/b/4"]);
        }
    }

    #[test]
    fn continuation_tokens_round_trip_and_reject_junk() {
        for r in [Resume::After("a/b".into()), Resume::Past("a/".into())] {
            assert_eq!(Resume::parse(&r.token()).unwrap(), r);
        }
        assert!(Resume::parse("").is_err());
        assert!(Resume::parse("zzz").is_err());
    }

    #[test]
    fn conditions_compare_tags_without_quotes() {
        let tag = |s: &str| ETagCondition::ETag(ETag::Strong(s.into()));
        assert!(matches(&tag("abc"), "\"abc\""));
        assert!(matches(&tag("abc"), "abc"));
        assert!(!matches(&tag("abd"), "abc"));
        assert!(matches(&ETagCondition::Any, "x"));
        let err = check_read_conditions(None, Some(&tag("abc")), "abc").unwrap_err();
        assert_eq!(err.code(), &S3ErrorCode::NotModified);
        let err = check_read_conditions(Some(&tag("x")), None, "abc").unwrap_err();
        assert_eq!(err.code(), &S3ErrorCode::PreconditionFailed);
        assert!(check_read_conditions(Some(&tag("abc")), None, "\"abc\"").is_ok());
    }

    #[tokio::test]
    async fn the_memory_budget_makes_requests_wait_then_slow_down() {
        let memory = Memory::new(1 << 20, Duration::from_millis(50));
        let held = memory.reserve(768 << 10).await.unwrap();
        let refused = memory.reserve(512 << 10).await.unwrap_err();
        assert_eq!(refused.code(), &S3ErrorCode::SlowDown);
        drop(held);
        let _again = memory.reserve(512 << 10).await.unwrap();
        // More than the whole budget waits for all of it, and is not refused for good.
        let all = Memory::new(1 << 20, Duration::from_millis(50));
        assert!(all.reserve(8 << 20).await.is_ok());
    }

    #[test]
    fn upload_ids_are_hex_and_part_numbers_bounded() {
        assert!(upload_dir("../../etc").is_err());
        assert!(upload_dir("").is_err());
        assert!(part_path("ab12", 0).is_err());
        assert!(part_path("ab12", MAX_PARTS + 1).is_err());
        assert_eq!(
            part_path("ab12", 7).unwrap().to_string(),
            "_cachelet/uploads/ab12/00007"
        );
    }
}
