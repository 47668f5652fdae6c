//! Membership from the platform: a discovery source reports which nodes are alive, and one
//! controller per node turns those reports into epochs.
//!
//! ```text
//! source (static | dns | kubernetes | gossip) ──▶ view: the addresses alive
//!   ──▶ cache_core::discovery::Proposer (damped joins, leaves of members seen to go,
//!         the lowest-addressed live member proposes)
//!   ──▶ check the proposal with the nodes themselves: every node that joins must answer an
//!         authenticated Health call for this app; a member never seen alive leaves only if
//!         it does not answer
//!   ──▶ CacheNode::set_members(Some(epoch + 1), list): the create-only claim of the next
//!         epoch in the store, then the same fence, handoff and drain as `SetMembers`
//! ```
//! Two nodes whose views differ may both propose; the claim of epoch E + 1 is a create-only
//! write, so one wins, and the other adopts its list and proposes again from there. A claim
//! that timed out may have been applied: the controller never assumes either, it reads the
//! epoch back on its next round.
//!
//! The sources are in `gossip` (chitchat), `kubernetes` (kube's EndpointSlice watcher) and
//! `dns` (hickory-resolver); each feeds a `View`.

mod dns;
mod gossip;
mod kubernetes;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_core::discovery::Proposer;
use cache_proto::v1 as pb;
use futures::StreamExt;
use tokio::sync::watch;

use crate::node::CacheNode;
use crate::scale::PEER_TIMEOUT;

/// What a source reports: the addresses alive, or `None` before its first report.
pub(crate) type View = watch::Sender<Option<BTreeSet<String>>>;

/// The default port of `--gossip-listen`.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;

/// Nodes asked at once whether they are alive: a scale-out of many pods is checked in a few
/// peer timeouts, not one per pod.
const ASKS_IN_FLIGHT: usize = 32;

/// How often a DNS name is resolved again, by default.
pub const DEFAULT_DNS_INTERVAL: Duration = Duration::from_secs(2);

/// Where a node learns who is alive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Discovery {
    /// The member list given at start (`--peers`), changed only by `SetMembers`.
    #[default]
    Static,
    /// The ready endpoints of a Kubernetes Service, from its `discovery.k8s.io/v1`
    /// EndpointSlices, each with this node's own port.
    Kubernetes {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        service: String,
    },
    /// The A and AAAA records of a name (a headless Service's, say), each with `port`.
    Dns {
        /// The name to resolve.
        name: String,
        /// The gRPC port of every node.
        port: u16,
        /// The name server to ask, instead of the system's (`dns:NAME:PORT@SERVER`).
        server: Option<SocketAddr>,
    },
    /// Gossip (chitchat, scuttlebutt with a phi-accrual failure detector) over UDP.
    Gossip {
        /// Gossip addresses (`HOST:PORT`) of nodes to contact first; names are resolved.
        seeds: Vec<String>,
    },
}

impl FromStr for Discovery {
    type Err = crate::Error;

    /// Parses `static`, `kubernetes:NAMESPACE/SERVICE`, `dns:NAME:PORT[@SERVER]` or
    /// `gossip:SEED[,SEED…]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| crate::Error::Config(format!("--discovery {s:?}: {why}"));
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        match kind {
            "static" if rest.is_empty() => Ok(Self::Static),
            "kubernetes" | "k8s" => {
                let (namespace, service) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("expected kubernetes:NAMESPACE/SERVICE"))?;
                if namespace.is_empty() || service.is_empty() || service.contains('/') {
                    return Err(bad("expected kubernetes:NAMESPACE/SERVICE"));
                }
                Ok(Self::Kubernetes {
                    namespace: namespace.to_owned(),
                    service: service.to_owned(),
                })
            }
            "dns" => {
                let (target, server) = match rest.split_once('@') {
                    Some((target, server)) => {
                        let server = server
                            .parse()
                            .map_err(|_| bad("the name server must be IP:PORT"))?;
                        (target, Some(server))
                    }
                    None => (rest, None),
                };
                let (name, port) = target
                    .rsplit_once(':')
                    .ok_or_else(|| bad("expected dns:NAME:PORT"))?;
                let port = port.parse().map_err(|_| bad("the port must be a number"))?;
                if name.is_empty() {
                    return Err(bad("expected dns:NAME:PORT"));
                }
                Ok(Self::Dns {
                    name: name.to_owned(),
                    port,
                    server,
                })
            }
            "gossip" => {
                let seeds: Vec<String> = rest
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if seeds.is_empty() {
                    return Err(bad("expected gossip:SEED[,SEED…]"));
                }
                Ok(Self::Gossip { seeds })
            }
            _ => Err(bad(
                "expected static, kubernetes:NAMESPACE/SERVICE, dns:NAME:PORT or gossip:SEEDS",
            )),
        }
    }
}

impl fmt::Display for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static => f.write_str("static"),
            Self::Kubernetes { namespace, service } => {
                write!(f, "kubernetes:{namespace}/{service}")
            }
            Self::Dns { name, port, server } => {
                write!(f, "dns:{name}:{port}")?;
                match server {
                    Some(server) => write!(f, "@{server}"),
                    None => Ok(()),
                }
            }
            Self::Gossip { seeds } => write!(f, "gossip:{}", seeds.join(",")),
        }
    }
}

/// Settings of discovery; see the setters of [`crate::CacheNodeBuilder`].
#[derive(Debug, Clone)]
pub(crate) struct DiscoveryConfig {
    pub source: Discovery,
    pub join_after: Duration,
    pub unseen_for: Duration,
    pub gossip_listen: Option<SocketAddr>,
    pub gossip_interval: Duration,
    pub dns_interval: Duration,
    /// The fault of [`crate::CacheNodeBuilder::discovery_unchecked`].
    pub unchecked: bool,
    /// The fault of [`crate::CacheNodeBuilder::discovery_trusting`].
    pub trusting: bool,
    /// The fault of [`crate::CacheNodeBuilder::discovery_count_unready`].
    pub count_unready: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            source: Discovery::Static,
            join_after: cache_core::discovery::DEFAULT_READY_FOR,
            unseen_for: cache_core::discovery::DEFAULT_UNSEEN_FOR,
            gossip_listen: None,
            gossip_interval: gossip::DEFAULT_INTERVAL,
            dns_interval: DEFAULT_DNS_INTERVAL,
            unchecked: false,
            trusting: false,
            count_unready: false,
        }
    }
}

/// What discovery did, for Stats and Prometheus.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub proposals: AtomicU64,
    pub lost_claims: AtomicU64,
    pub refused_joins: AtomicU64,
    pub confirmed_gone: AtomicU64,
}

impl Counters {
    /// Fills in `stats`' discovery fields.
    pub(crate) fn fill(&self, stats: &mut pb::NodeStats) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        stats.discovery_proposals = load(&self.proposals);
        stats.discovery_lost_claims = load(&self.lost_claims);
        stats.discovery_refused_joins = load(&self.refused_joins);
        stats.discovery_confirmed_gone = load(&self.confirmed_gone);
    }
}

fn count(c: &AtomicU64, n: usize) {
    c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// What a node answered when asked whether it is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A node of this app that is not shutting down.
    Alive,
    /// A node of this app on its way out.
    Leaving,
    /// No answer, an error, or a node of another app.
    Silent,
}

impl CacheNode {
    /// Starts this node's discovery source, if it has one, and the controller that turns its
    /// reports into epochs. Both stop with `stop`.
    pub(crate) async fn start_discovery(
        &self,
        stop: watch::Receiver<bool>,
    ) -> crate::Result<Vec<tokio::task::JoinHandle<()>>> {
        let config = self.inner.discovery.clone();
        let (view, seen) = watch::channel(None);
        let source = match &config.source {
            Discovery::Static => return Ok(Vec::new()),
            Discovery::Gossip { seeds } => {
                let gossip = gossip::Gossip::start(self, &config, seeds.clone()).await?;
                let node = self.clone();
                let stop = stop.clone();
                tokio::spawn(async move { gossip.run(node, view, stop).await })
            }
            Discovery::Kubernetes { namespace, service } => {
                let watcher = kubernetes::Watcher::connect(self, namespace, service)
                    .await?
                    .count_unready(config.count_unready);
                let stop = stop.clone();
                tokio::spawn(async move { watcher.run(view, stop).await })
            }
            Discovery::Dns { name, port, server } => {
                let resolver =
                    dns::Resolver::new(name.clone(), *port, *server, config.dns_interval)?;
                let stop = stop.clone();
                tokio::spawn(async move { resolver.run(view, stop).await })
            }
        };
        tracing::info!(source = %config.source, join_after = ?config.join_after, "discovery started");
        let node = self.clone();
        let controller = tokio::spawn(async move { node.discover(seen, stop).await });
        Ok(vec![source, controller])
    }

    /// The controller: feeds every report of the view to a [`Proposer`] and claims the epochs
    /// it proposes, until `stop`.
    async fn discover(
        &self,
        mut seen: watch::Receiver<Option<BTreeSet<String>>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let config = &self.inner.discovery;
        let mut proposer =
            Proposer::new(self.me(), config.join_after).unseen_for(config.unseen_for);
        if config.trusting {
            proposer = proposer.trusting();
        }
        // Joins come due without a new report: look again at least this often.
        let tick = (config.join_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        // Members kept last round although gossip took them for dead (logged once a change).
        let mut kept: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                changed = seen.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(tick) => {}
            }
            if self.is_shutting_down() {
                // A node on its way out proposes nothing: the others remove it.
                continue;
            }
            let Some(alive) = seen.borrow_and_update().clone() else {
                continue;
            };
            let now = Instant::now();
            proposer.observe(now, alive);
            let current = self.membership();
            proposer.settle(current.members());
            for (addr, answer) in self
                .ask_all(proposer.unconfirmed(now, current.members()))
                .await
            {
                if answer == Answer::Silent {
                    tracing::info!(%addr, "a member never seen alive does not answer");
                    count(&self.inner.discovery_counters.confirmed_gone, 1);
                    proposer.confirm_gone(&addr);
                }
            }
            let Some(list) = proposer.proposal(now, current.members()) else {
                continue;
            };
            let list = if config.unchecked {
                list
            } else {
                self.checked(list, &current, &mut kept).await
            };
            let same: BTreeSet<&String> = current.members().iter().collect();
            if list.is_empty() || list.iter().collect::<BTreeSet<_>>() == same {
                continue;
            }
            let epoch = current.epoch() + 1;
            tracing::info!(epoch, members = ?list, "discovery proposes a new member list");
            match self.set_members(Some(epoch), list).await {
                Ok(_) => count(&self.inner.discovery_counters.proposals, 1),
                Err(e) => {
                    count(&self.inner.discovery_counters.lost_claims, 1);
                    // Another proposer won the epoch, or the outcome is unknown: read the
                    // newest epoch back and look again from there.
                    tracing::info!(error = %e, epoch, "the proposal did not take; catching up");
                    if let Ok(Some(latest)) = self.inner.epochs.probe().await
                        && let Err(e) = self.catch_up(latest).await
                    {
                        tracing::debug!(error = %e, latest, "could not adopt the newest epoch");
                    }
                }
            }
        }
    }

    /// `list` as the nodes themselves confirm it: joins that do not answer as live nodes of
    /// this app are left out; with gossip, members that it takes for dead but that still
    /// answer are put back (`kept`: those put back last round, so that a change is logged
    /// once).
    async fn checked(
        &self,
        mut list: Vec<String>,
        current: &cache_core::Membership,
        kept: &mut Vec<String>,
    ) -> Vec<String> {
        // A source's word is not enough to make a node a member: gossip and DNS are
        // unauthenticated. Every node that joins must answer as a node of this app.
        let me = self.me();
        let joining = list.iter().filter(|a| !current.contains(a) && **a != me);
        let refused = self.answering(joining.cloned().collect(), false).await;
        if !refused.is_empty() {
            count(&self.inner.discovery_counters.refused_joins, refused.len());
            tracing::warn!(
                ?refused,
                "discovered nodes that do not answer as members of this app are left out"
            );
            list.retain(|a| !refused.contains(a));
        }
        if matches!(self.inner.discovery.source, Discovery::Gossip { .. }) {
            // Gossip's failure detector is one node's view of its peers: a member it takes
            // for dead leaves only if it does not answer either, or answers that it is
            // leaving. (A Kubernetes or DNS view is the platform's own, and a pod that fails
            // its readiness probe leaves though it may still answer.)
            let leaving = current.members().iter().filter(|m| !list.contains(m));
            let alive = self.answering(leaving.cloned().collect(), true).await;
            if !alive.is_empty() && alive != *kept {
                tracing::info!(
                    ?alive,
                    "members that gossip takes for dead still answer: they stay"
                );
            }
            list.extend(alive.iter().cloned());
            list.sort();
            *kept = alive;
        }
        list
    }

    /// Those of `addrs` that answer as live nodes of this app (`alive`), or those that do not.
    async fn answering(&self, addrs: Vec<String>, alive: bool) -> Vec<String> {
        self.ask_all(addrs)
            .await
            .into_iter()
            .filter(|(_, answer)| (*answer == Answer::Alive) == alive)
            .map(|(addr, _)| addr)
            .collect()
    }

    /// Asks every node of `addrs` whether it is alive, [`ASKS_IN_FLIGHT`] at a time.
    async fn ask_all(&self, addrs: Vec<String>) -> Vec<(String, Answer)> {
        futures::stream::iter(addrs)
            .map(|addr| async move {
                let answer = self.ask(&addr).await;
                (addr, answer)
            })
            .buffer_unordered(ASKS_IN_FLIGHT)
            .collect()
            .await
    }

    /// Asks the node at `addr`, with this node's peer credentials, whether it is alive.
    async fn ask(&self, addr: &str) -> Answer {
        let mut admin = pb::admin_client::AdminClient::new(self.peer(addr));
        match tokio::time::timeout(PEER_TIMEOUT, admin.health(pb::HealthRequest {})).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                if reply.app != self.app() {
                    Answer::Silent
                } else if reply.status == pb::health_reply::Status::ShuttingDown as i32 {
                    Answer::Leaving
                } else {
                    Answer::Alive
                }
            }
            _ => Answer::Silent,
        }
    }

    /// On shutdown, with discovery: waits until the others have removed this node from the
    /// member list (its source stopped reporting it), at most `timeout`. A node alone in the
    /// list does not wait.
    pub(crate) async fn await_removal(&self, timeout: Duration) {
        if self.inner.discovery.source == Discovery::Static {
            return;
        }
        let me = self.me();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = self.membership();
            if !m.contains(&me) || m.members().len() == 1 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(?timeout, "still a member when the wait for removal ended");
                return;
            }
            self.inner.epochs.changed(Duration::from_millis(200)).await;
            if let Ok(Some(latest)) = self.inner.epochs.probe().await {
                let _ = self.catch_up(latest).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_source() {
        for (text, want) in [
            ("static", Discovery::Static),
            (
                "kubernetes:shop/cachelet",
                Discovery::Kubernetes {
                    namespace: "shop".into(),
                    service: "cachelet".into(),
                },
            ),
            (
                "dns:cachelet.shop.svc.cluster.local:7070",
                Discovery::Dns {
                    name: "cachelet.shop.svc.cluster.local".into(),
                    port: 7070,
                    server: None,
                },
            ),
            (
                "dns:cachelet:7070@127.0.0.1:5353",
                Discovery::Dns {
                    name: "cachelet".into(),
                    port: 7070,
                    server: Some("127.0.0.1:5353".parse().unwrap()),
                },
            ),
            (
                "gossip:10.0.0.1:7946,seed.example:7946",
                Discovery::Gossip {
                    seeds: vec!["10.0.0.1:7946".into(), "seed.example:7946".into()],
                },
            ),
        ] {
            let parsed: Discovery = text.parse().unwrap();
            assert_eq!(parsed, want, "{text}");
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn refuses_malformed_sources() {
        for bad in [
            "",
            "static:x",
            "kubernetes:ns",
            "kubernetes:/svc",
            "dns:name",
            "dns:name:port",
            "dns::7070",
            "dns:n:1@nowhere",
            "gossip:",
            "consul:x",
        ] {
            let e = bad.parse::<Discovery>().unwrap_err();
            assert!(e.to_string().contains("--discovery"), "{bad}: {e}");
        }
    }
}
