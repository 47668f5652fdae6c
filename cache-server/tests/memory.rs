//! Memory as a promise: a `cache-server` process stays under its documented bound
//! (`cache_server::budget::rss_bound`) at ten times its capacity in data, and under requests
//! built to make it allocate gigabytes, while a canary client is served throughout.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_client::CacheClient;
use cache_proto::v1 as pb;
use cache_server::budget::rss_bound;

const MIB: u64 = 1 << 20;

/// A server over a local-file store in `dir`, with `capacity`.
fn server(dir: &std::path::Path, capacity: u64, extra: &[&str]) -> common::Server {
    let store = format!("file://{}", dir.display());
    let capacity = format!("{capacity}B");
    let mut args = vec![
        "--app",
        "mem",
        "--store",
        &store,
        "--capacity",
        &capacity,
        "--prewarm-fraction",
        "0",
    ];
    args.extend_from_slice(extra);
    common::Server::spawn(&args, &[])
}

async fn client(addr: &str) -> CacheClient {
    CacheClient::builder()
        .app("mem")
        .nodes([addr.to_owned()])
        .timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap()
}

/// Writes `count` blobs of `size` bytes straight into the store's directory.
fn fill_store(dir: &std::path::Path, count: usize, size: usize) -> Vec<String> {
    std::fs::create_dir_all(dir.join("k")).unwrap();
    (0..count)
        .map(|i| {
            let key = format!("k/{i:07}");
            let mut value = vec![(i % 251) as u8; size];
            value[..8.min(size)].copy_from_slice(&(i as u64).to_le_bytes()[..8.min(size)]);
            std::fs::write(dir.join(&key), value).unwrap();
            key
        })
        .collect()
}

/// Reads every key through the node, `parallel` batches at a time, and checks the sizes.
async fn read_all(
    cache: &CacheClient,
    keys: &[String],
    size: usize,
    batch: usize,
    parallel: usize,
) {
    let chunks: Vec<&[String]> = keys.chunks(batch).collect();
    for group in chunks.chunks(parallel) {
        let reads = group
            .iter()
            .map(|chunk| cache.get_many(chunk.iter().map(String::as_str)));
        for values in futures::future::join_all(reads).await {
            for value in values.unwrap() {
                assert_eq!(value.expect("present").len(), size);
            }
        }
    }
}

/// Ten times the capacity in data, read through the node twice, for one value size.
async fn overload(size: usize, capacity: u64) {
    let dir = tempfile::tempdir().unwrap();
    let data = capacity * 10;
    let count = usize::try_from(data / size as u64).unwrap().max(1);
    let keys = fill_store(dir.path(), count, size);
    let node = server(dir.path(), capacity, &[]);
    let cache = client(&node.addr).await;
    let (batch, parallel) = match size {
        s if s >= 8 << 20 => (1, 2),
        s if s >= 1 << 20 => (4, 4),
        s if s >= 64 << 10 => (32, 4),
        _ => (512, 4),
    };
    read_all(&cache, &keys, size, batch, parallel).await;
    read_all(&cache, &keys, size, batch, parallel).await;
    let stats = cache.stats().await.unwrap().nodes.remove(0).stats.unwrap();
    let (rss, peak) = node.rss();
    let bound = rss_bound(capacity, stats.reply_budget_bytes);
    eprintln!(
        "value {size} B, capacity {} MiB, {count} blobs: entries {}, bytes_used {} MiB, \
         rss {} MiB, peak {} MiB, bound {} MiB",
        capacity / MIB,
        stats.entries,
        stats.bytes_used / MIB,
        rss / MIB,
        peak / MIB,
        bound / MIB
    );
    assert!(stats.bytes_used <= capacity, "{stats:?}");
    assert!(stats.evictions > 0, "the run must overflow the cache");
    assert!(
        peak <= bound,
        "peak RSS {peak} over the bound {bound} for {size} B values"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_at_ten_times_capacity_100b() {
    overload(100, MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_at_ten_times_capacity_64kib() {
    overload(64 << 10, 32 * MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_at_ten_times_capacity_1mib() {
    overload(1 << 20, 64 * MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_at_ten_times_capacity_16mib() {
    overload(16 << 20, 64 * MIB).await;
}

/// A client that keeps reading one small key and counts its successes and failures, until
/// told to stop.
struct Canary {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Canary {
    async fn start(addr: &str) -> Self {
        let cache = client(addr).await;
        cache.put("canary", "tweet").await.unwrap();
        let (stop, ok, failed) = Default::default();
        let task = tokio::spawn({
            let (stop, ok, failed): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>) =
                (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    match cache.get("canary").await {
                        Ok(Some(v))
                            if v.as_ref() == b"tweet"
                                && started.elapsed() < Duration::from_secs(5) =>
                        {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self {
            stop,
            ok,
            failed,
            task,
        }
    }

    /// Stops it and returns (successes, failures).
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

async fn raw(addr: &str) -> pb::data_client::DataClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::data_client::DataClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn gets(key: &str, n: u64, fallback: bool) -> Vec<pb::Op> {
    (0..n)
        .map(|id| pb::Op {
            id,
            kind: Some(pb::op::Kind::Get(pb::Get {
                key: key.to_owned(),
                fallback,
                ..Default::default()
            })),
            epoch: 0,
        })
        .collect()
}

/// What one run of an amplification case saw.
#[derive(Debug)]
struct Seen {
    /// Value replies, and replies refused with `RESOURCE_EXHAUSTED` (a `Batch`).
    values: usize,
    refused: usize,
    /// The most reply bytes the node held at once (a slow reader).
    held: u64,
    /// The canary's successful and failed gets.
    ok: u64,
    failed: u64,
    peak: u64,
}

/// The bound of a node with the default reply budget for `capacity`.
fn default_bound(capacity: u64) -> u64 {
    rss_bound(
        capacity,
        cache_server::budget::default_budget(capacity, 16 * MIB),
    )
}

/// `ops` gets of a cached 1 MiB value in one `Batch`, with a canary beside it.
async fn batch_of_gets(ops: u64, extra: &[&str]) -> Seen {
    let dir = tempfile::tempdir().unwrap();
    let node = server(dir.path(), 64 * MIB, extra);
    let cache = client(&node.addr).await;
    cache.put("big", vec![7u8; 1 << 20]).await.unwrap();
    let canary = Canary::start(&node.addr).await;
    let mut data = raw(&node.addr).await;
    let batch = pb::Batch {
        app: "mem".into(),
        timeout_ms: 5_000,
        ops: gets("big", ops, false),
    };
    let reply = data.batch(batch).await.unwrap().into_inner();
    assert_eq!(reply.replies.len() as u64, ops);
    let count = |f: &dyn Fn(&pb::reply::Result) -> bool| {
        reply
            .replies
            .iter()
            .filter(|r| r.result.as_ref().is_some_and(f))
            .count()
    };
    let values = count(&|r| matches!(r, pb::reply::Result::Value(_)));
    let refused = count(
        &|r| matches!(r, pb::reply::Result::Error(e) if e.code() == pb::ErrorCode::Overloaded),
    );
    drop(reply);
    let (ok, failed) = canary.finish().await;
    let (_, peak) = node.rss();
    Seen {
        values,
        refused,
        held: 0,
        ok,
        failed,
        peak,
    }
}

/// `ops` fallback gets of a 1 MiB value on one `Pipe` whose replies are never read, watched
/// for 5 s, with a canary beside it.
async fn reader_that_never_reads(ops: u64, extra: &[&str]) -> Seen {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big"), vec![7u8; 1 << 20]).unwrap();
    let node = server(dir.path(), 64 * MIB, extra);
    let canary = Canary::start(&node.addr).await;
    let mut data = raw(&node.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for chunk in gets("big", ops, true).chunks(512) {
        tx.send(pb::Batch {
            app: "mem".into(),
            timeout_ms: 20_000,
            ops: chunk.to_vec(),
        })
        .await
        .unwrap();
    }
    let replies = data
        .pipe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    // Never read `replies`. Give the node time to do all it would do for the stream.
    let cache = client(&node.addr).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut held = 0;
    while Instant::now() < deadline {
        let stats = cache.stats().await.unwrap().nodes.remove(0).stats.unwrap();
        held = held.max(stats.reply_held_bytes);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, failed) = canary.finish().await;
    let (_, peak) = node.rss();
    drop(replies);
    drop(tx);
    Seen {
        values: 0,
        refused: 0,
        held,
        ok,
        failed,
        peak,
    }
}

/// One `Batch` of 4,096 gets of a cached 1 MiB value asked a node for a 4 GiB reply. Now the
/// reply carries one message's worth of values, the other ops are refused with
/// `RESOURCE_EXHAUSTED`, and the node stays under its bound while a canary is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_4096_gets_of_a_1mib_value_is_bounded() {
    let seen = batch_of_gets(4096, &[]).await;
    let bound = default_bound(64 * MIB);
    eprintln!("batch: {seen:?}, bound {} MiB", bound / MIB);
    assert!((1..=17).contains(&seen.values), "{seen:?}");
    assert_eq!(seen.values + seen.refused, 4096);
    assert!(seen.ok > 0 && seen.failed == 0, "{seen:?}");
    assert!(seen.peak <= bound, "peak RSS {} over {bound}", seen.peak);
}

/// The negative control: with the budget switched off, a batch of only 512 such gets takes
/// the node over its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_budget_a_batch_breaks_the_bound() {
    let seen = batch_of_gets(512, &["--unbounded-replies"]).await;
    let bound = default_bound(64 * MIB);
    eprintln!("unbounded batch: {seen:?}, bound {} MiB", bound / MIB);
    assert_eq!(seen.values, 512, "{seen:?}");
    assert!(seen.peak > bound, "peak RSS {} within {bound}", seen.peak);
}

/// A client sends 4,096 fallback gets of a 1 MiB value on one `Pipe` and never reads the
/// replies. The stream holds at most its share of the budget; the node stays under its bound
/// and a canary is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_holds_only_its_share() {
    let seen = reader_that_never_reads(4096, &[]).await;
    let bound = default_bound(64 * MIB);
    eprintln!("slow reader: {seen:?}, bound {} MiB", bound / MIB);
    assert!(seen.held > 0, "the stream's replies must be held");
    assert!(
        seen.held <= cache_server::budget::stream_cap(16 * MIB) + MIB,
        "one stream held {} bytes",
        seen.held
    );
    assert!(seen.ok > 0 && seen.failed == 0, "{seen:?}");
    assert!(seen.peak <= bound, "peak RSS {} over {bound}", seen.peak);
}

/// The negative control: with the budget switched off, 512 such gets take the node over its
/// bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_budget_a_reader_that_never_reads_breaks_the_bound() {
    let seen = reader_that_never_reads(512, &["--unbounded-replies"]).await;
    let bound = default_bound(64 * MIB);
    eprintln!("unbounded slow reader: {seen:?}, bound {} MiB", bound / MIB);
    assert!(seen.peak > bound, "peak RSS {} within {bound}", seen.peak);
}
