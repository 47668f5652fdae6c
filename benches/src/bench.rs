//! `cache-bench run`: one workload against cachelet and the baselines, in one run.
//!
//! 1. Build the [`Plan`]: a synthetic workload, or a trace ([`crate::trace::load`]).
//! 2. Open the blob store and create every blob the plan reads.
//! 3. Run the plan through cachelet: `--nodes` `cache-server` processes (the default), an
//!    embedded [`LocalCluster`] (`--in-process`), or running
//!    servers (`--connect`).
//! 4. Run the exact same request sequence against each baseline: `store` (no cache), `redis`
//!    (cache-aside on a `redis-server` started here, `maxmemory` = the cluster's capacity,
//!    `allkeys-lru`), and the offline `opt` and `lru` simulators at the same capacity.
//! 5. Print the table, write `--json` and `--plot`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_client::CacheClient;
use cache_core::entries::ENTRY_OVERHEAD_BYTES;
use cache_server::cluster::LocalCluster;
use cache_server::store::open_store;
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use object_store::aws::AmazonS3Builder;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{Value, json};

use crate::plot::{self, ChartData, Latencies, Timeline};
use crate::redis_server::RedisServer;
use crate::report::Table;
use crate::runner::{self, DriveOptions, RunResult, Source, System, ratio};
use crate::sim::{self, SimRequest, SimResult};
use crate::trace::{self, ReplayOptions};
use crate::workload::{Generator, KeyDist, Plan, ValueSizes, Workload};

/// A baseline to measure beside cachelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// The blob store with no cache.
    Store,
    /// Redis as a cache-aside in front of the store.
    Redis,
    /// Belady's offline optimum (and LRU beside it).
    Opt,
    /// A plain LRU, offline.
    Lru,
}

/// The settings of `cache-bench run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Distinct keys of a synthetic workload.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u32,
    /// Key distribution: zipf:S, uniform, or hotspot:FRAC_KEYS:FRAC_OPS.
    #[arg(long, default_value = "zipf:0.99")]
    pub dist: KeyDist,
    /// Size of every value.
    #[arg(long, default_value = "1KiB", conflicts_with = "value_size_dist")]
    pub value_size: bytesize::ByteSize,
    /// A file of value size classes, one `SIZE [WEIGHT]` a line; each key draws one.
    #[arg(long)]
    pub value_size_dist: Option<PathBuf>,
    /// Size classes given in code (the demo's); they take precedence over the two flags.
    #[arg(skip)]
    pub value_sizes: Option<ValueSizes>,
    /// The share of requests that are gets.
    #[arg(long, default_value_t = 0.95)]
    pub read_ratio: f64,
    /// Requests in the run.
    #[arg(long, default_value_t = 200_000, conflicts_with = "duration")]
    pub ops: usize,
    /// Run for this long instead of a number of requests (for example 30s, 500ms, 2m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Workload seed: the same seed gives the same requests and sizes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Nodes of the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Runs the nodes inside this process, on its runtime, instead of as `cache-server`
    /// processes of their own (as Redis runs). Needed for `--store memory`.
    #[arg(long)]
    pub in_process: bool,
    /// The cache-server to run (default: cache-server next to this executable, else this
    /// executable's own copy of it; `self` forces the latter).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Running cache-servers to use instead of an embedded cluster (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub connect: Vec<String>,
    /// The app name the cache serves.
    #[arg(long, default_value = "bench")]
    pub app: String,
    /// Cache capacity per node (default: 10% of the data set, over all nodes).
    #[arg(long)]
    pub capacity: Option<bytesize::ByteSize>,
    /// The blob store: file (a temporary directory), file:DIR, memory, s3:ENDPOINT (an
    /// S3-compatible server such as moto; bucket cachelet-bench), or a store URL.
    #[arg(long, default_value = "file")]
    pub store: String,
    /// Replay this trace (Azure Functions Blob Access Trace 2020 schema) instead of a
    /// synthetic workload.
    #[arg(long, conflicts_with = "duration")]
    pub trace: Option<PathBuf>,
    /// Multiply trace blob sizes by this.
    #[arg(long, default_value_t = 1.0)]
    pub size_scale: f64,
    /// Replay trace timestamps at this multiple of real time (default: as fast as possible).
    #[arg(long)]
    pub speed: Option<f64>,
    /// Baselines to run beside cachelet (comma-separated): store, redis, opt, lru.
    #[arg(long, value_delimiter = ',')]
    pub baseline: Vec<Baseline>,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write PNG and SVG charts into this directory.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Tokens and TLS for the cluster and its client (not with `--connect`).
    #[arg(long, value_enum, default_value_t = crate::security::SecurityMode::Plain)]
    pub security: crate::security::SecurityMode,
}

impl Default for RunArgs {
    fn default() -> Self {
        Self {
            keys: 100_000,
            dist: KeyDist::Zipf(0.99),
            value_size: bytesize::ByteSize::kib(1),
            value_size_dist: None,
            value_sizes: None,
            read_ratio: 0.95,
            ops: 200_000,
            duration: None,
            concurrency: 64,
            seed: 1,
            nodes: 3,
            in_process: false,
            server_bin: None,
            connect: Vec::new(),
            app: "bench".into(),
            capacity: None,
            store: "file".into(),
            trace: None,
            size_scale: 1.0,
            speed: None,
            baseline: Vec::new(),
            json: None,
            plot: None,
            no_progress: false,
            security: crate::security::SecurityMode::Plain,
        }
    }
}

/// Parses `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
///
/// # Errors
/// A message for anything else.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}: use 500ms, 30s, 2m or 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit {unit:?}: use ms, s, m or h")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("a duration must be positive: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// How a run treats a baseline that needs a missing server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Fail the run.
    Fail,
    /// Skip the baseline with a message (the demo).
    Skip,
}

/// Everything a run measured.
#[derive(Debug)]
pub struct Report {
    /// A one-line description of the workload.
    pub title: String,
    /// cachelet.
    pub cachelet: RunResult,
    /// The store baseline, when run.
    pub store: Option<RunResult>,
    /// The Redis baseline, when run.
    pub redis: Option<RunResult>,
    /// Why the Redis baseline was skipped, when it was asked for and skipped.
    pub redis_skipped: Option<String>,
    /// The `maxmemory` Redis ran with: the cluster's capacity plus Redis's empty footprint.
    pub redis_maxmemory: Option<u64>,
    /// The offline optimum, when run.
    pub opt: Option<SimResult>,
    /// Offline LRU, when run.
    pub lru: Option<SimResult>,
    /// Total cache capacity in bytes (all nodes).
    pub capacity_bytes: u64,
    /// Bytes of the data set.
    pub data_bytes: u64,
    /// The plan that was replayed (with the exact request sequence).
    pub plan: Plan,
    /// The JSON document (also written to `--json`).
    pub json: Value,
}

struct StoreHandle {
    store: Arc<dyn ObjectStore>,
    /// The URL and environment that `cache-server` processes open it with; `None` for a
    /// store only this process can reach (memory).
    url: Option<(String, Vec<(String, String)>)>,
    describe: String,
    _dir: Option<tempfile::TempDir>,
}

const S3_BUCKET: &str = "cachelet-bench";

/// The cluster a run starts: embedded nodes, or `cache-server` processes.
enum Cluster {
    InProcess(LocalCluster),
    Processes(crate::procs::ProcessCluster),
}

async fn open(spec: &str) -> anyhow::Result<StoreHandle> {
    if spec == "file" {
        let dir = tempfile::Builder::new().prefix("cache-bench-").tempdir()?;
        let url = format!("file://{}", dir.path().display());
        let store = open_store(&url)?;
        return Ok(StoreHandle {
            store,
            url: Some((url, Vec::new())),
            describe: format!("local files in {}", dir.path().display()),
            _dir: Some(dir),
        });
    }
    if let Some(dir) = spec.strip_prefix("file:")
        && !dir.starts_with("//")
    {
        let abs = std::path::absolute(dir)?;
        let url = format!("file://{}", abs.display());
        return Ok(StoreHandle {
            store: open_store(&url)?,
            url: Some((url, Vec::new())),
            describe: format!("local files in {}", abs.display()),
            _dir: None,
        });
    }
    if spec == "memory" {
        return Ok(StoreHandle {
            store: Arc::new(InMemory::new()),
            url: None,
            describe: "in-process memory".into(),
            _dir: None,
        });
    }
    if let Some(endpoint) = spec.strip_prefix("s3:")
        && !endpoint.starts_with("//")
    {
        let endpoint = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        if endpoint.starts_with("http://") {
            cache_testkit::moto::create_bucket(&endpoint, S3_BUCKET).await?;
        }
        let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
        let (region, key, secret) = (
            env("AWS_REGION", "us-east-1"),
            env("AWS_ACCESS_KEY_ID", "testing"),
            env("AWS_SECRET_ACCESS_KEY", "testing"),
        );
        let store = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_bucket_name(S3_BUCKET)
            .with_region(&region)
            .with_access_key_id(&key)
            .with_secret_access_key(&secret)
            .build()?;
        let vars = [
            ("AWS_ENDPOINT", endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_REGION", region),
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .to_vec();
        return Ok(StoreHandle {
            store: Arc::new(store),
            url: Some((format!("s3://{S3_BUCKET}"), vars)),
            describe: format!("S3 at {endpoint}, bucket {S3_BUCKET}"),
            _dir: None,
        });
    }
    if spec.contains("://") {
        return Ok(StoreHandle {
            store: open_store(spec)?,
            url: Some((spec.to_owned(), Vec::new())),
            describe: spec.to_owned(),
            _dir: None,
        });
    }
    anyhow::bail!("unknown --store {spec:?}: use file, file:DIR, memory, s3:ENDPOINT or a URL")
}

fn bar(len: u64, prefix: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {msg} {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_owned());
    bar
}

async fn preload(store: &Arc<dyn ObjectStore>, plan: &Plan, progress: bool) -> anyhow::Result<()> {
    let filler = bytes::Bytes::from(vec![b'x'; plan.max_size().max(1) as usize]);
    let bar = bar(plan.preload.len() as u64, "preload", progress);
    let mut puts = futures::stream::iter(plan.preload.iter().map(|&(key, size)| {
        let (store, value) = (store.clone(), filler.slice(..size as usize));
        let name = Path::from(plan.names[key as usize].as_str());
        async move { store.put(&name, PutPayload::from(value)).await }
    }))
    .buffer_unordered(32);
    while let Some(put) = puts.next().await {
        put?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

struct NodeTotals {
    store_reads: u64,
    store_read_bytes: u64,
    capacity: u64,
}

async fn node_totals(client: &CacheClient) -> anyhow::Result<NodeTotals> {
    let stats = client.stats().await?;
    let mut t = NodeTotals {
        store_reads: 0,
        store_read_bytes: 0,
        capacity: 0,
    };
    for n in &stats.nodes {
        let s = n.stats.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "node {} did not report its counters: {}",
                n.addr,
                n.error.as_deref().unwrap_or("no reason given")
            )
        })?;
        t.store_reads += s.store_reads;
        t.store_read_bytes += s.store_read_bytes;
        t.capacity += s.capacity_bytes;
    }
    Ok(t)
}

/// The version length the offline simulators charge per entry.
const SIM_VERSION_BYTES: u64 = 32;

fn sim_requests(plan: &Plan, requests: &[crate::workload::Request]) -> Vec<SimRequest> {
    requests
        .iter()
        .map(|r| SimRequest {
            key: r.key,
            write: r.write,
            // What the cache's weigher charges: key, value, version and per-entry overhead.
            // Versions are not known offline; a store's ETag is about 32 bytes.
            weight: u64::from(r.size)
                + plan.names[r.key as usize].len() as u64
                + SIM_VERSION_BYTES
                + ENTRY_OVERHEAD_BYTES,
        })
        .collect()
}

/// Runs the benchmark, prints its table, and writes the JSON and charts it was asked for.
///
/// # Errors
/// Bad settings, a store or cluster that cannot be set up, a missing `redis-server` when
/// `missing` is [`Missing::Fail`], or requests that failed.
pub async fn run(args: RunArgs, missing: Missing) -> anyhow::Result<Report> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.read_ratio),
        "--read-ratio must lie in [0, 1]"
    );
    anyhow::ensure!(args.size_scale > 0.0, "--size-scale must be positive");
    anyhow::ensure!(
        args.speed.is_none_or(|s| s > 0.0),
        "--speed must be positive"
    );
    anyhow::ensure!(
        args.connect.is_empty() || args.nodes > 0,
        "--nodes must be at least 1"
    );
    let want = |b: Baseline| args.baseline.contains(&b);
    let progress = !args.no_progress;
    let max_value = cache_core::DEFAULT_MAX_VALUE_BYTES.min(u64::from(u32::MAX)) as u32;

    // 1. The plan.
    let mut stream: Option<(Generator, Arc<Vec<u32>>)> = None;
    let (plan, title) = if let Some(path) = &args.trace {
        let loaded = trace::load(
            path,
            ReplayOptions {
                size_scale: args.size_scale,
                max_value,
            },
        )?;
        if loaded.clamped > 0 {
            println!(
                "note: {} accesses were larger than the {} value limit and were clamped",
                loaded.clamped,
                bytesize::ByteSize(u64::from(max_value)).display().iec()
            );
        }
        let title = format!(
            "trace {} ({} accesses, {} apps, size x{})",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            loaded.rows,
            loaded.plan.apps.len(),
            args.size_scale
        );
        (loaded.plan, title)
    } else {
        anyhow::ensure!(args.keys > 0, "--keys must be at least 1");
        let sizes = match (&args.value_sizes, &args.value_size_dist) {
            (Some(sizes), _) => sizes.clone(),
            (None, Some(path)) => ValueSizes::from_file(path)?,
            (None, None) => {
                let size = u32::try_from(args.value_size.as_u64())
                    .ok()
                    .filter(|s| *s > 0 && *s <= max_value)
                    .ok_or_else(|| anyhow::anyhow!("--value-size must be 1 B to 16 MiB"))?;
                ValueSizes::Fixed(size)
            }
        };
        let key_sizes = Arc::new(sizes.assign(args.keys, args.seed));
        let workload = Workload {
            keys: args.keys,
            dist: args.dist,
            read_ratio: args.read_ratio,
            ops: if args.duration.is_some() { 0 } else { args.ops },
            seed: args.seed,
        };
        let ops = workload.generate();
        if args.duration.is_some() {
            stream = Some((Generator::new(&workload), key_sizes.clone()));
        }
        let plan = Plan::synthetic(&workload, &key_sizes, &ops);
        let size = match (&sizes, &args.value_size_dist) {
            (ValueSizes::Fixed(_), _) => format!("{} values", args.value_size.display().iec()),
            (_, Some(p)) => format!("sizes from {}", p.display()),
            (ValueSizes::Weighted(c), None) => format!(
                "values of {} to {}",
                bytesize::ByteSize(c.iter().map(|x| u64::from(x.0)).min().unwrap_or(0))
                    .display()
                    .iec(),
                bytesize::ByteSize(c.iter().map(|x| u64::from(x.0)).max().unwrap_or(0))
                    .display()
                    .iec()
            ),
        };
        let dist = match args.dist {
            KeyDist::Zipf(s) => format!("Zipf {s}"),
            KeyDist::Uniform => "uniform".into(),
            KeyDist::Hotspot {
                frac_keys,
                frac_ops,
            } => format!("hotspot {frac_keys}:{frac_ops}"),
        };
        let len = match args.duration {
            Some(d) => format!("{:.1} s", d.as_secs_f64()),
            None => format!("{} ops", args.ops),
        };
        let title = format!(
            "{dist} over {} keys, {size}, {:.0}% gets, {len}",
            args.keys,
            args.read_ratio * 100.0
        );
        (plan, title)
    };
    let data_bytes = plan.data_bytes();

    // 2. The store.
    let store = open(&args.store).await?;
    preload(&store.store, &plan, progress).await?;

    // 3. cachelet.
    let nodes = if args.connect.is_empty() {
        args.nodes
    } else {
        args.connect.len()
    };
    anyhow::ensure!(nodes > 0, "--nodes must be at least 1");
    let per_node = match args.capacity {
        Some(c) => c.as_u64(),
        None => (data_bytes / 10 / nodes as u64).max(64 << 10),
    };
    let security = crate::security::BenchSecurity::new(args.security, &args.app)?;
    let cluster = match (args.connect.is_empty(), args.in_process, &store.url) {
        (false, _, _) => None,
        (true, true, _) => {
            let s = store.store.clone();
            let app = args.app.clone();
            Some(Cluster::InProcess(
                LocalCluster::start(nodes, |b| {
                    security.node(b.app(app.clone()).store(s.clone()).capacity_bytes(per_node))
                })
                .await?,
            ))
        }
        (true, false, None) => anyhow::bail!(
            "--store {} is in this process only: add --in-process, or use a store that \
             cache-server processes can open",
            args.store
        ),
        (true, false, Some((url, env))) => {
            let bin = crate::procs::ServerBin::resolve(args.server_bin.as_deref())?;
            let admin = security.admin(CacheClient::builder().app(args.app.clone()));
            let flags = |dir: &std::path::Path| {
                let mut flags = security.node_args(dir)?;
                flags.extend(["--capacity".to_owned(), per_node.to_string()]);
                Ok(flags)
            };
            let store = crate::procs::ProcessStore {
                url: url.clone(),
                env: env.clone(),
            };
            Some(Cluster::Processes(
                crate::procs::ProcessCluster::start(
                    nodes,
                    bin,
                    &args.app,
                    Some(store),
                    flags,
                    admin,
                )
                .await?,
            ))
        }
    };
    let addrs = match &cluster {
        Some(Cluster::InProcess(c)) => c.addrs(),
        Some(Cluster::Processes(c)) => c.addrs(),
        None => args.connect.clone(),
    };
    let client = security
        .client(
            CacheClient::builder()
                .app(args.app.clone())
                .nodes(addrs)
                .timeout(Duration::from_secs(30)),
        )
        .build()
        .await?;
    // Counters need an admin token where tokens are checked; the workload's client has a
    // data token.
    let admin = security
        .admin(
            CacheClient::builder()
                .app(args.app.clone())
                .nodes(client.membership().members().to_vec())
                .timeout(Duration::from_secs(30)),
        )
        .build()
        .await?;
    let before = node_totals(&admin).await?;
    let capacity_bytes = before.capacity;
    println!(
        "cache-bench: {title}\n  cachelet: {} on loopback, {} per node ({} in all, {:.1}% of \
         the {} data set)\n  store: {}\n  {} requests in flight",
        match &cluster {
            Some(Cluster::InProcess(_)) => format!("{nodes} nodes inside this process"),
            Some(Cluster::Processes(_)) => format!("{nodes} cache-server processes"),
            None => format!("{nodes} running nodes"),
        },
        bytesize::ByteSize(capacity_bytes / nodes as u64)
            .display()
            .iec(),
        bytesize::ByteSize(capacity_bytes).display().iec(),
        100.0 * capacity_bytes as f64 / data_bytes.max(1) as f64,
        bytesize::ByteSize(data_bytes).display().iec(),
        store.describe,
        args.concurrency,
    );
    let opts = DriveOptions {
        concurrency: args.concurrency,
        duration: args.duration,
        speed: args.speed,
        progress,
        sample_interval: Duration::from_millis(100),
    };
    let source = Arc::new(match stream {
        Some((generator, sizes)) => Source::stream(generator, sizes),
        None => Source::fixed(plan.requests.clone()),
    });
    let mut cachelet =
        runner::drive(&System::Cachelet(client.clone()), &plan, &source, &opts).await;
    let after = node_totals(&admin).await?;
    cachelet.store_reads = after.store_reads - before.store_reads;
    cachelet.store_read_bytes = after.store_read_bytes - before.store_read_bytes;
    match cluster {
        Some(Cluster::InProcess(c)) => {
            tokio::time::timeout(Duration::from_secs(20), c.shutdown()).await?;
        }
        Some(Cluster::Processes(c)) => drop(c),
        None => {}
    }
    let requests = Arc::try_unwrap(source)
        .map(Source::into_requests)
        .unwrap_or_else(|s| match &*s {
            Source::Fixed { requests, .. } => requests.clone(),
            Source::Stream(_) => Arc::new(Vec::new()),
        });
    let plan = Plan {
        requests: requests.clone(),
        ..plan
    };

    // 4. Baselines, on the same sequence and with no time bound.
    let fixed = DriveOptions {
        duration: None,
        ..opts.clone()
    };
    let store_run = if want(Baseline::Store) {
        let src = Arc::new(Source::fixed(requests.clone()));
        Some(runner::drive(&System::Store(store.store.clone()), &plan, &src, &fixed).await)
    } else {
        None
    };
    let (mut redis_run, mut redis_skipped, mut redis_maxmemory) = (None, None, None);
    if want(Baseline::Redis) {
        if RedisServer::available() {
            let server = RedisServer::start(capacity_bytes).await?;
            let con = server.connect().await?;
            // Redis counts its own baseline memory against maxmemory; give its data the
            // cluster's capacity on top of that.
            redis_maxmemory = Some(server.limit_data_memory(capacity_bytes).await?);
            let src = Arc::new(Source::fixed(requests.clone()));
            let system = System::Redis {
                con,
                store: store.store.clone(),
            };
            redis_run = Some(runner::drive(&system, &plan, &src, &fixed).await);
        } else if missing == Missing::Skip {
            let why = "redis-server is not on PATH (apt-get install redis-server)".to_owned();
            println!("skipping the redis baseline: {why}");
            redis_skipped = Some(why);
        } else {
            anyhow::bail!(
                "the redis baseline needs redis-server on PATH (apt-get install redis-server)"
            );
        }
    } else {
        redis_skipped = Some("not requested".into());
    }
    let (opt, lru) = if want(Baseline::Opt) || want(Baseline::Lru) {
        let reqs = sim_requests(&plan, &requests);
        let t = Instant::now();
        let opt = want(Baseline::Opt).then(|| sim::opt(&reqs, capacity_bytes));
        let lru = sim::lru(&reqs, capacity_bytes);
        tracing::debug!(elapsed = ?t.elapsed(), "simulated");
        (opt, Some(lru))
    } else {
        (None, None)
    };

    // 5. Report.
    let mut report = Report {
        title,
        cachelet,
        store: store_run,
        redis: redis_run,
        redis_skipped,
        redis_maxmemory,
        opt,
        lru,
        capacity_bytes,
        data_bytes,
        plan,
        json: Value::Null,
    };
    report.json = to_json(&report, &args, &store.describe);
    print!("{}", main_table(&report));
    print!("{}", ratio_table(&report));
    if report.plan.apps.len() > 1 {
        print!("{}", app_table(&report));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    if let Some(dir) = &args.plot {
        let charts = plot::write_charts(dir, &chart_data(&report))?;
        if let Some(e) = &charts.font_error {
            eprintln!("error: PNG charts not written: {e}. The SVGs are written without text.");
        }
        for f in &charts.files {
            println!("chart: {}", f.display());
        }
    }
    let failed: Vec<String> = [
        Some(&report.cachelet),
        report.store.as_ref(),
        report.redis.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter(|r| r.errors > 0)
    .map(|r| {
        format!(
            "{}: {} requests failed (first: {})",
            r.system,
            r.errors,
            r.first_error.as_deref().unwrap_or("?")
        )
    })
    .collect();
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    Ok(report)
}

fn latency(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "max": h.max(),
    })
}

fn by_tier(r: &RunResult) -> Value {
    let t = r.by_tier;
    let n = t.total();
    json!({
        "local": ratio(t.local, n),
        "home": ratio(t.home, n),
        "handoff": ratio(t.handoff, n),
        "store": ratio(t.store, n),
    })
}

fn system_json(r: &RunResult) -> Value {
    json!({
        "ops": r.ops,
        "gets": r.gets,
        "puts": r.puts,
        "not_found": r.not_found,
        "errors": r.errors,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "throughput_ops_s": r.throughput(),
        "hit_ratio": r.hit_ratio(),
        "hit_ratio_by_tier": by_tier(r),
        "latency_us": latency(&r.latency_us),
        "hit_latency_us": latency(&r.hit_latency_us),
        "miss_latency_us": latency(&r.miss_latency_us),
        "store_reads": r.store_reads,
        "store_read_bytes": r.store_read_bytes,
    })
}

fn p50(h: &Histogram<u64>) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(0.5) as f64)
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The ratios of cachelet against each baseline. `None` where a baseline was not run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Ratios {
    /// cachelet p50 / Redis p50 (target ≤ 1).
    pub p50_vs_redis: Option<f64>,
    /// cachelet throughput / Redis throughput (target ≥ 1).
    pub throughput_vs_redis: Option<f64>,
    /// cachelet hit ratio / Redis hit ratio.
    pub hit_ratio_vs_redis: Option<f64>,
    /// cachelet store bytes / Redis's store bytes.
    pub store_bytes_vs_redis: Option<f64>,
    /// cachelet p50 / store p50.
    pub p50_vs_store: Option<f64>,
    /// cachelet throughput / store throughput.
    pub throughput_vs_store: Option<f64>,
    /// cachelet store bytes / the store baseline's bytes.
    pub store_bytes_vs_store: Option<f64>,
    /// store get p50 / cachelet hit p50: how many times faster a hit is (target ≥ 20).
    pub hit_speedup_vs_store_p50: Option<f64>,
    /// cachelet hit ratio / OPT's (target ≥ 0.9).
    pub hit_ratio_vs_opt: Option<f64>,
    /// cachelet hit ratio / LRU's (target > 1).
    pub hit_ratio_vs_lru: Option<f64>,
}

/// The ratios of a report.
pub fn ratios(r: &Report) -> Ratios {
    let c = &r.cachelet;
    let bytes = |x: &RunResult| Some(x.store_read_bytes as f64);
    Ratios {
        p50_vs_redis: r
            .redis
            .as_ref()
            .and_then(|x| div(p50(&c.latency_us), p50(&x.latency_us))),
        throughput_vs_redis: r
            .redis
            .as_ref()
            .and_then(|x| div(Some(c.throughput()), Some(x.throughput()))),
        hit_ratio_vs_redis: r
            .redis
            .as_ref()
            .and_then(|x| div(Some(c.hit_ratio()), Some(x.hit_ratio()))),
        store_bytes_vs_redis: r.redis.as_ref().and_then(|x| div(bytes(c), bytes(x))),
        p50_vs_store: r
            .store
            .as_ref()
            .and_then(|x| div(p50(&c.latency_us), p50(&x.latency_us))),
        throughput_vs_store: r
            .store
            .as_ref()
            .and_then(|x| div(Some(c.throughput()), Some(x.throughput()))),
        store_bytes_vs_store: r.store.as_ref().and_then(|x| div(bytes(c), bytes(x))),
        hit_speedup_vs_store_p50: r
            .store
            .as_ref()
            .and_then(|x| div(p50(&x.miss_latency_us), p50(&c.hit_latency_us))),
        hit_ratio_vs_opt: r
            .opt
            .as_ref()
            .and_then(|o| div(Some(c.hit_ratio()), Some(o.hit_ratio()))),
        hit_ratio_vs_lru: r
            .lru
            .as_ref()
            .and_then(|o| div(Some(c.hit_ratio()), Some(o.hit_ratio()))),
    }
}

fn app_rows(r: &Report) -> Vec<Value> {
    let apps = r.plan.apps.len();
    let mut per_app_sim = |sim: &SimResult| {
        let mut hits = vec![0u64; apps];
        for (i, req) in r.plan.requests.iter().enumerate() {
            if sim.hits[i] {
                hits[r.plan.app_of_key[req.key as usize] as usize] += 1;
            }
        }
        hits
    };
    let opt = r.opt.as_ref().map(&mut per_app_sim);
    let lru = r.lru.as_ref().map(&mut per_app_sim);
    let mut order: Vec<usize> = (0..apps).collect();
    let busy = |a: usize| r.cachelet.per_app[a].gets + r.cachelet.per_app[a].puts;
    order.sort_by_key(|&a| std::cmp::Reverse(busy(a)));
    order
        .into_iter()
        .take(10)
        .map(|a| {
            let c = r.cachelet.per_app[a];
            let of = |x: Option<&Vec<u64>>| x.map(|h| ratio(h[a], c.gets));
            json!({
                "app": r.plan.apps[a],
                "accesses": c.gets + c.puts,
                "gets": c.gets,
                "puts": c.puts,
                "hit_ratio": ratio(c.hits, c.gets),
                "redis_hit_ratio": r.redis.as_ref().map(|x| ratio(x.per_app[a].hits, x.per_app[a].gets)),
                "opt_hit_ratio": of(opt.as_ref()),
                "lru_hit_ratio": of(lru.as_ref()),
            })
        })
        .collect()
}

fn to_json(r: &Report, args: &RunArgs, store: &str) -> Value {
    let c = &r.cachelet;
    let mut doc = system_json(c);
    let skipped = |why: &str| json!({"hit_ratio": null, "throughput_ops_s": null, "latency_us": null, "skipped": why});
    let sim = |s: &Option<SimResult>| match s {
        Some(s) => json!({"hit_ratio": s.hit_ratio(), "hits": s.hit_count(), "gets": s.gets}),
        None => json!({"hit_ratio": null, "skipped": "not requested"}),
    };
    doc["system"] = json!("cachelet");
    doc["workload"] = json!({
        "title": r.title,
        "trace": args.trace.as_ref().map(|p| p.display().to_string()),
        "keys": r.plan.names.len(),
        "requests": r.plan.requests.len(),
        "data_bytes": r.data_bytes,
        // A trace sets its own keys, mix and order; these describe synthetic workloads only.
        "dist": args.trace.is_none().then(|| format!("{:?}", args.dist)),
        "read_ratio": args.trace.is_none().then_some(args.read_ratio),
        "seed": args.trace.is_none().then_some(args.seed),
        "concurrency": args.concurrency,
        "size_scale": args.size_scale,
        "speed": args.speed,
    });
    doc["cluster"] = json!({
        "nodes": if args.connect.is_empty() { args.nodes } else { args.connect.len() },
        "embedded": args.connect.is_empty() && args.in_process,
        "processes": args.connect.is_empty() && !args.in_process,
        "capacity_bytes": r.capacity_bytes,
        "store": store,
    });
    doc["baselines"] = json!({
        "store": r.store.as_ref().map_or_else(|| skipped("not requested"), system_json),
        "redis": r.redis.as_ref().map_or_else(
            || skipped(r.redis_skipped.as_deref().unwrap_or("not requested")),
            system_json,
        ),
        "opt": sim(&r.opt),
        "lru": sim(&r.lru),
    });
    if let Some(max) = r.redis_maxmemory {
        doc["baselines"]["redis"]["maxmemory"] = json!(max);
    }
    doc["ratios"] = serde_json::to_value(ratios(r)).unwrap_or(Value::Null);
    doc["apps"] = json!(app_rows(r));
    doc["timeline"] = json!(
        plot::windowed_hit_ratio(&c.samples, 200)
            .into_iter()
            .map(|(t, h)| json!({"t_s": t, "hit_ratio": h}))
            .collect::<Vec<_>>()
    );
    doc["scale_events"] = json!(c.scale_events);
    doc
}

fn fmt_ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn system_row(t: &mut Table, r: &RunResult) {
    let n = r.by_tier.total();
    let h = &r.latency_us;
    t.row([
        r.system.as_str(),
        &format!("{:.3}", r.hit_ratio()),
        &format!("{:.3}", ratio(r.by_tier.local, n)),
        &format!("{:.3}", ratio(r.by_tier.home, n)),
        &format!("{:.3}", ratio(r.by_tier.handoff, n)),
        &format!("{:.3}", ratio(r.by_tier.store, n)),
        &h.value_at_quantile(0.5).to_string(),
        &h.value_at_quantile(0.9).to_string(),
        &h.value_at_quantile(0.99).to_string(),
        &h.value_at_quantile(0.999).to_string(),
        &format!("{:.0}", r.throughput()),
        &bytesize::ByteSize(r.store_read_bytes)
            .display()
            .iec()
            .to_string(),
        &r.errors.to_string(),
    ]);
}

/// The table with one row per system.
pub fn main_table(r: &Report) -> String {
    let mut t = Table::new([
        "system",
        "hit ratio",
        "local",
        "home",
        "handoff",
        "store",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "ops/s",
        "store read",
        "errors",
    ]);
    system_row(&mut t, &r.cachelet);
    for x in [&r.store, &r.redis].into_iter().flatten() {
        system_row(&mut t, x);
    }
    for (name, s) in [("opt (offline)", &r.opt), ("lru (offline)", &r.lru)] {
        if let Some(s) = s {
            t.row([
                name,
                &format!("{:.3}", s.hit_ratio()),
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
            ]);
        }
    }
    let c = &r.cachelet;
    format!(
        "\n{t}cachelet: {} requests ({} gets, {} puts) in {:.2} s; hits p50 {} us, misses p50 {} us\n",
        c.ops,
        c.gets,
        c.puts,
        c.elapsed.as_secs_f64(),
        p50(&c.hit_latency_us).map_or("-".into(), |v| v.to_string()),
        p50(&c.miss_latency_us).map_or("-".into(), |v| v.to_string()),
    )
}

/// The table of cachelet's ratios against each baseline.
pub fn ratio_table(r: &Report) -> String {
    let x = ratios(r);
    let mut t = Table::new([
        "cachelet vs",
        "hit ratio x",
        "p50 x",
        "throughput x",
        "store bytes x",
        "hit p50 speed-up",
    ]);
    if r.store.is_some() {
        t.row([
            "store",
            "-",
            &fmt_ratio(x.p50_vs_store),
            &fmt_ratio(x.throughput_vs_store),
            &fmt_ratio(x.store_bytes_vs_store),
            &fmt_ratio(x.hit_speedup_vs_store_p50),
        ]);
    }
    if r.redis.is_some() {
        t.row([
            "redis",
            &fmt_ratio(x.hit_ratio_vs_redis),
            &fmt_ratio(x.p50_vs_redis),
            &fmt_ratio(x.throughput_vs_redis),
            &fmt_ratio(x.store_bytes_vs_redis),
            "-",
        ]);
    }
    if r.opt.is_some() {
        t.row(["opt", &fmt_ratio(x.hit_ratio_vs_opt), "-", "-", "-", "-"]);
    }
    if r.lru.is_some() {
        t.row(["lru", &fmt_ratio(x.hit_ratio_vs_lru), "-", "-", "-", "-"]);
    }
    if r.store.is_none() && r.redis.is_none() && r.opt.is_none() && r.lru.is_none() {
        return String::new();
    }
    format!("\n{t}")
}

/// Per-app hit ratios of the 10 busiest apps.
pub fn app_table(r: &Report) -> String {
    let mut t = Table::new([
        "app (10 busiest)",
        "accesses",
        "gets",
        "puts",
        "cachelet",
        "redis",
        "opt",
        "lru",
    ]);
    for row in app_rows(r) {
        let f = |k: &str| {
            row[k]
                .as_f64()
                .map_or_else(|| "-".into(), |v| format!("{v:.3}"))
        };
        t.row([
            row["app"].as_str().unwrap_or(""),
            &row["accesses"].to_string(),
            &row["gets"].to_string(),
            &row["puts"].to_string(),
            &f("hit_ratio"),
            &f("redis_hit_ratio"),
            &f("opt_hit_ratio"),
            &f("lru_hit_ratio"),
        ]);
    }
    format!("\n{t}")
}

/// What the charts of a report show.
pub fn chart_data(r: &Report) -> ChartData {
    let systems: Vec<&RunResult> = [Some(&r.cachelet), r.store.as_ref(), r.redis.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let mut references = Vec::new();
    if let Some(o) = &r.opt {
        references.push(("opt".to_owned(), o.hit_ratio()));
    }
    if let Some(l) = &r.lru {
        references.push(("lru".to_owned(), l.hit_ratio()));
    }
    ChartData {
        title: r.title.clone(),
        timelines: systems
            .iter()
            .map(|s| Timeline {
                system: s.system.clone(),
                samples: s.samples.clone(),
            })
            .collect(),
        references,
        scale_events: r.cachelet.scale_events.clone(),
        latencies: systems
            .iter()
            .map(|s| Latencies {
                system: s.system.clone(),
                histogram: s.latency_us.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "x", "10 parsecs", "0s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
