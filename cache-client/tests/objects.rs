//! Objects larger than the largest value, read through the cache in chunks of one version.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_client::{CacheClient, Error, Tier};
use cache_core::Limits;
use cache_server::CacheNodeBuilder;
use cache_server::cluster::LocalCluster;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

const APP: &str = "objects";
const MAX_VALUE: u64 = 1 << 20;
const CHUNK: u64 = 256 << 10;

async fn setup(
    configure: impl Fn(CacheNodeBuilder) -> CacheNodeBuilder,
) -> (LocalCluster, Arc<dyn ObjectStore>, CacheClient) {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cluster = LocalCluster::start(3, |b| {
        configure(
            b.app(APP).store(inner.clone()).limits(
                Limits::default()
                    .with_max_value_bytes(MAX_VALUE)
                    .with_chunk_bytes(CHUNK)
                    .with_max_object_bytes(8 << 20),
            ),
        )
    })
    .await
    .unwrap();
    let cache = CacheClient::builder()
        .app(APP)
        .nodes(cluster.addrs())
        .max_value_bytes(MAX_VALUE)
        .timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    (cluster, inner, cache)
}

fn object(size: usize, seed: u8) -> Bytes {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn drain(cache: &CacheClient, key: &str, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let streamed = cache.get_range(key, range).await.unwrap().expect("exists");
    let mut body = streamed.body;
    let mut out = Vec::new();
    while let Some(piece) = body.next().await {
        out.extend_from_slice(&piece.unwrap());
    }
    out
}

/// The home node's counters for `key`.
fn home(cluster: &LocalCluster, cache: &CacheClient, key: &str) -> cache_proto::v1::NodeStats {
    let addr = cache.home_of(key);
    let i = cluster.addrs().iter().position(|a| *a == addr).unwrap();
    cluster.node(i).stats()
}

#[tokio::test]
async fn a_large_object_is_read_in_chunks_and_then_served_from_the_cache() {
    let (cluster, inner, cache) = setup(|b| b).await;
    let key = "videos/clip.mp4";
    let data = object((3 * MAX_VALUE + 5) as usize, 1);
    inner
        .put(&Path::from(key), data.clone().into())
        .await
        .unwrap();

    assert!(matches!(cache.get(key).await, Err(Error::ValueTooLarge(_))));
    let streamed = cache.get_stream(key).await.unwrap().unwrap();
    assert_eq!(streamed.size, data.len() as u64);
    assert_eq!(drain(&cache, key, None).await, data);
    let chunks = data.len().div_ceil(CHUNK as usize) as u64;
    let first = home(&cluster, &cache, key);
    assert!(first.chunk_reads >= chunks, "{first:?}");
    // The store was read in parts of whole chunks (here 1 MiB, the largest value): one
    // ranged read a part, and the one read that found the object too large to cache whole.
    let parts = (data.len() as u64).div_ceil(MAX_VALUE);
    assert_eq!(first.store_reads, 1 + parts, "{first:?}");

    // Again: every chunk from the cache. The store is asked only for the current version,
    // and no whole read of the object is started (the node remembers it is large).
    assert_eq!(drain(&cache, key, None).await, data);
    let again = home(&cluster, &cache, key);
    assert_eq!(
        again.store_reads, first.store_reads,
        "no store reads: {again:?}"
    );
    let c = cache.get_chunk(key, &streamed.version, 2).await.unwrap();
    assert_eq!(c.tier, Tier::Home);
    assert_eq!(c.value, data.slice(2 * CHUNK as usize..3 * CHUNK as usize));

    // A range: only the chunks that cover it.
    let r = 300_000u64..700_000;
    assert_eq!(
        drain(&cache, key, Some(r.clone())).await,
        data[300_000..700_000]
    );

    // A new version, written around the cache: the next read is of it.
    let v2 = object(data.len(), 2);
    inner
        .put(&Path::from(key), v2.clone().into())
        .await
        .unwrap();
    assert_eq!(drain(&cache, key, None).await, v2);

    // Too large to serve in chunks: refused, so that callers read the store.
    inner
        .put(&Path::from("huge"), object(9 << 20, 3).into())
        .await
        .unwrap();
    assert!(matches!(
        cache.get_chunk("huge", "", 0).await,
        Err(Error::ValueTooLarge(_))
    ));
    assert!(cache.get_stream("missing").await.unwrap().is_none());
    cluster.shutdown().await;
}

/// Reads `key` in chunks while its object is replaced after the first chunk, and returns
/// what the read gave: its bytes, and whether it ended with a version mismatch.
async fn read_across_a_write(
    cache: &CacheClient,
    inner: &Arc<dyn ObjectStore>,
    key: &str,
    replacement: Bytes,
) -> (Vec<u8>, bool) {
    let first = cache.get_chunk(key, "", 0).await.unwrap();
    let size = first.size;
    let mut body = cache.stream_from(key, first, 0..size).body;
    inner
        .put(&Path::from(key), replacement.into())
        .await
        .unwrap();
    let (mut out, mut mismatch) = (Vec::new(), false);
    while let Some(piece) = body.next().await {
        match piece {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(Error::VersionMismatch(_)) => mismatch = true,
            Err(e) => panic!("{e}"),
        }
    }
    (out, mismatch)
}

/// A write in the middle of a chunked read fails the read; it never mixes two versions'
/// bytes. The control turns the version check of chunks read from the store off, and the
/// same read then returns bytes of both versions, which the check catches.
#[tokio::test]
async fn a_write_in_the_middle_of_a_chunked_read_never_mixes_versions() {
    let size = (2 * MAX_VALUE) as usize;
    let (v1, v2) = (object(size, 10), object(size, 20));
    let mixed = |out: &[u8]| out != v1.as_ref() && !v1.starts_with(out);

    let (cluster, inner, cache) = setup(|b| b).await;
    inner
        .put(&Path::from("k"), v1.clone().into())
        .await
        .unwrap();
    let (out, mismatch) = read_across_a_write(&cache, &inner, "k", v2.clone()).await;
    assert!(mismatch, "the read must fail");
    assert!(!mixed(&out), "only bytes of the first version");
    cluster.shutdown().await;

    let (cluster, inner, cache) = setup(|b| b.pinned_chunks(false)).await;
    inner
        .put(&Path::from("k"), v1.clone().into())
        .await
        .unwrap();
    let (out, mismatch) = read_across_a_write(&cache, &inner, "k", v2).await;
    assert!(
        !mismatch && mixed(&out),
        "the control mixes versions, and is caught"
    );
    cluster.shutdown().await;
}
