//! [`Epochs`]: a node's fenced view of membership, as a thin async shell around
//! [`cache_core::fence::Ownership`]. It carries the messages the state machine needs:
//! - **Epoch records** in the application's store: claimed create-only
//!   ([`Epochs::claim`]), read before any epoch is adopted ([`Epochs::catch_up`]), and probed
//!   for newer ones ([`Epochs::probe`]).
//! - **The write gate**: every write holds a [`WriteGuard`] for the epoch it was admitted at,
//!   so that a fence request for a newer epoch can wait until no older write is in flight
//!   ([`Epochs::drained_below`]).
//! - **Waiting for settlement**: a write to a key that is not settled waits until the acks
//!   arrive ([`Epochs::wait_settled`]).
//!
//! It knows nothing of the cache or of peers: the rebalancing part of the node (`scale`)
//! reacts to what [`Epochs::catch_up`] returns, and feeds acks in with [`Epochs::record_ack`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cache_core::fence::{Access, Adopted, EpochRecord, MAX_LISTS, Ownership};
use cache_core::{Error, Membership};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::{Notify, watch};

/// How many times a claim of the next epoch is retried when another controller wins it.
const CLAIM_TRIES: usize = 16;
/// Verified epoch records kept in memory.
const RECORD_CACHE: usize = 256;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent, even if it panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A node's fenced membership.
#[derive(Debug)]
pub(crate) struct Epochs {
    store: Arc<dyn ObjectStore>,
    own: RwLock<Ownership>,
    /// Bumped on every change of the state (adopt, ack, seal): waiters re-check.
    changed: watch::Sender<u64>,
    /// Writes in flight, by the epoch they were admitted at.
    gate: Mutex<BTreeMap<u64, usize>>,
    gate_drained: Notify,
    records: Mutex<HashMap<u64, Arc<Membership>>>,
    /// One catch-up at a time: concurrent requests that carry a newer epoch share its work.
    catching_up: tokio::sync::Mutex<()>,
    store_timeout: Duration,
}

/// A write admitted at an epoch; dropping it lets fences for newer epochs proceed.
#[derive(Debug)]
pub(crate) struct WriteGuard<'a> {
    epochs: &'a Epochs,
    epoch: u64,
}

impl WriteGuard<'_> {
    /// The epoch the write was admitted at.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let mut gate = lock(&self.epochs.gate);
        if let Some(n) = gate.get_mut(&self.epoch) {
            *n -= 1;
            if *n == 0 {
                gate.remove(&self.epoch);
                self.epochs.gate_drained.notify_waiters();
            }
        }
    }
}

impl Epochs {
    pub fn new(store: Arc<dyn ObjectStore>, own: Ownership, store_timeout: Duration) -> Self {
        Self {
            store,
            changed: watch::channel(own.epoch()).0,
            own: RwLock::new(own),
            gate: Mutex::default(),
            gate_drained: Notify::new(),
            records: Mutex::default(),
            catching_up: tokio::sync::Mutex::new(()),
            store_timeout,
        }
    }

    /// Runs `f` on the ownership state.
    pub fn with<R>(&self, f: impl FnOnce(&Ownership) -> R) -> R {
        f(&self.own.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn update<R>(&self, f: impl FnOnce(&mut Ownership) -> R) -> R {
        let result = f(&mut self.own.write().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|n| *n += 1);
        result
    }

    /// The current member list.
    pub fn current(&self) -> Arc<Membership> {
        self.with(|o| Arc::clone(o.current()))
    }

    pub fn epoch(&self) -> u64 {
        self.with(Ownership::epoch)
    }

    pub fn fencing(&self) -> bool {
        self.with(Ownership::fencing)
    }

    pub fn set_me(&self, me: &str) {
        self.update(|o| o.set_me(me));
    }

    /// Checks a request routed by `epoch` (0: none) for `key`: the access this node has, or
    /// `WrongOwner`. `Ok(None)` means the request carries a newer epoch: catch up first.
    pub fn access(&self, key: &str, epoch: u64) -> Result<Option<Access>, Error> {
        self.with(|o| {
            if o.fencing() && epoch != 0 {
                if epoch > o.epoch() {
                    return Ok(None);
                }
                if epoch < o.epoch() {
                    return Err(o.wrong_owner());
                }
            }
            o.access(key).map(Some)
        })
    }

    pub fn record_ack(&self, node: &str, epoch: u64, sealed: u64) {
        self.update(|o| o.record_ack(node, epoch, sealed));
    }

    pub fn learn_seal(&self, sealed: u64) {
        if sealed > self.with(Ownership::sealed) {
            self.update(|o| o.learn_seal(sealed));
        }
    }

    /// Admits a write of `key` at the current epoch, once the key is settled or `budget`
    /// has passed.
    ///
    /// # Errors
    /// `WrongOwner` when the node does not own the key; `NotSettled` when its previous owners
    /// were not all fenced in time.
    pub async fn admit_write(&self, key: &str, budget: Duration) -> Result<WriteGuard<'_>, Error> {
        let deadline = tokio::time::Instant::now() + budget;
        let mut changes = self.changed.subscribe();
        loop {
            let epoch = self.epoch();
            let guard = self.enter(epoch);
            // Admission and adoption are ordered through the gate's lock: a fence that waits
            // for older writes either sees this guard, or this check sees its newer epoch.
            let access = self.with(|o| {
                if o.epoch() == epoch {
                    o.access(key).map(Some)
                } else {
                    Ok(None)
                }
            })?;
            match access {
                Some(Access::Cached) => return Ok(guard),
                None => continue,
                Some(Access::Unsettled) => {
                    drop(guard);
                    let waiting = self.with(|o| o.fence_targets());
                    let wait = tokio::time::timeout_at(deadline, changes.changed());
                    if !matches!(wait.await, Ok(Ok(()))) {
                        return Err(Error::NotSettled(format!(
                            "the key's previous owners are not all fenced at epoch {epoch} \
                             (waiting for {waiting:?})"
                        )));
                    }
                }
            }
        }
    }

    fn enter(&self, epoch: u64) -> WriteGuard<'_> {
        *lock(&self.gate).entry(epoch).or_insert(0) += 1;
        WriteGuard {
            epochs: self,
            epoch,
        }
    }

    /// Waits until no write admitted at an epoch older than `epoch` is in flight.
    pub async fn drained_below(&self, epoch: u64) {
        loop {
            let drained = self.gate_drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if lock(&self.gate).range(..epoch).next().is_none() {
                return;
            }
            drained.await;
        }
    }

    /// Waits until the state changes, or `timeout`.
    pub async fn changed(&self, timeout: Duration) {
        let mut changes = self.changed.subscribe();
        let _ = tokio::time::timeout(timeout, changes.changed()).await;
    }

    fn store_call_timeout(&self) -> Duration {
        self.store_timeout
    }

    /// The record of `epoch`, from memory or the store. `Ok(None)` when no record claims it.
    pub async fn record(&self, epoch: u64) -> Result<Option<Arc<Membership>>, Error> {
        if let Some(m) = lock(&self.records).get(&epoch) {
            return Ok(Some(Arc::clone(m)));
        }
        let path = Path::from(EpochRecord::path(epoch));
        let read = async {
            match self.store.get(&path).await {
                Ok(got) => got.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let bytes = tokio::time::timeout(self.store_call_timeout(), read)
            .await
            .map_err(|_| Error::StoreUnavailable("reading an epoch record timed out".into()))?
            .map_err(|e| crate::store::request_error(&e))?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let membership = Arc::new(EpochRecord::parse(epoch, &bytes)?.membership()?);
        let mut records = lock(&self.records);
        if records.len() >= RECORD_CACHE
            && let Some(&oldest) = records.keys().min()
        {
            records.remove(&oldest);
        }
        records.insert(epoch, Arc::clone(&membership));
        Ok(Some(membership))
    }

    /// Whether a record claims `epoch` (a metadata call, unless the record is known).
    async fn exists(&self, epoch: u64) -> Result<bool, Error> {
        if lock(&self.records).contains_key(&epoch) {
            return Ok(true);
        }
        let path = Path::from(EpochRecord::path(epoch));
        let head = tokio::time::timeout(self.store_call_timeout(), self.store.head(&path))
            .await
            .map_err(|_| Error::StoreUnavailable("probing for an epoch record timed out".into()))?;
        match head {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(crate::store::request_error(&e)),
        }
    }

    /// The newest claimed epoch at or after `from` (records are claimed in order, without
    /// gaps): gallops forward, then bisects. `Ok(None)` when `from` itself is unclaimed.
    pub async fn latest_from(&self, from: u64) -> Result<Option<u64>, Error> {
        let from = from.max(1);
        if !self.exists(from).await? {
            return Ok(None);
        }
        let (mut known, mut step) = (from, 1u64);
        let mut unknown = loop {
            let probe = known.saturating_add(step);
            if !self.exists(probe).await? {
                break probe;
            }
            known = probe;
            step = step.saturating_mul(2);
        };
        while unknown - known > 1 {
            let mid = known + (unknown - known) / 2;
            if self.exists(mid).await? {
                known = mid;
            } else {
                unknown = mid;
            }
        }
        Ok(Some(known))
    }

    /// Claims an epoch for `members`: `Some(n)` claims exactly `n` (which must be the next
    /// free epoch, or already claimed for the same members), `None` the next free one. The
    /// claim is a create-only write, so two controllers cannot both win an epoch.
    ///
    /// # Errors
    /// `InvalidMembership` for a bad list or an epoch taken by another list; `StoreUnavailable`.
    pub async fn claim(
        &self,
        epoch: Option<u64>,
        members: Vec<String>,
    ) -> Result<Membership, Error> {
        let wanted = Membership::new(1, members)?;
        for _ in 0..CLAIM_TRIES {
            let latest = self.latest_from(self.epoch()).await?.unwrap_or(0);
            let next = match epoch {
                Some(n) if n <= latest => {
                    let record = self.record(n).await?.ok_or_else(|| {
                        Error::InvalidMembership(format!("epoch {n} has no record"))
                    })?;
                    return if record.members() == wanted.members() {
                        Ok((*record).clone())
                    } else {
                        Err(Error::InvalidMembership(format!(
                            "epoch {n} is already claimed for {:?}",
                            record.members()
                        )))
                    };
                }
                Some(n) if n > latest + 1 => {
                    return Err(Error::InvalidMembership(format!(
                        "epochs are claimed in order: the next free epoch is {}",
                        latest + 1
                    )));
                }
                _ => latest + 1,
            };
            let list = Membership::new(next, wanted.members().iter().cloned())?;
            if self.create_record(&list).await? {
                return Ok(list);
            }
        }
        Err(Error::StoreUnavailable(format!(
            "could not claim an epoch in {CLAIM_TRIES} tries: other controllers kept winning"
        )))
    }

    /// Claims epoch 1 for `members` unless it is claimed already.
    pub async fn claim_first(&self, members: Vec<String>) -> Result<(), Error> {
        self.create_record(&Membership::new(1, members)?)
            .await
            .map(|_| ())
    }

    /// Writes `list`'s record create-only. `Ok(false)` when the epoch was claimed already.
    async fn create_record(&self, list: &Membership) -> Result<bool, Error> {
        let path = Path::from(EpochRecord::path(list.epoch()));
        let payload = PutPayload::from(EpochRecord::of(list).to_bytes());
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let put = self.store.put_opts(&path, payload.clone(), create);
        let result = tokio::time::timeout(self.store_call_timeout(), put)
            .await
            .map_err(|_| Error::StoreUnavailable("claiming an epoch timed out".into()))?;
        match result {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) => {
                // A store without create-only writes: check, then write. Two controllers that
                // race here can both win; run one controller with such a store.
                if self.exists(list.epoch()).await? {
                    return Ok(false);
                }
                self.store
                    .put(&path, payload)
                    .await
                    .map_err(|e| crate::store::request_error(&e))?;
                Ok(true)
            }
            Err(e) => Err(crate::store::request_error(&e)),
        }
    }

    /// Adopts the record of `epoch` if it is newer than the node's, with the lists between
    /// (as many as [`MAX_LISTS`] allows). Returns what changed, if anything did.
    ///
    /// # Errors
    /// `InvalidMembership` when no record claims `epoch`; `StoreUnavailable`.
    pub async fn catch_up(&self, epoch: u64) -> Result<Option<Adopted>, Error> {
        if epoch <= self.epoch() {
            return Ok(None);
        }
        let _one = self.catching_up.lock().await;
        let from = self.epoch();
        if epoch <= from {
            return Ok(None);
        }
        let next = self
            .record(epoch)
            .await?
            .ok_or_else(|| Error::InvalidMembership(format!("no record claims epoch {epoch}")))?;
        let first = (from + 1).max(epoch.saturating_sub(MAX_LISTS as u64));
        let mut between = Vec::new();
        for e in first..epoch {
            if let Some(list) = self.record(e).await? {
                between.push((*list).clone());
            }
        }
        let adopted = self.update(|o| o.adopt((*next).clone(), between));
        if let Some(a) = &adopted {
            tracing::info!(
                epoch = a.current.epoch(),
                from = a.previous.epoch(),
                members = ?a.current.members(),
                "adopted a new member list"
            );
        }
        Ok(adopted)
    }

    /// Fetches the lists the state machine lacks to settle keys (between the seal and the
    /// current epoch).
    pub async fn fill_lists(&self) {
        for e in self.with(Ownership::missing_lists) {
            match self.record(e).await {
                Ok(Some(list)) => self.update(|o| o.add_list((*list).clone())),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "could not fetch an epoch record");
                    return;
                }
            }
        }
    }

    /// Asks the store whether a newer epoch was claimed: the newest one, if so.
    pub async fn probe(&self) -> Result<Option<u64>, Error> {
        let current = self.epoch();
        if !self.exists(current + 1).await? {
            return Ok(None);
        }
        self.latest_from(current + 1).await
    }
}
