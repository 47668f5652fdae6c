//! The crate's error type.

use std::time::Duration;

use cache_proto::v1 as pb;
use prost::Message;
use tonic::{Code, Status};

/// Everything a client call can fail with. Nodes send errors as stable codes; the client turns
/// them back into these variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty, too long, or not a valid object path. Checked before any network call.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The value is larger than the node's limit.
    #[error("value too large: {0}")]
    ValueTooLarge(String),
    /// The node serves another application.
    #[error("unknown app: {0}")]
    UnknownApp(String),
    /// The request was malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The blob does not exist in the store.
    #[error("not found: {0}")]
    NotFound(String),
    /// The blob store, or every node that could serve the key, is unreachable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call did not finish within its deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The node does not own the key at its epoch.
    #[error("wrong owner: node is at epoch {epoch} with members {members:?}")]
    WrongOwner {
        /// The node's epoch.
        epoch: u64,
        /// The node's members.
        members: Vec<String>,
    },
    /// A conditional put found another version of the blob than the one expected.
    #[error("version mismatch: {0}")]
    VersionMismatch(String),
    /// The node refused the work to protect itself.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The call carried no credentials, or credentials the node does not know.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The credentials do not allow this call: a wrong role, or another application's data.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The blob store refused the operation for good; retrying cannot help.
    #[error("store rejected the operation: {0}")]
    StoreRejected(String),
    /// The client was configured wrongly.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An unexpected condition.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the caller sent something the node will never accept (bad key, value, app or
    /// request); retrying the same call cannot succeed.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(
            self,
            Error::InvalidKey(_)
                | Error::ValueTooLarge(_)
                | Error::UnknownApp(_)
                | Error::InvalidRequest(_)
        )
    }

    /// Whether the node refused the call's credentials: no valid token (`Unauthenticated`), or
    /// a token whose role or app does not allow the call (`PermissionDenied`). Retrying, or
    /// asking another node, cannot help.
    pub fn is_denied(&self) -> bool {
        matches!(self, Error::Unauthenticated(_) | Error::PermissionDenied(_))
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_)
                | Error::Timeout(_)
                | Error::Overloaded(_)
                | Error::WrongOwner { .. }
        )
    }

    /// The client error for a wire error.
    pub fn from_wire(err: pb::Error) -> Self {
        let msg = err.message.clone();
        match err.code() {
            pb::ErrorCode::InvalidKey => Error::InvalidKey(msg),
            pb::ErrorCode::ValueTooLarge => Error::ValueTooLarge(msg),
            pb::ErrorCode::UnknownApp => Error::UnknownApp(msg),
            pb::ErrorCode::InvalidRequest => Error::InvalidRequest(msg),
            pb::ErrorCode::NotFound => Error::NotFound(msg),
            pb::ErrorCode::WrongOwner => Error::WrongOwner {
                epoch: err.epoch,
                members: err.members,
            },
            pb::ErrorCode::StoreUnavailable | pb::ErrorCode::NotSettled => Error::Unavailable(msg),
            pb::ErrorCode::Timeout => Error::Timeout(Duration::ZERO),
            pb::ErrorCode::Overloaded => Error::Overloaded(msg),
            pb::ErrorCode::VersionMismatch => Error::VersionMismatch(msg),
            pb::ErrorCode::Unauthenticated => Error::Unauthenticated(msg),
            pb::ErrorCode::PermissionDenied => Error::PermissionDenied(msg),
            pb::ErrorCode::StoreRejected => Error::StoreRejected(msg),
            pb::ErrorCode::Internal | pb::ErrorCode::Unspecified => Error::Internal(msg),
        }
    }

    /// The client error for a gRPC status: its detail when it carries one, else its code.
    pub fn from_status(status: &Status) -> Self {
        if let Ok(detail) = pb::Error::decode(status.details())
            && detail.code() != pb::ErrorCode::Unspecified
        {
            return Self::from_wire(detail);
        }
        let msg = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument => Error::InvalidRequest(msg),
            Code::NotFound => Error::NotFound(msg),
            Code::DeadlineExceeded => Error::Timeout(Duration::ZERO),
            Code::ResourceExhausted => Error::Overloaded(msg),
            Code::Aborted => Error::VersionMismatch(msg),
            // tonic's own limit on a message's size.
            Code::OutOfRange => Error::ValueTooLarge(msg),
            Code::Unauthenticated => Error::Unauthenticated(msg),
            Code::PermissionDenied => Error::PermissionDenied(msg),
            Code::Unavailable | Code::Cancelled | Code::Unknown => Error::Unavailable(msg),
            _ => Error::Internal(format!("{:?}: {msg}", status.code())),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_details_come_back_typed() {
        let detail = pb::Error {
            code: pb::ErrorCode::InvalidKey as i32,
            message: "the key is empty".into(),
            ..Default::default()
        };
        let status =
            Status::with_details(Code::InvalidArgument, "x", detail.encode_to_vec().into());
        let err = Error::from_status(&status);
        assert_eq!(err, Error::InvalidKey("the key is empty".into()));
        assert!(err.is_invalid_argument() && !err.is_retryable());
        assert!(matches!(
            Error::from_status(&Status::unavailable("conn refused")),
            Error::Unavailable(_)
        ));
    }
}
