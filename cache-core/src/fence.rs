//! Fenced ownership: when a node may serve a key from its cache, and when it must not.
//!
//! # The protocol
//! Member lists are numbered by epoch, and every epoch is claimed once, in the application's
//! blob store ([`EpochRecord`], written create-only), so two controllers can never both win
//! one epoch number. A node adopts an epoch only after reading its record from the store.
//!
//! A node that adopts a new epoch stops taking writes routed by older epochs, waits for the
//! writes it already took to finish, and only then answers a *fence* request for that epoch:
//! its answer (an *ack*) says "I am at epoch ≥ E, and none of my writes at older epochs is
//! still in flight".
//!
//! The new owner B of a key k at epoch E serves k from its cache, and takes writes for k,
//! only once k is **settled**: every node that owned k at some epoch from the *sealed* epoch
//! S up to E − 1 has acked an epoch ≥ E. Until then B reads k from the store and caches
//! nothing of it, and writes to k wait. Epoch S is sealed when epoch S − 1 is sealed and every
//! member of S − 1 has acked ≥ S; then no node serves at an epoch older than S, so owners
//! before S cannot matter. Seals are facts about the whole cluster, so nodes pass them on.
//!
//! Why that suffices: a node Y that serves k is at some epoch e with Y = owner_e(k). Sealing
//! gives e ≥ S. If e < E and Y ≠ B, Y acked ≥ E, so Y has left e: contradiction. If e > E,
//! then B owned k at E < e, so Y waits for B's ack before it serves k, and B acks only after
//! it has left E. So at any time one node at most serves k from a cache, and it has taken
//! every write made through the cache since k last moved.
//!
//! A node that cannot be reached is never presumed fenced while it may be alive: only a node
//! that refuses connections (its process is gone) is, after a grace period for requests it
//! had already sent to the store. That is the shell's job; this module only counts acks.
//!
//! With fencing switched off ([`Ownership::new`] with `fencing: false`, a negative control for
//! the checkers) every owned key counts as settled, as in a cache without fencing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ring::Membership;

/// Where epoch records live in the application's store.
pub const EPOCH_PREFIX: &str = "_cachelet/epochs/";

/// At most this many member lists are kept (and fetched when a node catches up). Keys whose
/// settling would need an older list stay unsettled until the seal passes it: safe, slower.
pub const MAX_LISTS: usize = 64;

/// The record that claims an epoch: its member list. Written once, create-only, at
/// [`EpochRecord::path`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch this record claims.
    pub epoch: u64,
    /// The member list of that epoch.
    pub members: Vec<String>,
}

impl EpochRecord {
    /// The record for `membership`.
    pub fn of(membership: &Membership) -> Self {
        Self {
            epoch: membership.epoch(),
            members: membership.members().to_vec(),
        }
    }

    /// The store path of epoch `epoch`'s record. Zero-padded, so that listing sorts by epoch.
    pub fn path(epoch: u64) -> String {
        format!("{EPOCH_PREFIX}{epoch:020}")
    }

    /// The epoch a record path names, if it is one.
    pub fn epoch_of_path(path: &str) -> Option<u64> {
        let digits = path.strip_prefix(EPOCH_PREFIX)?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// The record as a member list.
    ///
    /// # Errors
    /// [`Error::InvalidMembership`] for an empty list or epoch 0.
    pub fn membership(&self) -> Result<Membership> {
        if self.epoch == 0 {
            return Err(Error::InvalidMembership(
                "epoch 0 is not a valid epoch".into(),
            ));
        }
        Membership::new(self.epoch, self.members.iter().cloned())
    }

    /// Parses a record read from the store at `path`, checking that it claims the epoch its
    /// path names.
    ///
    /// # Errors
    /// [`Error::InvalidMembership`] for malformed bytes or a record that names another epoch.
    pub fn parse(path_epoch: u64, bytes: &[u8]) -> Result<Self> {
        let record: Self = serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidMembership(format!("unreadable epoch record: {e}")))?;
        if record.epoch != path_epoch {
            return Err(Error::InvalidMembership(format!(
                "the record of epoch {path_epoch} claims epoch {}",
                record.epoch
            )));
        }
        record.membership()?;
        Ok(record)
    }

    /// The record's bytes, as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising two plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// How a node may serve a key it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Settled: serve from the cache, cache what is loaded, take writes.
    Cached,
    /// Not settled yet: read the store and cache nothing; writes wait until settled.
    Unsettled,
}

/// What changed when a node adopted a newer epoch.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// The epoch the node was at before.
    pub previous: Arc<Membership>,
    /// The epoch it is at now.
    pub current: Arc<Membership>,
    /// The lists from `previous` to `current`, both included; `None` where one in between is
    /// unknown.
    span: Option<Vec<Arc<Membership>>>,
}

impl Adopted {
    /// Whether `me` owned `key` at every epoch from the previous to the current one, so that
    /// a copy it cached before cannot have missed a write made elsewhere. False when a list in
    /// between is unknown.
    pub fn kept(&self, key: &str, me: &str) -> bool {
        self.span
            .as_ref()
            .is_some_and(|span| span.iter().all(|list| list.owner(key) == me))
    }
}

/// One node's view of ownership: the member lists from the sealed epoch to the current one,
/// and the acks it has collected. Plain synchronous state; the server wraps it in a lock and
/// carries its messages.
#[derive(Debug, Clone)]
pub struct Ownership {
    me: String,
    fencing: bool,
    /// Member lists by epoch, for epochs in `sealed..=current` that the node knows.
    lists: BTreeMap<u64, Arc<Membership>>,
    current: Arc<Membership>,
    /// The highest epoch known to be sealed (every epoch starts sealed at 1: nothing is older).
    sealed: u64,
    /// The highest epoch each other node has acked.
    acked: HashMap<String, u64>,
    /// The highest epoch this node has acked itself: it runs the same fence on itself as on a
    /// peer's request (its writes admitted at older epochs have ended, its leases on keys it
    /// gave up are revoked), and only then counts itself in a seal that it passes on.
    own_ack: u64,
}

impl Ownership {
    /// A node `me` at `initial`. With `fencing` off every owned key is settled.
    ///
    /// The node knows nothing of older epochs: unless `initial` is epoch 1 (which nothing
    /// precedes), keys it gained are unsettled until acks or seals arrive.
    pub fn new(me: impl Into<String>, initial: Membership, fencing: bool) -> Self {
        let current = Arc::new(initial);
        let epoch = current.epoch();
        let mut lists = BTreeMap::new();
        lists.insert(current.epoch(), Arc::clone(&current));
        Self {
            me: me.into(),
            fencing,
            lists,
            current,
            sealed: 1,
            acked: HashMap::new(),
            // A node that starts has no write in flight and has granted no lease.
            own_ack: epoch,
        }
    }

    /// This node's address.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Sets this node's address (learned from its listener).
    pub fn set_me(&mut self, me: impl Into<String>) {
        self.me = me.into();
    }

    /// Whether fencing is on.
    pub fn fencing(&self) -> bool {
        self.fencing
    }

    /// The current member list.
    pub fn current(&self) -> &Arc<Membership> {
        &self.current
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.current.epoch()
    }

    /// The highest epoch known to be sealed.
    pub fn sealed(&self) -> u64 {
        self.sealed
    }

    /// The member list of `epoch`, if the node keeps it.
    pub fn list(&self, epoch: u64) -> Option<&Arc<Membership>> {
        self.lists.get(&epoch)
    }

    /// Epochs between the seal and the current epoch whose lists the node lacks (the shell
    /// fetches their records from the store), newest first, at most [`MAX_LISTS`].
    pub fn missing_lists(&self) -> Vec<u64> {
        (self.sealed..self.epoch())
            .rev()
            .take(MAX_LISTS)
            .filter(|e| !self.lists.contains_key(e))
            .collect()
    }

    /// Adds the member list of an epoch between the seal and the current one.
    pub fn add_list(&mut self, list: Membership) {
        let epoch = list.epoch();
        if epoch >= self.sealed && epoch < self.epoch() {
            self.lists.entry(epoch).or_insert_with(|| Arc::new(list));
            self.advance_seal();
        }
    }

    /// Adopts `next` if it is newer, with the lists of any epochs between (as many as the
    /// shell could fetch). Returns what changed, or `None` for an old or equal epoch.
    pub fn adopt(&mut self, next: Membership, between: Vec<Membership>) -> Option<Adopted> {
        if next.epoch() <= self.epoch() {
            return None;
        }
        let previous = std::mem::replace(&mut self.current, Arc::new(next));
        let (from, to) = (previous.epoch(), self.current.epoch());
        for list in between {
            if list.epoch() > from && list.epoch() < to {
                self.lists.insert(list.epoch(), Arc::new(list));
            }
        }
        self.lists.insert(to, Arc::clone(&self.current));
        let span: Option<Vec<Arc<Membership>>> = std::iter::once(Some(Arc::clone(&previous)))
            .chain((from + 1..=to).map(|e| self.lists.get(&e).cloned()))
            .collect();
        self.prune();
        self.advance_seal();
        Some(Adopted {
            previous,
            current: Arc::clone(&self.current),
            span,
        })
    }

    /// Records that `node` acked `epoch` (it is at `epoch` or later, with no older write in
    /// flight), and that it knows `sealed` to be sealed. `node` may be this node itself, once
    /// it has fenced itself.
    pub fn record_ack(&mut self, node: &str, epoch: u64, sealed: u64) {
        if node == self.me {
            self.own_ack = self.own_ack.max(epoch.min(self.epoch()));
        } else {
            let acked = self.acked.entry(node.to_owned()).or_insert(0);
            *acked = (*acked).max(epoch);
        }
        self.learn_seal(sealed);
    }

    /// Learns that `sealed` is sealed (from a peer: seals are facts about the whole cluster).
    pub fn learn_seal(&mut self, sealed: u64) {
        let sealed = sealed.min(self.epoch());
        if sealed > self.sealed {
            self.sealed = sealed;
            self.prune();
        }
        self.advance_seal();
    }

    /// The highest epoch `node` has acked, as this node's own decisions count it: this node
    /// counts as acked at its current epoch, since a write it admits at an older epoch and one
    /// at the current epoch are two writes of one node (the store orders them), and its writes
    /// invalidate its own leases.
    pub fn acked(&self, node: &str) -> u64 {
        if node == self.me {
            return self.epoch();
        }
        self.acked.get(node).copied().unwrap_or(0)
    }

    /// The highest epoch `node` has acked, as a seal counts it. Other nodes take a seal as a
    /// fact, so this node counts only the ack it gave itself ([`Ownership::record_ack`]).
    fn sealing_ack(&self, node: &str) -> u64 {
        if node == self.me {
            return self.own_ack;
        }
        self.acked(node)
    }

    fn prune(&mut self) {
        let sealed = self.sealed;
        self.lists.retain(|&e, _| e >= sealed);
        while self.lists.len() > MAX_LISTS {
            // Keep the newest lists; settling a key that needs an older one waits for seals.
            let Some((&oldest, _)) = self.lists.iter().next() else {
                break;
            };
            self.lists.remove(&oldest);
        }
    }

    fn advance_seal(&mut self) {
        while self.sealed < self.epoch() {
            let Some(list) = self.lists.get(&self.sealed) else {
                return;
            };
            let next = self.sealed + 1;
            if !list.members().iter().all(|m| self.sealing_ack(m) >= next) {
                return;
            }
            self.sealed = next;
            self.lists.remove(&(next - 1));
        }
    }

    /// The nodes whose acks of the current epoch this node still needs, to settle its keys
    /// and to seal: every member of every epoch from the seal up to the current one, less
    /// this node and those that acked already. When a list is missing, every current member
    /// is asked too (their answers carry their seals).
    pub fn fence_targets(&self) -> Vec<String> {
        let epoch = self.epoch();
        let mut targets: Vec<String> = Vec::new();
        let mut missing = false;
        for e in self.sealed..epoch {
            match self.lists.get(&e) {
                Some(list) => targets.extend(list.members().iter().cloned()),
                None => missing = true,
            }
        }
        if missing {
            targets.extend(self.current.members().iter().cloned());
        }
        targets.sort();
        targets.dedup();
        targets.retain(|t| *t != self.me && self.acked(t) < epoch);
        targets
    }

    /// Whether every epoch up to the current one is sealed: then every owned key is settled
    /// and [`Ownership::access`] takes its fast path.
    pub fn is_sealed(&self) -> bool {
        self.sealed >= self.epoch()
    }

    /// How this node may serve `key` at its current epoch.
    ///
    /// # Errors
    /// [`Error::WrongOwner`] when this node does not own `key`.
    pub fn access(&self, key: &str) -> Result<Access> {
        if self.current.owner(key) != self.me {
            return Err(self.wrong_owner());
        }
        Ok(if self.settled(key) {
            Access::Cached
        } else {
            Access::Unsettled
        })
    }

    /// The error for a key this node does not own, with what it knows.
    pub fn wrong_owner(&self) -> Error {
        Error::WrongOwner {
            epoch: self.epoch(),
            members: self.current.members().to_vec(),
        }
    }

    /// Whether `key`, which this node owns, is settled: every node that owned it at an epoch
    /// from the seal up to the previous one has acked the current epoch.
    pub fn settled(&self, key: &str) -> bool {
        if !self.fencing || self.is_sealed() {
            return true;
        }
        let epoch = self.epoch();
        (self.sealed..epoch).all(|e| match self.lists.get(&e) {
            Some(list) => self.acked(list.owner(key)) >= epoch,
            None => false,
        })
    }
}

#[cfg(test)]
mod tests;
