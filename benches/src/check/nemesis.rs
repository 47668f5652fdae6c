//! The cluster of `cache-server` processes a check runs against, and the nemesis that changes
//! its members and injects faults on a seeded schedule.
//!
//! Every `interval` there is a tick `i` (from 1): a change of members, cycling through
//! scale-out (add a node that is not a member), scale-in (remove a member, keeping two) and
//! move-back (add again the node removed last). Between ticks:
//! - after odd ticks, `kill`: SIGKILL a member, restart it on the same address 1 s later;
//! - before the tick after an even one, `stop`: SIGSTOP a member, so that the change of that
//!   tick happens while it is frozen, and SIGCONT it 2 s later (a lagging node);
//! - after tick 4, 16, 28, ..., `store`: SIGSTOP the moto process for 10 s.
//!
//! Every step has a deadline; a step that fails is counted and not retried.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cache_client::CacheClient;
use cache_proto::v1 as pb;
use object_store::{ObjectStore, ObjectStoreExt};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde::Serialize;
use tokio::time::Instant;

use crate::procs::{Moto, Node, NodeConfig};

/// The deadline of an admin call of the nemesis.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The deadline of one nemesis step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a killed node stays down.
const KILL_DOWN: Duration = Duration::from_secs(1);
/// How long a stopped node stays frozen: shorter than the clients' deadline, so that writes
/// queued at it while it lags are acknowledged when it wakes (a node that wakes after its
/// clients gave up can only produce writes of unknown outcome, which hide stale reads).
const STOP_FROZEN: Duration = Duration::from_millis(1200);
/// How long the store stays frozen.
const STORE_OUTAGE: Duration = Duration::from_secs(10);
/// Fewest members a scale-in leaves.
const MIN_MEMBERS: usize = 2;

/// Which faults the nemesis injects.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    /// Changes of members.
    pub members: bool,
    /// SIGKILL and restart.
    pub kill: bool,
    /// SIGSTOP and SIGCONT of a node.
    pub stop: bool,
    /// SIGSTOP and SIGCONT of the store.
    pub store: bool,
    /// Freezes of client processes (see [`super::workload::pauses`]).
    pub pause: bool,
}

/// What the nemesis did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NemesisCounts {
    /// Changes of members that a node acknowledged.
    pub membership_changes: u64,
    /// Changes of members that failed or timed out.
    pub membership_changes_failed: u64,
    /// Nodes killed.
    pub kills: u64,
    /// Restarts that failed.
    pub restarts_failed: u64,
    /// Nodes stopped.
    pub stops: u64,
    /// Store outages.
    pub store_outages: u64,
}

/// The nodes of a run and the member list the nemesis set last.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// Every node: the initial members first, then the spares.
    pub nodes: Vec<Node>,
    /// Indices of the members, as last set.
    pub members: BTreeSet<usize>,
    /// The epoch last set.
    pub epoch: u64,
    /// The store's process, when it is moto.
    pub moto: Option<Moto>,
    /// A client of the application's store, for changes claimed there directly.
    store: Arc<dyn ObjectStore>,
    /// Changes pushed so far (two in three are claimed in the store and told to one node
    /// alone, as when relays fail).
    pushes: u64,
    config: NodeConfig,
    last_removed: Option<usize>,
    /// A node stopped just before a change: the change removes it, so that every write it
    /// took before it froze is for a key that has moved by the time it wakes.
    lagging: Option<usize>,
    /// The clock of the history, for fault windows.
    clock: Option<cache_testkit::Recorder>,
    /// Faults in progress, by name, with their start on the history's clock.
    open: std::collections::HashMap<String, u64>,
    /// Faults that ended: start and end on the history's clock.
    pub windows: Vec<(u64, u64)>,
    /// What the nemesis did, with when on the history's clock.
    pub events: Vec<(u64, String)>,
}

impl Cluster {
    /// Starts every node alone, then makes the first `members` of them the members.
    ///
    /// # Errors
    /// When a node does not start or the first member list is not taken.
    pub async fn start(
        config: NodeConfig,
        mut nodes: Vec<Node>,
        members: usize,
        moto: Option<Moto>,
        store: Arc<dyn ObjectStore>,
    ) -> anyhow::Result<Self> {
        for node in &mut nodes {
            node.start(&config, &[]).await?;
        }
        let mut cluster = Self {
            nodes,
            members: BTreeSet::new(),
            // Every node starts alone at epoch 1.
            epoch: 1,
            moto,
            store,
            pushes: 0,
            config,
            last_removed: None,
            lagging: None,
            clock: None,
            open: std::collections::HashMap::new(),
            windows: Vec::new(),
            events: Vec::new(),
        };
        let first: BTreeSet<usize> = (0..members).collect();
        // Every node is alone at epoch 1; the node asked relays the list to the others.
        let addrs: Vec<String> = first.iter().map(|&i| cluster.addr(i)).collect();
        let app = cluster.config.app.clone();
        let via = cluster.addr(0);
        let set = async move {
            let admin = CacheClient::builder()
                .app(app)
                .nodes([via])
                .timeout(ADMIN_TIMEOUT)
                .connect_timeout(Duration::from_millis(500))
                .build()
                .await?;
            admin.set_members(None, addrs).await
        };
        cluster.epoch = tokio::time::timeout(STEP_TIMEOUT, set)
            .await
            .map_err(|_| anyhow::anyhow!("setting the first member list: no answer"))?
            .map_err(|e| anyhow::anyhow!("setting the first member list: {e}"))?;
        cluster.members = first;
        anyhow::ensure!(
            cluster.wait_converged(Duration::from_secs(15)).await,
            "the nodes did not all take the first member list"
        );
        Ok(cluster)
    }

    /// Times fault windows on `clock`, the history's.
    pub fn set_clock(&mut self, clock: cache_testkit::Recorder) {
        self.clock = Some(clock);
    }

    /// Notes what the nemesis did, for the summary's event list.
    fn note(&mut self, what: String) {
        if let Some(clock) = &self.clock {
            self.events.push((clock.now_ns(), what));
        }
    }

    fn fault_began(&mut self, name: String) {
        if let Some(clock) = &self.clock {
            self.open.entry(name).or_insert_with(|| clock.now_ns());
        }
    }

    fn fault_ended(&mut self, name: &str) {
        if let (Some(clock), Some(start)) = (&self.clock, self.open.remove(name)) {
            self.windows.push((start, clock.now_ns()));
        }
    }

    /// Ends every fault window still open (after healing).
    pub fn close_windows(&mut self) {
        let names: Vec<String> = self.open.keys().cloned().collect();
        for name in names {
            self.fault_ended(&name);
        }
    }

    fn addr(&self, i: usize) -> String {
        self.nodes[i].addr().unwrap_or_default().to_owned()
    }

    /// The members' addresses.
    pub fn member_addrs(&self) -> Vec<String> {
        self.members.iter().map(|&i| self.addr(i)).collect()
    }

    fn healthy_members(&mut self) -> Vec<usize> {
        let members: Vec<usize> = self.members.iter().copied().collect();
        members
            .into_iter()
            .filter(|&i| self.nodes[i].is_healthy())
            .collect()
    }

    /// The next epoch no record claims yet: probes the store from the last one known.
    async fn next_free_epoch(&self) -> anyhow::Result<u64> {
        let mut epoch = self.epoch + 1;
        for _ in 0..64 {
            let path = object_store::path::Path::from(cache_core::fence::EpochRecord::path(epoch));
            let head = tokio::time::timeout(ADMIN_TIMEOUT, self.store.head(&path))
                .await
                .map_err(|_| anyhow::anyhow!("probing epoch {epoch} in the store: no answer"))?;
            match head {
                Ok(_) => epoch += 1,
                Err(object_store::Error::NotFound { .. }) => return Ok(epoch),
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("more than 64 epochs claimed since {}", self.epoch)
    }

    /// Sets `next` as the member list at a new epoch by asking the node at `via` alone, as a
    /// platform does; the node claims the epoch in the store and relays it.
    ///
    /// Two changes in three are claimed in the store directly instead, the way a controller
    /// with store access can, and told to the node at `via` as a relay, which it does not pass
    /// on: the other nodes must find it themselves, as when relays fail.
    async fn push(&mut self, next: BTreeSet<usize>, via: String) -> anyhow::Result<()> {
        self.pushes += 1;
        let members: Vec<String> = next.iter().map(|&i| self.addr(i)).collect();
        let partial = self.pushes % 3 != 1;
        let epoch = if partial {
            let epoch = self.next_free_epoch().await?;
            let record = cache_core::fence::EpochRecord {
                epoch,
                members: members.clone(),
            };
            let path = object_store::path::Path::from(cache_core::fence::EpochRecord::path(epoch));
            let opts = object_store::PutOptions {
                mode: object_store::PutMode::Create,
                ..Default::default()
            };
            tokio::time::timeout(
                STEP_TIMEOUT,
                self.store.put_opts(&path, record.to_bytes().into(), opts),
            )
            .await
            .map_err(|_| anyhow::anyhow!("claiming epoch {epoch} in the store: no answer"))??;
            epoch
        } else {
            // The node claims the next free epoch itself.
            0
        };
        let request = pb::SetMembersRequest {
            epoch,
            members,
            relay: partial,
        };
        let url = format!("http://{via}");
        let call = async move {
            let mut admin = pb::admin_client::AdminClient::connect(url).await?;
            let reply = admin.set_members(request).await?;
            anyhow::Ok(reply.into_inner())
        };
        let reply = tokio::time::timeout(STEP_TIMEOUT, call)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {STEP_TIMEOUT:?}"))??;
        anyhow::ensure!(
            epoch == 0 || reply.epoch == epoch,
            "the node is at epoch {}, not {epoch}",
            reply.epoch
        );
        self.epoch = self.epoch.max(reply.epoch);
        let names: Vec<&str> = next.iter().map(|&i| self.nodes[i].name()).collect();
        let how = if partial {
            "claimed in the store, told to"
        } else {
            "relayed by"
        };
        let what = format!("epoch {}: members {names:?}, {how} {via}", reply.epoch);
        self.note(what);
        self.members = next;
        Ok(())
    }

    /// Sets `next` through a random healthy member.
    async fn change(&mut self, next: BTreeSet<usize>, rng: &mut StdRng) -> anyhow::Result<()> {
        let via = *self
            .healthy_members()
            .choose(rng)
            .ok_or_else(|| anyhow::anyhow!("no healthy member to ask"))?;
        let via = self.addr(via);
        self.push(next, via).await
    }

    /// Waits until every running member reports the epoch last set. Returns whether they did
    /// within `timeout`.
    pub async fn wait_converged(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let addrs: Vec<String> = self
                .healthy_members()
                .into_iter()
                .map(|i| self.addr(i))
                .collect();
            let epochs = futures::future::join_all(addrs.iter().map(|a| node_epoch(a))).await;
            if epochs.iter().all(|e| e.is_some_and(|e| e >= self.epoch)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends every fault: continues the store and every stopped node, restarts every node that
    /// is down, and sets the member list once more at a new epoch. Returns whether every
    /// member took it.
    pub async fn heal(&mut self, counts: &mut NemesisCounts, rng: &mut StdRng) -> bool {
        if let Some(moto) = &mut self.moto
            && moto.is_stopped()
            && let Err(e) = moto.cont()
        {
            tracing::warn!(error = %e, "could not continue the store");
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_stopped()
                && let Err(e) = self.nodes[i].cont()
            {
                tracing::warn!(node = self.nodes[i].name(), error = %e, "could not continue");
            }
            if !self.nodes[i].is_up() {
                self.restart(i, counts).await;
            }
        }
        // A member that could not be restarted leaves the list.
        let mut next = self.members.clone();
        next.retain(|&i| self.nodes[i].is_up());
        if next.is_empty() {
            return false;
        }
        for _ in 0..3 {
            if self.change(next.clone(), rng).await.is_ok() {
                return self.wait_converged(Duration::from_secs(15)).await;
            }
        }
        false
    }

    async fn restart(&mut self, i: usize, counts: &mut NemesisCounts) {
        let peers = if self.members.contains(&i) {
            self.member_addrs()
        } else {
            Vec::new()
        };
        let config = self.config.clone();
        let started =
            tokio::time::timeout(STEP_TIMEOUT, self.nodes[i].start(&config, &peers)).await;
        if !matches!(started, Ok(Ok(()))) {
            counts.restarts_failed += 1;
            let why = match started {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            tracing::warn!(node = self.nodes[i].name(), %why, "restart failed");
        }
    }
}

/// A node's epoch, asked of that node alone.
pub(crate) async fn node_epoch(addr: &str) -> Option<u64> {
    let ask = async {
        let mut admin = pb::admin_client::AdminClient::connect(format!("http://{addr}"))
            .await
            .ok()?;
        let reply = admin.members(pb::MembersRequest {}).await.ok()?;
        Some(reply.into_inner().epoch)
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .ok()
        .flatten()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    // Ends of faults first when due at the same time as a tick.
    Restart(usize),
    Cont(usize),
    StoreUp,
    Tick(u32),
    Kill,
    Stop,
    StoreDown,
}

/// The kinds of change of members, in the order ticks cycle through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Out,
    In,
    Back,
}

/// Runs the schedule from `start` for `duration`; leaves faults in progress to
/// [`Cluster::heal`].
pub(crate) async fn run(
    cluster: &mut Cluster,
    faults: Faults,
    interval: Duration,
    rng: &mut StdRng,
    start: Instant,
    duration: Duration,
) -> NemesisCounts {
    let mut counts = NemesisCounts::default();
    let mut queue: Vec<(Duration, Event)> = vec![(interval, Event::Tick(1))];
    // The earliest event first; ties in the order of `Event`.
    while let Some(pos) = queue
        .iter()
        .enumerate()
        .min_by_key(|(_, (at, e))| (*at, *e))
        .map(|(i, _)| i)
    {
        let (at, event) = queue.swap_remove(pos);
        if at >= duration {
            break;
        }
        tokio::time::sleep_until(start + at).await;
        let now = start.elapsed();
        let step = step(cluster, faults, interval, rng, event, now, &mut counts);
        match tokio::time::timeout(STEP_TIMEOUT * 2, step).await {
            Ok(next) => queue.extend(next),
            Err(_) => tracing::warn!(?event, "nemesis step timed out"),
        }
    }
    counts
}

/// Performs one event; returns the events it schedules.
async fn step(
    cluster: &mut Cluster,
    faults: Faults,
    interval: Duration,
    rng: &mut StdRng,
    event: Event,
    now: Duration,
    counts: &mut NemesisCounts,
) -> Vec<(Duration, Event)> {
    let mut next = Vec::new();
    match event {
        Event::Tick(i) => {
            let at = interval * i;
            next.push((interval * (i + 1), Event::Tick(i + 1)));
            if faults.members {
                let kind = [Change::Out, Change::In, Change::Back][(i as usize - 1) % 3];
                match change_members(cluster, kind, rng).await {
                    Ok(()) => counts.membership_changes += 1,
                    Err(e) => {
                        counts.membership_changes_failed += 1;
                        tracing::warn!(error = %e, "change of members failed");
                    }
                }
            }
            if faults.kill && i % 2 == 1 {
                let after = interval.mul_f64(rng.random_range(0.3..0.5));
                next.push((at + after, Event::Kill));
            }
            if faults.stop && i % 2 == 0 {
                let lead = Duration::from_millis(500).min(interval / 4);
                next.push((interval * (i + 1) - lead, Event::Stop));
            }
            if faults.store && cluster.moto.is_some() && i % 12 == 4 {
                next.push((at + interval.mul_f64(0.6), Event::StoreDown));
            }
        }
        Event::Kill => {
            let healthy = cluster.healthy_members();
            if healthy.len() > 1
                && let Some(&victim) = healthy.choose(rng)
            {
                match cluster.nodes[victim].kill() {
                    Ok(()) => {
                        counts.kills += 1;
                        cluster.fault_began(format!("node {victim}"));
                        tracing::info!(node = cluster.nodes[victim].name(), "killed");
                        let what = format!("killed {}", cluster.nodes[victim].name());
                        cluster.note(what);
                        next.push((now + KILL_DOWN, Event::Restart(victim)));
                    }
                    Err(e) => tracing::warn!(error = %e, "kill failed"),
                }
            }
        }
        Event::Restart(i) => {
            if !cluster.nodes[i].is_up() {
                cluster.restart(i, counts).await;
                let what = format!("restarted {}", cluster.nodes[i].name());
                cluster.note(what);
            }
            cluster.fault_ended(&format!("node {i}"));
        }
        Event::Stop => {
            let healthy = cluster.healthy_members();
            if healthy.len() > 1
                && let Some(&victim) = healthy.choose(rng)
            {
                match cluster.nodes[victim].stop() {
                    Ok(()) => {
                        counts.stops += 1;
                        cluster.lagging = Some(victim);
                        cluster.fault_began(format!("node {victim}"));
                        tracing::info!(node = cluster.nodes[victim].name(), "stopped");
                        let what = format!("stopped {}", cluster.nodes[victim].name());
                        cluster.note(what);
                        next.push((now + STOP_FROZEN, Event::Cont(victim)));
                    }
                    Err(e) => tracing::warn!(error = %e, "stop failed"),
                }
            }
        }
        Event::Cont(i) => {
            if cluster.nodes[i].is_stopped()
                && let Err(e) = cluster.nodes[i].cont()
            {
                tracing::warn!(error = %e, "continue failed");
            }
            let what = format!("continued {}", cluster.nodes[i].name());
            cluster.note(what);
            cluster.fault_ended(&format!("node {i}"));
        }
        Event::StoreDown => {
            if let Some(moto) = &mut cluster.moto {
                match moto.stop() {
                    Ok(()) => {
                        counts.store_outages += 1;
                        cluster.fault_began("store".into());
                        tracing::info!("store stopped");
                        cluster.note("stopped the store".into());
                        next.push((now + STORE_OUTAGE, Event::StoreUp));
                    }
                    Err(e) => tracing::warn!(error = %e, "stopping the store failed"),
                }
            }
        }
        Event::StoreUp => {
            if let Some(moto) = &mut cluster.moto
                && let Err(e) = moto.cont()
            {
                tracing::warn!(error = %e, "continuing the store failed");
            }
            cluster.note("continued the store".into());
            cluster.fault_ended("store");
        }
    }
    next
}

/// One change of members of `kind`, or of another kind when that one is not possible.
async fn change_members(
    cluster: &mut Cluster,
    kind: Change,
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    if let Some(lagging) = cluster.lagging.take()
        && cluster.members.contains(&lagging)
        && cluster.members.len() > MIN_MEMBERS
        && cluster.nodes[lagging].is_stopped()
    {
        let mut next = cluster.members.clone();
        next.remove(&lagging);
        cluster.last_removed = Some(lagging);
        tracing::info!(
            node = cluster.nodes[lagging].name(),
            "scale-in of a stopped node"
        );
        return cluster.change(next, rng).await;
    }
    let order = match kind {
        Change::Out => [Change::Out, Change::Back, Change::In],
        Change::In => [Change::In, Change::Out, Change::Back],
        Change::Back => [Change::Back, Change::Out, Change::In],
    };
    for kind in order {
        let mut next = cluster.members.clone();
        match kind {
            Change::Out => {
                let mut spares: Vec<usize> = (0..cluster.nodes.len())
                    .filter(|i| !cluster.members.contains(i) && Some(*i) != cluster.last_removed)
                    .collect();
                spares.retain(|&i| cluster.nodes[i].is_healthy());
                let Some(&added) = spares.choose(rng) else {
                    continue;
                };
                next.insert(added);
                tracing::info!(node = cluster.nodes[added].name(), "scale-out");
            }
            Change::In => {
                if next.len() <= MIN_MEMBERS {
                    continue;
                }
                let members: Vec<usize> = next.iter().copied().collect();
                let Some(&removed) = members.choose(rng) else {
                    continue;
                };
                next.remove(&removed);
                cluster.last_removed = Some(removed);
                tracing::info!(node = cluster.nodes[removed].name(), "scale-in");
            }
            Change::Back => {
                let Some(back) = cluster.last_removed else {
                    continue;
                };
                if next.contains(&back) || !cluster.nodes[back].is_healthy() {
                    continue;
                }
                next.insert(back);
                cluster.last_removed = None;
                tracing::info!(node = cluster.nodes[back].name(), "move-back");
            }
        }
        return cluster.change(next, rng).await;
    }
    anyhow::bail!("no change of members is possible now")
}
