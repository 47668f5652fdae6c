//! The `cache-server` command line, as a library so that it can be tested.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use cache_core::Limits;
use clap::Parser;

use crate::node::{CacheNode, CacheNodeBuilder};
use crate::security::TlsConfig;
use crate::store::open_store;
use cache_core::auth::Credentials;
use std::path::PathBuf;

/// A cachelet node: a read-through, write-through cache in front of an application's blob store.
#[derive(Debug, Clone, Parser)]
#[command(name = "cache-server", version, about)]
pub struct Args {
    /// Where to listen for data and admin gRPC: `HOST:PORT` for TCP, which peers use too, or
    /// `unix:PATH` for a Unix domain socket that clients on this host may use instead. Give
    /// it twice for both; with only a socket, TCP listens on the default.
    #[arg(long, default_value = "127.0.0.1:7070", value_parser = parse_listen)]
    pub listen: Vec<Listen>,
    /// This node's address in the member list (default: the listen address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// The application whose cache this is.
    #[arg(long)]
    pub app: String,
    /// The blob store: file:///DIR, memory:///, s3://BUCKET, az://CONTAINER or gs://BUCKET.
    /// Endpoints and credentials come from AWS_*, AZURE_* or GOOGLE_* variables.
    #[arg(long)]
    pub store: String,
    /// Every member's address, this node included (default: this node alone).
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Cache capacity, such as 64MiB or 2GiB.
    #[arg(long, default_value = "64MiB")]
    pub capacity: bytesize::ByteSize,
    /// Largest value cached whole, such as 16MiB.
    #[arg(long, default_value = "16MiB")]
    pub max_value: bytesize::ByteSize,
    /// Larger objects are cached, and travel, in chunks of this size (at most --max-value).
    #[arg(long, default_value = "4MiB")]
    pub chunk_size: bytesize::ByteSize,
    /// Large objects are read from the store, and cached, in parts of this size: a whole
    /// number of chunks, at most --max-value.
    #[arg(long, default_value = "16MiB")]
    pub part_size: bytesize::ByteSize,
    /// The largest object cached in chunks; larger ones are read from the store uncached.
    #[arg(long, default_value = "1GiB")]
    pub max_object: bytesize::ByteSize,
    /// The reply budget: the most value bytes held at once for replies not yet taken by the
    /// transport, uncached store reads and handoff (default: half the capacity, at most
    /// 256MiB, at least two maximal values).
    #[arg(long)]
    pub reply_budget: Option<bytesize::ByteSize>,
    /// Longest a blob-store call may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub store_timeout_ms: u64,
    /// Serve counters in Prometheus text format at http://ADDR/metrics.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// On SIGTERM, a node that is no longer a member hands its entries over first, for at
    /// most this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub drain_timeout_ms: u64,
    /// The share of capacity that pre-warming from hot-key manifests may fill on start
    /// (0 turns pre-warming and manifests off).
    #[arg(long, default_value_t = 0.5)]
    pub prewarm_fraction: f64,
    /// How often the node probes the store for a newer membership epoch, and asks a peer for
    /// its epoch, in milliseconds. Correctness never depends on it: requests and fence
    /// requests carry epochs too.
    #[arg(long, default_value_t = 1000)]
    pub gossip_interval_ms: u64,
    /// Closes a connection that sends nothing for this many milliseconds. The node pings
    /// quiet connections every third of this, and live clients answer, so only dead or
    /// silent peers are closed.
    #[arg(long, default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// A new connection must send its first bytes (the HTTP/2 preface) within this many
    /// milliseconds, or the idle timeout if that is shorter.
    #[arg(long, default_value_t = 10_000)]
    pub preface_timeout_ms: u64,
    /// The most connections open at once; at the cap the node stops accepting until one
    /// closes (default: the soft fd limit less 128).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Switches epoch fencing off. Unsafe: only for checking that the checker catches stale
    /// reads.
    #[arg(long, hide = true)]
    pub unfenced: bool,
    /// The read leases granted to clients with local copies, in milliseconds (0: none). A
    /// write waits at most this long for a lease holder that does not acknowledge.
    #[arg(long, default_value_t = 2000)]
    pub lease_ms: u64,
    /// Writes do not wait for lease holders to drop their copies. Unsafe: only for checking
    /// that the checker catches stale leased reads.
    #[arg(long, hide = true)]
    pub unleased_writes: bool,
    /// Switches the reply budget off. Unsafe: only for checking that the memory tests catch a
    /// node that allocates without bound.
    #[arg(long, hide = true)]
    pub unbounded_replies: bool,
    /// The node's TLS certificate chain (PEM). With --tls-key, every listener (gRPC and
    /// metrics) serves TLS only.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates that chain to this CA (PEM): mutual TLS.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// The CA (PEM) that peers' certificates must chain to; the node presents --tls-cert to
    /// them.
    #[arg(long, requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// The auth file: TOML `[[token]]` entries of token hashes and roles. Every call then
    /// needs `authorization: Bearer TOKEN` of a role that allows it.
    #[arg(long)]
    pub auth: Option<PathBuf>,
    /// A file holding the `peer` token this node sends on its calls to other nodes.
    #[arg(long)]
    pub peer_token_file: Option<PathBuf>,
    /// Worker threads of the node's runtime (default: one per CPU). Fewer threads answer a
    /// single get sooner and serve fewer gets a second under load (see the README); a
    /// sidecar under a CPU limit should match it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Serve the S3 REST API at ADDR (`HOST:PORT`): bucket APP, path-style. Reads and writes
    /// go through the cache like `cache-client`'s. Needs --s3-keys or --s3-anonymous.
    #[arg(long)]
    pub s3: Option<SocketAddr>,
    /// The S3 access keys: one `ACCESS_KEY_ID SECRET_ACCESS_KEY` pair a line, in a file only
    /// its owner may read. Requests must be signed (SigV4) with one of them.
    #[arg(long, requires = "s3")]
    pub s3_keys: Option<PathBuf>,
    /// Serve unsigned S3 requests too. On a node that requires tokens (--auth), only from
    /// loopback.
    #[arg(long, requires = "s3")]
    pub s3_anonymous: bool,
    /// A file holding a `data` token for APP, which the S3 endpoint presents to the other
    /// nodes. Needed with --auth when there are other members.
    #[arg(long, requires = "s3")]
    pub s3_token_file: Option<PathBuf>,
    /// The most bytes the S3 endpoint holds at once for request bodies and the large objects
    /// it streams; a request that cannot get its share within 10 s gets `SlowDown`.
    #[arg(long, default_value = "256MiB", requires = "s3")]
    pub s3_memory: bytesize::ByteSize,
    /// Reads each object too large for the cache whole into memory before serving it.
    /// Unsafe: only for checking that the memory tests catch it.
    #[arg(long, hide = true, requires = "s3")]
    pub s3_unbounded_reads: bool,
    /// Where the node learns which nodes are alive, to change the member list itself:
    /// `static` (--peers, changed by `cachectl set-members`), `kubernetes:NAMESPACE/SERVICE`
    /// (the Service's ready endpoints, with this node's port), `dns:NAME:PORT[@SERVER]` (a
    /// headless Service's records) or `gossip:SEED[,SEED…]` (gossip addresses, UDP).
    #[arg(long, default_value = "static")]
    pub discovery: crate::discovery::Discovery,
    /// How long a discovered node must be seen alive before it joins, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub join_after_ms: u64,
    /// Where gossip discovery listens, UDP (default: the --advertise IP, port 7946).
    #[arg(long)]
    pub gossip_listen: Option<SocketAddr>,
    /// Gossip's interval, or how often DNS is resolved, in milliseconds (default: 250 for
    /// gossip, which detects a dead node in about 18 intervals; 2000 for DNS).
    #[arg(long)]
    pub discovery_interval_ms: Option<u64>,
    /// Admits and removes what discovery reports without asking the nodes. Unsafe: for the
    /// tests' fault controls.
    #[arg(long, hide = true)]
    pub discovery_unchecked: bool,
    /// Takes members discovery never saw for dead. Unsafe: for the tests' fault controls.
    #[arg(long, hide = true)]
    pub discovery_trusting: bool,
    /// Counts Kubernetes endpoints that are not ready. Unsafe: for the tests' fault controls.
    #[arg(long, hide = true)]
    pub discovery_count_unready: bool,
    /// Serve without credentials on a non-loopback address. Anyone who can reach it can then
    /// read, write and take over the cache.
    #[arg(long)]
    pub insecure: bool,
}

/// The TCP address the node listens on when `--listen` names none.
const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// One `--listen` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// The path of a Unix domain socket.
    Unix(PathBuf),
}

fn parse_listen(value: &str) -> Result<Listen, String> {
    match value.strip_prefix("unix:") {
        Some("") => Err("unix: needs a path, such as unix:/run/cachelet.sock".into()),
        Some(path) => Ok(Listen::Unix(PathBuf::from(path))),
        None => value
            .parse()
            .map(Listen::Tcp)
            .map_err(|e| format!("{value:?} is neither HOST:PORT nor unix:PATH: {e}")),
    }
}

impl Args {
    /// The TCP address to listen on, and the Unix domain socket, if any.
    ///
    /// # Errors
    /// More than one of either.
    pub fn listeners(&self) -> anyhow::Result<(SocketAddr, Option<PathBuf>)> {
        let tcp: Vec<_> = self
            .listen
            .iter()
            .filter_map(|l| match l {
                Listen::Tcp(addr) => Some(*addr),
                Listen::Unix(_) => None,
            })
            .collect();
        let unix: Vec<_> = self
            .listen
            .iter()
            .filter_map(|l| match l {
                Listen::Unix(path) => Some(path.clone()),
                Listen::Tcp(_) => None,
            })
            .collect();
        anyhow::ensure!(tcp.len() <= 1, "--listen names more than one TCP address");
        anyhow::ensure!(unix.len() <= 1, "--listen names more than one Unix socket");
        let tcp = match tcp.first() {
            Some(addr) => *addr,
            None => DEFAULT_LISTEN.parse()?,
        };
        Ok((tcp, unix.into_iter().next()))
    }
}

/// Binds a Unix domain socket at `path`, readable and writable by this user only (mode 0600).
/// A socket file left by a node that is gone is replaced; one that a live node answers on is
/// not.
///
/// # Errors
/// `path` is taken, by a live socket or by another kind of file, or cannot be bound.
pub async fn bind_unix(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "--listen unix:{}: the path exists and is not a socket",
            path.display()
        );
        anyhow::ensure!(
            tokio::net::UnixStream::connect(path).await.is_err(),
            "--listen unix:{}: a running process already listens there",
            path.display()
        );
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("--listen unix:{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Reads and checks the TLS files, the auth file and the peer token file `args` name, and
/// refuses a non-loopback listener without credentials unless `--insecure`.
///
/// # Errors
/// A message naming the flag and file at fault.
pub fn secure(args: &Args, builder: CacheNodeBuilder) -> anyhow::Result<CacheNodeBuilder> {
    let exposure = |what: &str, addr: SocketAddr| {
        cache_core::auth::check_exposure(what, addr.ip(), args.auth.is_some(), args.insecure)
            .map_err(anyhow::Error::msg)
    };
    exposure("data, admin and peer gRPC", args.listeners()?.0)?;
    if let Some(metrics) = args.metrics {
        exposure("metrics", metrics)?;
    }
    if let Some(s3) = args.s3
        && args.s3_anonymous
    {
        // With --auth, unsigned S3 requests are served to loopback callers only.
        exposure("unsigned S3 requests", s3)?;
    }
    if args.s3.is_some() && args.auth.is_some() && args.s3_token_file.is_none() {
        anyhow::bail!(
            "--s3 on a node with --auth needs --s3-token-file: a data token for {:?}, which              the S3 endpoint presents to the other nodes",
            args.app
        );
    }
    let mut builder = builder.insecure(args.insecure);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        builder = builder.tls(TlsConfig::from_files(
            cert,
            key,
            args.tls_client_ca.as_deref(),
            args.tls_ca.as_deref(),
        )?);
    }
    if let Some(path) = &args.auth {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--auth: cannot read {}: {e}", path.display()))?;
        let credentials = Credentials::parse(&text)
            .map_err(|e| anyhow::anyhow!("--auth {}: {e}", path.display()))?;
        builder = builder.auth(credentials);
    }
    if let Some(path) = &args.peer_token_file {
        builder = builder.peer_token(crate::security::read_token_file(path)?);
    }
    Ok(builder)
}

/// The runtime `args` ask for: multi-threaded, with `--threads` workers when given.
///
/// # Errors
/// When the runtime cannot be built.
pub fn runtime(args: &Args) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(usize::from(n));
    }
    builder.enable_all().build()
}

/// Runs a node as `args` say until `shutdown` completes.
///
/// # Errors
/// Configuration, store and transport errors.
pub async fn run<F>(args: Args, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    // Certificates, credentials and the exposure rule are checked before anything is bound.
    let builder = secure(&args, CacheNode::builder())?;
    let (tcp, unix_path) = args.listeners()?;
    let listener = tokio::net::TcpListener::bind(tcp).await?;
    let local = listener.local_addr()?.to_string();
    let advertise = args.advertise.clone().unwrap_or(local);
    let members = if args.peers.is_empty() {
        vec![advertise.clone()]
    } else {
        args.peers.clone()
    };
    let builder = match args.reply_budget {
        Some(budget) => builder.reply_budget_bytes(budget.as_u64()),
        None => builder,
    };
    let node = builder
        .app(&args.app)
        .store(open_store(&args.store)?)
        .capacity_bytes(args.capacity.as_u64())
        .limits(
            Limits::default()
                .with_max_value_bytes(args.max_value.as_u64())
                .with_chunk_bytes(args.chunk_size.as_u64())
                .with_part_bytes(args.part_size.as_u64())
                .with_max_object_bytes(args.max_object.as_u64()),
        )
        .members(members)
        .advertise(advertise)
        .store_timeout(Duration::from_millis(args.store_timeout_ms))
        .drain_timeout(Duration::from_millis(args.drain_timeout_ms))
        .prewarm(args.prewarm_fraction > 0.0)
        .prewarm_fraction(args.prewarm_fraction)
        .gossip_interval(Duration::from_millis(args.gossip_interval_ms.max(1)))
        .fencing(!args.unfenced)
        .discovery(args.discovery.clone())
        .join_after(Duration::from_millis(args.join_after_ms))
        .discovery_unchecked(args.discovery_unchecked)
        .discovery_trusting(args.discovery_trusting)
        .discovery_count_unready(args.discovery_count_unready)
        .lease(Duration::from_millis(args.lease_ms))
        .leased_writes(!args.unleased_writes)
        .bounded_replies(!args.unbounded_replies)
        .idle_timeout(Duration::from_millis(args.idle_timeout_ms))
        .preface_timeout(Duration::from_millis(args.preface_timeout_ms));
    let node = match args.max_connections {
        Some(n) => node.max_connections(n),
        None => node,
    };
    let node = match args.gossip_listen {
        Some(addr) => node.gossip_listen(addr),
        None => node,
    };
    let node = match args.discovery_interval_ms.map(Duration::from_millis) {
        Some(every) => node.gossip_every(every).dns_every(every),
        None => node,
    }
    .build()?;
    let s3 = match args.s3 {
        Some(addr) => Some(S3Endpoint::bind(&args, addr, &node).await?),
        None => None,
    };
    // Bound last, so that nothing fails between binding the socket and removing it on exit.
    let unix = match &unix_path {
        Some(path) => Some(bind_unix(path).await?),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let s3 = match s3 {
        Some(s3) => {
            let node = node.clone();
            let mut stop = stop_rx.clone();
            let members = node.membership().members().to_vec();
            Some(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = s3.serve(node, members, stopped).await {
                    tracing::error!(error = %e, "S3 endpoint stopped");
                }
            }))
        }
        None => None,
    };
    let metrics = args.metrics.map(|addr| {
        let node = node.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::metrics::serve_metrics(addr, node, stopped).await {
                tracing::error!(error = %e, "metrics exporter stopped");
            }
        })
    });
    let listeners = crate::Listeners {
        tcp: listener,
        unix,
    };
    let served = node
        .serve(listeners, async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
    if let Some(task) = metrics {
        task.abort();
    }
    if let Some(task) = s3 {
        let _ = task.await;
    }
    if let Some(path) = unix_path {
        let _ = std::fs::remove_file(path);
    }
    served?;
    Ok(())
}

/// The S3 endpoint of `--s3`, bound and checked, with the client it will use.
struct S3Endpoint {
    listener: tokio::net::TcpListener,
    settings: crate::s3::S3Settings,
    client: cache_client::CacheClientBuilder,
    max_value: u64,
    unbounded_reads: bool,
    memory: u64,
}

impl S3Endpoint {
    async fn bind(args: &Args, addr: SocketAddr, node: &CacheNode) -> anyhow::Result<Self> {
        let keys = match &args.s3_keys {
            Some(path) => crate::s3::AccessKeys::read(path)?,
            None => crate::s3::AccessKeys::default(),
        };
        if keys.is_empty() && !args.s3_anonymous {
            anyhow::bail!("--s3 needs access keys (--s3-keys) or --s3-anonymous");
        }
        let mut client = cache_client::CacheClient::builder()
            .app(&args.app)
            .max_value_bytes(args.max_value.as_u64())
            .invalidations(false)
            .leases(false)
            .embedded(std::sync::Arc::new(node.clone()));
        if let Some(path) = &args.s3_token_file {
            client = client.token(crate::security::read_token_file(path)?);
        }
        if args.tls_cert.is_some() {
            let ca = args.tls_ca.as_ref().ok_or_else(|| {
                anyhow::anyhow!("--s3 on a TLS node needs --tls-ca, to reach the other nodes")
            })?;
            client = client.tls_ca_pem(std::fs::read(ca)?);
            if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
                client = client.tls_identity_pem(std::fs::read(cert)?, std::fs::read(key)?);
            }
        }
        let settings = crate::s3::S3Settings {
            keys,
            anonymous: args.s3_anonymous,
            anonymous_loopback_only: args.auth.is_some(),
            tls: node.tls().cloned(),
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(
            s3_addr = %listener.local_addr()?,
            bucket = args.app,
            keys = settings.keys.len(),
            anonymous = settings.anonymous,
            "S3 endpoint listening"
        );
        Ok(Self {
            listener,
            settings,
            client,
            max_value: args.max_value.as_u64(),
            unbounded_reads: args.s3_unbounded_reads,
            memory: args.s3_memory.as_u64(),
        })
    }

    async fn serve<F>(self, node: CacheNode, members: Vec<String>, stopped: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()>,
    {
        let client = self.client.nodes(members).build().await?;
        let gateway = crate::s3::S3Gateway::new(client, node.store(), self.max_value)
            .unbounded_reads(self.unbounded_reads)
            .memory(self.memory, Duration::from_secs(10))
            .counters(node.s3_counters());
        crate::s3::serve_s3(self.listener, gateway, self.settings, stopped).await?;
        Ok(())
    }
}

/// A future that completes on SIGINT or SIGTERM.
///
/// The signal handlers are installed when this is called, not when the future is first
/// polled, so a signal that arrives while the node is still starting is not lost (and does not
/// kill the process outright). Call it inside a Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => {},
                () = wait(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("signal received");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s3_endpoint_is_secure_by_default() {
        let check = |extra: &[&str]| {
            let mut argv = vec!["cache-server", "--app", "a", "--store", "memory:///"];
            argv.extend_from_slice(extra);
            let args = Args::try_parse_from(argv).unwrap();
            secure(&args, CacheNode::builder()).map(|_| ())
        };
        // Unsigned requests on a reachable address, on a node without credentials: refused.
        let err = check(&["--s3", "0.0.0.0:9000", "--s3-anonymous"]).unwrap_err();
        assert!(err.to_string().contains("unsigned S3 requests"), "{err}");
        assert!(check(&["--s3", "127.0.0.1:9000", "--s3-anonymous"]).is_ok());
        assert!(check(&["--s3", "0.0.0.0:9000", "--s3-anonymous", "--insecure"]).is_ok());
        // Signed requests only: fine anywhere.
        assert!(check(&["--s3", "0.0.0.0:9000", "--s3-keys", "k"]).is_ok());
        // A node with tokens needs one for its endpoint.
        let err = check(&["--auth", "f", "--s3", "127.0.0.1:9000", "--s3-keys", "k"]).unwrap_err();
        assert!(err.to_string().contains("--s3-token-file"), "{err}");
        assert!(
            Args::try_parse_from([
                "cache-server",
                "--app",
                "a",
                "--store",
                "m",
                "--s3-keys",
                "k"
            ])
            .is_err(),
            "--s3-keys needs --s3"
        );
    }

    #[test]
    fn parses_sizes_and_peers() {
        let args = Args::try_parse_from([
            "cache-server",
            "--app",
            "a",
            "--store",
            "memory:///",
            "--capacity",
            "64MiB",
            "--peers",
            "h1:1,h2:2",
        ])
        .unwrap();
        assert_eq!(args.capacity.as_u64(), 64 << 20);
        assert_eq!(args.peers, ["h1:1", "h2:2"]);
        assert!(
            Args::try_parse_from([
                "cache-server",
                "--app",
                "a",
                "--store",
                "x",
                "--capacity",
                "lots"
            ])
            .is_err()
        );
    }
}
