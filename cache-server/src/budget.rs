//! The reply budget: value bytes that a node holds for replies the transport has not taken
//! yet, for uncached store reads, and for handoff batches.
//!
//! Without it, one small request can make a node hold gigabytes: a `Batch` of 4,096 gets of a
//! 1 MiB value builds a 4 GiB reply, and a client that never reads its `Pipe` stream keeps
//! every reply the node made for it. So every value a reply carries is *held* against two
//! limits before the reply is queued:
//! - the node's budget ([`CacheNodeBuilder::reply_budget_bytes`]), shared by every stream, by
//!   fallback and unsettled reads while their body arrives, and by handoff;
//! - the caller's own share: a `Pipe` stream may hold at most [`stream_cap`] bytes, so that
//!   one slow reader cannot take the whole budget, and a `Batch` reply may carry at most the
//!   largest message.
//!
//! A hold that cannot be had before the op's deadline fails with `Overloaded`
//! (`RESOURCE_EXHAUSTED`). A `Pipe` stream releases a message's holds once the transport has
//! taken the message and asks for the next one, and all of them when the stream ends.
//!
//! [`CacheNodeBuilder::reply_budget_bytes`]: crate::CacheNodeBuilder::reply_budget_bytes

use std::sync::Arc;
use std::time::Duration;

use cache_core::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Holds are counted in units of this many bytes, so that a budget of terabytes still fits a
/// semaphore's permit count.
const UNIT: u64 = 1024;

/// The default node budget: 256 MiB, or less for a small cache (see [`default_budget`]).
pub const DEFAULT_REPLY_BUDGET_BYTES: u64 = 256 << 20;

/// The node budget when the builder does not set one: half the cache's capacity, at most
/// [`DEFAULT_REPLY_BUDGET_BYTES`], and at least what two streams at their cap hold, so that a
/// maximal value can always be served beside another.
pub fn default_budget(capacity_bytes: u64, max_value_bytes: u64) -> u64 {
    (capacity_bytes / 2)
        .min(DEFAULT_REPLY_BUDGET_BYTES)
        .max(stream_cap(max_value_bytes).saturating_mul(2))
}

/// What one `Pipe` stream may hold: one maximal value and 1 MiB of other replies, and at least
/// 4 MiB.
pub fn stream_cap(max_value_bytes: u64) -> u64 {
    max_value_bytes.saturating_add(1 << 20).max(4 << 20)
}

/// The documented bound on a node's resident memory, for a cache of `capacity_bytes` and a
/// reply budget of `reply_budget_bytes`:
///
/// RSS ≤ K × (capacity + reply budget) + C, with K = 3 and C = 64 MiB.
///
/// K covers what the weigher and the budget do not see: the allocator's free lists, the ghost
/// list of evicted keys (one small entry per KiB of capacity), and the copies of a reply that
/// the transport holds after the budget let it go (the encoded message, and the HTTP/2 send
/// buffer). Measured peaks at ten times capacity came to 1.8–2.9 times (capacity + budget)
/// beyond C; see the README's "Memory" section.
pub fn rss_bound(capacity_bytes: u64, reply_budget_bytes: u64) -> u64 {
    RSS_FACTOR
        .saturating_mul(capacity_bytes.saturating_add(reply_budget_bytes))
        .saturating_add(RSS_BASE_BYTES)
}

/// K in [`rss_bound`].
pub const RSS_FACTOR: u64 = 3;

/// C in [`rss_bound`]: the process's own footprint (code, runtime, connection buffers).
pub const RSS_BASE_BYTES: u64 = 64 << 20;

fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

/// A node's reply budget. Cheap to clone; clones share it.
#[derive(Debug, Clone)]
pub struct ReplyBudget {
    node: Arc<Semaphore>,
    units: u32,
    off: bool,
}

impl ReplyBudget {
    /// A budget of `bytes` (rounded up to whole KiB, at least one).
    pub fn new(bytes: u64) -> Self {
        let units =
            units(bytes).clamp(1, u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        Self {
            node: Arc::new(Semaphore::new(units as usize)),
            units,
            off: false,
        }
    }

    /// A budget that holds nothing: every hold succeeds at once. Unsafe: only for checking
    /// that the memory tests catch a node without one.
    pub fn unbounded() -> Self {
        Self {
            off: true,
            ..Self::new(DEFAULT_REPLY_BUDGET_BYTES)
        }
    }

    /// The budget's size in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> u64 {
        let free = u64::try_from(self.node.available_permits()).unwrap_or(u64::MAX);
        u64::from(self.units).saturating_sub(free) * UNIT
    }

    /// An account that holds against the node budget only.
    pub fn node_account(&self) -> Account {
        Account {
            node: Arc::clone(&self.node),
            node_units: self.units,
            own: None,
            off: self.off,
        }
    }

    /// An account for one `Pipe` stream: at most `cap` bytes, waiting for room.
    pub fn stream_account(&self, cap: u64) -> Account {
        self.own_account(cap, Share::Wait)
    }

    /// An account for one `Batch` call: its reply carries at most `cap` bytes of values, and
    /// an op that would pass that fails at once.
    pub fn call_account(&self, cap: u64) -> Account {
        self.own_account(cap, Share::Refuse)
    }

    fn own_account(&self, cap: u64, share: Share) -> Account {
        let cap = units(cap).clamp(1, self.units);
        Account {
            node: Arc::clone(&self.node),
            node_units: self.units,
            own: Some(Own {
                sem: Arc::new(Semaphore::new(cap as usize)),
                units: cap,
                share,
            }),
            off: self.off,
        }
    }
}

/// What a caller's share does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    /// Wait for earlier holds to be released (a stream's replies to be taken).
    Wait,
    /// Fail the op: nothing is released before the call returns.
    Refuse,
}

#[derive(Debug)]
struct Own {
    sem: Arc<Semaphore>,
    units: u32,
    share: Share,
}

/// One caller's view of the budget: the node budget, and the caller's own share of it.
#[derive(Debug)]
pub struct Account {
    node: Arc<Semaphore>,
    node_units: u32,
    own: Option<Own>,
    off: bool,
}

impl Account {
    /// Holds `bytes` for a reply or a read, waiting at most `wait` for room. A hold larger
    /// than a limit takes the whole limit, so a maximal value can always be served.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the call's share is full (a `Batch`), or when there is no
    /// room before `wait` passes.
    pub async fn hold(&self, bytes: u64, wait: Duration) -> Result<Held, Error> {
        if self.off {
            return Ok(Held::none());
        }
        let want = units(bytes).max(1);
        // The common case: room in both, taken without a timer.
        if let Some(held) = self.try_hold(want) {
            return Ok(held);
        }
        let work = async {
            let own = match &self.own {
                None => None,
                Some(own) => {
                    let n = want.min(own.units);
                    let permit =
                        match own.share {
                            Share::Refuse => Arc::clone(&own.sem)
                                .try_acquire_many_owned(n)
                                .map_err(|_| {
                                    Error::Overloaded(format!(
                                        "a batch reply may carry at most {} bytes of values: split \
                                     the batch or use Pipe",
                                        u64::from(own.units) * UNIT
                                    ))
                                })?,
                            Share::Wait => Arc::clone(&own.sem)
                                .acquire_many_owned(n)
                                .await
                                .map_err(|_| closed())?,
                        };
                    Some(permit)
                }
            };
            let node = Arc::clone(&self.node)
                .acquire_many_owned(want.min(self.node_units))
                .await
                .map_err(|_| closed())?;
            Ok(Held {
                slots: [Some(node), own],
                more: Vec::new(),
            })
        };
        match tokio::time::timeout(wait, work).await {
            Ok(held) => held,
            Err(_) => Err(Error::Overloaded(
                "the node's reply budget stayed full until the deadline".into(),
            )),
        }
    }
}

impl Account {
    /// Takes `want` units from the share and the node budget at once, if both have room.
    fn try_hold(&self, want: u32) -> Option<Held> {
        let own = match &self.own {
            None => None,
            Some(own) => Some(
                Arc::clone(&own.sem)
                    .try_acquire_many_owned(want.min(own.units))
                    .ok()?,
            ),
        };
        let node = Arc::clone(&self.node)
            .try_acquire_many_owned(want.min(self.node_units))
            .ok()?;
        Some(Held {
            slots: [Some(node), own],
            more: Vec::new(),
        })
    }
}

fn closed() -> Error {
    Error::Overloaded("the reply budget is closed".into())
}

/// Bytes held against the budget; released on drop. A hold on the get path allocates nothing:
/// the node's and the caller's permits sit in two slots, and holds absorbed from the same
/// account merge into them.
#[derive(Debug, Default)]
#[must_use = "the hold is released when dropped"]
pub struct Held {
    slots: [Option<OwnedSemaphorePermit>; 2],
    /// Permits of other semaphores than the slots'.
    more: Vec<OwnedSemaphorePermit>,
}

impl Held {
    /// Nothing held.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether this holds nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none) && self.more.is_empty()
    }

    /// Moves `other`'s holds into this one.
    pub fn absorb(&mut self, other: Held) {
        let [a, b] = other.slots;
        for permit in [a, b].into_iter().flatten().chain(other.more) {
            self.take(permit);
        }
    }

    fn take(&mut self, permit: OwnedSemaphorePermit) {
        for slot in &mut self.slots {
            match slot {
                Some(held) if Arc::ptr_eq(held.semaphore(), permit.semaphore()) => {
                    held.merge(permit);
                    return;
                }
                Some(_) => {}
                None => {
                    *slot = Some(permit);
                    return;
                }
            }
        }
        self.more.push(permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(5);
    const SHORT: Duration = Duration::from_millis(20);

    #[tokio::test]
    async fn holds_are_released_on_drop() {
        let budget = ReplyBudget::new(4 << 20);
        let account = budget.node_account();
        let a = account.hold(3 << 20, LONG).await.unwrap();
        assert_eq!(budget.held_bytes(), 3 << 20);
        assert!(matches!(
            account.hold(2 << 20, SHORT).await,
            Err(Error::Overloaded(_))
        ));
        drop(a);
        assert_eq!(budget.held_bytes(), 0);
        let _b = account.hold(2 << 20, SHORT).await.unwrap();
    }

    #[tokio::test]
    async fn a_full_stream_leaves_room_for_others() {
        let budget = ReplyBudget::new(16 << 20);
        let slow = budget.stream_account(4 << 20);
        let _held = slow.hold(4 << 20, LONG).await.unwrap();
        // The slow stream waits for its own replies to be taken...
        assert!(slow.hold(1, SHORT).await.is_err());
        // ...while another stream is served from the rest of the budget.
        let other = budget.stream_account(4 << 20);
        let _ok = other.hold(1 << 20, SHORT).await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_share_refuses_at_once() {
        let budget = ReplyBudget::new(64 << 20);
        let call = budget.call_account(3 << 20);
        let mut held = Held::none();
        for _ in 0..3 {
            held.absorb(call.hold(1 << 20, LONG).await.unwrap());
        }
        let started = std::time::Instant::now();
        let refused = call.hold(1 << 20, LONG).await.unwrap_err();
        assert!(started.elapsed() < LONG, "a batch must not wait for itself");
        assert!(refused.to_string().contains("split the batch"), "{refused}");
        drop(held);
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn absorbed_holds_of_several_accounts_are_all_released() {
        let budget = ReplyBudget::new(16 << 20);
        let (a, b) = (
            budget.stream_account(4 << 20),
            budget.stream_account(4 << 20),
        );
        let mut held = Held::none();
        for _ in 0..3 {
            held.absorb(a.hold(1 << 20, LONG).await.unwrap());
            held.absorb(b.hold(1 << 20, LONG).await.unwrap());
        }
        assert_eq!(budget.held_bytes(), 6 << 20);
        // Account `a`'s share holds what was absorbed from it.
        assert!(a.hold(2 << 20, SHORT).await.is_err());
        drop(held);
        assert_eq!(budget.held_bytes(), 0);
        let _again = a.hold(4 << 20, SHORT).await.unwrap();
    }

    #[tokio::test]
    async fn a_value_larger_than_a_limit_takes_the_whole_limit() {
        let budget = ReplyBudget::new(8 << 20);
        let stream = budget.stream_account(2 << 20);
        let held = stream.hold(100 << 20, LONG).await.unwrap();
        assert_eq!(budget.held_bytes(), 8 << 20);
        drop(held);
        assert_eq!(budget.held_bytes(), 0);
    }
}
