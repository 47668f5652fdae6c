//! `cache-bench demo`: three in-process nodes over a local-file store, a short Zipf
//! read/write workload through [`CacheClient`], and a table of what happened.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_client::CacheClient;
use cache_server::cluster::LocalCluster;
use cache_server::store::open_store;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::report::Table;
use crate::runner::{self, ratio};
use crate::workload::{KeyDist, Workload, key_name};

/// The demo's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Objects written to the store before the run.
    #[arg(long, default_value_t = 3000)]
    pub objects: u32,
    /// Requests in the run.
    #[arg(long, default_value_t = 60_000)]
    pub ops: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// The share of requests that are reads.
    #[arg(long, default_value_t = 0.95)]
    pub read_ratio: f64,
    /// Cache capacity per node.
    #[arg(long, default_value = "2MiB")]
    pub capacity: bytesize::ByteSize,
    /// Workload seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The size of object `i`: a spread from 256 B to 16 KiB, fixed per object.
fn object_size(i: u32) -> usize {
    256usize << (i % 7)
}

fn object_value(i: u32) -> Bytes {
    let size = object_size(i);
    let mut v = format!("object {i} ").into_bytes();
    v.resize(size, b'.');
    Bytes::from(v)
}

/// Runs the demo and prints its table.
///
/// # Errors
/// When the store or the nodes cannot be set up.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn ObjectStore> = open_store(&format!("file://{}", dir.path().display()))?;
    println!(
        "cachelet demo: 3 nodes on loopback, local-file store at {}",
        dir.path().display()
    );
    let mut data_bytes = 0u64;
    let fill = futures::future::join_all((0..args.objects).map(|i| {
        let store = store.clone();
        async move {
            store
                .put(&Path::from(key_name(i)), object_value(i).into())
                .await
        }
    }))
    .await;
    for (i, put) in fill.into_iter().enumerate() {
        put?;
        data_bytes += object_size(i as u32) as u64;
    }
    let capacity = args.capacity.as_u64();
    let cluster = LocalCluster::start(3, |b| {
        b.app("demo").store(store.clone()).capacity_bytes(capacity)
    })
    .await?;
    let client = CacheClient::builder()
        .app("demo")
        .nodes(cluster.addrs())
        .timeout(Duration::from_secs(10))
        .build()
        .await?;
    let workload = Workload {
        keys: args.objects,
        dist: KeyDist::Zipf(0.99),
        read_ratio: args.read_ratio,
        ops: args.ops,
        seed: args.seed,
    };
    println!(
        "{} objects ({:.1} MiB) in the store; cache capacity 3 x {} = {:.0}% of the data",
        args.objects,
        data_bytes as f64 / 1048576.0,
        args.capacity.display().iec(),
        100.0 * 3.0 * capacity as f64 / data_bytes as f64
    );
    println!(
        "running {} requests (Zipf 0.99, {:.0}% reads), {} in flight ...",
        args.ops,
        100.0 * args.read_ratio,
        args.concurrency
    );
    let result = runner::run(
        &client,
        Arc::new(workload.generate()),
        args.concurrency,
        Arc::new(object_value),
    )
    .await;
    let stats = client.stats().await?;
    let nodes: Vec<_> = stats.nodes.iter().filter_map(|n| n.stats.clone()).collect();
    let store_reads: u64 = nodes.iter().map(|s| s.store_reads).sum();
    let store_writes: u64 = nodes.iter().map(|s| s.store_writes).sum();
    let evictions: u64 = nodes.iter().map(|s| s.evictions).sum();
    let cached: u64 = nodes.iter().map(|s| s.bytes_used).sum();
    let lat = &result.latency_us;
    let t = result.by_tier;
    let gets = t.total();

    let mut table = Table::new(["metric", "value"]);
    table.row(["requests", &result.ops.to_string()]);
    table.row([
        "  gets / puts",
        &format!("{} / {}", result.gets, result.puts),
    ]);
    table.row(["  errors", &result.errors.to_string()]);
    table.row(["hit ratio (gets)", &format!("{:.3}", result.hit_ratio())]);
    table.row(["  tier local", &format!("{:.3}", ratio(t.local, gets))]);
    table.row(["  tier home", &format!("{:.3}", ratio(t.home, gets))]);
    table.row(["  tier handoff", &format!("{:.3}", ratio(t.handoff, gets))]);
    table.row(["  tier store", &format!("{:.3}", ratio(t.store, gets))]);
    table.row([
        "store reads / writes",
        &format!("{store_reads} / {store_writes}"),
    ]);
    table.row(["evictions", &evictions.to_string()]);
    table.row([
        "cached bytes",
        &bytesize::ByteSize(cached).display().iec().to_string(),
    ]);
    table.row([
        "latency p50",
        &format!("{} us", lat.value_at_quantile(0.50)),
    ]);
    table.row([
        "latency p99",
        &format!("{} us", lat.value_at_quantile(0.99)),
    ]);
    table.row(["throughput", &format!("{:.0} ops/s", result.throughput())]);
    table.row(["elapsed", &format!("{:.2} s", result.elapsed.as_secs_f64())]);
    print!("{table}");
    cluster.shutdown().await;
    anyhow::ensure!(result.errors == 0, "{} requests failed", result.errors);
    Ok(())
}
