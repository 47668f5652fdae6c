//! Processes for `cache-bench check`: `cache-server` nodes, each on a loopback address of its
//! own, that can be killed and restarted on the same address, stopped and continued; and the
//! moto S3 emulator, which can be stopped and continued to make a store outage. And the
//! [`ProcessCluster`] that the benchmarks measure, as Redis is measured, out of process.
//!
//! A node is started with `--listen IP:0` and reports the port it bound in its log (a line
//! with `serving` and `addr=`); a restart asks for that same address again. Every process is
//! killed when its handle is dropped, so a run that fails or panics leaves nothing behind.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

/// Lines of a node's log kept for error messages.
const LOG_TAIL_LINES: usize = 40;
/// How long a node may take to report its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Starts on an address that is still in use, before giving up.
const BIND_ATTEMPTS: u32 = 5;

/// How to run a `cache-server`.
#[derive(Debug, Clone)]
pub enum ServerBin {
    /// A `cache-server` executable.
    Program(PathBuf),
    /// This executable's hidden `node` subcommand, which runs the same entry point.
    SelfNode(PathBuf),
}

impl ServerBin {
    /// `path` when given (`self` for the `node` subcommand of this executable); else
    /// `cache-server` next to this executable when it exists; else the `node` subcommand.
    ///
    /// # Errors
    /// When this executable's path is unknown, or `path` does not exist.
    pub fn resolve(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let me = std::env::current_exe().context("the path of this executable")?;
        match path {
            Some(p) if p.as_os_str() == "self" => Ok(Self::SelfNode(me)),
            Some(p) => {
                anyhow::ensure!(p.exists(), "--server-bin {} does not exist", p.display());
                Ok(Self::Program(p.to_owned()))
            }
            None => {
                let sibling =
                    me.with_file_name(format!("cache-server{}", std::env::consts::EXE_SUFFIX));
                Ok(if sibling.is_file() {
                    Self::Program(sibling)
                } else {
                    Self::SelfNode(me)
                })
            }
        }
    }

    fn command(&self) -> Command {
        match self {
            Self::Program(p) => Command::new(p),
            Self::SelfNode(me) => {
                let mut c = Command::new(me);
                c.arg("node");
                c
            }
        }
    }

    /// A description for reports.
    pub fn describe(&self) -> String {
        match self {
            Self::Program(p) => p.display().to_string(),
            Self::SelfNode(me) => format!("{} node", me.display()),
        }
    }
}

/// What every node of a run is started with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The executable.
    pub bin: ServerBin,
    /// `--app`.
    pub app: String,
    /// `--store`.
    pub store: String,
    /// Further flags, such as `--store-timeout-ms 2000`.
    pub extra_args: Vec<String>,
    /// Environment variables (the store's endpoint and credentials).
    pub env: Vec<(String, String)>,
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`, ...) to process `pid` with `kill`.
///
/// # Errors
/// When `kill` cannot run or fails.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -s {signal} {pid} failed: {status}");
    Ok(())
}

/// A random loopback subnet for one run: `127.A.B.C` with `C` from `first` on, so that runs
/// at the same time do not take each other's addresses.
pub fn loopback_base(rng: &mut impl rand::Rng) -> (u8, u8, u8) {
    (
        rng.random_range(1..=254),
        rng.random_range(0..=255),
        rng.random_range(1..=150),
    )
}

/// The `i`-th address of a run's loopback subnet.
pub fn loopback_ip(base: (u8, u8, u8), i: usize) -> IpAddr {
    let last = u8::try_from(usize::from(base.2) + i)
        .unwrap_or(254)
        .min(254);
    IpAddr::V4(Ipv4Addr::new(127, base.0, base.1, last))
}

/// One `cache-server` process, which may be down.
#[derive(Debug)]
pub struct Node {
    name: String,
    ip: IpAddr,
    addr: Option<String>,
    /// A Unix domain socket it listens on as well, if any.
    unix: Option<std::path::PathBuf>,
    child: Option<Child>,
    stopped: bool,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Node {
    /// A node that will listen on `ip`; not started yet.
    pub fn new(name: impl Into<String>, ip: IpAddr) -> Self {
        Self {
            name: name.into(),
            ip,
            addr: None,
            unix: None,
            child: None,
            stopped: false,
            log: Arc::default(),
        }
    }

    /// Listens on the Unix domain socket `path` as well as on TCP.
    #[must_use]
    pub fn with_unix(mut self, path: std::path::PathBuf) -> Self {
        self.unix = Some(path);
        self
    }

    /// Its name in reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it serves on, once it has started.
    pub fn addr(&self) -> Option<&str> {
        self.addr.as_deref()
    }

    /// Whether its process runs (stopped or not).
    pub fn is_up(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Whether it runs and is not stopped.
    pub fn is_healthy(&mut self) -> bool {
        !self.stopped && self.is_up()
    }

    /// Whether it was stopped with SIGSTOP and not continued since.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Starts the process: on `IP:0` the first time, on its old address after that, with
    /// `peers` as its member list (none: alone). Retries a few times while the address is
    /// still in use. Returns once the node reported its address.
    ///
    /// # Errors
    /// When it does not start, with the end of its log.
    pub async fn start(&mut self, config: &NodeConfig, peers: &[String]) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let listen = self
            .addr
            .clone()
            .unwrap_or_else(|| format!("{}:0", self.ip));
        let mut last = None;
        for attempt in 0..BIND_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            match self.spawn(config, &listen, peers).await {
                Ok(addr) => {
                    self.addr = Some(addr);
                    return Ok(());
                }
                Err(e) => {
                    self.reap();
                    let in_use = e.to_string().to_lowercase().contains("in use");
                    last = Some(e);
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("{} did not start", self.name)))
    }

    async fn spawn(
        &mut self,
        config: &NodeConfig,
        listen: &str,
        peers: &[String],
    ) -> anyhow::Result<String> {
        let mut cmd = config.bin.command();
        cmd.args([
            "--listen",
            listen,
            "--app",
            &config.app,
            "--store",
            &config.store,
        ])
        .args(&config.extra_args);
        if let Some(path) = &self.unix {
            cmd.arg("--listen").arg(format!("unix:{}", path.display()));
        }
        if !peers.is_empty() {
            cmd.arg("--peers").arg(peers.join(","));
        }
        let mut child = cmd
            .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", config.bin.describe()))?;
        let stderr = child.stderr.take().context("the node's stderr")?;
        self.child = Some(child);
        self.stopped = false;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let log = Arc::clone(&self.log);
        // Reads the log to its end, so that the pipe never fills; reports the address once.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.is_some()
                    && line.contains("serving")
                    && let Some(addr) = line
                        .split("addr=")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_owned());
                }
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() == LOG_TAIL_LINES {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(addr)) => Ok(addr),
            Ok(Err(_)) => Err(anyhow::anyhow!(
                "{} exited on start (listen {listen}):\n{}",
                self.name,
                self.log_tail()
            )),
            Err(_) => Err(anyhow::anyhow!(
                "{} did not report its address within {START_TIMEOUT:?}:\n{}",
                self.name,
                self.log_tail()
            )),
        }
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .with_context(|| format!("{} is not running", self.name))
    }

    /// SIGKILL, and waits for the process to end.
    ///
    /// # Errors
    /// When it is not running or `kill` fails.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        signal(self.pid()?, "KILL")?;
        self.reap();
        Ok(())
    }

    /// SIGSTOP: the process stays, frozen.
    ///
    /// # Errors
    /// When it is not running or `kill` fails.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        signal(self.pid()?, "STOP")?;
        self.stopped = true;
        Ok(())
    }

    /// SIGCONT after [`Node::stop`].
    ///
    /// # Errors
    /// When it is not running or `kill` fails.
    pub fn cont(&mut self) -> anyhow::Result<()> {
        signal(self.pid()?, "CONT")?;
        self.stopped = false;
        Ok(())
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stopped = false;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.reap();
    }
}

pub use cache_testkit::moto::Moto;

/// The store `cache-server` processes open: its URL, and environment variables (endpoint,
/// credentials).
#[derive(Debug, Clone)]
pub struct ProcessStore {
    /// `--store`.
    pub url: String,
    /// Set in each process's environment.
    pub env: Vec<(String, String)>,
}

/// `n` `cache-server` processes over one store, on loopback, made members of one
/// cluster: how the benchmarks run cachelet, as Redis is
/// run, in processes of its own. Every process is killed when this is dropped.
#[derive(Debug)]
pub struct ProcessCluster {
    nodes: Vec<Node>,
    addrs: Vec<String>,
    _dir: tempfile::TempDir,
}

impl ProcessCluster {
    /// Starts `n` nodes of `app` with `bin`, over `store` (default: local files in a
    /// temporary directory), and the flags `extra_args` returns (such as
    /// credentials, in files it writes to the directory it is given, which lives as long as
    /// the cluster), then sets the member list through the first node with `admin` (a client
    /// builder with whatever credentials the nodes need).
    ///
    /// # Errors
    /// When a node does not start or the member list cannot be set.
    pub async fn start(
        n: usize,
        bin: ServerBin,
        app: &str,
        store: Option<ProcessStore>,
        extra_args: impl FnOnce(&std::path::Path) -> anyhow::Result<Vec<String>>,
        admin: cache_client::CacheClientBuilder,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(n >= 1, "a cluster needs a node");
        let dir = tempfile::tempdir()?;
        let extra_args = extra_args(dir.path())?;
        let store = match store {
            Some(store) => store,
            None => {
                let files = dir.path().join("store");
                std::fs::create_dir_all(&files)?;
                ProcessStore {
                    url: format!("file://{}", files.display()),
                    env: Vec::new(),
                }
            }
        };
        let config = NodeConfig {
            bin,
            app: app.to_owned(),
            store: store.url,
            extra_args,
            env: store.env,
        };
        // All on 127.0.0.1 (ports of their own), which the test certificates name, and each
        // on a Unix domain socket too.
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let mut node = Node::new(format!("n{i}"), IpAddr::V4(Ipv4Addr::LOCALHOST))
                .with_unix(dir.path().join(format!("n{i}.sock")));
            node.start(&config, &[]).await?;
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|node| node.addr().map(str::to_owned))
            .collect::<Option<_>>()
            .context("a node without an address")?;
        let admin = admin
            .nodes([addrs[0].clone()])
            .timeout(Duration::from_secs(10))
            .build()
            .await?;
        admin.set_members(None, addrs.clone()).await?;
        Ok(Self {
            nodes,
            addrs,
            _dir: dir,
        })
    }

    /// The members' addresses.
    pub fn addrs(&self) -> Vec<String> {
        self.addrs.clone()
    }

    /// The members' Unix domain sockets, as `unix:PATH` entries of a client's node list.
    pub fn sockets(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|node| node.unix.as_ref())
            .map(|path| format!("unix:{}", path.display()))
            .collect()
    }

    /// The value of `field=` in the first log line of any node that has it, such as the
    /// S3 endpoint's address (`s3_addr`).
    pub fn logged(&self, field: &str) -> Option<String> {
        let needle = format!("{field}=");
        self.nodes.iter().find_map(|node| {
            let log = node.log.lock().unwrap_or_else(|e| e.into_inner());
            log.iter().find_map(|line| {
                let rest = line.split(needle.as_str()).nth(1)?;
                rest.split_whitespace().next().map(str::to_owned)
            })
        })
    }

    /// How the nodes run, for reports.
    pub fn describe(&self) -> String {
        format!("{} cache-server processes on loopback", self.nodes.len())
    }
}
