//! Read leases: `Strong` reads served from a local copy with no round trip, kept correct by
//! the home node invalidating every copy before a write to its key completes.
//!
//! Two pure state machines; the server and the client only carry their messages.
//!
//! - [`Directory`], on the home node: who holds a lease on which key, until when. A read may
//!   be granted a lease of [`LeaseConfig::lease`]. A write, when it begins, takes every lease
//!   on its key and sends each holder an invalidation, and it changes the store and the cache
//!   only when every one is acknowledged or has expired ([`Directory::wait_until`]). Before
//!   that, nobody can read the new value, so no holder serves the old one after anyone has
//!   read the new one.
//! - [`Holder`], in a client, for one home node: the leases it holds, each timed on the
//!   holder's own monotonic clock from *before* the read was sent.
//!
//! # Why a completed write leaves no holder serving an older version
//! Let W write key `k`; its new value can be read from time `t`, when it changes the store.
//! Take a holder H that serves `k` locally at some time after `t` under a lease L, granted at
//! the home node at time `g`.
//! - If `g` came before W began: W's beginning found L in the directory (a lease leaves it
//!   only when acknowledged or expired), so W waited, before `t`, until H acknowledged the
//!   invalidation (H dropped its copy before acknowledging, and the copy it serves now came
//!   from a later read) or until L expired on the home node's clock. H's clock started the
//!   lease before the request was sent, so it expired on H's clock no later: H cannot serve
//!   under L after `t`.
//! - If `g` came after W began: the grant is refused while any write to `k` is in progress,
//!   and a read whose value a write overlapped (the write began or ended between the read of
//!   the value and the grant) is refused too: grants carry the write counter their read saw
//!   ([`Directory::write_mark`]). So L covers a value read after W ended: W's or a newer one.
//!   (The model found the case of a value read after W began and granted after W ended.)
//! - A reply can overtake an invalidation on another stream: H sees the invalidation of `k`
//!   first, acknowledges it, then gets the reply of a read it had sent before. H refuses to
//!   take a lease from a reply when an invalidation of the key arrived while the read was out
//!   ([`Holder::begin_read`] and [`Holder::granted`]).
//! - After a change of members: a node that gives keys up refuses grants whose ownership check
//!   was made at its older epoch ([`Directory::set_epoch`]), invalidates the leases on the
//!   keys it gave up ([`Directory::revoke`]), and acknowledges the fence only once those are
//!   acknowledged or ended. A key's new owner serves it from its cache and writes it only once
//!   every previous owner is fenced, so by then no lease an old owner granted is valid.
//! - A lease covers the version it was granted on, not whatever copy the holder keeps: a late
//!   reply to an older read may replace the copy while a newer lease is valid
//!   ([`Holder::valid`] takes the copy's version).
//! - A holder whose invalidation stream breaks drops every lease at once ([`Holder::broken`]):
//!   it cannot hear invalidations. The home node cannot tell whether the holder noticed, so it
//!   waits for such leases to expire.
//!
//! Clocks: the home node times a lease from when it grants it, the holder from before it sent
//! the read, so the holder's lease ends first as long as both clocks run at the same rate. The
//! holder takes [`LeaseConfig::margin`] off to cover a difference in rates.
//!
//! The model in `tests.rs` drives both machines through random interleavings of reads,
//! grants, writes, invalidations, acknowledgements, broken streams and time, and checks that
//! no local read misses a write that completed before it began. Each of three injected faults
//! (writes that do not wait, grants that ignore overlapping writes, leases that cover any
//! copy) makes it find such reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ring::key_hash;

/// Who holds a lease: one client's invalidation stream to one node.
pub type HolderId = u64;

/// Stripes of keys that carry a write counter (see [`Directory::write_mark`]).
const STRIPES: usize = 4096;

/// Lease settings, the same on home nodes and holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a lease lasts. Default: 2 s.
    pub lease: Duration,
    /// The most leases a home node records at once; past it, reads get no lease and their
    /// holders validate each read instead. Default: 100,000.
    pub max_leases: usize,
    /// What a holder takes off each lease, for clocks that run at different rates. Default:
    /// 1% of the lease.
    pub margin: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self::with_lease(Duration::from_secs(2))
    }
}

impl LeaseConfig {
    /// Settings with leases of `lease`, and the other defaults.
    pub fn with_lease(lease: Duration) -> Self {
        Self {
            lease,
            max_leases: 100_000,
            margin: lease / 100,
        }
    }
}

/// An invalidation a write must deliver before it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// The holder to tell.
    pub holder: HolderId,
    /// The key whose copy it must drop.
    pub key: Arc<str>,
    /// The number the holder acknowledges ([`Directory::ack`]).
    pub seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    /// When the lease ends on the home node's clock.
    until: Instant,
    /// The invalidation sent for it, awaiting acknowledgement.
    invalidation: Option<u64>,
}

#[derive(Debug, Default)]
struct KeyLeases {
    writes: u32,
    holds: HashMap<HolderId, Hold>,
}

/// A home node's lease directory. See the [module docs](self).
#[derive(Debug)]
pub struct Directory {
    config: LeaseConfig,
    keys: HashMap<Arc<str>, KeyLeases>,
    /// Holds recorded now, leased or awaiting acknowledgement.
    holds: usize,
    /// Per stripe of keys: the write counter when a write to one of them last began or ended.
    touched: Box<[u64]>,
    /// Writes begun and ended so far.
    writes: u64,
    next_seq: u64,
    /// The newest membership epoch the node adopted: grants checked at an older one are
    /// refused.
    epoch: u64,
}

impl Directory {
    /// An empty directory.
    pub fn new(config: LeaseConfig) -> Self {
        Self {
            config,
            keys: HashMap::new(),
            holds: 0,
            touched: vec![0; STRIPES].into_boxed_slice(),
            writes: 0,
            next_seq: 1,
            epoch: 0,
        }
    }

    /// The node adopted membership `epoch`: grants whose ownership check was made at an older
    /// epoch are refused from now on. Then [`Directory::revoke`] the leases on keys the node
    /// gave up.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = self.epoch.max(epoch);
    }

    /// Invalidates every lease on a key that `keep` rejects (the keys a node gave up at a new
    /// epoch). The node acknowledges the fence for that epoch only once
    /// [`Directory::wait_until_all`] says so, so that a key's new owner, which serves and
    /// writes the key only after every previous owner is fenced, never finds a lease of the
    /// old owner still valid.
    pub fn revoke(&mut self, keep: impl Fn(&str) -> bool, now: Instant) -> Vec<Invalidation> {
        let mut sends = Vec::new();
        let mut dropped = 0;
        for (name, state) in &mut self.keys {
            if keep(name) {
                continue;
            }
            let before = state.holds.len();
            state.holds.retain(|_, hold| hold.until > now);
            dropped += before - state.holds.len();
            for (holder, hold) in &mut state.holds {
                if hold.invalidation.is_none() {
                    hold.invalidation = Some(self.next_seq);
                    sends.push(Invalidation {
                        holder: *holder,
                        key: Arc::clone(name),
                        seq: self.next_seq,
                    });
                    self.next_seq += 1;
                }
            }
        }
        self.holds -= dropped;
        sends
    }

    /// Until when to wait for every invalidation sent so far: `None` when none awaits
    /// acknowledgement, else the latest end among the leases that do.
    pub fn wait_until_all(&self, now: Instant) -> Option<Instant> {
        self.keys
            .values()
            .flat_map(|s| s.holds.values())
            .filter(|h| h.invalidation.is_some() && h.until > now)
            .map(|h| h.until)
            .max()
    }

    /// The settings.
    pub fn config(&self) -> LeaseConfig {
        self.config
    }

    /// Leases recorded now (including those whose invalidation awaits acknowledgement).
    pub fn active(&self) -> usize {
        self.holds
    }

    /// The write counter, to read *before* reading the value a lease would cover; the grant
    /// then checks that no write to the key began or ended since, so that the value is not
    /// one a write overlapped.
    pub fn write_mark(&self) -> u64 {
        self.writes
    }

    /// Grants `holder` a lease on `key` for a read that took [`Directory::write_mark`] `mark`
    /// before it read the value, and found the node the key's settled owner at `epoch`.
    /// Returns the lease's length, or `None`: the node has adopted a newer epoch since, a
    /// write to the key is in progress or began or ended since `mark`, the holder has not acknowledged the key's last
    /// invalidation, or the directory is full.
    pub fn grant(
        &mut self,
        key: &str,
        holder: HolderId,
        mark: u64,
        epoch: u64,
        now: Instant,
    ) -> Option<Duration> {
        if epoch < self.epoch || self.touched[stripe(key)] > mark {
            return None;
        }
        let full = self.holds >= self.config.max_leases;
        let until = now + self.config.lease;
        match self.keys.get_mut(key) {
            Some(state) => {
                if state.writes > 0 {
                    return None;
                }
                match state.holds.get_mut(&holder) {
                    Some(hold) if hold.invalidation.is_some() => None,
                    Some(hold) => {
                        hold.until = until;
                        Some(self.config.lease)
                    }
                    None if full => None,
                    None => {
                        state.holds.insert(
                            holder,
                            Hold {
                                until,
                                invalidation: None,
                            },
                        );
                        self.holds += 1;
                        Some(self.config.lease)
                    }
                }
            }
            None if full => None,
            None => {
                let mut state = KeyLeases::default();
                state.holds.insert(
                    holder,
                    Hold {
                        until,
                        invalidation: None,
                    },
                );
                self.keys.insert(Arc::from(key), state);
                self.holds += 1;
                Some(self.config.lease)
            }
        }
    }

    /// A write to `key` begins: no lease on it is granted until every write in progress on it
    /// has ended. Returns the invalidations to send, one for each lease on the key not yet
    /// told. The write changes the store and the cache only once [`Directory::wait_until`]
    /// says so: a holder must not serve the old value once anyone can read the new one. Call
    /// [`Directory::end_write`] once, whatever the write's outcome.
    pub fn begin_write(&mut self, key: &str, now: Instant) -> Vec<Invalidation> {
        self.writes += 1;
        self.touched[stripe(key)] = self.writes;
        let name = match self.keys.get_key_value(key) {
            Some((name, _)) => Arc::clone(name),
            None => {
                let name: Arc<str> = Arc::from(key);
                self.keys.insert(Arc::clone(&name), KeyLeases::default());
                name
            }
        };
        let Some(state) = self.keys.get_mut(key) else {
            return Vec::new();
        };
        state.writes += 1;
        let before = state.holds.len();
        state.holds.retain(|_, hold| hold.until > now);
        let expired = before - state.holds.len();
        let mut sends = Vec::new();
        for (holder, hold) in &mut state.holds {
            if hold.invalidation.is_none() {
                hold.invalidation = Some(self.next_seq);
                sends.push(Invalidation {
                    holder: *holder,
                    key: Arc::clone(&name),
                    seq: self.next_seq,
                });
                self.next_seq += 1;
            }
        }
        self.holds -= expired;
        sends
    }

    /// A write to `key` has changed the store and the cache, or failed (a write whose outcome
    /// is unknown may have changed the store): leases on the key may be granted again once no
    /// other write to it is in progress.
    pub fn end_write(&mut self, key: &str) {
        self.writes += 1;
        self.touched[stripe(key)] = self.writes;
        if let Some(state) = self.keys.get_mut(key) {
            state.writes = state.writes.saturating_sub(1);
        }
        self.forget_if_idle(key);
    }

    /// Until when a write to `key` that has begun must wait before it changes anything: `None`
    /// when no lease on the key awaits acknowledgement, else the latest end among those that
    /// do. The caller waits until then, or until acknowledgements clear it.
    pub fn wait_until(&self, key: &str, now: Instant) -> Option<Instant> {
        let state = self.keys.get(key)?;
        state
            .holds
            .values()
            .filter(|h| h.invalidation.is_some() && h.until > now)
            .map(|h| h.until)
            .max()
    }

    /// `holder` acknowledged invalidation `seq` of `key`: its lease is gone.
    pub fn ack(&mut self, holder: HolderId, key: &str, seq: u64) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        if state
            .holds
            .get(&holder)
            .is_some_and(|h| h.invalidation == Some(seq))
        {
            state.holds.remove(&holder);
            self.holds -= 1;
            self.forget_if_idle(key);
        }
    }

    /// Drops the leases that ended before `now`. Call it now and then; its cost grows with the
    /// keys that hold leases.
    pub fn expire(&mut self, now: Instant) {
        let mut dropped = 0;
        self.keys.retain(|_, state| {
            let before = state.holds.len();
            state.holds.retain(|_, h| h.until > now);
            dropped += before - state.holds.len();
            state.writes > 0 || !state.holds.is_empty()
        });
        self.holds -= dropped;
    }

    fn forget_if_idle(&mut self, key: &str) {
        if self
            .keys
            .get(key)
            .is_some_and(|s| s.writes == 0 && s.holds.is_empty())
        {
            self.keys.remove(key);
        }
    }
}

fn stripe(key: &str) -> usize {
    (key_hash(key) % STRIPES as u64) as usize
}

/// A read in flight, as [`Holder::begin_read`] noted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    sent: Instant,
    invalidations: u64,
    stream: u64,
}

/// The leases a client holds from one home node. See the [module docs](self).
#[derive(Debug)]
pub struct Holder {
    config: LeaseConfig,
    /// Per key: until when, and the version the lease covers.
    leases: HashMap<Arc<str>, (Instant, Arc<str>)>,
    /// Per stripe of keys: how many invalidations of them arrived.
    invalidated: Box<[u64]>,
    /// Which invalidation stream is open, counted from 1; 0 when none is.
    stream: u64,
    streams: u64,
}

impl Holder {
    /// A holder with no leases and no invalidation stream yet.
    pub fn new(config: LeaseConfig) -> Self {
        Self {
            config,
            leases: HashMap::new(),
            invalidated: vec![0; STRIPES].into_boxed_slice(),
            stream: 0,
            streams: 0,
        }
    }

    /// The invalidation stream is open: leases may be taken.
    pub fn connected(&mut self) {
        self.streams += 1;
        self.stream = self.streams;
    }

    /// The invalidation stream broke: every lease is dropped at once, and none is taken until
    /// a new stream is open.
    pub fn broken(&mut self) {
        self.stream = 0;
        self.leases.clear();
    }

    /// Whether leases may be taken and served.
    pub fn is_connected(&self) -> bool {
        self.stream != 0
    }

    /// Leases held now (some may have ended).
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Notes a read of `key` about to be sent at `now`, on the holder's monotonic clock.
    pub fn begin_read(&self, key: &str, now: Instant) -> Ticket {
        Ticket {
            sent: now,
            invalidations: self.invalidated[stripe(key)],
            stream: self.stream,
        }
    }

    /// The reply to the read of `ticket` granted a lease of `lease` on `key` at `version`.
    /// Returns whether the holder took it: not when an invalidation of the key (or its stripe)
    /// arrived while the read was out, nor when the stream broke or changed meanwhile.
    pub fn granted(&mut self, key: &str, version: &str, ticket: Ticket, lease: Duration) -> bool {
        if self.stream == 0
            || ticket.stream != self.stream
            || self.invalidated[stripe(key)] != ticket.invalidations
        {
            return false;
        }
        let until = ticket.sent + lease.saturating_sub(self.config.margin);
        self.leases
            .insert(Arc::from(key), (until, Arc::from(version)));
        true
    }

    /// Whether a copy of `key` at `version` may be served at `now` with no round trip: the
    /// lease must cover that very version, since a late reply to an older read may have
    /// replaced the copy the lease was granted on.
    pub fn valid(&self, key: &str, version: &str, now: Instant) -> bool {
        self.stream != 0
            && self
                .leases
                .get(key)
                .is_some_and(|(until, leased)| now < *until && &**leased == version)
    }

    /// Whether some lease on `key` is valid at `now`, whatever version it covers (for the
    /// model's negative control).
    #[cfg(test)]
    fn valid_any(&self, key: &str, now: Instant) -> bool {
        self.stream != 0 && self.leases.get(key).is_some_and(|(until, _)| now < *until)
    }

    /// An invalidation of `key` arrived: the lease (and the caller's copy) must go before the
    /// caller acknowledges it.
    pub fn invalidate(&mut self, key: &str) {
        self.invalidated[stripe(key)] += 1;
        self.leases.remove(key);
    }

    /// Drops leases that ended before `now`.
    pub fn expire(&mut self, now: Instant) {
        self.leases.retain(|_, (until, _)| *until > now);
    }
}

#[cfg(test)]
mod tests;
