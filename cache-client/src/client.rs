//! [`CacheClient`]: routes each key to its home node and falls back when a node is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use cache_core::clock::{Clock, SystemClock};
use cache_core::{Membership, SharedMembership, validate_key};
use cache_proto::in_process::InProcessNode;
use cache_proto::v1 as pb;
use serde::Serialize;
use tracing::Instrument;

use crate::conn::{ConnConfig, NodeConn};
use crate::error::{Error, Result};
use crate::leases::{NodeLeases, hold_leases};
use crate::local::{LocalAdmission, LocalTier, watch_node};

/// How fresh a read must be. Set per client ([`CacheClientBuilder::consistency`]) and per call
/// ([`CacheClient::get_entry_with`]).
///
/// Writes made through the cache ([`CacheClient::put`], [`CacheClient::delete`]) go to the
/// store, then to the key's home node, before they return. What each mode promises about a
/// read that begins after such a write returned:
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// The read sees every write that finished before it began, including writes that bypassed
    /// the cache and went to the blob store directly. The home node asks the store for the
    /// blob's current version (a metadata call, HEAD) on every read, then serves that version
    /// from the local copy or its cache when either holds it, else from the store.
    /// Costs one store metadata call per read.
    Strict,
    /// The default. The read sees every write made through the cache that finished before it
    /// began (linearizable for such writes). A local copy is used only after the home node
    /// confirms its version, with a request that carries no value bytes when the copy is
    /// current. Writes that bypass the cache are seen once the home node's copy is replaced
    /// (by a strict read, a write through the cache, or eviction).
    #[default]
    Strong,
    /// A local copy that was confirmed current within the last `d` is served with no network
    /// call at all; an older one is confirmed as in `Strong`. The read may miss writes that
    /// finished less than `d` before it began, never older ones. Invalidations pushed by the
    /// home nodes usually drop changed copies much sooner.
    Bounded(Duration),
}

/// The tier that served a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// An in-process copy in this instance.
    Local,
    /// The key's home node held it.
    Home,
    /// The previous owner held it during a handoff.
    Handoff,
    /// Read from the blob store.
    Store,
}

impl Tier {
    pub(crate) fn from_wire(t: i32) -> Self {
        match pb::Tier::try_from(t) {
            Ok(pb::Tier::Local) => Tier::Local,
            Ok(pb::Tier::Home) => Tier::Home,
            Ok(pb::Tier::Handoff) => Tier::Handoff,
            _ => Tier::Store,
        }
    }
}

/// A value with its version and the tier that served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The blob's bytes.
    pub value: Bytes,
    /// The store's version (ETag) of these bytes.
    pub version: String,
    /// When these bytes were written, in milliseconds since the Unix epoch: the store's
    /// last-modified time if the cache read them from the store, the writing node's clock if
    /// they were written through the cache. `None` when no node knew.
    pub modified_ms: Option<u64>,
    /// Which tier served it.
    pub tier: Tier,
}

/// What a write through the cache produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The store's version (ETag) of the written bytes.
    pub version: String,
    /// When they were written, as [`Fetched::modified_ms`].
    pub modified_ms: Option<u64>,
}

/// Counters of one client, since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClientStats {
    /// Gets that returned a value, by the tier that served them.
    pub hits_local: u64,
    /// See `hits_local`.
    pub hits_home: u64,
    /// See `hits_local`.
    pub hits_handoff: u64,
    /// Gets served by reading the blob store.
    pub reads_store: u64,
    /// Gets of blobs that do not exist.
    pub not_found: u64,
    /// Gets served by another node because the home node was down.
    pub fallbacks: u64,
    /// Puts and deletes that succeeded.
    pub writes: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Local hits served with no network call (`Bounded` copies within their bound).
    pub local_unchecked: u64,
    /// Local hits confirmed current by the home node (no value bytes sent).
    pub local_confirmed: u64,
    /// `Strong` reads served from a local copy under a read lease, with no round trip.
    pub local_leased: u64,
    /// Gets that received value bytes from a node.
    pub value_replies: u64,
    /// Ops sent to nodes: every network request of the data path counts one.
    pub ops_sent: u64,
    /// Ops answered by the embedded node by a direct call, with no socket
    /// ([`CacheClientBuilder::embedded`]).
    pub direct_calls: u64,
    /// Invalidations received from the nodes.
    pub invalidations: u64,
    /// Bytes held by the local tier.
    pub local_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits_local: AtomicU64,
    hits_home: AtomicU64,
    hits_handoff: AtomicU64,
    reads_store: AtomicU64,
    not_found: AtomicU64,
    fallbacks: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    local_unchecked: AtomicU64,
    local_confirmed: AtomicU64,
    local_leased: AtomicU64,
    value_replies: AtomicU64,
    direct_calls: AtomicU64,
}

/// One node's counters, or why they could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// The node's address.
    pub addr: String,
    /// Its counters, when it answered.
    pub stats: Option<pb::NodeStats>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The client's own counters and every node's.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// This client's counters.
    pub client: ClientStats,
    /// Each member's counters, in member order.
    pub nodes: Vec<NodeReport>,
}

/// Builds a [`CacheClient`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheClientBuilder {
    app: Option<String>,
    nodes: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    max_value_bytes: u64,
    min_backoff: Duration,
    max_backoff: Duration,
    consistency: Consistency,
    local_capacity_bytes: u64,
    local_admission: LocalAdmission,
    invalidations: bool,
    leases: bool,
    clock: Arc<dyn Clock>,
    token: Option<String>,
    tls_ca_pem: Option<Vec<u8>>,
    tls_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    embedded: Option<Arc<dyn InProcessNode>>,
}

impl Default for CacheClientBuilder {
    fn default() -> Self {
        Self {
            app: None,
            nodes: Vec::new(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            max_value_bytes: cache_core::DEFAULT_MAX_VALUE_BYTES,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            consistency: Consistency::Strong,
            local_capacity_bytes: 0,
            local_admission: LocalAdmission::All,
            invalidations: true,
            leases: true,
            clock: Arc::new(SystemClock),
            token: None,
            tls_ca_pem: None,
            tls_identity_pem: None,
            embedded: None,
        }
    }
}

impl CacheClientBuilder {
    /// The application whose cache to use. Required.
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.app = Some(app.into());
        self
    }

    /// The cache nodes' addresses (`host:port`), the same list the nodes were given. Required.
    ///
    /// An entry `unix:PATH` is a node on this host that listens on that Unix domain socket
    /// (`cache-server --listen unix:PATH`): [`build`](Self::build) asks it which member it is,
    /// and every call to that member then goes over the socket. A list of sockets alone is
    /// enough; the client learns the other members from them. With TLS, the node's
    /// certificate must also name `localhost`, the name that first call checks.
    pub fn nodes<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nodes = nodes.into_iter().map(Into::into).collect();
        self
    }

    /// The deadline of every call, retries included. Default: 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long to wait for a TCP connection to a node. Default: 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest value the client will accept from a node. Default: 16 MiB, the nodes'
    /// default limit.
    pub fn max_value_bytes(mut self, max: u64) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// How long a node that failed is skipped before it is tried again; doubles with each
    /// failure from `min` up to `max`. Default: 50 ms to 5 s.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// The consistency of reads that do not name one. Default: [`Consistency::Strong`].
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// The byte capacity of the local tier: in-process copies of blobs this instance read or
    /// wrote. Default: 0, which turns the local tier off.
    pub fn local_capacity_bytes(mut self, bytes: u64) -> Self {
        self.local_capacity_bytes = bytes;
        self
    }

    /// Which blobs the local tier keeps. Default: [`LocalAdmission::All`].
    pub fn local_admission(mut self, admission: LocalAdmission) -> Self {
        self.local_admission = admission;
        self
    }

    /// Whether to subscribe to the nodes' invalidations, which drop changed local copies
    /// early. They never decide correctness: `Strict` and `Strong` reads confirm versions
    /// anyway, and `Bounded` copies expire on their own. Default: true (when the local tier
    /// is on).
    pub fn invalidations(mut self, subscribe: bool) -> Self {
        self.invalidations = subscribe;
        self
    }

    /// Whether `Strong` reads ask the nodes for read leases on the copies they keep, and serve
    /// leased copies with no round trip. A node invalidates every leased copy before a write
    /// to its key changes anything, so leased reads stay `Strong`. Needs the local tier.
    /// Default: true. Off, every `Strong` read checks its version with the home node.
    pub fn leases(mut self, on: bool) -> Self {
        self.leases = on;
        self
    }

    /// The clock that ages `Bounded` local copies and times leases. Default: the system's
    /// monotonic clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The token sent as `authorization: Bearer TOKEN` on every call, for nodes that run with
    /// credentials. Default: none.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Talks TLS to the nodes, verifying their certificates against this CA (PEM).
    /// Default: none, and the client talks plaintext HTTP/2.
    pub fn tls_ca_pem(mut self, ca: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_pem = Some(ca.into());
        self
    }

    /// The client certificate chain and key (PEM) to present to nodes that require mutual
    /// TLS. Needs [`CacheClientBuilder::tls_ca_pem`]. Default: none.
    pub fn tls_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls_identity_pem = Some((cert.into(), key.into()));
        self
    }

    /// A node in this process (`cache_server::CacheNode`, started with `serve`). Ops on the
    /// keys it owns go to it by a direct call, with no socket and no encoding, under the same
    /// rules as over the network (epochs, fencing, leases, deadlines); other keys, and the
    /// node's lease and invalidation streams, go over the network as usual. Default: none.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn run(node: cache_server::CacheNode) -> cache_client::Result<()> {
    /// use std::sync::Arc;
    /// use cache_client::CacheClient;
    ///
    /// // `node` serves on 10.0.0.1:7070 in this very process.
    /// let cache = CacheClient::builder()
    ///     .app("thumbnails")
    ///     .nodes(["10.0.0.1:7070", "10.0.0.2:7070"])
    ///     .embedded(Arc::new(node))
    ///     .build()
    ///     .await?;
    /// let _ = cache.get("cats/1.png").await?; // a direct call when 10.0.0.1 owns it
    /// # Ok(()) }
    /// ```
    pub fn embedded(mut self, node: Arc<dyn InProcessNode>) -> Self {
        self.embedded = Some(node);
        self
    }

    /// The token and TLS settings, checked.
    #[allow(clippy::type_complexity)]
    fn security(
        &self,
    ) -> Result<(
        Option<tonic::transport::ClientTlsConfig>,
        Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    )> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};

        let certs = |what: &str, pem: &[u8]| -> Result<()> {
            let n = CertificateDer::pem_slice_iter(pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Config(format!("{what}: not a PEM certificate file ({e})")))?
                .len();
            if n == 0 {
                return Err(Error::Config(format!("{what}: holds no PEM certificate")));
            }
            Ok(())
        };
        let tls = match (&self.tls_ca_pem, &self.tls_identity_pem) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(Error::Config(
                    "a client certificate needs a CA to verify the nodes (tls_ca_pem)".into(),
                ));
            }
            (Some(ca), identity) => {
                certs("TLS CA", ca)?;
                let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
                if let Some((cert, key)) = identity {
                    certs("TLS certificate", cert)?;
                    PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                        Error::Config(format!("TLS key: not a PEM private key ({e})"))
                    })?;
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                Some(tls)
            }
        };
        let token = match &self.token {
            None => None,
            Some(t) => Some(format!("Bearer {}", t.trim()).parse().map_err(|_| {
                Error::Config("the token holds characters a header cannot carry".into())
            })?),
        };
        Ok((tls, token))
    }

    /// Builds the client. Connections open lazily, on first use, except to `unix:` entries of
    /// the node list, which are asked which member they are.
    ///
    /// # Errors
    /// [`Error::Config`] when the app or the nodes are missing, an address is malformed, or
    /// the token or a TLS certificate or key is unusable; [`Error::Unavailable`] when a
    /// `unix:` entry does not answer.
    pub async fn build(self) -> Result<CacheClient> {
        let (tls, token) = self.security()?;
        let app = self
            .app
            .filter(|a| !a.is_empty())
            .ok_or_else(|| Error::Config("an app name is required".into()))?;
        let mut config = ConnConfig {
            app: app.clone(),
            op_timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            max_message_bytes: usize::try_from(self.max_value_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(2 << 20),
            min_backoff: self.min_backoff,
            max_backoff: self.max_backoff,
            ops_sent: Arc::default(),
            tls,
            token,
            sockets: HashMap::new(),
        };
        // `unix:PATH` entries: each node says which member it is, and is reached over its
        // socket from then on.
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut newest: Option<pb::MembersReply> = None;
        for node in self.nodes {
            let Some(path) = node.strip_prefix("unix:") else {
                nodes.push(node);
                continue;
            };
            let path = std::path::PathBuf::from(path);
            let reply = crate::conn::ask_socket(&path, &config).await?;
            config.sockets.insert(reply.self_addr.clone(), path);
            if !nodes.contains(&reply.self_addr) {
                nodes.push(reply.self_addr.clone());
            }
            if newest.as_ref().is_none_or(|n| reply.epoch > n.epoch) {
                newest = Some(reply);
            }
        }
        let only_sockets = nodes.len() == config.sockets.len();
        // Nothing but sockets: route by the member list a node gave. Otherwise the refresh
        // below adopts any newer list.
        let membership = match newest {
            Some(reply) if only_sockets => Membership::new(reply.epoch, reply.members),
            _ => Membership::new(0, nodes),
        }
        .map_err(|e| Error::Config(e.to_string()))?;
        let config = Arc::new(config);
        let conns = membership
            .members()
            .iter()
            .map(|addr| {
                Ok((
                    addr.clone(),
                    Arc::new(NodeConn::new(addr, Arc::clone(&config))?),
                ))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        let local = (self.local_capacity_bytes > 0)
            .then(|| LocalTier::new(self.local_capacity_bytes, self.local_admission, self.clock));
        let client = CacheClient {
            inner: Arc::new(Inner {
                app,
                max_value_bytes: self.max_value_bytes,
                shared: SharedMembership::new(membership.clone()),
                view: RwLock::new(Arc::new(View {
                    membership: Arc::new(membership),
                    conns,
                })),
                config: Arc::clone(&config),
                timeout: self.timeout,
                consistency: self.consistency,
                watch: self.invalidations && local.is_some(),
                leased: self.leases && local.is_some(),
                leases: Mutex::default(),
                local,
                counters: Counters::default(),
                ops_sent: Arc::clone(&config.ops_sent),
                invalidations: Arc::default(),
                watchers: Mutex::default(),
                embedded: self.embedded,
            }),
        };
        client.start_watchers();
        // Learn the nodes' epoch (and any members the list given here lacks). Unreachable
        // nodes are no error here: calls will report them.
        let _ = tokio::time::timeout(self.connect_timeout, client.refresh_members()).await;
        Ok(client)
    }
}

/// The client that function code links. Cheap to clone; clones share connections.
///
/// Each key goes to its home node, chosen by the same ring the nodes use. Calls to one node
/// share one HTTP/2 connection and one long-lived stream, on which every op that is ready
/// travels in one message.
///
/// # Examples
/// ```no_run
/// # async fn run() -> cache_client::Result<()> {
/// use cache_client::CacheClient;
///
/// let cache = CacheClient::builder()
///     .app("thumbnails")
///     .nodes(["10.0.0.1:7070", "10.0.0.2:7070"])
///     .build()
///     .await?;
/// cache.put("cats/1.png", vec![1, 2, 3]).await?;
/// let bytes = cache.get("cats/1.png").await?; // Some(..), or None if no such blob
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CacheClient {
    inner: Arc<Inner>,
}

struct Inner {
    app: String,
    max_value_bytes: u64,
    /// The member list, shared with the invalidation watchers.
    shared: SharedMembership,
    view: RwLock<Arc<View>>,
    config: Arc<ConnConfig>,
    timeout: Duration,
    consistency: Consistency,
    local: Option<LocalTier>,
    watch: bool,
    /// Whether `Strong` reads ask for leases.
    leased: bool,
    /// Per node: the leases held from it, and the task that keeps its `Leases` stream.
    leases: Mutex<HashMap<String, LeaseTask>>,
    counters: Counters,
    ops_sent: Arc<AtomicU64>,
    invalidations: Arc<AtomicU64>,
    watchers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// A node in this process, called directly for the keys it owns.
    embedded: Option<Arc<dyn InProcessNode>>,
}

/// The leases held from one node, and the task that keeps its `Leases` stream.
type LeaseTask = (Arc<NodeLeases>, tokio::task::JoinHandle<()>);

/// Keeps one task per member of `view` in `tasks`: aborts the tasks of nodes that are no
/// longer members (`handle` finds an entry's task), and starts `start(addr, conn)` for each
/// member that has none.
fn per_member<T>(
    view: &View,
    tasks: &mut HashMap<String, T>,
    handle: impl Fn(&T) -> &tokio::task::JoinHandle<()>,
    mut start: impl FnMut(&str, &NodeConn) -> T,
) {
    tasks.retain(|addr, entry| {
        let keep = view.conns.contains_key(addr);
        if !keep {
            handle(entry).abort();
        }
        keep
    });
    for (addr, conn) in &view.conns {
        if !tasks.contains_key(addr) {
            tasks.insert(addr.clone(), start(addr, conn));
        }
    }
}

/// The member list a client routes by, and a connection to each member.
struct View {
    membership: Arc<Membership>,
    conns: HashMap<String, Arc<NodeConn>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for watcher in self
            .watchers
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            watcher.abort();
        }
        for (_, task) in self
            .leases
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            task.abort();
        }
    }
}

/// What to do after a node said it does not own a key.
enum Reroute {
    Retry,
    GiveUp,
}

impl std::fmt::Debug for CacheClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheClient")
            .field("app", &self.inner.app)
            .field("nodes", &self.view().membership.members())
            .finish()
    }
}

impl CacheClient {
    /// A builder with every default; see [`CacheClientBuilder`].
    pub fn builder() -> CacheClientBuilder {
        CacheClientBuilder::default()
    }

    /// The largest value this client sends or takes, as set by
    /// [`CacheClientBuilder::max_value_bytes`].
    pub fn max_value_bytes(&self) -> u64 {
        self.inner.max_value_bytes
    }

    /// The application this client uses.
    pub fn app(&self) -> &str {
        &self.inner.app
    }

    /// The key's home node.
    pub fn home_of(&self, key: &str) -> String {
        self.view().membership.owner(key).to_owned()
    }

    /// The member list this client routes by.
    pub fn membership(&self) -> Arc<Membership> {
        Arc::clone(&self.view().membership)
    }

    fn view(&self) -> Arc<View> {
        Arc::clone(&self.inner.view.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Routes by `members` at `epoch` if that is newer than what the client has. Returns
    /// whether it did.
    fn adopt(&self, epoch: u64, members: Vec<String>) -> bool {
        let Ok(next) = Membership::new(epoch, members) else {
            return false;
        };
        {
            let mut view = self.inner.view.write().unwrap_or_else(|e| e.into_inner());
            if next.epoch() <= view.membership.epoch() {
                return false;
            }
            let mut conns = HashMap::new();
            for addr in next.members() {
                let conn = match view.conns.get(addr) {
                    Some(conn) => Arc::clone(conn),
                    None => match NodeConn::new(addr, Arc::clone(&self.inner.config)) {
                        Ok(conn) => Arc::new(conn),
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring a member list with a bad address");
                            return false;
                        }
                    },
                };
                conns.insert(addr.clone(), conn);
            }
            tracing::debug!(epoch, members = ?next.members(), "client adopted a member list");
            self.inner.shared.replace_if_newer(next.clone());
            *view = Arc::new(View {
                membership: Arc::new(next),
                conns,
            });
        }
        self.start_watchers();
        true
    }

    /// Asks the members, one after another, for their member list and adopts a newer one.
    /// Returns whether the client's list changed.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no member answers.
    pub async fn refresh_members(&self) -> Result<bool> {
        let reply = self.members().await?;
        Ok(self.adopt(reply.epoch, reply.members))
    }

    /// Starts an invalidation watcher for every member that has none, and stops those of
    /// nodes that are no longer members.
    fn start_watchers(&self) {
        self.start_lease_holders();
        let (Some(tier), true) = (&self.inner.local, self.inner.watch) else {
            return;
        };
        let mut watchers = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        per_member(
            &self.view(),
            &mut watchers,
            |t| t,
            |addr, conn| {
                tokio::spawn(watch_node(
                    tier.clone(),
                    conn.channel(),
                    self.inner.app.clone(),
                    self.inner.shared.clone(),
                    addr.to_owned(),
                    Arc::clone(&self.inner.invalidations),
                    (self.inner.config.min_backoff, self.inner.config.max_backoff),
                ))
            },
        );
    }

    /// Starts a lease holder for every member that has none, and stops those of nodes that
    /// are no longer members.
    fn start_lease_holders(&self) {
        let (Some(tier), true) = (&self.inner.local, self.inner.leased) else {
            return;
        };
        let mut leases = self.inner.leases.lock().unwrap_or_else(|e| e.into_inner());
        per_member(
            &self.view(),
            &mut leases,
            |(_, t)| t,
            |_, conn| {
                let held = Arc::new(NodeLeases::new());
                let task = tokio::spawn(hold_leases(
                    Arc::clone(&held),
                    tier.clone(),
                    conn.channel(),
                    self.inner.app.clone(),
                    (self.inner.config.min_backoff, self.inner.config.max_backoff),
                ));
                (held, task)
            },
        );
    }

    /// The leases held from `key`'s home node, when `Strong` reads use leases.
    fn node_leases(&self, key: &str) -> Option<Arc<NodeLeases>> {
        if !self.inner.leased {
            return None;
        }
        let membership = self.membership();
        let leases = self.inner.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases
            .get(membership.owner(key))
            .map(|(held, _)| Arc::clone(held))
    }

    /// After `from` answered that it does not own a key at `epoch`, for a request routed at
    /// `routed_epoch`: adopt its newer list, or retry when the client's list changed since,
    /// or give it ours when it is behind, or ask the members again.
    async fn reroute(
        &self,
        from: &str,
        routed_epoch: u64,
        epoch: u64,
        members: Vec<String>,
    ) -> Reroute {
        let ours = self.membership();
        if epoch > ours.epoch() {
            self.adopt(epoch, members);
            return Reroute::Retry;
        }
        if ours.epoch() > routed_epoch {
            // Another request brought a newer list meanwhile.
            return Reroute::Retry;
        }
        if epoch < ours.epoch() {
            // The node has not heard of the change yet; the epoch the request carries makes
            // it catch up from the store, so a retry finds it current.
            tracing::debug!(node = %from, epoch, ours = ours.epoch(), "node behind");
            return Reroute::Retry;
        }
        match self.refresh_members().await {
            Ok(true) => Reroute::Retry,
            _ => Reroute::GiveUp,
        }
    }

    /// Sets the cache's member list, as a platform does on a scale event. The node that
    /// receives it claims the epoch in the application's store (create-only, so two
    /// controllers cannot both win one epoch), adopts it, and passes it to the others.
    /// `epoch`: that epoch, which must be the next free one (or already claimed for the same
    /// list); `None`: the next free one. Returns the epoch set.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty list, [`Error::InvalidRequest`] for an epoch claimed
    /// for another list, [`Error::Unavailable`] when no node answers.
    pub async fn set_members(&self, epoch: Option<u64>, members: Vec<String>) -> Result<u64> {
        cache_core::validate_addresses(&members)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let next = Membership::new(epoch.unwrap_or(1), members)
            .map_err(|e| Error::Config(e.to_string()))?;
        let request = pb::SetMembersRequest {
            epoch: epoch.unwrap_or(0),
            members: next.members().to_vec(),
            relay: false,
        };
        let mut last = Error::Unavailable("no node answered".into());
        let targets: Vec<String> = next
            .members()
            .iter()
            .chain(self.membership().members())
            .cloned()
            .collect();
        for addr in targets {
            let channel = match self.view().conns.get(&addr) {
                Some(conn) => conn.channel(),
                None => NodeConn::new(&addr, Arc::clone(&self.inner.config))?.channel(),
            };
            let mut admin = pb::admin_client::AdminClient::new(channel);
            match tokio::time::timeout(self.inner.timeout, admin.set_members(request.clone())).await
            {
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    self.adopt(reply.epoch, reply.members);
                    return Ok(reply.epoch);
                }
                Ok(Err(status)) => {
                    let err = Error::from_status(&status);
                    if err.is_invalid_argument() || err.is_denied() {
                        return Err(err);
                    }
                    last = err;
                }
                Err(_) => last = Error::Timeout(self.inner.timeout),
            }
        }
        Err(last)
    }

    /// Scaling advice from the first node that answers.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no node answers.
    pub async fn advice(&self) -> Result<pb::AdviceReply> {
        let mut last = Error::Unavailable("no node answered".into());
        for conn in self.view().conns.values() {
            let mut admin = pb::admin_client::AdminClient::new(conn.channel());
            match tokio::time::timeout(self.inner.timeout, admin.advice(pb::AdviceRequest {})).await
            {
                Ok(Ok(reply)) => return Ok(reply.into_inner()),
                Ok(Err(status)) => last = Error::from_status(&status),
                Err(_) => last = Error::Timeout(self.inner.timeout),
            }
        }
        Err(last)
    }

    /// Reads a blob: `None` when it does not exist in the store.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] (before any network call), [`Error::Unavailable`] when the store
    /// or every node is unreachable, [`Error::Timeout`].
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_entry(key).await?.map(|f| f.value))
    }

    /// Reads a blob with its version and the tier that served it, at the client's
    /// consistency.
    ///
    /// # Errors
    /// As [`CacheClient::get`].
    pub async fn get_entry(&self, key: &str) -> Result<Option<Fetched>> {
        self.get_entry_with(key, self.inner.consistency).await
    }

    /// Reads a blob and its version: `None` when it does not exist.
    ///
    /// # Errors
    /// As [`CacheClient::get`].
    pub async fn get_with_version(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        Ok(self.get_entry(key).await?.map(|f| (f.value, f.version)))
    }

    /// Reads a blob at the given consistency, overriding the client's.
    ///
    /// # Errors
    /// As [`CacheClient::get`].
    pub async fn get_entry_with(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<Fetched>> {
        validate_key(key).map_err(invalid_key)?;
        let c = &self.inner.counters;
        let local = self.inner.local.as_ref();
        let copy = local.and_then(|tier| tier.get(key));
        let leases = match (local, consistency) {
            (Some(_), Consistency::Strong) => self.node_leases(key),
            _ => None,
        };
        if let (Some(copy), Some(leases)) = (&copy, &leases)
            && leases.valid(key, &copy.version, std::time::Instant::now())
        {
            c.local_leased.fetch_add(1, Ordering::Relaxed);
            c.hits_local.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(Fetched {
                value: copy.value.clone(),
                version: copy.version.clone(),
                modified_ms: copy.modified_ms,
                tier: Tier::Local,
            }));
        }
        if let (Some(tier), Some(copy), Consistency::Bounded(bound)) = (local, &copy, consistency)
            && copy.age(tier) <= bound
        {
            c.local_unchecked.fetch_add(1, Ordering::Relaxed);
            c.hits_local.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(Fetched {
                value: copy.value.clone(),
                version: copy.version.clone(),
                modified_ms: copy.modified_ms,
                tier: Tier::Local,
            }));
        }
        let span = tracing::debug_span!("cache.get", key_len = key.len(), ?consistency);
        let result = async {
            let started = local.map_or(0, LocalTier::now_ns);
            // Timed from before the request is sent, on the real monotonic clock whatever clock
            // ages `Bounded` copies: the node times the lease on its own (see
            // `cache_core::lease`).
            let lease = leases
                .as_ref()
                .and_then(|leases| leases.begin(key, std::time::Instant::now()));
            let lease_holder = lease.map_or(0, |(id, _)| id);
            let if_none_match = copy.as_ref().map(|c| c.version.clone()).unwrap_or_default();
            let wire_consistency = match consistency {
                Consistency::Strict => pb::Consistency::Strict,
                Consistency::Strong | Consistency::Bounded(_) => pb::Consistency::Cache,
            };
            let (reply, fallback) = self
                .route(key, true, |fallback| {
                    pb::op::Kind::Get(pb::Get {
                        key: key.to_owned(),
                        fallback,
                        consistency: wire_consistency as i32,
                        if_none_match: if_none_match.clone(),
                        lease_holder: if fallback { 0 } else { lease_holder },
                    })
                })
                .await?;
            if fallback {
                c.fallbacks.fetch_add(1, Ordering::Relaxed);
            }
            match reply {
                pb::reply::Result::NotModified(nm) => {
                    let version = nm.version.map(|v| v.etag).unwrap_or_default();
                    match copy {
                        Some(copy) if copy.version == version => {
                            copy.confirm(started);
                            if let (Some((_, ticket)), Some(leases)) = (lease, &leases)
                                && nm.lease_ms > 0
                            {
                                leases.granted(key, &version, ticket, nm.lease_ms);
                            }
                            c.local_confirmed.fetch_add(1, Ordering::Relaxed);
                            c.hits_local.fetch_add(1, Ordering::Relaxed);
                            Ok(Some(Fetched {
                                value: copy.value.clone(),
                                version,
                                modified_ms: copy.modified_ms,
                                tier: Tier::Local,
                            }))
                        }
                        _ => Err(Error::Internal(format!(
                            "the node confirmed version {version:?}, which this client does not hold"
                        ))),
                    }
                }
                pb::reply::Result::Value(v) => {
                    let (version, modified_ms) = version_parts(v.version);
                    let fetched = Fetched {
                        value: v.value,
                        version,
                        modified_ms,
                        tier: Tier::from_wire(v.tier),
                    };
                    c.value_replies.fetch_add(1, Ordering::Relaxed);
                    match fetched.tier {
                        Tier::Local => &c.hits_local,
                        Tier::Home => &c.hits_home,
                        Tier::Handoff => &c.hits_handoff,
                        Tier::Store => &c.reads_store,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    if let Some(tier) = local {
                        tier.offer(
                            key,
                            fetched.value.clone(),
                            (fetched.version.clone(), fetched.modified_ms),
                            v.hot,
                            started,
                        );
                    }
                    if let (Some((_, ticket)), Some(leases)) = (lease, &leases)
                        && v.lease_ms > 0
                    {
                        leases.granted(key, &fetched.version, ticket, v.lease_ms);
                    }
                    Ok(Some(fetched))
                }
                pb::reply::Result::Error(e) => match Error::from_wire(e) {
                    Error::NotFound(_) => {
                        if let Some(tier) = local {
                            tier.remove(key);
                        }
                        c.not_found.fetch_add(1, Ordering::Relaxed);
                        Ok(None)
                    }
                    other => Err(other),
                },
                other => Err(unexpected(&other)),
            }
        }
        .instrument(span)
        .await;
        self.count(result)
    }

    /// Reads many blobs at once; the result has one entry per key, in order. The gets travel
    /// together, many per message.
    ///
    /// # Errors
    /// The first error any key met.
    pub async fn get_many<I, K>(&self, keys: I) -> Result<Vec<Option<Bytes>>>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let keys: Vec<K> = keys.into_iter().collect();
        futures::future::join_all(keys.iter().map(|k| self.get(k.as_ref())))
            .await
            .into_iter()
            .collect()
    }

    /// Writes a blob: to the store first, then to the cache. Returns the new version.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::ValueTooLarge`], [`Error::Unavailable`] (a write is not
    /// redirected when the home node is down), [`Error::Timeout`].
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<String> {
        self.write(key, value.into(), None).await.map(|w| w.version)
    }

    /// Writes a blob only if its current version is `expected` (the empty string: only if
    /// the blob does not exist). Racing conditional writes through the cache have exactly one
    /// winner; the others fail with [`Error::VersionMismatch`].
    ///
    /// # Errors
    /// [`Error::VersionMismatch`], and those of [`CacheClient::put`].
    pub async fn put_if_version(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        expected: &str,
    ) -> Result<String> {
        self.write(key, value.into(), Some(expected))
            .await
            .map(|w| w.version)
    }

    /// Writes a blob, unconditionally (`if_match` `None`) or as
    /// [`CacheClient::put_if_version`], and returns the new version with its write time.
    ///
    /// # Errors
    /// As [`CacheClient::put_if_version`].
    pub async fn write(&self, key: &str, value: Bytes, if_match: Option<&str>) -> Result<Written> {
        let span = tracing::debug_span!("cache.put", key_len = key.len(), value_len = value.len());
        let result = async {
            validate_key(key).map_err(invalid_key)?;
            let started = self.inner.local.as_ref().map_or(0, LocalTier::now_ns);
            let (reply, _) = self
                .route(key, false, |_| {
                    pb::op::Kind::Put(pb::Put {
                        key: key.to_owned(),
                        value: value.clone(),
                        if_match: if_match.map(str::to_owned),
                    })
                })
                .await?;
            match reply {
                pb::reply::Result::Written(w) => {
                    let (version, modified_ms) = version_parts(w.version);
                    if let Some(tier) = &self.inner.local {
                        let copy = (version.clone(), modified_ms);
                        tier.offer(key, value.clone(), copy, false, started);
                    }
                    Ok(Written {
                        version,
                        modified_ms,
                    })
                }
                pb::reply::Result::Error(e) => Err(Error::from_wire(e)),
                other => Err(unexpected(&other)),
            }
        }
        .instrument(span)
        .await;
        if result.is_ok() {
            self.inner.counters.writes.fetch_add(1, Ordering::Relaxed);
        } else if let Some(tier) = &self.inner.local {
            // The outcome is unknown: do not keep a copy that may be out of date.
            tier.remove(key);
        }
        self.count(result)
    }

    /// Deletes a blob from the store, then from the cache. Deleting a missing blob succeeds.
    ///
    /// # Errors
    /// As [`CacheClient::put`].
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.remove(key, false).await
    }

    /// Tells the key's home node that the blob was just written to the store around the
    /// cache (an object too large to cache, written by the S3 endpoint or [`CachedStore`](
    /// crate::CachedStore)): the node drops its copy as a write would, after lease holders
    /// have dropped theirs. The store is not touched.
    ///
    /// # Errors
    /// As [`CacheClient::put`].
    pub async fn forget(&self, key: &str) -> Result<()> {
        self.remove(key, true).await
    }

    async fn remove(&self, key: &str, forget: bool) -> Result<()> {
        let span = tracing::debug_span!("cache.delete", key_len = key.len(), forget);
        let result = async {
            validate_key(key).map_err(invalid_key)?;
            let (reply, _) = self
                .route(key, false, |_| {
                    pb::op::Kind::Delete(pb::Delete {
                        key: key.to_owned(),
                        forget,
                    })
                })
                .await?;
            if let Some(tier) = &self.inner.local {
                tier.remove(key);
            }
            match reply {
                pb::reply::Result::Deleted(_) => Ok(()),
                pb::reply::Result::Error(e) => Err(Error::from_wire(e)),
                other => Err(unexpected(&other)),
            }
        }
        .instrument(span)
        .await;
        if result.is_ok() {
            self.inner.counters.writes.fetch_add(1, Ordering::Relaxed);
        }
        self.count(result)
    }

    /// Sends an op to the key's home node. For reads (`fallback_ok`), a home node that is down
    /// or unreachable is skipped, and the next node of the ring serves the read from the store
    /// without caching it. A node that no longer owns the key says so with its member list;
    /// the client then routes by the newer list and tries again. Returns the result and
    /// whether a fallback node served it.
    pub(crate) async fn route<F>(
        &self,
        key: &str,
        fallback_ok: bool,
        op: F,
    ) -> Result<(pb::reply::Result, bool)>
    where
        F: Fn(bool) -> pb::op::Kind,
    {
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let mut refreshed = false;
        for _attempt in 0..4 {
            match self.try_route(key, fallback_ok, &op, deadline).await {
                Ok((addr, routed_epoch, pb::reply::Result::Error(e), fallback))
                    if e.code() == pb::ErrorCode::WrongOwner =>
                {
                    match self
                        .reroute(&addr, routed_epoch, e.epoch, e.members.clone())
                        .await
                    {
                        Reroute::Retry => continue,
                        Reroute::GiveUp => return Ok((pb::reply::Result::Error(e), fallback)),
                    }
                }
                Ok((_, _, result, fallback)) => return Ok((result, fallback)),
                // Every candidate is unreachable: the members may have changed without us.
                Err(Error::Unavailable(why)) if !refreshed => {
                    refreshed = true;
                    if !matches!(self.refresh_members().await, Ok(true)) {
                        return Err(Error::Unavailable(why));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "the owner of {key:?} kept changing; try again"
        )))
    }

    async fn try_route<F>(
        &self,
        key: &str,
        fallback_ok: bool,
        op: &F,
        deadline: tokio::time::Instant,
    ) -> Result<(String, u64, pb::reply::Result, bool)>
    where
        F: Fn(bool) -> pb::op::Kind,
    {
        let view = self.view();
        let membership = &view.membership;
        let mut last = None;
        // The home node first; for reads, the rest of the ring's order after it, computed
        // only when needed. `candidates` yields the owner first.
        let limit = if fallback_ok { usize::MAX } else { 1 };
        // Every member has a connection: both come from one list.
        let conn = |addr: &str| Arc::clone(&view.conns[addr]);
        let mut skipped = Vec::new();
        let mut tried = false;
        for (i, addr) in membership.candidates(key).take(limit).enumerate() {
            let conn = conn(addr);
            if conn.is_down() {
                // Believed down: try it only if no other candidate can be tried.
                skipped.push((i, addr, conn));
                continue;
            }
            tried = true;
            match self
                .call_member(addr, &conn, i > 0, op, membership.epoch(), deadline)
                .await
            {
                Ok(result) => return Ok(((*addr).to_owned(), membership.epoch(), result, i > 0)),
                Err(Error::Unavailable(why)) => last = Some(Error::Unavailable(why)),
                Err(other) => return Err(other),
            }
        }
        if !tried {
            for (i, addr, conn) in skipped {
                match self
                    .call_member(addr, &conn, i > 0, op, membership.epoch(), deadline)
                    .await
                {
                    Ok(result) => {
                        return Ok(((*addr).to_owned(), membership.epoch(), result, i > 0));
                    }
                    Err(Error::Unavailable(why)) => last = Some(Error::Unavailable(why)),
                    Err(other) => return Err(other),
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("no node could be reached".into())))
    }

    /// One attempt on the member at `addr`: a direct call when it is the embedded node, else
    /// over `conn`, where a node that cannot be reached is marked down.
    async fn call_member<F>(
        &self,
        addr: &str,
        conn: &NodeConn,
        fallback: bool,
        op: &F,
        epoch: u64,
        deadline: tokio::time::Instant,
    ) -> Result<pb::reply::Result>
    where
        F: Fn(bool) -> pb::op::Kind,
    {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(Error::Timeout(self.inner.timeout));
        }
        let embedded = self
            .inner
            .embedded
            .as_ref()
            .filter(|n| n.member_addr() == Some(addr));
        let reply = match embedded {
            Some(node) => {
                self.inner
                    .counters
                    .direct_calls
                    .fetch_add(1, Ordering::Relaxed);
                let op = pb::Op {
                    id: 0,
                    kind: Some(op(fallback)),
                    epoch,
                };
                Ok(node.call(&self.inner.app, op, remaining).await)
            }
            None => conn.call(op(fallback), epoch, remaining).await,
        };
        match reply {
            Ok(pb::Reply {
                result: Some(result),
                ..
            }) => Ok(result),
            Ok(_) => Err(Error::Internal("a reply without a result".into())),
            Err(Error::Unavailable(why)) => {
                conn.mark_down();
                Err(Error::Unavailable(why))
            }
            Err(Error::Timeout(_)) => Err(Error::Timeout(self.inner.timeout)),
            Err(other) => Err(other),
        }
    }

    pub(crate) fn count<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// This client's counters.
    pub fn client_stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            hits_local: l(&c.hits_local),
            hits_home: l(&c.hits_home),
            hits_handoff: l(&c.hits_handoff),
            reads_store: l(&c.reads_store),
            not_found: l(&c.not_found),
            fallbacks: l(&c.fallbacks),
            writes: l(&c.writes),
            errors: l(&c.errors),
            local_unchecked: l(&c.local_unchecked),
            local_confirmed: l(&c.local_confirmed),
            local_leased: l(&c.local_leased),
            value_replies: l(&c.value_replies),
            ops_sent: self.inner.ops_sent.load(Ordering::Relaxed),
            direct_calls: l(&c.direct_calls),
            invalidations: self.inner.invalidations.load(Ordering::Relaxed),
            local_bytes: self.inner.local.as_ref().map_or(0, LocalTier::bytes),
        }
    }

    /// This client's counters and every node's. A node that does not answer is reported with
    /// its error; the call itself fails only on no node at all.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no node answers.
    pub async fn stats(&self) -> Result<Stats> {
        let timeout = self.inner.timeout;
        let view = self.view();
        let nodes = futures::future::join_all(view.membership.members().iter().map(|addr| {
            let view = &view;
            async move {
                let mut admin = pb::admin_client::AdminClient::new(view.conns[addr].channel());
                let answer = tokio::time::timeout(timeout, admin.stats(pb::StatsRequest {})).await;
                match answer {
                    Ok(Ok(r)) => NodeReport {
                        addr: addr.clone(),
                        stats: Some(r.into_inner()),
                        error: None,
                    },
                    Ok(Err(status)) => NodeReport {
                        addr: addr.clone(),
                        stats: None,
                        error: Some(Error::from_status(&status).to_string()),
                    },
                    Err(_) => NodeReport {
                        addr: addr.clone(),
                        stats: None,
                        error: Some(Error::Timeout(timeout).to_string()),
                    },
                }
            }
        }))
        .await;
        if nodes.iter().all(|n| n.stats.is_none()) {
            return Err(Error::Unavailable("no node answered".into()));
        }
        Ok(Stats {
            client: self.client_stats(),
            nodes,
        })
    }

    /// The member list with the highest epoch that any member reports (all are asked at
    /// once; a node that is behind does not hold the client back).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no node answers.
    pub async fn members(&self) -> Result<pb::MembersReply> {
        let view = self.view();
        let replies = futures::future::join_all(view.membership.members().iter().map(|addr| {
            let mut admin = pb::admin_client::AdminClient::new(view.conns[addr].channel());
            let timeout = self.inner.timeout;
            async move {
                match tokio::time::timeout(timeout, admin.members(pb::MembersRequest {})).await {
                    Ok(Ok(r)) => Ok(r.into_inner()),
                    Ok(Err(status)) => Err(Error::from_status(&status)),
                    Err(_) => Err(Error::Timeout(timeout)),
                }
            }
        }))
        .await;
        let mut last = Error::Unavailable("no node answered".into());
        let mut best: Option<pb::MembersReply> = None;
        for reply in replies {
            match reply {
                Ok(r) if best.as_ref().is_none_or(|b| r.epoch > b.epoch) => best = Some(r),
                Ok(_) => {}
                Err(e) => last = e,
            }
        }
        best.ok_or(last)
    }
}

fn invalid_key(e: cache_core::Error) -> Error {
    match e {
        cache_core::Error::InvalidKey { reason } => Error::InvalidKey(reason),
        other => Error::InvalidKey(other.to_string()),
    }
}

/// A wire version as the tag and the write time (`None` when the node did not know it).
pub(crate) fn version_parts(version: Option<pb::Version>) -> (String, Option<u64>) {
    version
        .map(|v| (v.etag, (v.modified_ms > 0).then_some(v.modified_ms)))
        .unwrap_or_default()
}

pub(crate) fn unexpected(result: &pb::reply::Result) -> Error {
    Error::Internal(format!("unexpected reply {result:?}"))
}
