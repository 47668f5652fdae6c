//! cachelet's logic, with no network code: who owns a key, what a valid key is, and the
//! byte-bounded entry store that keeps cached blobs consistent with the blob store.
//!
//! # Layout
//! - [`ring`]: the epoch-numbered [`Membership`] and its consistent-hash ring. Client and
//!   server both route a key with [`Membership::owner`].
//! - [`fence`]: fenced ownership: epoch records claimed in the store, acks and seals, and
//!   whether a key is settled enough to serve from the cache ([`fence::Ownership`]).
//! - [`limits`]: key and value validation ([`validate_key`], [`Limits`]).
//! - [`chunks`]: large objects as immutable chunks named by key, version and index.
//! - [`version`]: [`Version`], the store's ETag for a blob's content.
//! - [`entries`]: the [`EntryStore`] on `moka`, with read-through and write-through
//!   primitives that keep the cache from holding content the store no longer has.
//! - [`lease`]: read leases: the home node's [`lease::Directory`] of who holds a copy until
//!   when, and a client's [`lease::Holder`]; a write completes only once every copy is
//!   invalid.
//! - [`hot`]: a count-min [`hot::FrequencySketch`] that marks keys read often, in O(1).
//! - [`advisor`]: the scaling [`advisor::Advisor`], a pure function of observed figures.
//! - [`discovery`]: from the addresses a discovery source sees alive to the member list one
//!   node proposes ([`discovery::Proposer`]): damped joins, prompt leaves of members seen to
//!   go, members never seen kept until they do not answer, one proposer.
//! - [`prewarm`]: hot-key manifests and the plan for loading them after scale-to-zero.
//! - [`auth`]: credentials and roles: the auth file of token hashes, and [`auth::authorize`],
//!   which decides whether a caller may make a call.
//! - [`clock`]: injectable time ([`clock::Clock`], [`clock::ManualClock`]).
//! - [`error`]: the crate's [`Error`].
//!
//! A request on a node flows: validate the key ([`limits`]) → check the owner ([`ring`]) →
//! [`EntryStore::get_or_load`] (hit, or one store read for all concurrent misses) or
//! [`EntryStore::write_through`] (store first, then cache, in store order).

pub mod advisor;
pub mod auth;
pub mod chunks;
pub mod clock;
pub mod discovery;
pub mod entries;
pub mod error;
pub mod fence;
pub mod hot;
pub mod lease;
pub mod limits;
pub mod prewarm;
pub mod ring;
pub mod version;

pub use entries::{ENTRY_OVERHEAD_BYTES, Entry, EntryStats, EntryStore, Lookup};
pub use error::{Error, Result};
pub use limits::{
    DEFAULT_MAX_VALUE_BYTES, Limits, MAX_KEY_BYTES, RESERVED_KEY, RESERVED_PREFIX, validate_key,
};
pub use ring::{MAX_MEMBERS, Membership, SharedMembership, VNODES, key_hash, validate_addresses};
pub use version::Version;
