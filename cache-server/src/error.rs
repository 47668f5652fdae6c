//! The crate's error type.

/// Errors of running a node. Per-request errors are [`cache_core::Error`]s and travel to the
/// client as gRPC statuses (see [`crate::wire`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node's configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The blob store could not be opened from its URL.
    #[error("cannot open blob store {url:?}: {reason}")]
    Store {
        /// The store URL.
        url: String,
        /// Why it could not be opened.
        reason: String,
    },
    /// A logic error from `cache-core`.
    #[error(transparent)]
    Core(#[from] cache_core::Error),
    /// A socket could not be bound or read.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
