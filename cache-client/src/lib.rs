//! The client that function code links to use a cachelet cache.
//!
//! # Layout
//! - [`client`]: [`CacheClient`] and its builder: validation, routing by the ring shared with
//!   the nodes, fallback to the next node when the home node is down, counters.
//! - `local`: the local tier (in-process copies with versions) and the tasks that apply the
//!   nodes' invalidations to it; [`LocalAdmission`] says what it keeps.
//! - `leases`: read leases held from each node ([`cache_core::lease::Holder`]) and the task
//!   that keeps a node's `Leases` stream: invalidations drop the copy, then are acknowledged.
//! - `conn`: one node's HTTP/2 channel (over TCP, or the node's Unix domain socket for a
//!   `unix:PATH` entry; TLS and the bearer token, when set) and its long-lived `Pipe` stream,
//!   whose request body puts every ready op into one message and whose reader task matches
//!   replies to ops.
//! - [`objects`]: objects of any size as streams ([`CacheClient::get_stream`],
//!   [`CacheClient::get_range`]); those larger than the largest value in chunks of one
//!   version ([`CacheClient::get_chunk`]).
//! - [`store`]: [`CachedStore`], the cache as an `object_store::ObjectStore` over the store
//!   the nodes use: reads and writes through the cache, listings and objects too large for
//!   it from the store.
//! - [`error`]: the typed [`Error`], rebuilt from the nodes' gRPC statuses.
//! - [`cli`]: the `cachectl` command line.
//!
//! A get flows: [`CacheClient::get`] → validate the key → the local tier (a `Bounded` copy
//! within its bound is served here) → the home node's pipe, carrying the local copy's version
//! (`Strong`, `Strict`) → (node) → reply slot → `NotModified` (serve the local copy) or the
//! value, its version and its tier. When the home node is embedded in this process
//! ([`CacheClientBuilder::embedded`]), the same op goes to it by a direct call instead of
//! its pipe ([`cache_proto::in_process`]).
//!
//! # Examples
//! ```no_run
//! # async fn run() -> cache_client::Result<()> {
//! use cache_client::CacheClient;
//!
//! let cache = CacheClient::builder()
//!     .app("thumbnails")
//!     .nodes(["127.0.0.1:7070"])
//!     .build()
//!     .await?;
//! match cache.get("cats/1.png").await? {
//!     Some(bytes) => println!("{} bytes", bytes.len()),
//!     None => println!("no such blob"),
//! }
//! # Ok(()) }
//! ```

pub mod cli;
pub mod client;
mod conn;
pub mod error;
mod leases;
mod local;
pub mod objects;
pub mod store;

pub use client::{
    CacheClient, CacheClientBuilder, ClientStats, Consistency, Fetched, NodeReport, Stats, Tier,
    Written,
};
pub use error::{Error, Result};
pub use local::LocalAdmission;
pub use objects::{Chunk, Streamed};
pub use store::CachedStore;
