//! Read leases on a node: the shell around [`cache_core::lease::Directory`]. It hands out
//! holder ids to `Leases` streams, carries invalidations to them and acknowledgements back,
//! and makes a write wait until every lease on its key is invalid.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_core::lease::{Directory, HolderId, Invalidation, LeaseConfig};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Invalidations queued for one holder before the node stops sending to it (its leases then
/// end on their own, and writes wait for that).
const HOLDER_QUEUE: usize = 4096;

/// A node's leases.
#[derive(Debug)]
pub(crate) struct Leases {
    config: LeaseConfig,
    /// Whether writes wait for invalidations (off only for the negative control).
    wait: bool,
    dir: Mutex<Directory>,
    holders: Mutex<HashMap<HolderId, mpsc::Sender<Invalidation>>>,
    acked: Notify,
    pub(crate) granted: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) expiry_waits: AtomicU64,
    pub(crate) expiry_wait_us: AtomicU64,
    pub(crate) expiry_wait_max_us: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Leases {
    pub(crate) fn new(config: LeaseConfig, wait: bool) -> Self {
        Self {
            config,
            wait,
            dir: Mutex::new(Directory::new(config)),
            holders: Mutex::new(HashMap::new()),
            acked: Notify::new(),
            granted: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            expiry_waits: AtomicU64::new(0),
            expiry_wait_us: AtomicU64::new(0),
            expiry_wait_max_us: AtomicU64::new(0),
        }
    }

    /// The length of the leases this node grants.
    pub(crate) fn lease(&self) -> Duration {
        self.config.lease
    }

    /// A new holder, with the stream its invalidations go to.
    pub(crate) fn open(&self) -> (HolderId, mpsc::Receiver<Invalidation>) {
        // Random, so that an id one node gave out means nothing to another node that a request
        // reaches after a change of members.
        let id = loop {
            let id = rand::random::<u64>();
            if id != 0 && !lock(&self.holders).contains_key(&id) {
                break id;
            }
        };
        let (tx, rx) = mpsc::channel(HOLDER_QUEUE);
        lock(&self.holders).insert(id, tx);
        (id, rx)
    }

    /// The holder's stream ended. Its leases stay recorded until they end: the node cannot
    /// know that the holder noticed.
    pub(crate) fn close(&self, holder: HolderId) {
        lock(&self.holders).remove(&holder);
    }

    /// The write counter, read before the value a lease would cover.
    pub(crate) fn mark(&self) -> u64 {
        lock(&self.dir).write_mark()
    }

    /// A lease for `holder` on `key`, in milliseconds (0: none); see
    /// [`Directory::grant`].
    pub(crate) fn grant(&self, key: &str, holder: HolderId, mark: u64, epoch: u64) -> u32 {
        if holder == 0 || self.config.lease.is_zero() || !lock(&self.holders).contains_key(&holder)
        {
            return 0;
        }
        let granted = lock(&self.dir).grant(key, holder, mark, epoch, Instant::now().into_std());
        match granted {
            Some(lease) => {
                self.granted.fetch_add(1, Ordering::Relaxed);
                u32::try_from(lease.as_millis()).unwrap_or(u32::MAX)
            }
            None => 0,
        }
    }

    /// A write to `key` begins: every lease on the key is invalidated, and this returns once
    /// each is acknowledged or ended, before the write changes anything. The write ends when
    /// the returned guard is dropped.
    pub(crate) async fn begin_write<'a>(&'a self, key: &'a str) -> LeaseWrite<'a> {
        let sends = lock(&self.dir).begin_write(key, Instant::now().into_std());
        let write = LeaseWrite { leases: self, key };
        self.send(sends);
        self.wait_for(|dir, now| dir.wait_until(key, now)).await;
        write
    }

    /// `holder` acknowledged invalidation `seq` of `key`.
    pub(crate) fn ack(&self, holder: HolderId, key: &str, seq: u64) {
        lock(&self.dir).ack(holder, key, seq);
        self.acked.notify_waiters();
    }

    /// The node adopted `epoch`: leases on keys it no longer owns (`keep` false) are
    /// invalidated, and this returns once they are all acknowledged or ended.
    pub(crate) async fn revoke(&self, epoch: u64, keep: impl Fn(&str) -> bool) {
        let sends = {
            let mut dir = lock(&self.dir);
            dir.set_epoch(epoch);
            dir.revoke(keep, Instant::now().into_std())
        };
        self.send(sends);
        self.wait_for(|dir, now| dir.wait_until_all(now)).await;
    }

    /// Leases recorded now.
    pub(crate) fn active(&self) -> u64 {
        lock(&self.dir).active() as u64
    }

    /// Drops leases that ended.
    pub(crate) fn expire(&self) {
        lock(&self.dir).expire(Instant::now().into_std());
    }

    /// How often [`Leases::expire`] should run.
    pub(crate) fn sweep_interval(&self) -> Duration {
        self.config.lease.max(Duration::from_millis(100))
    }

    fn send(&self, sends: Vec<Invalidation>) {
        if sends.is_empty() {
            return;
        }
        self.invalidations
            .fetch_add(sends.len() as u64, Ordering::Relaxed);
        let holders = lock(&self.holders);
        for inv in sends {
            // A holder that is gone or too far behind is not told: its lease ends on its own.
            if let Some(tx) = holders.get(&inv.holder) {
                let _ = tx.try_send(inv);
            }
        }
    }

    /// Waits until `until` says nothing awaits acknowledgement: woken by each acknowledgement,
    /// or when the latest lease it names ends.
    async fn wait_for(
        &self,
        until: impl Fn(&Directory, std::time::Instant) -> Option<std::time::Instant>,
    ) {
        if !self.wait {
            return;
        }
        let mut expired = false;
        let started = Instant::now();
        loop {
            let notified = self.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some(end) = until(&lock(&self.dir), Instant::now().into_std()) else {
                break;
            };
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(Instant::from_std(end)) => expired = true,
            }
        }
        if expired {
            let waited = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.expiry_waits.fetch_add(1, Ordering::Relaxed);
            self.expiry_wait_us.fetch_add(waited, Ordering::Relaxed);
            self.expiry_wait_max_us.fetch_max(waited, Ordering::Relaxed);
        }
    }
}

/// A write in progress, as the lease directory sees it: no lease on its key is granted until
/// it is dropped.
pub(crate) struct LeaseWrite<'a> {
    leases: &'a Leases,
    key: &'a str,
}

impl Drop for LeaseWrite<'_> {
    fn drop(&mut self) {
        lock(&self.leases.dir).end_write(self.key);
    }
}
