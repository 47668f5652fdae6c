//! Reading objects of any size as streams: whole values in one piece, objects larger than
//! the largest value in chunks ([`cache_core::chunks`]), fetched a few at a time from the
//! key's home node and handed over in order.

use std::ops::Range;

use bytes::Bytes;
use cache_core::chunks;
use cache_proto::v1 as pb;
use futures::stream::{BoxStream, StreamExt};
use tracing::Instrument;

use crate::client::{unexpected, version_parts};
use crate::{CacheClient, Error, Result, Tier};

/// Chunks of one read in flight at once.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// One chunk of a large object.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The chunk's bytes.
    pub value: Bytes,
    /// The object's version (ETag).
    pub version: String,
    /// When the object was written, as [`crate::Fetched::modified_ms`].
    pub modified_ms: Option<u64>,
    /// The object's size, when the read asked for the current version (0 otherwise).
    pub size: u64,
    /// The chunk size.
    pub chunk_bytes: u64,
    /// Which tier served it.
    pub tier: Tier,
}

/// An object read as a stream: its size and version, then its bytes.
pub struct Streamed {
    /// The object's size, in bytes.
    pub size: u64,
    /// The object's version (ETag).
    pub version: String,
    /// When the object was written, as [`crate::Fetched::modified_ms`].
    pub modified_ms: Option<u64>,
    /// The bytes asked for, in order. A write of the object in the middle of the read ends the
    /// stream with [`Error::VersionMismatch`]: the bytes are never of two versions.
    pub body: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed")
            .field("size", &self.size)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl CacheClient {
    /// Reads chunk `index` of the large object `key` at `version` (empty: the current version,
    /// which also gives the object's size), from the key's home node.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::VersionMismatch`] (the object is no longer at
    /// `version`), [`Error::ValueTooLarge`] (larger than the nodes serve in chunks), and those
    /// of [`CacheClient::get`].
    pub async fn get_chunk(&self, key: &str, version: &str, index: u64) -> Result<Chunk> {
        let span = tracing::debug_span!("cache.chunk", key_len = key.len(), index);
        let result = async {
            let (reply, _) = self
                .route(key, true, |fallback| {
                    pb::op::Kind::GetChunk(pb::GetChunk {
                        key: key.to_owned(),
                        version: version.to_owned(),
                        index,
                        fallback,
                    })
                })
                .await?;
            match reply {
                pb::reply::Result::Value(v) => {
                    let (version, modified_ms) = version_parts(v.version);
                    Ok(Chunk {
                        value: v.value,
                        version,
                        modified_ms,
                        size: v.size,
                        chunk_bytes: v.chunk_bytes,
                        tier: Tier::from_wire(v.tier),
                    })
                }
                pb::reply::Result::Error(e) => Err(Error::from_wire(e)),
                other => Err(unexpected(&other)),
            }
        }
        .instrument(span)
        .await;
        self.count(result)
    }

    /// Reads an object of any size as a stream: a value up to the largest value in one piece
    /// (through [`CacheClient::get_entry`]), a larger one in chunks of one version, a few in
    /// flight at once. `Ok(None)` when the object does not exist.
    ///
    /// # Errors
    /// As [`CacheClient::get_chunk`]; errors after the first chunk end the stream.
    pub async fn get_stream(&self, key: &str) -> Result<Option<Streamed>> {
        self.get_range(key, None).await
    }

    /// Reads `range` of an object (all of it for `None`) as [`CacheClient::get_stream`]
    /// does, fetching only the chunks that cover the range. A range past the end is cut to
    /// the object's size.
    ///
    /// # Errors
    /// As [`CacheClient::get_stream`].
    pub async fn get_range(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<Streamed>> {
        match self.get_entry(key).await {
            Ok(Some(f)) => {
                let size = f.value.len() as u64;
                let r = clamp(range, size);
                let piece = f.value.slice(to_usize(r.start)..to_usize(r.end));
                return Ok(Some(Streamed {
                    size,
                    version: f.version,
                    modified_ms: f.modified_ms,
                    body: futures::stream::once(async move { Ok(piece) }).boxed(),
                }));
            }
            Ok(None) => return Ok(None),
            Err(Error::ValueTooLarge(_)) => {}
            Err(e) => return Err(e),
        }
        // Larger than a whole value: the first chunk of the range names the version, and
        // gives the size; every other chunk is read at that version.
        let first = match self.get_chunk(key, "", 0).await {
            Ok(c) => c,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let r = clamp(range, first.size);
        Ok(Some(self.stream_from(key, first, r)))
    }

    /// The stream of `range` of the large object `key`, whose first chunk (read at the
    /// current version, so with the object's size) is `first`: the other chunks are read at
    /// `first`'s version. `range` must lie within the object.
    pub fn stream_from(&self, key: &str, first: Chunk, range: Range<u64>) -> Streamed {
        let size = first.size;
        let chunk = first.chunk_bytes.max(1);
        let r = clamp(Some(range), size);
        let mut pieces: Vec<(u64, Range<u64>)> = chunks::covering(r, chunk).collect();
        let head = match pieces.first() {
            Some((0, within)) => {
                let within = within.clone();
                pieces.remove(0);
                Some(
                    first
                        .value
                        .slice(to_usize(within.start)..to_usize(within.end)),
                )
            }
            _ => None,
        };
        let (client, key, version) = (self.clone(), key.to_owned(), first.version.clone());
        let rest = futures::stream::iter(pieces)
            .map(move |(index, within)| {
                let (client, key, version) = (client.clone(), key.clone(), version.clone());
                async move {
                    let c = client.get_chunk(&key, &version, index).await?;
                    let end = to_usize(within.end).min(c.value.len());
                    let start = to_usize(within.start).min(end);
                    Ok(c.value.slice(start..end))
                }
            })
            .buffered(CHUNKS_IN_FLIGHT);
        let body = futures::stream::iter(head.map(Ok)).chain(rest).boxed();
        Streamed {
            size,
            version: first.version,
            modified_ms: first.modified_ms,
            body,
        }
    }
}

fn clamp(range: Option<Range<u64>>, size: u64) -> Range<u64> {
    match range {
        None => 0..size,
        Some(r) => r.start.min(size)..r.end.min(size).max(r.start.min(size)),
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
