//! `cache-bench demo`: the project's main job. Three in-process nodes over a local-file store,
//! a short Zipf read/write workload with values of 256 B to 16 KiB, run through cachelet and,
//! side by side, the bare store, Redis (skipped with a message when `redis-server` is missing)
//! and the offline OPT and LRU; then the table and the charts. It is [`crate::bench::run`]
//! with small defaults.

use std::path::PathBuf;

use crate::bench::{self, Baseline, Missing, RunArgs};
use crate::workload::{KeyDist, ValueSizes};

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
    /// Directory for the charts (default: a new temporary directory, kept).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The demo's value sizes: 256 B to 16 KiB in powers of two, equally likely.
pub fn demo_sizes() -> ValueSizes {
    ValueSizes::Weighted((0..7).map(|i| (256u32 << i, 1.0)).collect())
}

/// Runs the demo: prints the table and writes the charts.
///
/// # Errors
/// When the store or the nodes cannot be set up, or a request fails.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let plot = match args.plot {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("cachelet-demo-")
            .tempdir()?
            .keep(),
    };
    println!("cachelet demo: 3 nodes on loopback over a local-file store, with baselines");
    bench::run(
        RunArgs {
            keys: args.objects,
            dist: KeyDist::Zipf(0.99),
            value_sizes: Some(demo_sizes()),
            read_ratio: args.read_ratio,
            ops: args.ops,
            concurrency: args.concurrency,
            seed: args.seed,
            nodes: 3,
            in_process: true,
            app: "demo".into(),
            capacity: Some(args.capacity),
            store: "file".into(),
            baseline: vec![Baseline::Store, Baseline::Redis, Baseline::Opt],
            json: args.json,
            plot: Some(plot),
            ..RunArgs::default()
        },
        Missing::Skip,
    )
    .await?;
    Ok(())
}
