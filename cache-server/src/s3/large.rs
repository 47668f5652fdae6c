//! Objects larger than the cache's largest value go around the cache: they stream between the
//! S3 client and the store, in parts, so that memory stays bounded by a few parts whatever
//! the object's size. A write of one ends by telling the key's home node to forget its
//! cached copy ([`CacheClient::forget`](cache_client::CacheClient::forget)), as a write
//! through the cache would.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutResult, WriteMultipart};
use s3s::dto::StreamingBlob;
use s3s::{S3Result, s3_error};
use tokio::sync::OwnedSemaphorePermit;

use super::store_err;

/// The size of one ranged read of a large object. InfiniCache and the AWS S3 performance
/// guide both read large objects in 8–16 MiB parts.
pub(crate) const READ_PART: u64 = 8 << 20;
/// Ranged reads of one object in flight at once.
pub(crate) const READ_PARALLEL: usize = 4;
/// The size of one part of a multipart write to the store (S3's minimum is 5 MiB).
const WRITE_PART: usize = 8 << 20;
/// Parts of one multipart write to the store in flight at once.
const WRITE_PARALLEL: usize = 4;
/// The most bytes one large write holds: the parts in flight and the one being filled.
pub(crate) const WRITE_BUFFER: u64 = (WRITE_PART * (WRITE_PARALLEL + 1)) as u64;
/// The most bytes one large read from the store holds: the parts in flight and the one
/// being handed over.
pub(crate) const READ_BUFFER: u64 = READ_PART * (READ_PARALLEL as u64 + 1);

/// Splits `range` into consecutive parts of at most `part` bytes.
pub(crate) fn parts(range: Range<u64>, part: u64) -> impl Iterator<Item = Range<u64>> {
    let part = part.max(1);
    (range.start..range.end)
        .step_by(usize::try_from(part).unwrap_or(usize::MAX))
        .map(move |start| start..(start + part).min(range.end))
}

/// Reads `range` of the object at `path` from the store in parts, [`READ_PARALLEL`] at a
/// time, each pinned to `etag` so that a write in the middle fails the read instead of mixing
/// versions. The parts are fetched by a task and handed over one at a time: a slow reader
/// holds at most a few parts.
pub(crate) fn read(
    store: Arc<dyn ObjectStore>,
    path: Path,
    range: Range<u64>,
    etag: Option<String>,
    permit: OwnedSemaphorePermit,
) -> StreamingBlob {
    let pieces = parts(range, READ_PART).map(move |r| {
        let (store, path, etag) = (Arc::clone(&store), path.clone(), etag.clone());
        async move {
            let options = GetOptions {
                range: Some(GetRange::Bounded(r)),
                if_match: etag,
                ..GetOptions::default()
            };
            store.get_opts(&path, options).await?.bytes().await
        }
    });
    blob(
        futures::stream::iter(pieces)
            .buffered(READ_PARALLEL)
            .boxed(),
        permit,
    )
}

/// A stream of a large object's pieces (chunks read through the cache, or parts read from
/// the store) as a response body: a task takes the pieces, holding `permit` for the memory
/// they take, and hands them over one at a time. The body must be `Sync`; the stream is not.
pub(crate) fn blob<E>(
    body: futures::stream::BoxStream<'static, Result<Bytes, E>>,
    permit: OwnedSemaphorePermit,
) -> StreamingBlob
where
    E: std::error::Error + Send + Sync + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, E>>(1);
    tokio::spawn(async move {
        let _permit = permit;
        let mut body = body;
        while let Some(piece) = body.next().await {
            let failed = piece.is_err();
            if let Err(e) = &piece {
                tracing::warn!(error = %e, "a piece of a large object could not be read");
            }
            if tx.send(piece).await.is_err() || failed {
                return;
            }
        }
    });
    StreamingBlob::wrap(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// All of a stream of chunks in memory. Only for the unbounded-reads fault.
pub(crate) async fn collect(
    mut body: futures::stream::BoxStream<'static, cache_client::Result<Bytes>>,
) -> S3Result<Bytes> {
    let mut whole = bytes::BytesMut::new();
    while let Some(piece) = body.next().await {
        whole.extend_from_slice(&piece.map_err(super::s3_err)?);
    }
    Ok(whole.freeze())
}

/// Writes `head` then the rest of `body` to the store at `path`, as a multipart upload whose
/// parts go up [`WRITE_PARALLEL`] at a time. An upload that fails is aborted.
pub(crate) async fn write<S, E>(
    store: &dyn ObjectStore,
    path: &Path,
    head: Bytes,
    body: S,
) -> S3Result<PutResult>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let upload = store.put_multipart(path).await.map_err(store_err)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, WRITE_PART);
    writer.put(head);
    let mut body = body;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(s3_error!(IncompleteBody, "reading the body: {e}"));
            }
        };
        if let Err(e) = writer.wait_for_capacity(WRITE_PARALLEL).await {
            let _ = writer.abort().await;
            return Err(store_err(e));
        }
        writer.put(chunk);
    }
    writer.finish().await.map_err(store_err)
}

/// The staged parts at `paths`, in order, as one stream of bytes read from the store.
pub(crate) fn concat(
    store: Arc<dyn ObjectStore>,
    paths: Vec<Path>,
) -> impl Stream<Item = Result<Bytes, object_store::Error>> + Unpin {
    futures::stream::iter(paths)
        .then(move |path| {
            let store = Arc::clone(&store);
            async move {
                match store.get(&path).await {
                    Ok(result) => result.into_stream().boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                }
            }
        })
        .flatten()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn permit() -> OwnedSemaphorePermit {
        Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap()
    }

    #[test]
    fn parts_cover_a_range_exactly() {
        let got: Vec<_> = parts(3..20, 8).collect();
        assert_eq!(got, [3..11, 11..19, 19..20]);
        assert_eq!(parts(5..5, 8).count(), 0);
        let whole: Vec<_> = parts(0..8, 8).collect();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0], 0..8);
    }

    #[tokio::test]
    async fn a_large_object_round_trips_in_parts() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("big");
        let data: Vec<u8> = (0..(3 * WRITE_PART + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let chunks: Vec<Result<Bytes, std::io::Error>> = data[1000..]
            .chunks(1 << 20)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let put = write(
            store.as_ref(),
            &path,
            Bytes::copy_from_slice(&data[..1000]),
            futures::stream::iter(chunks),
        )
        .await
        .unwrap();
        let size = data.len() as u64;
        let mut read_back = Vec::new();
        let mut blob = read(
            Arc::clone(&store),
            path.clone(),
            5..size,
            put.e_tag.clone(),
            permit(),
        );
        while let Some(chunk) = blob.next().await {
            read_back.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(read_back, data[5..]);
        let staged = concat(Arc::clone(&store), vec![path.clone(), path]);
        let total: usize = staged
            .map(|c| c.unwrap().len())
            .fold(0, |a, n| async move { a + n })
            .await;
        assert_eq!(total, 2 * data.len());
    }

    #[tokio::test]
    async fn a_write_in_the_middle_fails_the_read_instead_of_mixing_versions() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("big");
        let size = 3 * READ_PART;
        let first = store
            .put(&path, vec![1u8; size as usize].into())
            .await
            .unwrap();
        store
            .put(&path, vec![2u8; size as usize].into())
            .await
            .unwrap();
        let mut blob = read(Arc::clone(&store), path, 0..size, first.e_tag, permit());
        let mut failed = false;
        while let Some(chunk) = blob.next().await {
            match chunk {
                Ok(bytes) => assert!(bytes.iter().all(|b| *b == 1), "bytes of another version"),
                Err(_) => failed = true,
            }
        }
        assert!(failed, "a read pinned to a replaced version must fail");
    }
}
