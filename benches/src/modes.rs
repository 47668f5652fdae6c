//! `cache-bench modes`: what the local tier and the consistency modes cost and save.
//!
//! 1. Latency, one get at a time, in alternating rounds of one run: a local hit under each
//!    mode (`Bounded`: no network; `Strong (leased)`: no network while the read lease holds;
//!    `Strong` without leases: a version check with the home node; `Strict`: a version check
//!    with the blob store through the home node), a home hit (no local tier), and a
//!    `redis-server` GET when one is on `PATH`.
//! 2. A Zipf workload with the local tier on, under `Strong` with and without leases and
//!    under `Bounded`: the local hit ratio, and the share of reads that needed value bytes
//!    from a node.
//! 3. What leases cost writers: a put's latency when 0, 1 or 8 clients hold a lease on its key
//!    (each holder reads the key again before the next put, so it holds a lease each time),
//!    and when the one holder is a process that is SIGSTOPped while it holds its lease
//!    ([`hold`]): the write then waits for the lease to end, one lease length at most.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_client::{CacheClient, Consistency, Tier};
use cache_server::cluster::LocalCluster;
use cache_server::store::open_store;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::redis_server::RedisServer;
use crate::report::Table;
use crate::runner::{self, DriveOptions, Source, System};
use crate::workload::{KeyDist, Plan, Workload, key_name};

/// The scenario's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ModesArgs {
    /// Keys for the latency part, each written first.
    #[arg(long, default_value_t = 1000)]
    pub keys: u32,
    /// Gets per system per round in the latency part.
    #[arg(long, default_value_t = 5000)]
    pub gets: usize,
    /// Rounds of the latency part.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Keys of the Zipf workload.
    #[arg(long, default_value_t = 20_000)]
    pub zipf_keys: u32,
    /// Requests of the Zipf workload, per mode.
    #[arg(long, default_value_t = 200_000)]
    pub zipf_ops: usize,
    /// Local tier capacity, as a fraction of the Zipf workload's data.
    #[arg(long, default_value_t = 0.1)]
    pub local_fraction: f64,
    /// The bound of the `Bounded` mode, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub bound_ms: u64,
    /// Writes timed per number of lease holders (0, 1 and 8) in the last part.
    #[arg(long, default_value_t = 300)]
    pub lease_writes: usize,
    /// Writes timed while their key's one lease holder, a process of its own, is stopped.
    #[arg(long, default_value_t = 5)]
    pub stopped_writes: usize,
    /// Runs the nodes inside this process, on its runtime, instead of as `cache-server`
    /// processes of their own (as Redis runs).
    #[arg(long)]
    pub in_process: bool,
    /// The cache-server to run (default: cache-server next to this executable, else this
    /// executable's own copy of it; `self` forces the latter).
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
    /// The executable that runs the stopped holder as `HOLDER hold ...` (default: this one).
    #[arg(long)]
    pub holder_bin: Option<std::path::PathBuf>,
    /// Writes every latency row's p50, p90 and p99 (microseconds), under the row's name, as
    /// JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// The settings of the lease holder process that `modes` stops (`cache-bench hold`).
#[derive(Debug, Clone, clap::Args)]
pub struct HoldArgs {
    /// The nodes (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// The application.
    #[arg(long)]
    pub app: String,
    /// The key to hold a lease on.
    #[arg(long)]
    pub key: String,
}

/// What the holder prints once it holds a lease.
const HELD: &str = "held";
/// How often the holder reads its key again, so that it holds a lease whenever it is stopped.
const HOLD_READ_EVERY: Duration = Duration::from_millis(20);

/// Holds a read lease on one key, as a function instance that reads it now and then: reads it
/// every 20 ms (a leased copy is served locally, and renewed by a read that goes to the node
/// once the lease has ended), prints `held` once a lease is granted, and runs until killed.
///
/// # Errors
/// When the client cannot be built or a read fails.
pub async fn hold(args: HoldArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let client = CacheClient::builder()
        .app(&args.app)
        .nodes(args.nodes)
        .local_capacity_bytes(1 << 20)
        .consistency(Consistency::Strong)
        .leases(true)
        .build()
        .await?;
    let mut said = false;
    loop {
        client.get(&args.key).await?;
        if !said && client.client_stats().local_leased > 0 {
            println!("{HELD}");
            std::io::stdout().flush()?;
            said = true;
        }
        tokio::time::sleep(HOLD_READ_EVERY).await;
    }
}

/// Times `writes` puts of `key` while a holder process, which holds a lease on it, is
/// SIGSTOPped: each waits for the lease to end (the node cannot hear from the holder).
async fn stopped_holder_writes(
    args: &ModesArgs,
    nodes: &[String],
    remote: &CacheClient,
    key: &str,
    value: &Bytes,
) -> anyhow::Result<Histogram<u64>> {
    use tokio::io::AsyncBufReadExt;
    let bin = match &args.holder_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?,
    };
    let mut child = tokio::process::Command::new(&bin)
        .args(["hold", "--app", "modes", "--key", key, "--nodes"])
        .arg(nodes.join(","))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting the holder {}: {e}", bin.display()))?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("the holder exited"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    anyhow::ensure!(
        matches!(&first, Ok(Ok(Some(line))) if line == HELD),
        "the holder did not take a lease: {first:?}"
    );
    let mut h = hist();
    for _ in 0..args.stopped_writes {
        // A write it hears drops its lease; its next read takes a fresh one, which it holds
        // when it is frozen.
        remote.put(key, value.clone()).await?;
        tokio::time::sleep(HOLD_READ_EVERY * 5).await;
        crate::procs::signal(pid, "STOP")?;
        let t = Instant::now();
        let put = remote.put(key, value.clone()).await;
        h.record(ns(t))?;
        crate::procs::signal(pid, "CONT")?;
        put?;
    }
    child.kill().await?;
    Ok(h)
}

const VALUE_BYTES: usize = 1024;
/// The nodes' lease length (their default).
const LEASE: Duration = Duration::from_secs(2);

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid bounds")
}

fn ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn us(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1000.0)
}

/// Runs the scenario and prints its tables.
///
/// # Errors
/// When the cluster cannot be set up or a request fails.
pub async fn run(args: ModesArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cluster, addrs) = if args.in_process {
        let store = open_store(&format!("file://{}", dir.path().display()))?;
        let cluster = LocalCluster::start(3, |b| {
            b.app("modes")
                .store(store.clone())
                .capacity_bytes(64 << 20)
                .lease(LEASE)
        })
        .await?;
        let addrs = cluster.addrs();
        (ModesCluster::InProcess(cluster), addrs)
    } else {
        let bin = crate::procs::ServerBin::resolve(args.server_bin.as_deref())?;
        let flags = |_: &std::path::Path| {
            Ok([
                "--capacity",
                "64MiB",
                "--lease-ms",
                &LEASE.as_millis().to_string(),
            ]
            .map(String::from)
            .to_vec())
        };
        let admin = CacheClient::builder().app("modes");
        let cluster =
            crate::procs::ProcessCluster::start(3, bin, "modes", None, flags, admin).await?;
        let addrs = cluster.addrs();
        (ModesCluster::Processes(cluster), addrs)
    };
    println!(
        "nodes: {}; redis-server: its own process",
        match &cluster {
            ModesCluster::InProcess(_) => "3 inside this process".to_owned(),
            ModesCluster::Processes(c) => c.describe(),
        }
    );
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let base = || CacheClient::builder().app("modes").nodes(addrs.clone());
    let remote = base().build().await?;
    let local = base()
        .local_capacity_bytes(64 << 20)
        .consistency(Consistency::Strong)
        .leases(true)
        .build()
        .await?;
    let validated = base()
        .local_capacity_bytes(64 << 20)
        .consistency(Consistency::Strong)
        .leases(false)
        .build()
        .await?;
    for k in 0..args.keys {
        remote.put(&key_name(k), value.clone()).await?;
    }
    for k in 0..args.keys {
        local.get(&key_name(k)).await?;
        validated.get(&key_name(k)).await?;
    }
    let redis = if RedisServer::available() {
        let server = RedisServer::start(1 << 30).await?;
        let mut con = server.connect().await?;
        for k in 0..args.keys {
            redis::cmd("SET")
                .arg(key_name(k))
                .arg(value.as_ref())
                .query_async::<()>(&mut con)
                .await?;
        }
        Some((server, con))
    } else {
        println!("redis-server is not on PATH: the Redis row is left out");
        None
    };
    let bounded = Consistency::Bounded(Duration::from_secs(3600));
    // Which client each row reads with: 0 the leased one, 1 the one without leases, 2 the
    // one without a local tier.
    let systems: [(&str, Option<Consistency>, usize); 5] = [
        ("local hit, Bounded", Some(bounded), 0),
        ("local hit, Strong (leased)", Some(Consistency::Strong), 0),
        ("local hit, Strong", Some(Consistency::Strong), 1),
        ("local hit, Strict", Some(Consistency::Strict), 0),
        ("home hit (no local tier)", None, 2),
    ];
    let clients = [&local, &validated, &remote];
    let mut hists: Vec<Histogram<u64>> = (0..systems.len() + 1).map(|_| hist()).collect();
    let mut rng = StdRng::seed_from_u64(5);
    let mut redis = redis;
    for _ in 0..args.rounds {
        for (i, (name, mode, client)) in systems.iter().enumerate() {
            for _ in 0..args.gets {
                let key = key_name(rng.random_range(0..args.keys));
                let client = clients[*client];
                let t = Instant::now();
                let got = match mode {
                    Some(mode) => client.get_entry_with(&key, *mode).await?,
                    None => client.get_entry(&key).await?,
                };
                hists[i].record(ns(t))?;
                let got = got.ok_or_else(|| anyhow::anyhow!("{key} missing"))?;
                let want = if mode.is_some() {
                    Tier::Local
                } else {
                    Tier::Home
                };
                anyhow::ensure!(got.tier == want, "{name}: {key} served by {:?}", got.tier);
            }
        }
        if let Some((_, con)) = redis.as_mut() {
            for _ in 0..args.gets {
                let key = key_name(rng.random_range(0..args.keys));
                let t = Instant::now();
                let got: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(con).await?;
                hists[systems.len()].record(ns(t))?;
                anyhow::ensure!(got.is_some(), "{key} missing from redis");
            }
        }
    }
    let mut table = Table::new(["one get at a time", "p50 us", "p90 us", "p99 us", "gets"]);
    let names = systems
        .iter()
        .map(|(n, _, _)| *n)
        .chain(["redis-server GET"]);
    let mut json = serde_json::Map::new();
    for (name, h) in names.zip(&hists) {
        if h.is_empty() {
            continue;
        }
        json.insert(
            name.to_owned(),
            serde_json::json!({
                "p50_us": h.value_at_quantile(0.5) as f64 / 1000.0,
                "p90_us": h.value_at_quantile(0.9) as f64 / 1000.0,
                "p99_us": h.value_at_quantile(0.99) as f64 / 1000.0,
                "gets": h.len(),
            }),
        );
        table.row([
            name,
            &us(h.value_at_quantile(0.5)),
            &us(h.value_at_quantile(0.9)),
            &us(h.value_at_quantile(0.99)),
            &h.len().to_string(),
        ]);
    }
    println!(
        "latency: {} keys of {VALUE_BYTES} B, 3 nodes over a local-file store, {} rounds of {} gets",
        args.keys, args.rounds, args.gets
    );
    print!("{table}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }
    let home = systems.len() - 1;
    let home_p50 = hists[home].value_at_quantile(0.5) as f64;
    for (i, (name, _, _)) in systems.iter().enumerate().take(home) {
        let p50 = hists[i].value_at_quantile(0.5) as f64;
        let vs_redis = redis
            .as_ref()
            .map(|_| {
                format!(
                    ", vs redis {:.3}",
                    p50 / hists[systems.len()].value_at_quantile(0.5) as f64
                )
            })
            .unwrap_or_default();
        println!("p50 {name}: vs home hit {:.3}{vs_redis}", p50 / home_p50);
    }
    drop(redis);

    // The Zipf workload with the local tier on.
    let data = u64::from(args.zipf_keys) * VALUE_BYTES as u64;
    let local_capacity = (data as f64 * args.local_fraction) as u64;
    for k in 0..args.zipf_keys {
        remote.put(&key_name(k), value.clone()).await?;
    }
    let workload = Workload {
        keys: args.zipf_keys,
        dist: KeyDist::Zipf(0.99),
        read_ratio: 0.95,
        ops: args.zipf_ops,
        seed: 9,
    };
    let sizes = vec![VALUE_BYTES as u32; args.zipf_keys as usize];
    let plan = Plan::synthetic(&workload, &sizes, &workload.generate());
    let mut table = Table::new([
        "Zipf 0.99, 95% reads",
        "local hit ratio",
        "reads with value bytes",
        "p50 us",
        "ops/s",
    ]);
    for (name, mode, leases) in [
        ("Strong (leased)".to_owned(), Consistency::Strong, true),
        ("Strong".to_owned(), Consistency::Strong, false),
        (
            format!("Bounded({} ms)", args.bound_ms),
            Consistency::Bounded(Duration::from_millis(args.bound_ms)),
            false,
        ),
    ] {
        let client = base()
            .local_capacity_bytes(local_capacity)
            .consistency(mode)
            .leases(leases)
            .build()
            .await?;
        let source = Arc::new(Source::fixed(plan.requests.clone()));
        let opts = DriveOptions {
            concurrency: 16,
            duration: None,
            speed: None,
            progress: false,
            sample_interval: Duration::from_secs(1),
        };
        let run = runner::drive(&System::Cachelet(client.clone()), &plan, &source, &opts).await;
        anyhow::ensure!(run.errors == 0, "{name}: {:?}", run.first_error);
        let s = client.client_stats();
        let reads = s.hits_local + s.hits_home + s.hits_handoff + s.reads_store;
        table.row([
            &name,
            &format!("{:.3}", s.hits_local as f64 / reads.max(1) as f64),
            &format!("{:.3}", s.value_replies as f64 / reads.max(1) as f64),
            &format!("{}", run.latency_us.value_at_quantile(0.5)),
            &format!("{:.0}", run.throughput()),
        ]);
    }
    println!(
        "workload: {} keys of {VALUE_BYTES} B, {} requests, 16 in flight, local tier {:.0}% of the data",
        args.zipf_keys,
        plan.requests.len(),
        100.0 * args.local_fraction
    );
    print!("{table}");

    // What leases cost writers.
    let mut table = Table::new(["put with lease holders", "p50 us", "p99 us", "puts"]);
    let key = "lease/written";
    remote.put(key, value.clone()).await?;
    for holders in [0usize, 1, 8] {
        let mut readers = Vec::new();
        for _ in 0..holders {
            readers.push(
                base()
                    .local_capacity_bytes(1 << 20)
                    .consistency(Consistency::Strong)
                    .leases(true)
                    .build()
                    .await?,
            );
        }
        // Each reader's lease stream opens in the background: read until leased.
        for reader in &readers {
            let deadline = Instant::now() + Duration::from_secs(10);
            while reader.client_stats().local_leased == 0 {
                anyhow::ensure!(Instant::now() < deadline, "no lease granted");
                reader.get(key).await?;
            }
        }
        let mut h = hist();
        for _ in 0..args.lease_writes {
            for reader in &readers {
                reader.get(key).await?;
            }
            let t = Instant::now();
            remote.put(key, value.clone()).await?;
            h.record(ns(t))?;
        }
        write_row(
            &mut table,
            &mut json,
            &format!("put, {holders} lease holders"),
            &h,
        );
    }
    let h = stopped_holder_writes(&args, &addrs, &remote, key, &value).await?;
    write_row(&mut table, &mut json, "put, 1 stopped lease holder", &h);
    println!(
        "writes: one key of {VALUE_BYTES} B over a local-file store; leases of {} ms",
        LEASE.as_millis()
    );
    print!("{table}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }
    if let ModesCluster::InProcess(cluster) = cluster {
        cluster.shutdown().await;
    }
    Ok(())
}

/// A row of the writes table, and its p50, p99 and max (µs) in the JSON under its name.
fn write_row(
    table: &mut Table,
    json: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    h: &Histogram<u64>,
) {
    json.insert(
        name.to_owned(),
        serde_json::json!({
            "p50_us": h.value_at_quantile(0.5) as f64 / 1000.0,
            "p99_us": h.value_at_quantile(0.99) as f64 / 1000.0,
            "max_us": h.max() as f64 / 1000.0,
            "puts": h.len(),
        }),
    );
    table.row([
        name,
        &us(h.value_at_quantile(0.5)),
        &us(h.value_at_quantile(0.99)),
        &h.len().to_string(),
    ]);
}

/// The nodes measured: `cache-server` processes (the default), or embedded ones.
enum ModesCluster {
    InProcess(LocalCluster),
    Processes(crate::procs::ProcessCluster),
}
