//! The crate's error type.

/// Everything that can go wrong in `cache-testkit`: reading or converting a history.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The history could not be read.
    #[error("reading line {line} of the history: {source}")]
    Io {
        /// The 1-based number of the line being read.
        line: usize,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not one JSON-encoded operation.
    #[error("line {line} of the history is not an operation: {source}")]
    Parse {
        /// The 1-based number of the bad line.
        line: usize,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// Test certificates could not be generated or written.
    #[error("test certificates: {0}")]
    Certs(String),
    /// The moto S3 emulator is missing, did not start, or refused a request.
    #[error("moto: {0}")]
    Moto(String),
    /// Azurite or its Python client is missing, did not start, or failed a request.
    #[error("azurite: {0}")]
    Azurite(String),
    /// A value tag is not what a conversion needs (for example, not a decimal id).
    #[error("value tag {tag:?} is not a decimal id")]
    ValueTag {
        /// The tag.
        tag: String,
    },
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
