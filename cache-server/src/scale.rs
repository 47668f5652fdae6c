//! Scale events on one node: claiming and adopting epochs, collecting fence acks, handing
//! entries over, and draining. The decisions are [`cache_core::fence`]'s; this module carries
//! its messages.
//!
//! # A change of members, on one node
//! ```text
//! SetMembers ──▶ claim epoch E in the store (create-only) ──▶ adopt E ──▶ relay E to old and new members
//! relay / request routed at E / handoff at E / fence(E) / store probe ──▶ read record E ──▶ adopt E
//!
//! adopt E ──▶ bump the cache's generations (loads and writes in flight cache nothing)
//!         ──▶ keys given up: kept aside ("departed") for Peek and handoff; stale copies dropped
//!               (a write that lands later drops its key's copy from there)
//!         ──▶ fence itself: the same fence as for a peer, then count its own ack in seals
//!         ──▶ fence loop: ask every member of the epochs since the seal to be fenced at E,
//!               until sealed (a peer that refuses connections counts after `fence_grace`,
//!               at least one lease length)
//!         ──▶ handoff: once this node's own older writes finished and E is sealed,
//!               stream the departed entries, hottest first, to their new owners
//!         ──▶ not a member any more? drained
//! ```
//! A fence request makes the node adopt E if it has not, then waits until none of its writes
//! admitted at an older epoch is in flight, then revokes its leases on the keys it gave up.
//! Serving never waits for any of this; only writes to keys that are not settled do.
//!
//! At start-up a node asks the store whether it checks versions itself, and leaves a record
//! of its process ([`PROCESS_PREFIX`]): when another process served on its address before,
//! it takes no write for one lease length, and answers fences only after the fence grace.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cache_core::fence::{Access, Adopted, Ownership};
use cache_core::{Entry, Error, Membership, Version, key_hash};
use cache_proto::v1 as pb;
use object_store::ObjectStoreExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::node::CacheNode;
use crate::scale_state::{Departed, Gained, ScaleState, Written, lock};

/// Where each node process leaves a record, under its address, when it starts: a process
/// that finds one knows that another served on its address before it.
pub(crate) const PROCESS_PREFIX: &str = "_cachelet/processes/";

/// A handoff batch is closed at this many value bytes.
const HANDOFF_BATCH_BYTES: usize = 256 * 1024;
/// Batches in flight per destination: with the batch size, the bound on bytes in flight.
const HANDOFF_BATCHES_IN_FLIGHT: usize = 4;
/// How long a peer call of the scaling machinery may take.
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a miss waits for the previous owner before going to the store.
const PEEK_TIMEOUT: Duration = Duration::from_millis(250);
/// Fence requests are retried with backoff from this...
const FENCE_RETRY_MIN: Duration = Duration::from_millis(20);
/// ...up to this.
const FENCE_RETRY_MAX: Duration = Duration::from_secs(1);
/// How long a fence request may wait for the node's older writes to finish.
const FENCE_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Manifests older than this are ignored and deleted.
pub(crate) const MANIFEST_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long a starting node keeps trying to reach the store for its epoch.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a failed peer call means that nothing listens at the peer's address any more.
fn refused(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = err.source();
    }
    format!("{status:?}").contains("onnection refused")
}

impl CacheNode {
    pub(crate) fn scale(&self) -> &ScaleState {
        &self.inner.scale
    }

    pub(crate) fn me(&self) -> String {
        self.addr().unwrap_or_default().to_owned()
    }

    /// A channel to a peer node, opened lazily and reused, carrying the node's peer token
    /// (and, with TLS, its certificate).
    pub(crate) fn peer(&self, addr: &str) -> crate::security::PeerChannel {
        let mut peers = lock(&self.scale().peers);
        let channel = peers
            .entry(addr.to_owned())
            .or_insert_with(|| {
                self.peer_endpoint(addr)
                    .map(|e| {
                        e.connect_timeout(PEER_TIMEOUT)
                            .tcp_nodelay(true)
                            .connect_lazy()
                    })
                    .unwrap_or_else(|| {
                        // An address that is no URI authority (or, with TLS, a node without
                        // a peer CA) cannot be a peer; calls to it fail at once.
                        Endpoint::from_static("http://invalid.invalid").connect_lazy()
                    })
            })
            .clone();
        self.with_peer_token(channel)
    }

    /// On start: takes the newest epoch from the store, or claims epoch 1 for the configured
    /// members when the store holds none (a new cluster). Retries while the store is out.
    pub(crate) async fn boot(&self) -> crate::Result<()> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut backoff = FENCE_RETRY_MIN;
        loop {
            match self.boot_once().await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "cannot read the membership epoch from the store yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(FENCE_RETRY_MAX);
                }
                Err(e) => {
                    return Err(crate::Error::Config(format!(
                        "could not read the membership epoch from the store: {e}"
                    )));
                }
            }
        }
        self.scale().ready.send_replace(true);
        Ok(())
    }

    async fn boot_once(&self) -> Result<(), Error> {
        let epochs = &self.inner.epochs;
        self.probe_conditional_writes().await;
        if self.restarted().await? {
            self.scale().restarted.store(true, Ordering::Relaxed);
            // A previous process on this address may have granted read leases, which holders
            // honour until they end, and which this process cannot invalidate since it does
            // not know them. Its writes wait until they have ended.
            let lease = self.inner.leases.lease();
            *lock(&self.scale().quiet_until) = Some(self.scale().started + lease);
        }
        if epochs.latest_from(1).await?.is_none() {
            // A new cluster: the configured members become epoch 1, unless another node
            // claimed it first (then its list wins).
            epochs
                .claim_first(self.membership().members().to_vec())
                .await?;
        }
        let latest = epochs
            .latest_from(1)
            .await?
            .ok_or_else(|| Error::StoreUnavailable("epoch 1 vanished from the store".into()))?;
        self.catch_up(latest).await?;
        Ok(())
    }

    /// Whether a process served on this node's address before, by a record each process
    /// leaves in the store at start-up ([`PROCESS_PREFIX`]); leaves this process's record.
    async fn restarted(&self) -> Result<bool, Error> {
        let store = &self.inner.store;
        let me = self.me();
        let name: String = me
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = object_store::path::Path::from(format!("{PROCESS_PREFIX}{name}"));
        let to_error = |e: object_store::Error| crate::store::request_error(&e);
        let timeout = self.inner.store_timeout;
        let before = match tokio::time::timeout(timeout, store.head(&path)).await {
            Ok(Ok(_)) => true,
            Ok(Err(object_store::Error::NotFound { .. })) => false,
            Ok(Err(e)) => return Err(to_error(e)),
            Err(_) => return Err(Error::StoreUnavailable("the store did not answer".into())),
        };
        let record = bytes::Bytes::from(me.into_bytes());
        match tokio::time::timeout(timeout, store.put(&path, record.into())).await {
            Ok(Ok(_)) => Ok(before),
            Ok(Err(e)) => Err(to_error(e)),
            Err(_) => Err(Error::StoreUnavailable("the store did not answer".into())),
        }
    }

    /// How long a node that just started waits before it answers fence requests, and how
    /// long a peer that refuses connections must have refused them before it counts as
    /// fenced: the configured grace, and at least one lease length, since the process that
    /// ended may have granted leases that holders honour until they end.
    fn fence_grace(&self) -> Duration {
        self.scale()
            .config
            .fence_grace
            .max(self.inner.leases.lease())
    }

    /// Waits, for a write, until the leases a previous process on this address may have
    /// granted have ended (see `boot_once`); fails when that is beyond `budget`.
    pub(crate) async fn wait_quiet(&self, budget: Duration) -> Result<(), Error> {
        let Some(until) = *lock(&self.scale().quiet_until) else {
            return Ok(());
        };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            *lock(&self.scale().quiet_until) = None;
            return Ok(());
        }
        if left > budget {
            return Err(Error::NotSettled(format!(
                "the node started {:?} ago, and waits for leases a previous process on its \
                 address may have granted to end",
                self.scale().started.elapsed()
            )));
        }
        tokio::time::sleep(left).await;
        Ok(())
    }

    /// Completes once this node is a member and its epoch is sealed, so that the keys it owns
    /// are settled.
    pub(crate) async fn wait_member_and_sealed(&self) {
        let me = self.me();
        while !self
            .inner
            .epochs
            .with(|o| o.current().contains(&me) && o.is_sealed())
        {
            self.inner.epochs.changed(Duration::from_secs(1)).await;
        }
    }

    /// Completes once the node has its membership epoch from the store and serves by it.
    pub async fn ready(&self) {
        let mut ready = self.scale().ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Claims an epoch for `members` in the store (`epoch`: that one, which must be the next
    /// free one; `None`: the next free one), adopts it, and passes it on to every old and new
    /// member. Returns whether this node adopted a newer list.
    ///
    /// # Errors
    /// An invalid list, an epoch claimed for another list, or a store that cannot be reached.
    pub async fn set_members<I, S>(&self, epoch: Option<u64>, members: I) -> Result<bool, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let members: Vec<String> = members.into_iter().map(Into::into).collect();
        let previous = self.membership();
        let claimed = self.inner.epochs.claim(epoch, members).await?;
        let adopted = self.catch_up(claimed.epoch()).await?;
        self.relay(&previous, &self.membership()).await;
        Ok(adopted)
    }

    /// Adopts the record of `epoch` if it is newer than this node's, and reacts to the
    /// change. Returns whether it adopted one.
    ///
    /// # Errors
    /// No record claims `epoch`, or the store cannot be reached.
    pub(crate) async fn catch_up(&self, epoch: u64) -> Result<bool, Error> {
        if epoch <= self.inner.epochs.epoch() {
            // Adopted already, though its clean-up may still be running: wait for it.
            drop(self.scale().adopting.lock().await);
            return Ok(false);
        }
        let _adopting = self.scale().adopting.lock().await;
        match self.inner.epochs.catch_up(epoch).await? {
            Some(adopted) => {
                self.on_adopted(adopted).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Passes `next`'s epoch to every member of `previous` and `next` but this node.
    async fn relay(&self, previous: &Membership, next: &Membership) {
        let me = self.me();
        let targets: HashSet<&String> = previous
            .members()
            .iter()
            .chain(next.members())
            .filter(|m| **m != me)
            .collect();
        let request = pb::SetMembersRequest {
            epoch: next.epoch(),
            members: next.members().to_vec(),
            relay: true,
        };
        futures::future::join_all(targets.into_iter().map(|addr| {
            let mut admin = pb::admin_client::AdminClient::new(self.peer(addr));
            let request = request.clone();
            async move {
                match tokio::time::timeout(PEER_TIMEOUT, admin.set_members(request)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        tracing::debug!(peer = %addr, %status, "relay of members failed")
                    }
                    Err(_) => tracing::debug!(peer = %addr, "relay of members timed out"),
                }
            }
        }))
        .await;
    }

    /// After adopting a newer epoch: stops loads and writes in flight from caching, sets the
    /// entries of keys given up aside, drops copies that may have missed writes, and starts
    /// the fence loop and the handoff.
    async fn on_adopted(&self, adopted: Adopted) {
        let entries = &self.inner.entries;
        entries.bump_all().await;
        let me = self.me();
        let current = Arc::clone(&adopted.current);
        let epoch = current.epoch();
        let mut departed = HashMap::new();
        for (key, entry) in entries.snapshot() {
            if let Some(object) = cache_core::chunks::object_of(&key) {
                // Chunks are never handed over (the new owner reads them from the store), and
                // never go stale (they are named by version): those of keys given up only take
                // room.
                if current.owner(object) != me {
                    entries.invalidate(&key).await;
                }
                continue;
            }
            if current.owner(&key) != me {
                // Only a copy this node held as the key's owner is worth handing over.
                if adopted.previous.owner(&key) == me {
                    departed.insert(Arc::clone(&key), entry);
                }
                entries.invalidate(&key).await;
            } else if !adopted.kept(&key, &me) {
                entries.invalidate(&key).await;
            }
        }
        let window = self.scale().config.handoff_window;
        *lock(&self.scale().departed) = Some(Departed {
            epoch,
            until: Instant::now() + window,
            entries: departed,
        });
        {
            let mut written = lock(&self.scale().written);
            if written.epoch < epoch {
                *written = Written::new(epoch, Instant::now() + window);
            }
        }
        *lock(&self.scale().gained) = (adopted.previous.epoch() + 1 == epoch).then(|| Gained {
            epoch,
            previous: Arc::clone(&adopted.previous),
            until: Instant::now() + window,
        });
        self.scale().drained.store(false, Ordering::SeqCst);
        let mut tasks = lock(&self.scale().tasks);
        for task in tasks.drain(..) {
            task.abort();
        }
        let node = self.clone();
        tasks.push(tokio::spawn(async move { node.fence_self(epoch).await }));
        let node = self.clone();
        tasks.push(tokio::spawn(async move { node.fence_loop(epoch).await }));
        let node = self.clone();
        tasks.push(tokio::spawn(async move { node.hand_off(epoch).await }));
    }

    /// Fences this node itself at `epoch`, as it does for a peer's request, and records its
    /// own ack: only then does it count itself in a seal, which other nodes take as a fact.
    /// Retries with backoff until it succeeds or the node moves on.
    async fn fence_self(&self, epoch: u64) {
        let epochs = &self.inner.epochs;
        let me = self.me();
        let mut backoff = FENCE_RETRY_MIN;
        while epochs.epoch() == epoch {
            match self.fence_adopted().await {
                Ok((drained, sealed)) => {
                    epochs.record_ack(&me, drained, sealed);
                    return;
                }
                Err(e) => tracing::debug!(error = %e, epoch, "could not fence this node itself"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(FENCE_RETRY_MAX);
        }
    }

    /// Until the node's epoch `epoch` is sealed (or the node moves on): asks every node whose
    /// ack it lacks to be fenced at `epoch`, with backoff.
    async fn fence_loop(&self, epoch: u64) {
        let epochs = &self.inner.epochs;
        let mut refused_since: HashMap<String, Instant> = HashMap::new();
        let mut backoff = FENCE_RETRY_MIN;
        loop {
            if epochs.epoch() != epoch {
                return;
            }
            epochs.fill_lists().await;
            let targets = epochs.with(Ownership::fence_targets);
            if epochs.with(Ownership::is_sealed) {
                tracing::debug!(epoch, "sealed");
                return;
            }
            let request = pb::FenceRequest {
                app: self.app().to_owned(),
                epoch,
            };
            let grace = self.fence_grace();
            let replies = futures::future::join_all(targets.iter().map(|target| {
                let mut peer = pb::peer_client::PeerClient::new(self.peer(target));
                let request = request.clone();
                async move {
                    let reply = tokio::time::timeout(PEER_TIMEOUT * 2, peer.fence(request)).await;
                    (target, reply)
                }
            }))
            .await;
            for (target, reply) in replies {
                match reply {
                    Ok(Ok(reply)) => {
                        let reply = reply.into_inner();
                        refused_since.remove(target);
                        epochs.record_ack(target, reply.epoch, reply.sealed);
                    }
                    Ok(Err(status)) if refused(&status) => {
                        // Nothing listens there: the process is gone. Once its store writes
                        // have had time to land, it cannot write again.
                        let since = *refused_since
                            .entry(target.clone())
                            .or_insert_with(Instant::now);
                        if since.elapsed() >= grace {
                            tracing::info!(peer = %target, epoch, "taking an unreachable peer as fenced");
                            epochs.record_ack(target, epoch, 0);
                        }
                    }
                    Ok(Err(status)) => {
                        refused_since.remove(target);
                        tracing::debug!(peer = %target, %status, "fence request failed")
                    }
                    Err(_) => {
                        refused_since.remove(target);
                        tracing::debug!(peer = %target, "fence request timed out")
                    }
                }
            }
            if epochs.with(Ownership::is_sealed) {
                tracing::debug!(epoch, "sealed");
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(FENCE_RETRY_MAX);
        }
    }

    /// Answers a fence request for `epoch`: adopts it if needed, waits, when a process served
    /// on this address before, until this node has been up for the fence grace (so that that
    /// process's writes have landed and its leases ended), then until none of its writes
    /// admitted at an older epoch is in flight, then revokes its leases on keys it gave up.
    /// Returns the epoch whose older writes it drained (its epoch when it began draining;
    /// it may have adopted a newer one since) and the highest epoch it knows to be sealed.
    ///
    /// # Errors
    /// No record claims `epoch`, the store cannot be reached, or writes did not finish in time.
    pub(crate) async fn fence(&self, epoch: u64) -> Result<(u64, u64), Error> {
        if self.inner.epochs.fencing() {
            self.catch_up(epoch).await?;
        }
        self.fence_adopted().await
    }

    /// [`CacheNode::fence`] once the epoch is adopted: the wait, the drain, the revocation.
    async fn fence_adopted(&self) -> Result<(u64, u64), Error> {
        let epochs = &self.inner.epochs;
        let mut drained = None;
        if epochs.fencing() {
            let up = self.scale().started.elapsed();
            let grace = self.fence_grace();
            if self.scale().restarted.load(Ordering::Relaxed) && up < grace {
                tokio::time::sleep(grace - up).await;
            }
            let current = epochs.epoch();
            tokio::time::timeout(FENCE_DRAIN_TIMEOUT, epochs.drained_below(current))
                .await
                .map_err(|_| Error::Timeout(FENCE_DRAIN_TIMEOUT))?;
            // No lease this node granted on a key it gave up may outlive the ack: the key's
            // new owner serves and writes it once every previous owner has acked.
            let owns = |key: &str| {
                epochs.with(|o| o.list(current).is_some_and(|l| l.owner(key) == o.me()))
            };
            tokio::time::timeout(FENCE_DRAIN_TIMEOUT, self.inner.leases.revoke(current, owns))
                .await
                .map_err(|_| Error::Timeout(FENCE_DRAIN_TIMEOUT))?;
            drained = Some(current);
        }
        // The ack names the epoch whose older writes were drained, not the node's epoch now:
        // it may have adopted a newer one meanwhile, with writes of the epochs between still
        // in flight.
        Ok(epochs.with(|o| (drained.unwrap_or(o.epoch()), o.sealed())))
    }

    /// Hands the entries given up at `epoch` to their new owners, once this node's own older
    /// writes have finished and the epoch is sealed (so that the new owners can take them),
    /// then marks the node drained if it is no longer a member.
    async fn hand_off(&self, epoch: u64) {
        let epochs = &self.inner.epochs;
        let window = self.scale().config.handoff_window;
        let deadline = tokio::time::Instant::now() + window;
        let _ = tokio::time::timeout_at(deadline, epochs.drained_below(epoch)).await;
        while !epochs.with(Ownership::is_sealed) && tokio::time::Instant::now() < deadline {
            if epochs.epoch() != epoch {
                return;
            }
            epochs.changed(Duration::from_millis(200)).await;
        }
        let me = self.me();
        let current = self.membership();
        if current.epoch() != epoch {
            return;
        }
        let mut by_owner: HashMap<String, Vec<(u32, Arc<str>, Entry)>> = HashMap::new();
        if self.scale().config.handoff {
            let departed = lock(&self.scale().departed);
            if let Some(d) = departed.as_ref().filter(|d| d.epoch == epoch) {
                for (key, entry) in &d.entries {
                    let freq = self.inner.sketch.estimate(key_hash(key));
                    by_owner
                        .entry(current.owner(key).to_owned())
                        .or_default()
                        .push((freq, Arc::clone(key), entry.clone()));
                }
            }
        }
        let total: usize = by_owner.values().map(Vec::len).sum();
        if total > 0 {
            tracing::info!(
                entries = total,
                owners = by_owner.len(),
                epoch,
                "handing entries over"
            );
        }
        futures::future::join_all(by_owner.into_iter().map(|(owner, mut entries)| {
            entries.sort_by_key(|e| std::cmp::Reverse(e.0));
            async move { self.send_to(epoch, &owner, entries).await }
        }))
        .await;
        if !current.contains(&me) {
            self.scale().drained.store(true, Ordering::SeqCst);
            tracing::info!("drained");
        }
        // Keep the departed entries for Peek until the window ends, then let them go.
        tokio::time::sleep_until(deadline).await;
        let mut departed = lock(&self.scale().departed);
        if departed.as_ref().is_some_and(|d| d.epoch == epoch) {
            *departed = None;
        }
    }

    /// Streams `entries` to `owner` in batches, with a few batches in flight at most.
    async fn send_to(&self, epoch: u64, owner: &str, entries: Vec<(u32, Arc<str>, Entry)>) {
        let (tx, rx) = mpsc::channel::<pb::HandoffBatch>(HANDOFF_BATCHES_IN_FLIGHT);
        let max_message = usize::try_from(self.limits().max_value_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(HANDOFF_BATCH_BYTES * 2);
        let mut peer = pb::peer_client::PeerClient::new(self.peer(owner))
            .max_encoding_message_size(max_message)
            .max_decoding_message_size(max_message);
        let app = self.app().to_owned();
        let sealed = self.inner.epochs.with(Ownership::sealed);
        let account = self.reply_budget().node_account();
        let wait = self.scale().config.handoff_window;
        let produce = async move {
            // The batches in flight hold their bytes against the reply budget; the oldest is
            // released as each new one is queued.
            let mut in_flight = std::collections::VecDeque::new();
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut entries = entries.into_iter().peekable();
            while let Some((_, key, entry)) = entries.next() {
                bytes += entry.value.len();
                batch.push(pb::HandoffEntry {
                    key: key.to_string(),
                    value: entry.value,
                    version: entry.version.as_str().to_owned(),
                    modified_ms: entry.version.modified_ms().unwrap_or(0),
                });
                if bytes >= HANDOFF_BATCH_BYTES || batch.len() >= 1024 || entries.peek().is_none() {
                    let Ok(held) = account.hold(bytes as u64, wait).await else {
                        tracing::warn!("handoff stopped: the reply budget stayed full");
                        return;
                    };
                    in_flight.push_back(held);
                    if in_flight.len() > HANDOFF_BATCHES_IN_FLIGHT + 1 {
                        in_flight.pop_front();
                    }
                    bytes = 0;
                    let message = pb::HandoffBatch {
                        app: app.clone(),
                        epoch,
                        entries: std::mem::take(&mut batch),
                        members: Vec::new(),
                        sealed,
                    };
                    if tx.send(message).await.is_err() {
                        return;
                    }
                }
            }
        };
        let window = self.scale().config.handoff_window;
        let call = tokio::time::timeout(window, peer.handoff(ReceiverStream::new(rx)));
        let (reply, ()) = tokio::join!(call, produce);
        match reply {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                self.scale()
                    .handoff_sent
                    .fetch_add(reply.accepted, Ordering::Relaxed);
                tracing::info!(%owner, accepted = reply.accepted, refused = reply.refused, "handed over");
            }
            Ok(Err(status)) => tracing::warn!(%owner, %status, "handoff failed"),
            Err(_) => tracing::warn!(%owner, "handoff did not finish within the window"),
        }
    }

    /// Takes entries handed over at `epoch` by their previous owner, which knows `sealed` to be
    /// sealed. A batch from an older epoch than this node's is refused whole; one from a
    /// newer epoch is taken after adopting it. An entry is taken only when its key is this
    /// node's and settled, was not written here in this epoch, and is not cached already.
    /// Returns how many entries were accepted and refused.
    pub(crate) async fn accept_handoff(
        &self,
        epoch: u64,
        sealed: u64,
        entries: Vec<pb::HandoffEntry>,
    ) -> (u64, u64) {
        let epochs = &self.inner.epochs;
        let fencing = epochs.fencing();
        // Also for an epoch adopted already: its clean-up may still be running, and the
        // window of keys written here opens with it.
        if fencing && self.catch_up(epoch).await.is_err() {
            return (0, entries.len() as u64);
        }
        epochs.learn_seal(sealed);
        let (mut accepted, total) = (0, entries.len() as u64);
        let current = epochs.epoch();
        for entry in entries {
            let ok = (!fencing || epoch == current)
                && cache_core::validate_key(&entry.key).is_ok()
                && epochs.access(&entry.key, 0) == Ok(Some(Access::Cached))
                && self
                    .inner
                    .entries
                    .insert_unless(
                        &entry.key,
                        Entry::new(
                            entry.value,
                            Version::new(entry.version).with_modified_ms(entry.modified_ms),
                        ),
                        || self.scale().was_written(&entry.key, current),
                    )
                    .await;
            accepted += u64::from(ok);
        }
        let refused = total - accepted;
        let scale = self.scale();
        scale
            .handoff_received
            .fetch_add(accepted, Ordering::Relaxed);
        scale.handoff_refused.fetch_add(refused, Ordering::Relaxed);
        (accepted, refused)
    }

    /// During the window after a change that gave this node `key`: the previous owner's copy
    /// of it, as it was when that owner was fenced, unless this node wrote the key since.
    pub(crate) async fn peek_previous_owner(&self, key: &str) -> Option<Entry> {
        if !self.scale().config.handoff {
            return None;
        }
        let me = self.me();
        let (epoch, previous) = {
            let gained = lock(&self.scale().gained);
            let g = gained.as_ref()?;
            if Instant::now() >= g.until || g.epoch != self.inner.epochs.epoch() {
                return None;
            }
            let owner = g.previous.owner(key);
            if owner == me || self.scale().was_written(key, g.epoch) {
                return None;
            }
            (g.epoch, owner.to_owned())
        };
        let mut peer = pb::peer_client::PeerClient::new(self.peer(&previous));
        let request = pb::PeekRequest {
            app: self.app().to_owned(),
            key: key.to_owned(),
            epoch,
        };
        match tokio::time::timeout(PEEK_TIMEOUT, peer.peek(request)).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                reply.found.then(|| {
                    Entry::new(
                        reply.value,
                        Version::new(reply.version).with_modified_ms(reply.modified_ms),
                    )
                })
            }
            _ => None,
        }
    }

    /// The copy of `key` this node gave up at `epoch`, if it still holds it (for `Peek`).
    pub(crate) fn departed(&self, key: &str, epoch: u64) -> Option<Entry> {
        let departed = lock(&self.scale().departed);
        let d = departed.as_ref()?;
        (d.epoch == epoch && Instant::now() < d.until)
            .then(|| d.entries.get(key).cloned())
            .flatten()
    }

    /// Whether this node, no longer a member, has handed all its entries over.
    pub fn is_drained(&self) -> bool {
        self.scale().drained.load(Ordering::SeqCst)
    }

    /// Waits until the node is drained, for at most `timeout`. Returns whether it is.
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_drained() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Until `stop`: asks the store whether a newer epoch was claimed, and a random peer of
    /// the current and previous lists for its epoch, adopting a newer one.
    pub(crate) async fn gossip(&self, mut stop: watch::Receiver<bool>) {
        let interval = self.scale().config.gossip_interval;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(interval) => {}
            }
            match self.inner.epochs.probe().await {
                Ok(Some(latest)) => {
                    if let Err(e) = self.catch_up(latest).await {
                        tracing::debug!(error = %e, latest, "could not adopt the newest epoch");
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "could not probe the store for epochs"),
            }
            let me = self.me();
            let mut others: Vec<String> = self.membership().members().to_vec();
            if let Some(g) = lock(&self.scale().gained).as_ref() {
                others.extend(g.previous.members().iter().cloned());
            }
            others.retain(|m| *m != me);
            others.sort();
            others.dedup();
            if others.is_empty() {
                continue;
            }
            let peer = &others[rand::random_range(0..others.len())];
            let mut admin = pb::admin_client::AdminClient::new(self.peer(peer));
            if let Ok(Ok(reply)) =
                tokio::time::timeout(PEER_TIMEOUT, admin.members(pb::MembersRequest {})).await
            {
                let epoch = reply.into_inner().epoch;
                if let Err(e) = self.catch_up(epoch).await {
                    tracing::debug!(error = %e, epoch, "could not adopt a peer's epoch");
                }
            }
        }
    }
}
