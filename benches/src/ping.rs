//! `cache-bench ping`: one request at a time, the latency of a get that hits the home node
//! over TCP and over its Unix domain socket, and of one that a node embedded in this process
//! answers by a direct call, against a GET from `redis-server` over TCP and over its Unix
//! domain socket, in alternating rounds of one run. Without credentials it also times the
//! floor of the transport: a unary gRPC call that does no work on the node (`Members`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_client::CacheClient;
use cache_server::cluster::LocalCluster;
use cache_server::store::open_store;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::procs::{ProcessCluster, ServerBin};
use crate::redis_server::RedisServer;
use crate::report::Table;
use crate::security::{BenchSecurity, SecurityMode};
use crate::workload::key_name;

/// The comparison's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct PingArgs {
    /// Keys, each written to both systems first.
    #[arg(long, default_value_t = 1000)]
    pub keys: u32,
    /// Value size.
    #[arg(long, default_value = "1KiB")]
    pub value_size: bytesize::ByteSize,
    /// Gets per system per round.
    #[arg(long, default_value_t = 5000)]
    pub gets: usize,
    /// Rounds; the systems take turns each round.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Nodes of the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Runs the nodes inside this process, on its runtime, instead of as `cache-server`
    /// processes of their own (as Redis runs).
    #[arg(long)]
    pub in_process: bool,
    /// The cache-server to run (default: cache-server next to this executable, else this
    /// executable's own copy of it; `self` forces the latter).
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
    /// Tokens and TLS for the cluster and its client.
    #[arg(long, value_enum, default_value_t = SecurityMode::Plain)]
    pub security: SecurityMode,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid bounds")
}

/// Times `gets` gets of keys from `pick` into `h`, each checked against `value`.
async fn timed_gets<B: AsRef<[u8]>>(
    h: &mut Histogram<u64>,
    gets: usize,
    pick: &mut impl FnMut() -> String,
    value: &[u8],
    mut get: impl AsyncFnMut(&str) -> anyhow::Result<Option<B>>,
) -> anyhow::Result<()> {
    for _ in 0..gets {
        let key = pick();
        let t = Instant::now();
        let got = get(&key).await?;
        h.record(ns(t))?;
        anyhow::ensure!(
            got.as_ref().map(AsRef::as_ref) == Some(value),
            "wrong value for {key}"
        );
    }
    Ok(())
}

/// Nanoseconds since `since`.
fn ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Runs the comparison and prints its table.
///
/// # Errors
/// When `redis-server` is missing or a request fails.
pub async fn run(args: PingArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        RedisServer::available(),
        "redis-server is not on PATH (apt-get install redis-server)"
    );
    let value = Bytes::from(vec![b'v'; args.value_size.as_u64() as usize]);
    let security = BenchSecurity::new(args.security, "ping")?;
    let cluster = Cluster::start(&args, &security).await?;
    let client = security
        .client(CacheClient::builder().app("ping").nodes(cluster.addrs()))
        .build()
        .await?;
    // The same nodes over their Unix domain sockets (process nodes only).
    let over_unix = match cluster.sockets() {
        Some(sockets) => Some(
            security
                .client(CacheClient::builder().app("ping").nodes(sockets))
                .build()
                .await?,
        ),
        None => None,
    };
    // A node in this very process, which its client calls directly (no socket).
    let embedded_store = open_store("memory:///")?;
    let embedded = LocalCluster::start(1, |b| {
        b.app("ping")
            .store(embedded_store.clone())
            .capacity_bytes(256 << 20)
    })
    .await?;
    let direct = CacheClient::builder()
        .app("ping")
        .nodes(embedded.addrs())
        .embedded(std::sync::Arc::new(embedded.node(0).clone()))
        .build()
        .await?;
    let redis = RedisServer::start(1 << 30).await?;
    let mut con = redis.connect().await?;
    let mut con_unix = redis.connect_unix().await?;
    // The transport's floor: a unary call the node answers from memory, on a channel of its
    // own (plaintext only: the channel carries no credentials).
    let mut floor_admin = match args.security {
        SecurityMode::Plain => {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addrs()[0]))?
                    .tcp_nodelay(true)
                    .connect()
                    .await?;
            Some(cache_proto::v1::admin_client::AdminClient::new(channel))
        }
        _ => None,
    };
    for k in 0..args.keys {
        client.put(&key_name(k), value.clone()).await?;
        direct.put(&key_name(k), value.clone()).await?;
        redis::cmd("SET")
            .arg(key_name(k))
            .arg(value.as_ref())
            .query_async::<()>(&mut con)
            .await?;
    }
    let (mut ours, mut theirs, mut inside) = (hist(), hist(), hist());
    let (mut ours_unix, mut theirs_unix, mut floor) = (hist(), hist(), hist());
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..args.rounds {
        let mut pick = || key_name(rng.random_range(0..args.keys));
        timed_gets(&mut inside, args.gets, &mut pick, &value, async |key| {
            Ok(direct.get(key).await?)
        })
        .await?;
        timed_gets(&mut ours, args.gets, &mut pick, &value, async |key| {
            Ok(client.get(key).await?)
        })
        .await?;
        timed_gets(&mut theirs, args.gets, &mut pick, &value, async |key| {
            let got: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(&mut con).await?;
            Ok(got)
        })
        .await?;
        if let Some(over_unix) = &over_unix {
            timed_gets(&mut ours_unix, args.gets, &mut pick, &value, async |key| {
                Ok(over_unix.get(key).await?)
            })
            .await?;
        }
        if let Some(admin) = &mut floor_admin {
            for _ in 0..args.gets {
                let t = Instant::now();
                admin
                    .members(cache_proto::v1::MembersRequest {})
                    .await
                    .map_err(|s| anyhow::anyhow!("Members: {s}"))?;
                floor.record(ns(t))?;
            }
        }
        timed_gets(
            &mut theirs_unix,
            args.gets,
            &mut pick,
            &value,
            async |key| {
                let got: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut con_unix)
                    .await?;
                Ok(got)
            },
        )
        .await?;
    }
    anyhow::ensure!(
        direct.client_stats().ops_sent == 0,
        "the embedded node's client sent ops over the network"
    );
    let mut table = Table::new(["system", "p50 us", "p90 us", "p99 us", "p99.9 us", "gets"]);
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1000.0);
    let mut rows = vec![("cachelet (home hit, TCP)", &ours)];
    if over_unix.is_some() {
        rows.push(("cachelet (home hit, Unix socket)", &ours_unix));
    }
    if floor_admin.is_some() {
        rows.push(("gRPC floor (unary Members, TCP)", &floor));
    }
    rows.extend([
        ("cachelet (embedded node, direct call)", &inside),
        ("redis-server (TCP)", &theirs),
        ("redis-server (Unix socket)", &theirs_unix),
    ]);
    for (name, h) in rows {
        table.row([
            name,
            &us(h.value_at_quantile(0.5)),
            &us(h.value_at_quantile(0.9)),
            &us(h.value_at_quantile(0.99)),
            &us(h.value_at_quantile(0.999)),
            &h.len().to_string(),
        ]);
    }
    println!(
        "one get at a time, {} values, {} keys, {}, {} rounds of {} gets each; \
         redis-server: its own process",
        args.value_size.display().iec(),
        args.keys,
        cluster.describe(),
        args.rounds,
        args.gets
    );
    print!("{table}");
    let p50 = |h: &Histogram<u64>| h.value_at_quantile(0.5) as f64;
    println!(
        "p50 cachelet / redis, TCP = {:.2}",
        p50(&ours) / p50(&theirs)
    );
    if over_unix.is_some() {
        println!(
            "p50 cachelet / redis, Unix socket = {:.2}",
            p50(&ours_unix) / p50(&theirs_unix)
        );
    }
    println!(
        "p50 embedded node (direct call) / redis = {:.3}",
        inside.value_at_quantile(0.5) as f64 / theirs.value_at_quantile(0.5) as f64
    );
    drop(redis);
    tokio::time::timeout(Duration::from_secs(10), embedded.shutdown()).await?;
    if let Cluster::InProcess(cluster) = cluster {
        tokio::time::timeout(Duration::from_secs(10), cluster.shutdown()).await?;
    }
    Ok(())
}

/// The cluster measured: `cache-server` processes (the default), or embedded nodes.
enum Cluster {
    Processes(ProcessCluster),
    InProcess(LocalCluster),
}

impl Cluster {
    async fn start(args: &PingArgs, security: &BenchSecurity) -> anyhow::Result<Self> {
        if args.in_process {
            let store = open_store("memory:///")?;
            let cluster = LocalCluster::start(args.nodes, |b| {
                security.node(b.app("ping").store(store.clone()).capacity_bytes(256 << 20))
            })
            .await?;
            return Ok(Self::InProcess(cluster));
        }
        let bin = ServerBin::resolve(args.server_bin.as_deref())?;
        let admin = security.admin(CacheClient::builder().app("ping"));
        let flags = |dir: &std::path::Path| {
            let mut flags = security.node_args(dir)?;
            flags.extend(["--capacity".to_owned(), "256MiB".to_owned()]);
            Ok(flags)
        };
        let cluster = ProcessCluster::start(args.nodes, bin, "ping", None, flags, admin).await?;
        Ok(Self::Processes(cluster))
    }

    fn addrs(&self) -> Vec<String> {
        match self {
            Self::Processes(c) => c.addrs(),
            Self::InProcess(c) => c.addrs(),
        }
    }

    /// The nodes' Unix domain sockets, when they are processes.
    fn sockets(&self) -> Option<Vec<String>> {
        match self {
            Self::Processes(c) => Some(c.sockets()),
            Self::InProcess(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Processes(c) => c.describe(),
            Self::InProcess(c) => format!("{} nodes inside the bench's process", c.addrs().len()),
        }
    }
}
