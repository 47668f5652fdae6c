//! A cachelet node: gRPC data and admin services over a byte-bounded cache that reads through
//! to, and writes through to, the application's blob store.
//!
//! Platforms embed a node with [`CacheNode::builder`] and [`CacheNode::serve`], or run the
//! `cache-server` binary as a sidecar.
//!
//! # Layout
//! - [`node`]: [`CacheNode`] and its builder; the data plane: get, put and delete, the store
//!   calls, and counters.
//! - `epochs`: the node's fenced membership, a shell around [`cache_core::fence`]: epoch
//!   records in the store (claim, read, probe), the write gate, waiting for settlement. It
//!   knows nothing of the node.
//! - `scale`: rebalancing: claiming and adopting epochs, the fence loop, handoff and `Peek`,
//!   drain, gossip. `scale_state` holds its state apart from the node.
//! - `leases`: read leases, a shell around [`cache_core::lease`]: holder ids for `Leases`
//!   streams, grants on reads, and writes that wait until every lease on their key is
//!   invalid.
//! - `prewarm`: hot-key manifests and pre-warming after scale-to-zero.
//! - [`discovery`]: membership from the platform: a source (Kubernetes EndpointSlices, DNS,
//!   chitchat gossip) reports who is alive, and a controller around
//!   [`cache_core::discovery::Proposer`] claims the next epoch through `scale`'s path.
//! - `advice`: scaling advice from every member's counters.
//! - [`budget`]: the reply budget, which bounds the value bytes a node holds for replies the
//!   transport has not taken, uncached store reads, and handoff.
//! - [`service`]: the tonic `Data`, `Admin` and `Peer` services, and the `Pipe` stream's tasks.
//! - `streams`: what a stream refuses: op ids already in progress, and the one status a
//!   `Pipe` ends with after a message too large, malformed, for another app, or with too
//!   many ops.
//! - [`serve`](mod@serve): [`CacheNode::serve`] on a bound listener with a shutdown future.
//! - [`connections`]: [`Listeners`] (the TCP listener, and a Unix domain socket for clients
//!   on the same host), and bounds on connections: the accept loop with its cap below the fd
//!   limit, [`connections::IdleIo`] (idle and preface deadlines), and the HTTP/2 settings.
//! - [`security`]: TLS ([`security::TlsConfig`]), credentials and roles on every call (an
//!   interceptor finds the caller, each handler authorizes it with [`cache_core::auth`]),
//!   the peer token on calls to peers, and the refusal to serve a non-loopback address
//!   without credentials.
//! - [`wire`]: request errors as gRPC statuses with a machine-readable detail.
//! - [`store`]: opening a blob store from a URL; [`store::InstrumentedStore`] for tests.
//! - [`metrics`]: the counters in Prometheus text format.
//! - [`s3`]: the S3 endpoint (`--s3`): the `s3s` protocol over a `cache_client::CacheClient`
//!   whose home node for local keys is this one, by direct call; SigV4 keys, and objects too
//!   large for the cache streamed from and to the store.
//! - [`cli`]: the `cache-server` command line.
//! - [`cluster`]: [`cluster::LocalCluster`], nodes in this process on ephemeral ports.
//! - [`error`]: the crate's [`Error`].
//! - `fuzz` (hidden): the entry point that the proptest harness and the `cargo fuzz` target
//!   drive: inputs fed to one node's `Data` and `Peer` services, and the checks on replies.
//!
//! A get flows: (TLS) → `security`'s interceptor (the caller's token) → `service` (decode,
//! authorize the caller for the app, check app) → [`CacheNode`] `lookup` (validate key; check
//! the request's epoch and the owner; a settled key's cache hit?) → on a miss `load` (adopt a
//! newer epoch the request carries; an unsettled key is read from the store uncached; else one
//! store read for all concurrent misses, cached unless a write or ownership change raced it)
//! → reply, coalesced with other ready replies on the stream. A put or delete also passes the
//! write gate (`epochs`), which waits until the key is settled. A `GetChunk` of a large object
//! takes the same ownership check, then its part from the entry store, or one ranged read of
//! the store, checked to be of the version asked for.
//!
//! # Examples
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use cache_server::{CacheNode, store::open_store};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?.to_string();
//! let node = CacheNode::builder()
//!     .app("thumbnails")
//!     .store(open_store("file:///var/lib/thumbnails")?)
//!     .capacity_bytes(256 << 20)
//!     .members([addr])
//!     .build()?;
//! node.serve(listener, cache_server::cli::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

mod advice;
pub mod budget;
pub mod cli;
pub mod cluster;
pub mod connections;
pub mod discovery;
mod epochs;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
mod leases;
pub mod metrics;
pub mod node;
mod prewarm;
pub mod s3;
mod scale;
mod scale_state;
pub mod security;
pub mod serve;
pub mod service;
pub mod store;
mod streams;
pub mod wire;

pub use connections::Listeners;
pub use error::{Error, Result};
pub use node::{CacheNode, CacheNodeBuilder};
pub use security::TlsConfig;
