//! A node in the caller's own process, reached with no socket and no encoding.
//!
//! When a node is embedded in a function's process, the client there calls it directly for
//! the keys it owns: the same [`Op`] a `Batch` carries goes in, the same [`Reply`] comes out,
//! under the same rules (epochs, fencing, leases, budgets), with values shared, not copied.
//! `cache-server`'s `CacheNode` implements it; `cache-client` takes one with
//! `CacheClientBuilder::embedded`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::v1::{Op, Reply};

/// The future of one in-process op.
pub type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// A node in this process that answers ops by direct calls.
pub trait InProcessNode: Send + Sync + std::fmt::Debug {
    /// The address the node appears under in member lists, once it serves.
    fn member_addr(&self) -> Option<&str>;

    /// Runs `op` for `app` as the node runs an op of a `Batch`, within `budget`.
    fn call(&self, app: &str, op: Op, budget: Duration) -> ReplyFuture<'_>;
}
