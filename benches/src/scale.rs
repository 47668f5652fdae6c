//! `cache-bench scale`: scale events under a steady Zipf load, measured.
//!
//! One run, all on loopback with in-process nodes over a local-file store:
//! 1. N nodes warm up, then a window of requests gives `hit_ratio_before`.
//! 2. Scale-out N → N+1; the window right after gives `hit_ratio_after_handoff`. The same
//!    scenario with handoff turned off (keys that move become misses, as in groupcache), on
//!    the same request sequence, gives `hit_ratio_after_no_handoff`. `moved_fraction` is the
//!    share of keys whose home changed; `ideal_fraction` is 1/(N+1).
//! 3. Scale-in N+1 → N: the removed node drains; `lost_entries_scale_in` counts its entries
//!    that no new owner took.
//! 4. Scale to zero (graceful shutdown writes the hot-key manifests) and back: the first
//!    2,000 requests give `prewarm_hit_ratio` with pre-warming, `cold_hit_ratio` without.
//!
//! `failed_requests` counts every request that failed in any phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_client::CacheClient;
use cache_server::CacheNodeBuilder;
use cache_server::cluster::LocalCluster;
use cache_server::store::open_store;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;

use crate::report::Table;
use crate::runner::{self, DriveOptions, RunResult, Source, System};
use crate::workload::{KeyDist, Plan, Workload, key_name};

/// The scenario's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Nodes before the scale-out.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Keys in the store.
    #[arg(long, default_value_t = 20_000)]
    pub keys: u32,
    /// Value size.
    #[arg(long, default_value = "1KiB")]
    pub value_size: bytesize::ByteSize,
    /// Cache capacity per node.
    #[arg(long, default_value = "4MiB")]
    pub capacity: bytesize::ByteSize,
    /// Zipf exponent of the load.
    #[arg(long, default_value_t = 0.99)]
    pub zipf: f64,
    /// Requests to warm the cache before the first measurement.
    #[arg(long, default_value_t = 60_000)]
    pub warmup_ops: usize,
    /// Requests in each measured window.
    #[arg(long, default_value_t = 20_000)]
    pub window_ops: usize,
    /// Requests measured after the reload from zero.
    #[arg(long, default_value_t = 2_000)]
    pub reload_ops: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Workload seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Write every figure to this JSON file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// Every figure of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Nodes before the scale-out.
    pub nodes: usize,
    /// The share of keys whose home changed at N → N+1.
    pub moved_fraction: f64,
    /// 1/(N+1).
    pub ideal_fraction: f64,
    /// Hit ratio of the window before the scale-out.
    pub hit_ratio_before: f64,
    /// Hit ratio of the window after the scale-out, with handoff.
    pub hit_ratio_after_handoff: f64,
    /// Hit ratio of the same window, handoff turned off.
    pub hit_ratio_after_no_handoff: f64,
    /// Reads served by a previous owner in the window after the scale-out.
    pub handoff_tier_reads: u64,
    /// Entries the node removed at N+1 → N held, that no new owner took.
    pub lost_entries_scale_in: u64,
    /// Entries that node held when it was removed.
    pub entries_scale_in: u64,
    /// How long the drain took, in milliseconds.
    pub drain_ms: u64,
    /// Hit ratio of the first requests after scale-to-zero and back, pre-warmed.
    pub prewarm_hit_ratio: f64,
    /// The same, without pre-warming.
    pub cold_hit_ratio: f64,
    /// Entries loaded by pre-warming.
    pub prewarmed_entries: u64,
    /// Requests that failed, in every phase.
    pub failed_requests: u64,
    /// Wall-clock seconds of the whole run.
    pub elapsed_s: f64,
}

struct Setup {
    args: ScaleArgs,
    store: Arc<dyn ObjectStore>,
    sizes: Vec<u32>,
}

impl Setup {
    fn node(&self, b: CacheNodeBuilder, handoff: bool, prewarm: bool) -> CacheNodeBuilder {
        b.app("scale")
            .store(self.store.clone())
            .capacity_bytes(self.args.capacity.as_u64())
            .handoff(handoff)
            .prewarm(prewarm)
            .gossip_interval(Duration::from_millis(100))
            .handoff_window(Duration::from_secs(30))
    }

    /// `n` reads on the Zipf distribution, drawn with `seed`.
    fn plan(&self, n: usize, seed: u64) -> Plan {
        let workload = Workload {
            keys: self.args.keys,
            dist: KeyDist::Zipf(self.args.zipf),
            read_ratio: 1.0,
            ops: n,
            seed,
        };
        Plan::synthetic(&workload, &self.sizes, &workload.generate())
    }

    async fn load(&self, client: &CacheClient, plan: Plan) -> RunResult {
        let source = Arc::new(Source::fixed(plan.requests.clone()));
        let opts = DriveOptions {
            concurrency: self.args.concurrency,
            duration: None,
            speed: None,
            progress: false,
            sample_interval: Duration::from_secs(1),
        };
        runner::drive(&System::Cachelet(client.clone()), &plan, &source, &opts).await
    }
}

async fn client(addrs: Vec<String>) -> anyhow::Result<CacheClient> {
    Ok(CacheClient::builder()
        .app("scale")
        .nodes(addrs)
        .timeout(Duration::from_secs(10))
        .build()
        .await?)
}

/// Warm-up, the window before, scale-out, the window after. Returns the hit ratios before
/// and after, handoff-tier reads after, failures, the moved fraction, and the cluster.
async fn scale_out(
    setup: &Setup,
    handoff: bool,
) -> anyhow::Result<(f64, f64, u64, u64, f64, LocalCluster, CacheClient)> {
    let args = &setup.args;
    let mut cluster = LocalCluster::start(args.nodes, |b| setup.node(b, handoff, true)).await?;
    let client = client(cluster.addrs()).await?;
    let warm = setup
        .load(&client, setup.plan(args.warmup_ops, args.seed))
        .await;
    let before = setup
        .load(&client, setup.plan(args.window_ops, args.seed + 1))
        .await;
    let old = client.membership();
    cluster.add_node(|b| setup.node(b, handoff, true)).await?;
    client.set_members(None, cluster.running()).await?;
    let new = client.membership();
    let moved = (0..args.keys)
        .filter(|k| {
            let key = key_name(*k);
            old.owner(&key) != new.owner(&key)
        })
        .count();
    let after = setup
        .load(&client, setup.plan(args.window_ops, args.seed + 2))
        .await;
    Ok((
        before.hit_ratio(),
        after.hit_ratio(),
        after.by_tier.handoff,
        warm.errors + before.errors + after.errors,
        moved as f64 / f64::from(args.keys),
        cluster,
        client,
    ))
}

/// Hit ratio and failures of the first `reload_ops` requests on a fresh cluster.
async fn reload(setup: &Setup, prewarm: bool) -> anyhow::Result<(f64, u64, u64)> {
    let args = &setup.args;
    let cluster = LocalCluster::start(args.nodes, |b| setup.node(b, true, prewarm)).await?;
    let mut prewarmed = 0;
    if prewarm {
        // Wait until pre-warming settles: the count stops growing.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now: u64 = cluster
                .nodes()
                .iter()
                .map(|n| n.node.stats().prewarmed)
                .sum();
            if (now > 0 && now == prewarmed) || Instant::now() > deadline {
                break;
            }
            prewarmed = now;
        }
    }
    let client = client(cluster.addrs()).await?;
    let run = setup
        .load(&client, setup.plan(args.reload_ops, args.seed + 3))
        .await;
    cluster.shutdown().await;
    Ok((run.hit_ratio(), run.errors, prewarmed))
}

/// Runs the scenario, prints its table, and writes the JSON if asked.
///
/// # Errors
/// When the store or the nodes cannot be set up.
pub async fn run(args: ScaleArgs) -> anyhow::Result<ScaleReport> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let store = open_store(&format!("file://{}", dir.path().display()))?;
    let value = Bytes::from(vec![b'x'; args.value_size.as_u64() as usize]);
    let sizes = vec![value.len() as u32; args.keys as usize];
    futures::future::try_join_all((0..args.keys).map(|k| {
        let (store, value) = (store.clone(), value.clone());
        async move { store.put(&Path::from(key_name(k)), value.into()).await }
    }))
    .await?;
    let data = u64::from(args.keys) * args.value_size.as_u64();
    println!(
        "{} keys of {} ({:.1} MiB); {} nodes of {} each ({:.0}% of the data); Zipf {}",
        args.keys,
        args.value_size.display().iec(),
        data as f64 / 1048576.0,
        args.nodes,
        args.capacity.display().iec(),
        100.0 * (args.nodes as u64 * args.capacity.as_u64()) as f64 / data as f64,
        args.zipf
    );
    let setup = Setup {
        args: args.clone(),
        store,
        sizes,
    };

    // Without handoff first, on its own cluster.
    let (_, after_no_handoff, _, failed_a, _, cluster, _) = scale_out(&setup, false).await?;
    cluster.shutdown().await;

    let (before, after, handoff_reads, failed_b, moved, mut cluster, client) =
        scale_out(&setup, true).await?;

    // Scale-in: remove the first node; it drains to the others.
    let leaving = cluster.node(0).clone();
    leaving.entries().sync().await;
    let entries_scale_in = leaving.stats().entries;
    let remaining: Vec<String> = cluster.running().into_iter().skip(1).collect();
    let t = Instant::now();
    client.set_members(None, remaining).await?;
    let drained = leaving.wait_drained(Duration::from_secs(30)).await;
    let drain_ms = t.elapsed().as_millis() as u64;
    anyhow::ensure!(drained, "the removed node did not drain in 30 s");
    let accepted = leaving.stats().handoff_sent;
    cluster.stop_node(0).await;
    let during = setup
        .load(&client, setup.plan(args.window_ops / 4, args.seed + 4))
        .await;

    // Scale to zero: graceful shutdown writes the manifests.
    cluster.shutdown().await;
    let (prewarm_hit_ratio, failed_c, prewarmed) = reload(&setup, true).await?;
    let (cold_hit_ratio, failed_d, _) = reload(&setup, false).await?;

    let report = ScaleReport {
        nodes: args.nodes,
        moved_fraction: moved,
        ideal_fraction: 1.0 / (args.nodes + 1) as f64,
        hit_ratio_before: before,
        hit_ratio_after_handoff: after,
        hit_ratio_after_no_handoff: after_no_handoff,
        handoff_tier_reads: handoff_reads,
        lost_entries_scale_in: entries_scale_in.saturating_sub(accepted),
        entries_scale_in,
        drain_ms,
        prewarm_hit_ratio,
        cold_hit_ratio,
        prewarmed_entries: prewarmed,
        failed_requests: failed_a + failed_b + during.errors + failed_c + failed_d,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let mut table = Table::new(["figure", "value"]);
    let f = |x: f64| format!("{x:.3}");
    table.row(["moved fraction (N -> N+1)", &f(report.moved_fraction)]);
    table.row(["  ideal 1/(N+1)", &f(report.ideal_fraction)]);
    table.row(["hit ratio before", &f(report.hit_ratio_before)]);
    table.row([
        "hit ratio after, handoff",
        &f(report.hit_ratio_after_handoff),
    ]);
    table.row([
        "hit ratio after, no handoff",
        &f(report.hit_ratio_after_no_handoff),
    ]);
    table.row([
        "  reads from previous owner",
        &report.handoff_tier_reads.to_string(),
    ]);
    table.row([
        "lost entries at scale-in",
        &format!(
            "{} of {}",
            report.lost_entries_scale_in, report.entries_scale_in
        ),
    ]);
    table.row(["  drain time", &format!("{} ms", report.drain_ms)]);
    table.row([
        "first requests after reload, pre-warmed",
        &f(report.prewarm_hit_ratio),
    ]);
    table.row(["  cold", &f(report.cold_hit_ratio)]);
    table.row([
        "  entries pre-warmed",
        &report.prewarmed_entries.to_string(),
    ]);
    table.row(["failed requests", &report.failed_requests.to_string()]);
    table.row(["elapsed", &format!("{:.1} s", report.elapsed_s)]);
    print!("{table}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    Ok(report)
}
