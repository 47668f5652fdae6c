//! The crate's error type.

/// Everything that can go wrong in `cache-core`, and the errors that the server reports for a
/// request. Each variant maps to one stable wire code (see `cache-server`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty, too long, or not a valid object path.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why the key was refused.
        reason: String,
    },
    /// The value is larger than `max_value_bytes`.
    #[error("value of {size} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// The value's size in bytes.
        size: u64,
        /// The configured limit in bytes.
        max: u64,
    },
    /// The request names an application this node does not serve.
    /// Its message names neither app, so that a caller learns nothing of what the node
    /// serves.
    #[error("unknown app: this node does not serve the app the request names")]
    UnknownApp {
        /// The app the request named (for logs, not for the caller).
        got: String,
        /// The app this node serves (for logs, not for the caller).
        serves: String,
    },
    /// The blob does not exist in the store.
    #[error("not found: {key}")]
    NotFound {
        /// The missing blob's key.
        key: String,
    },
    /// This node is not the key's home at its epoch.
    #[error("wrong owner: this node does not own the key at epoch {epoch}")]
    WrongOwner {
        /// The node's membership epoch.
        epoch: u64,
        /// The node's members at that epoch.
        members: Vec<String>,
    },
    /// The blob store failed or could not be reached; a later try may succeed.
    #[error("blob store unavailable: {0}")]
    StoreUnavailable(String),
    /// The blob store refused the operation in a way that retrying cannot fix (a key whose
    /// parent is a file, a path the store cannot hold, no permission).
    #[error("blob store refused the operation: {0}")]
    StoreRejected(String),
    /// The operation's deadline passed.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A member list is unusable (empty, or an address is malformed).
    #[error("invalid membership: {0}")]
    InvalidMembership(String),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A conditional write found another version of the blob.
    #[error("version mismatch: expected {expected:?}, found {found:?}")]
    VersionMismatch {
        /// The version the writer expected ("" for: no blob).
        expected: String,
        /// The version found ("" for: no blob).
        found: String,
    },
    /// A key's previous owners are not all fenced yet, so the node cannot take a write for it.
    #[error("not settled: {0}")]
    NotSettled(String),
    /// The request carries no valid token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The request's token does not allow this call (wrong role, or a data token for
    /// another app).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The node is refusing work to protect itself.
    #[error("overloaded: {0}")]
    Overloaded(String),
}

impl Error {
    /// Whether an operation that failed with this error may still have taken effect in the
    /// blob store (a timeout or an outage after the request may have been sent).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::StoreUnavailable(_) | Self::Timeout(_))
    }
}

/// The longest piece of a caller's input (a key, an app name, an address) that an error text
/// repeats, in bytes.
pub const MAX_ECHO_BYTES: usize = 128;

/// `input` as an error text may repeat it: at most [`MAX_ECHO_BYTES`], cut at a character
/// boundary and marked with `…` when cut. Every error that echoes input goes through this, so
/// that a reply never grows with what the caller sent.
///
/// # Examples
/// ```
/// use cache_core::error::{MAX_ECHO_BYTES, echo};
/// assert_eq!(echo("thumbnails"), "thumbnails");
/// assert!(echo(&"x".repeat(10_000)).len() <= MAX_ECHO_BYTES + '…'.len_utf8());
/// ```
pub fn echo(input: &str) -> String {
    clip(input, MAX_ECHO_BYTES)
}

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        let long = "é".repeat(MAX_ECHO_BYTES);
        let cut = echo(&long);
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= MAX_ECHO_BYTES + '…'.len_utf8());
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
    }
}
