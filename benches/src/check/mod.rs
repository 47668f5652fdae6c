//! `cache-bench check`: a Jepsen-style correctness run against real `cache-server`
//! processes.
//!
//! 1. Start the store (moto, or a temporary directory), then `--nodes` + `--spares`
//!    `cache-server` processes, each alone on a loopback address of its own; make the first
//!    `--nodes` the members ([`nemesis::Cluster::start`]).
//! 2. For `--duration`: `--clients` processes, each with its own [`CacheClient`] and local
//!    tier, half reading `Strong` and half `Strict`, read, write, write conditionally and
//!    delete a few keys, one op at a time, recording every op; a further process writes a few
//!    other keys straight to the store, which only `Strict` reads read
//!    ([`workload`]). Each client process runs on a thread of its own, with a runtime of its
//!    own. Meanwhile the nemesis changes the members and kills, stops and restarts nodes and
//!    the store ([`nemesis::run`]), and freezes client processes ([`workload::pauses`]).
//! 3. Heal every fault, wait until every member has the last member list, then read every
//!    key once `Strict` and once `Strong`, so that lost writes show up.
//! 4. Check the history, print a table and the first anomalies, write `--json` and
//!    `--history`.
//!
//! With `--connect` the same workload runs against nodes started elsewhere, with no faults.

pub(crate) mod nemesis;
pub(crate) mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use cache_client::CacheClient;
use cache_server::store::open_store;
use cache_testkit::history::{Recorder, write_jsonl};
use cache_testkit::linear;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use crate::bench::parse_duration;
use crate::procs::{self, Moto, Node, NodeConfig, ServerBin};
use crate::report::Table;
use nemesis::{Cluster, Faults, NemesisCounts};
use workload::{Ctx, Keys, Mode, Tally};

/// The bucket of moto runs; each run uses keys under a prefix of its own.
const BUCKET: &str = "cachelet-check";
/// Keys written straight to the store.
const DIRECT_KEYS: usize = 4;
/// Ops a run records at most.
const MAX_OPS: usize = 1_000_000;
/// Anomalies printed in full.
const SHOWN_ANOMALIES: usize = 5;
/// A pause after the members converged, for handoffs in progress to finish, before the final
/// reads.
const SETTLE: Duration = Duration::from_secs(1);

/// The blob store of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The moto S3 emulator, started here (`CACHELET_MOTO_SERVER` or `moto_server` on PATH).
    Moto,
    /// Local files in a temporary directory (no store outages).
    File,
}

/// A fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// Changes of members: scale-out, scale-in, move-back.
    Members,
    /// SIGKILL a member, restart it on the same address.
    Kill,
    /// SIGSTOP a member across a change of members, then SIGCONT.
    Stop,
    /// SIGSTOP the store (moto) for 10 s.
    Store,
    /// Freeze a client process for 0.3 to 1.5 s every few seconds, as a platform does with an
    /// instance it stops scheduling: with leases on, a holder that cannot hear invalidations.
    Pause,
    /// No faults.
    None,
}

/// A bug to inject on purpose, to show that the checker catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NemesisControl {
    /// No injected bug.
    None,
    /// Every node runs with epoch fencing off (`cache-server --unfenced`).
    Unfenced,
    /// Leases on, and writes do not wait for lease holders to drop their copies
    /// (`cache-server --unleased-writes`).
    UnleasedWrites,
}

impl NemesisControl {
    fn name(self) -> &'static str {
        match self {
            NemesisControl::None => "none",
            NemesisControl::Unfenced => "unfenced",
            NemesisControl::UnleasedWrites => "unleased-writes",
        }
    }
}

/// The settings of `cache-bench check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Strong clients take no read leases, and check every read with the home node (leases
    /// are on by default, as in the client; `--nemesis-control unleased-writes` needs them).
    #[arg(long)]
    pub no_leases: bool,
    /// How long the workload and the faults run (for example 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Members at the start.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Further nodes, started but not members at first, for scale-out.
    #[arg(long, default_value_t = 1)]
    pub spares: usize,
    /// Client processes of the workload (half read `Strong`, half `Strict`).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Keys that take 80% of the ops.
    #[arg(long, default_value_t = 8)]
    pub hot_keys: usize,
    /// Keys written through the cache, hot keys included.
    #[arg(long, default_value_t = 64)]
    pub keys: usize,
    /// The blob store: moto (S3 emulator) or file (a temporary directory; no store outages).
    #[arg(long, value_enum, default_value_t = StoreKind::Moto)]
    pub store: StoreKind,
    /// Time between changes of members.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub membership_interval: Duration,
    /// Faults to inject (comma-separated): members, kill, stop, store, pause, or none.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "members,kill,stop,store,pause"
    )]
    pub faults: Vec<Fault>,
    /// Seed of the schedule and the workload (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write every op to this file, one JSON object a line.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Write the summary to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Inject a bug on purpose: `unfenced` runs the nodes with epoch fencing off;
    /// `unleased-writes` turns leases on and lets writes complete before lease holders have
    /// dropped their copies.
    #[arg(long, value_enum, default_value_t = NemesisControl::None)]
    pub nemesis_control: NemesisControl,
    /// Run the workload, with no faults, against these running nodes (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub connect: Vec<String>,
    /// With --connect: the nodes' store URL, for the process that writes straight to it.
    #[arg(long, requires = "connect")]
    pub store_url: Option<String>,
    /// The cache-server to run (default: cache-server next to this executable, else this
    /// executable's own copy of it; `self` forces the latter).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// The app name.
    #[arg(long, default_value = "check")]
    pub app: String,
}

/// What a check found.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Ops in the history.
    pub ops: usize,
    /// Anomalies by kind.
    pub anomalies: BTreeMap<String, u64>,
    /// All anomalies.
    pub anomalies_total: u64,
    /// Acknowledged writes that the final reads did not see.
    pub lost_writes: u64,
    /// What the nemesis did: changes of members, kills, stops, store outages.
    #[serde(flatten)]
    pub nemesis: nemesis::NemesisCounts,
    /// Failed requests by error code.
    pub failed_by_code: BTreeMap<String, u64>,
    /// Failed requests that ended outside every fault window (a node killed or stopped until
    /// it serves again, the store frozen), widened by the op deadline and a second.
    pub failed_outside_faults: u64,
    /// Reads that failed (not checked).
    pub failed_reads: u64,
    /// Writes, conditional writes and deletes whose outcome is unknown.
    pub unknown_writes: u64,
    /// Conditional writes refused because the version had changed.
    pub cas_mismatches: u64,
    /// Client processes frozen for a while (`--faults pause`).
    pub pauses: u64,
    /// Whether `Strong` clients took read leases.
    pub leases: bool,
    /// `Strong` reads that succeeded.
    pub strong_reads: u64,
    /// Of those, the reads served from a leased local copy, with no round trip.
    pub leased_reads: u64,
    /// Keys the checker could not check.
    pub unchecked_keys: Vec<String>,
    /// Ops beyond the recorder's bound, not checked.
    pub dropped_ops: u64,
    /// Whether every member had the last member list before the final reads.
    pub converged: bool,
    /// Seconds of workload and faults.
    pub duration_s: f64,
    /// Seconds the checker took.
    pub check_s: f64,
    /// The injected bug: none, unfenced or unleased-writes.
    pub nemesis_control: String,
    /// The seed.
    pub seed: u64,
    /// The store.
    pub store: String,
    /// The faults injected.
    pub faults: Vec<String>,
    /// Members at the start.
    pub nodes: usize,
    /// Spare nodes.
    pub spares: usize,
    /// Client processes.
    pub clients: usize,
    /// Keys written through the cache.
    pub keys: usize,
    /// Hot keys.
    pub hot_keys: usize,
    /// The cache-server that ran.
    pub server: String,
    /// The first anomalies, as text.
    pub first_anomalies: Vec<String>,
    /// What the nemesis did and when client processes froze, in order, each with its time
    /// in seconds on the history's clock (the clock of `invoke_ns` and `complete_ns`).
    pub events: Vec<String>,
}

/// Everything a run started; dropping it stops every process.
struct Setup {
    cluster: Option<Cluster>,
    members: Vec<String>,
    direct: Option<Arc<dyn ObjectStore>>,
    store: String,
    server: String,
    _dir: Option<tempfile::TempDir>,
}

/// Runs a check (see the module docs) and prints its table. Anomalies are no error here:
/// the caller decides what they mean.
///
/// # Errors
/// When the run cannot be set up (moto missing, a node that does not start, bad flags), or
/// an output file cannot be written.
pub async fn run(args: CheckArgs) -> anyhow::Result<Summary> {
    tokio::select! {
        summary = run_inner(args) => summary,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}

async fn run_inner(args: CheckArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(
        !(args.no_leases && args.nemesis_control == NemesisControl::UnleasedWrites),
        "--nemesis-control unleased-writes needs leases: drop --no-leases"
    );
    anyhow::ensure!(
        args.keys >= 1 && args.hot_keys >= 1 && args.hot_keys <= args.keys,
        "need 1 <= --hot-keys <= --keys"
    );
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let faults = fault_set(&args);
    let prefix = format!("check-{:08x}", rng.random::<u32>());
    let direct_keys = if args.connect.is_empty() || args.store_url.is_some() {
        DIRECT_KEYS
    } else {
        0
    };
    let keys = Keys::new(&prefix, args.keys, args.hot_keys, direct_keys);
    let cluster = if args.connect.is_empty() {
        format!("{} members + {} spares", args.nodes, args.spares)
    } else {
        format!("{} running nodes, no faults", args.connect.len())
    };
    println!(
        "cache-bench check: seed {seed}, {cluster}, {} clients, {} keys ({} hot, {} direct), {:?}",
        args.clients, args.keys, args.hot_keys, direct_keys, args.duration
    );

    let mut setup = if args.connect.is_empty() {
        start_cluster(&args, &mut rng).await?
    } else {
        Setup {
            cluster: None,
            members: args.connect.clone(),
            direct: args.store_url.as_deref().map(open_store).transpose()?,
            store: args.store_url.clone().unwrap_or_else(|| "unknown".into()),
            server: "running nodes".into(),
            _dir: None,
        }
    };
    println!(
        "store: {}; server: {}; members: {}",
        setup.store,
        setup.server,
        setup.members.join(",")
    );

    let recorder = Recorder::bounded(MAX_OPS);
    let stride = args.clients as u64 + 2;
    let leases = !args.no_leases;
    let ctx = Arc::new(Ctx {
        recorder: recorder.clone(),
        keys,
        tally: Tally::default(),
        stride,
        rereads: leases,
    });
    if let Some(cluster) = &mut setup.cluster {
        cluster.set_clock(recorder.clone());
    }
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let deadline = start + args.duration;
    // Each client process runs on a thread of its own, with a runtime of its own, as a
    // function instance runs in a process of its own: a pause freezes all of it.
    let mut processes = Vec::new();
    for p in 0..args.clients {
        let mode = if p % 2 == 0 {
            Mode::Strong
        } else {
            Mode::Strict
        };
        let builder = CacheClient::builder()
            .app(&args.app)
            .nodes(setup.members.clone())
            .timeout(workload::CLIENT_TIMEOUT)
            .connect_timeout(Duration::from_millis(500))
            .backoff(Duration::from_millis(20), Duration::from_millis(500))
            .local_capacity_bytes(1 << 20)
            .leases(leases);
        let seed = seed ^ (p as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let ctx = Arc::clone(&ctx);
        let pauses = faults.pause;
        let process = std::thread::Builder::new()
            .name(format!("check-client-{p}"))
            .spawn(move || -> anyhow::Result<u64> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let client = builder.build().await?;
                    if pauses {
                        tokio::spawn(workload::pauses(
                            Arc::clone(&ctx),
                            p,
                            seed.rotate_left(29),
                            deadline,
                        ));
                    }
                    workload::client_process(ctx, p, client.clone(), mode, seed, deadline).await;
                    Ok(client.client_stats().local_leased)
                })
            })
            .context("starting a client process")?;
        processes.push(process);
    }
    if let Some(store) = setup.direct.clone() {
        tasks.spawn(workload::direct_process(
            Arc::clone(&ctx),
            store,
            args.clients as u64,
            seed.rotate_left(17),
            deadline,
        ));
    }

    let mut counts = NemesisCounts::default();
    let mut converged = true;
    if let Some(cluster) = &mut setup.cluster {
        counts = nemesis::run(
            cluster,
            faults,
            args.membership_interval,
            &mut rng,
            start,
            args.duration,
        )
        .await;
    }
    while tasks.join_next().await.is_some() {}
    let mut leased_reads = 0;
    for process in processes {
        leased_reads += tokio::task::spawn_blocking(move || process.join())
            .await?
            .map_err(|_| anyhow::anyhow!("a client process panicked"))??;
    }
    let duration_s = start.elapsed().as_secs_f64();
    if let Some(cluster) = &mut setup.cluster {
        println!("healing every fault");
        converged = cluster.heal(&mut counts, &mut rng).await;
        cluster.close_windows();
        setup.members = cluster.member_addrs();
        tokio::time::sleep(SETTLE).await;
    }

    let reader = CacheClient::builder()
        .app(&args.app)
        .nodes(setup.members.clone())
        .timeout(Duration::from_secs(5))
        .build()
        .await?;
    workload::final_reads(&ctx, &reader, args.clients as u64 + 1).await;
    let server = setup.server.clone();
    let mut events: Vec<(u64, String)> = setup
        .cluster
        .as_ref()
        .map(|c| c.events.clone())
        .unwrap_or_default();
    for (start, end, p) in ctx.tally.pauses() {
        let took = Duration::from_nanos(end.saturating_sub(start));
        events.push((start, format!("froze client {p} for {took:.1?}")));
    }
    events.sort();
    let events = events
        .into_iter()
        .map(|(at, what)| format!("{:.3} s: {what}", at as f64 / 1e9))
        .collect();
    let mut windows = setup
        .cluster
        .as_ref()
        .map(|c| c.windows.clone())
        .unwrap_or_default();
    windows.extend(ctx.tally.pause_windows());
    drop(setup);

    let history = recorder.take();
    if let Some(path) = &args.history {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        write_jsonl(std::io::BufWriter::new(file), &history)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("checking {} ops", history.len());
    let checking = Instant::now();
    let report = linear::check(&history);
    let check_s = checking.elapsed().as_secs_f64();
    let anomalies = report.counts();
    let summary = Summary {
        ops: history.len(),
        anomalies_total: report.anomalies.len() as u64,
        anomalies,
        lost_writes: report.lost_writes(),
        nemesis: counts,
        failed_by_code: ctx.tally.failed_by_code(),
        failed_outside_faults: ctx
            .tally
            .failed_outside(&windows, workload::OP_TIMEOUT + Duration::from_secs(1)),
        failed_reads: ctx.tally.failed_reads.load(Ordering::Relaxed),
        unknown_writes: ctx.tally.unknown_writes.load(Ordering::Relaxed),
        cas_mismatches: ctx.tally.cas_mismatches.load(Ordering::Relaxed),
        pauses: ctx.tally.pause_windows().len() as u64,
        leases,
        strong_reads: ctx.tally.strong_reads.load(Ordering::Relaxed),
        leased_reads,
        unchecked_keys: report.unchecked.clone(),
        dropped_ops: recorder.dropped(),
        converged,
        duration_s,
        check_s,
        nemesis_control: args.nemesis_control.name().into(),
        seed,
        store: match (&args.connect.is_empty(), args.store) {
            (false, _) => "connect".into(),
            (true, StoreKind::Moto) => "moto".into(),
            (true, StoreKind::File) => "file".into(),
        },
        faults: fault_names(faults),
        nodes: args.nodes,
        spares: args.spares,
        clients: args.clients,
        keys: args.keys,
        hot_keys: args.hot_keys,
        server,
        first_anomalies: report
            .anomalies
            .iter()
            .take(SHOWN_ANOMALIES)
            .map(ToString::to_string)
            .collect(),
        events,
    };
    // The files first: they are the record, whatever happens to stdout.
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", table(&summary));
    for a in &summary.first_anomalies {
        println!("\n{a}");
    }
    Ok(summary)
}

/// The faults a run injects: none with `--connect`, and no store outage on local files.
fn fault_set(args: &CheckArgs) -> Faults {
    if !args.connect.is_empty() || args.faults.contains(&Fault::None) {
        return Faults::default();
    }
    Faults {
        members: args.faults.contains(&Fault::Members),
        kill: args.faults.contains(&Fault::Kill),
        stop: args.faults.contains(&Fault::Stop),
        store: args.faults.contains(&Fault::Store) && args.store == StoreKind::Moto,
        pause: args.faults.contains(&Fault::Pause),
    }
}

fn fault_names(f: Faults) -> Vec<String> {
    [
        (f.members, "members"),
        (f.kill, "kill"),
        (f.stop, "stop"),
        (f.store, "store"),
        (f.pause, "pause"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| (*n).to_owned())
    .collect()
}

/// Starts the store and the nodes.
async fn start_cluster(args: &CheckArgs, rng: &mut StdRng) -> anyhow::Result<Setup> {
    let base = procs::loopback_base(rng);
    let bin = ServerBin::resolve(args.server_bin.as_deref())?;
    // Slow gossip: nodes that miss a change learn of it late, which is when an unfenced node
    // serves stale data. A fenced node's correctness does not depend on gossip at all. A store
    // timeout under the clients' 2 s deadline: a store that does not answer makes requests fail
    // with Unavailable rather than time out.
    let mut extra_args: Vec<String> =
        ["--store-timeout-ms", "1000", "--gossip-interval-ms", "5000"]
            .map(String::from)
            .into();
    match args.nemesis_control {
        NemesisControl::None => {}
        NemesisControl::Unfenced => extra_args.push("--unfenced".into()),
        NemesisControl::UnleasedWrites => extra_args.push("--unleased-writes".into()),
    }
    let store = match args.store {
        StoreKind::Moto => moto_store(procs::loopback_ip(base, 0)).await?,
        StoreKind::File => file_store()?,
    };
    let config = NodeConfig {
        bin: bin.clone(),
        app: args.app.clone(),
        store: store.url,
        extra_args,
        env: store.env,
    };
    let nodes: Vec<Node> = (0..args.nodes + args.spares)
        .map(|i| Node::new(format!("n{i}"), procs::loopback_ip(base, i + 1)))
        .collect();
    let cluster = Cluster::start(
        config,
        nodes,
        args.nodes,
        store.moto,
        Arc::clone(&store.direct),
    )
    .await?;
    Ok(Setup {
        members: cluster.member_addrs(),
        cluster: Some(cluster),
        direct: Some(store.direct),
        store: store.describe,
        server: bin.describe(),
        _dir: store.dir,
    })
}

/// The store of a run that starts its own nodes.
struct OwnStore {
    /// `--store` of the nodes.
    url: String,
    /// The nodes' environment for it.
    env: Vec<(String, String)>,
    /// A client of it, for the direct writer.
    direct: Arc<dyn ObjectStore>,
    /// Its process, for moto.
    moto: Option<Moto>,
    /// Its directory, for local files.
    dir: Option<tempfile::TempDir>,
    /// A description.
    describe: String,
}

/// moto on a free port of `ip`, with the bucket created.
async fn moto_store(ip: std::net::IpAddr) -> anyhow::Result<OwnStore> {
    let moto = Moto::start(ip, BUCKET).await?;
    let endpoint = moto.endpoint().to_owned();
    let env = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    let direct = AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_retry(object_store::RetryConfig {
            backoff: object_store::BackoffConfig::default(),
            max_retries: 1,
            retry_timeout: Duration::from_secs(2),
        })
        .with_client_options(
            object_store::ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(2)),
        )
        // After the client options, which would otherwise reset it.
        .with_allow_http(true)
        .build()?;
    Ok(OwnStore {
        url: format!("s3://{BUCKET}"),
        env,
        direct: Arc::new(direct),
        moto: Some(moto),
        dir: None,
        describe: format!("moto at {endpoint}, bucket {BUCKET}"),
    })
}

/// Local files in a temporary directory.
fn file_store() -> anyhow::Result<OwnStore> {
    let dir = tempfile::Builder::new().prefix("cache-check-").tempdir()?;
    let url = format!("file://{}", dir.path().display());
    Ok(OwnStore {
        direct: open_store(&url)?,
        describe: format!("local files in {}", dir.path().display()),
        url,
        env: Vec::new(),
        moto: None,
        dir: Some(dir),
    })
}

fn table(s: &Summary) -> String {
    let mut t = Table::new(["check", "value"]);
    t.row(["ops", &s.ops.to_string()]);
    t.row(["anomalies", &s.anomalies_total.to_string()]);
    for (kind, n) in &s.anomalies {
        t.row([&format!("  {kind}"), &n.to_string()]);
    }
    t.row(["lost writes", &s.lost_writes.to_string()]);
    t.row([
        "membership changes (failed)",
        &format!(
            "{} ({})",
            s.nemesis.membership_changes, s.nemesis.membership_changes_failed
        ),
    ]);
    t.row([
        "kills (failed restarts)",
        &format!("{} ({})", s.nemesis.kills, s.nemesis.restarts_failed),
    ]);
    t.row(["stops", &s.nemesis.stops.to_string()]);
    t.row(["store outages", &s.nemesis.store_outages.to_string()]);
    t.row(["client pauses", &s.pauses.to_string()]);
    let failed: u64 = s.failed_by_code.values().sum();
    t.row(["failed requests", &failed.to_string()]);
    for (code, n) in &s.failed_by_code {
        t.row([&format!("  {code}"), &n.to_string()]);
    }
    t.row([
        "failed outside fault windows",
        &s.failed_outside_faults.to_string(),
    ]);
    t.row(["unknown-outcome writes", &s.unknown_writes.to_string()]);
    t.row(["cas mismatches", &s.cas_mismatches.to_string()]);
    t.row(["leases", if s.leases { "on" } else { "off" }]);
    let share = if s.strong_reads == 0 {
        0.0
    } else {
        s.leased_reads as f64 / s.strong_reads as f64
    };
    t.row([
        "Strong reads (leased local)",
        &format!(
            "{} ({}, {:.1}%)",
            s.strong_reads,
            s.leased_reads,
            100.0 * share
        ),
    ]);
    t.row(["unchecked keys", &s.unchecked_keys.len().to_string()]);
    t.row(["converged before final reads", &s.converged.to_string()]);
    t.row(["duration", &format!("{:.1} s", s.duration_s)]);
    t.row(["checker time", &format!("{:.1} s", s.check_s)]);
    t.row(["nemesis control", &s.nemesis_control]);
    t.row(["seed", &s.seed.to_string()]);
    t.to_string()
}
