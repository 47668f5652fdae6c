//! How request errors cross the wire: a [`cache_core::Error`] becomes a stable
//! [`pb::ErrorCode`] inside a [`pb::Error`], which is an op's result in a batch, or the detail
//! of a gRPC [`Status`] for a unary call.

use cache_core::Error;
use cache_proto::v1 as pb;
use prost::Message;
use tonic::{Code, Status};

/// The longest error text sent, in bytes. Texts that repeat input repeat at most
/// [`cache_core::error::MAX_ECHO_BYTES`] of it; this bounds the rest.
pub const MAX_MESSAGE_BYTES: usize = 256;

/// The wire form of a request error.
pub fn to_wire(err: &Error) -> pb::Error {
    let (code, epoch, members) = match err {
        Error::InvalidKey { .. } => (pb::ErrorCode::InvalidKey, 0, Vec::new()),
        Error::ValueTooLarge { .. } => (pb::ErrorCode::ValueTooLarge, 0, Vec::new()),
        Error::UnknownApp { .. } => (pb::ErrorCode::UnknownApp, 0, Vec::new()),
        Error::NotFound { .. } => (pb::ErrorCode::NotFound, 0, Vec::new()),
        Error::WrongOwner { epoch, members } => {
            (pb::ErrorCode::WrongOwner, *epoch, members.clone())
        }
        Error::StoreUnavailable(_) => (pb::ErrorCode::StoreUnavailable, 0, Vec::new()),
        Error::StoreRejected(_) => (pb::ErrorCode::StoreRejected, 0, Vec::new()),
        Error::Timeout(_) => (pb::ErrorCode::Timeout, 0, Vec::new()),
        Error::Overloaded(_) => (pb::ErrorCode::Overloaded, 0, Vec::new()),
        Error::NotSettled(_) => (pb::ErrorCode::NotSettled, 0, Vec::new()),
        Error::VersionMismatch { .. } => (pb::ErrorCode::VersionMismatch, 0, Vec::new()),
        Error::Unauthenticated(_) => (pb::ErrorCode::Unauthenticated, 0, Vec::new()),
        Error::PermissionDenied(_) => (pb::ErrorCode::PermissionDenied, 0, Vec::new()),
        Error::InvalidRequest(_) | Error::InvalidMembership(_) => {
            (pb::ErrorCode::InvalidRequest, 0, Vec::new())
        }
        _ => (pb::ErrorCode::Internal, 0, Vec::new()),
    };
    pb::Error {
        code: code as i32,
        message: cache_core::error::clip(&err.to_string(), MAX_MESSAGE_BYTES),
        epoch,
        members,
    }
}

/// The gRPC status code for a wire error code.
pub fn grpc_code(code: pb::ErrorCode) -> Code {
    match code {
        pb::ErrorCode::InvalidKey
        | pb::ErrorCode::ValueTooLarge
        | pb::ErrorCode::UnknownApp
        | pb::ErrorCode::InvalidRequest => Code::InvalidArgument,
        pb::ErrorCode::NotFound => Code::NotFound,
        pb::ErrorCode::WrongOwner => Code::FailedPrecondition,
        pb::ErrorCode::StoreUnavailable | pb::ErrorCode::NotSettled => Code::Unavailable,
        pb::ErrorCode::Timeout => Code::DeadlineExceeded,
        pb::ErrorCode::Overloaded => Code::ResourceExhausted,
        pb::ErrorCode::VersionMismatch => Code::Aborted,
        pb::ErrorCode::Unauthenticated => Code::Unauthenticated,
        pb::ErrorCode::PermissionDenied => Code::PermissionDenied,
        pb::ErrorCode::StoreRejected => Code::FailedPrecondition,
        pb::ErrorCode::Internal | pb::ErrorCode::Unspecified => Code::Internal,
    }
}

/// A gRPC status for a request error, with the [`pb::Error`] as its machine-readable detail.
pub fn to_status(err: &Error) -> Status {
    let detail = to_wire(err);
    let code = grpc_code(detail.code());
    Status::with_details(code, detail.message.clone(), detail.encode_to_vec().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_a_decodable_detail() {
        let err = Error::WrongOwner {
            epoch: 7,
            members: vec!["a".into(), "b".into()],
        };
        let status = to_status(&err);
        assert_eq!(status.code(), Code::FailedPrecondition);
        let detail = pb::Error::decode(status.details()).unwrap();
        assert_eq!(detail.code(), pb::ErrorCode::WrongOwner);
        assert_eq!((detail.epoch, detail.members.len()), (7, 2));
    }

    #[test]
    fn codes_are_stable() {
        let cases = [
            (
                Error::InvalidKey { reason: "x".into() },
                Code::InvalidArgument,
            ),
            (Error::NotFound { key: "k".into() }, Code::NotFound),
            (Error::StoreUnavailable("x".into()), Code::Unavailable),
            (Error::StoreRejected("x".into()), Code::FailedPrecondition),
            (
                Error::Timeout(std::time::Duration::from_secs(1)),
                Code::DeadlineExceeded,
            ),
            (
                Error::UnknownApp {
                    got: "a".into(),
                    serves: "b".into(),
                },
                Code::InvalidArgument,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(to_status(&err).code(), code, "{err}");
        }
    }
}
