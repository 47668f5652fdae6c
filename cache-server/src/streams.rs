//! What the data service refuses on a stream, apart from the service itself: an op id already
//! in progress, and the status a `Pipe` ends with when its client sent something the node
//! will not take.
//!
//! - **Op ids.** Replies are matched to ops by id, so two ops in progress with one id on one
//!   stream (or in one `Batch`) cannot both be answered: the later one is refused with
//!   `INVALID_REQUEST`, and the earlier one goes on. An id is free again once its reply is
//!   sent. The set of ids in progress is bounded by the stream's `max_inflight` ops.
//! - **Ending a `Pipe`.** A message that is too large, that does not decode, that names
//!   another app, or that carries too many ops ends the stream. The node first finishes and
//!   answers the ops in progress, then ends the reply stream with one error status (with a
//!   `cachelet.v1.Error` detail), which the client turns into an error for every op it still
//!   waits on from that stream. One status per stream, whatever the message held, so an error
//!   never costs more than one reply.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use cache_proto::v1 as pb;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::oneshot;
use tonic::{Code, Status};

/// The op ids in progress on one stream.
#[derive(Debug, Default)]
pub(crate) struct OpIds {
    ids: Mutex<HashSet<u64>>,
}

/// An op id in progress; freed when dropped.
#[derive(Debug)]
pub(crate) struct OpId {
    ids: Arc<OpIds>,
    id: u64,
}

impl OpIds {
    /// Marks `id` in progress, or `None` when it already is.
    pub(crate) fn claim(self: &Arc<Self>, id: u64) -> Option<OpId> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.insert(id).then(|| OpId {
            ids: Arc::clone(self),
            id,
        })
    }
}

impl Drop for OpId {
    fn drop(&mut self) {
        let mut ids = self.ids.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.remove(&self.id);
    }
}

/// The reply to an op whose id is already in progress.
pub(crate) fn duplicate_id(id: u64) -> pb::Reply {
    pb::Reply {
        id,
        result: Some(pb::reply::Result::Error(pb::Error {
            code: pb::ErrorCode::InvalidRequest as i32,
            message: format!("invalid request: op id {id} is already in progress on this stream"),
            ..Default::default()
        })),
    }
}

/// The status a `Pipe` ends with after the inbound stream failed with `status`, if the
/// client is owed one: a message over the size limit, or one that did not decode.
pub(crate) fn inbound_failed(status: &Status) -> Option<Status> {
    match status.code() {
        // tonic refuses a message over `max_decoding_message_size` before decoding it.
        Code::OutOfRange | Code::ResourceExhausted => Some(with_detail(
            pb::ErrorCode::ValueTooLarge,
            format!(
                "the stream is closed: {}",
                cache_core::error::echo(status.message())
            ),
        )),
        Code::InvalidArgument => Some(with_detail(
            pb::ErrorCode::InvalidRequest,
            format!(
                "the stream is closed: malformed message: {}",
                cache_core::error::echo(status.message())
            ),
        )),
        // The client went away or reset the stream: nobody to tell.
        _ => None,
    }
}

fn with_detail(code: pb::ErrorCode, message: String) -> Status {
    let detail = pb::Error {
        code: code as i32,
        message: message.clone(),
        ..Default::default()
    };
    Status::with_details(
        crate::wire::grpc_code(code),
        message,
        detail.encode_to_vec().into(),
    )
}

/// `replies`, then the status sent on `end`, if one is, as the stream's last item.
pub(crate) fn then_end<S, T>(
    replies: S,
    end: oneshot::Receiver<Status>,
) -> impl Stream<Item = Result<T, Status>> + Send
where
    S: Stream<Item = Result<T, Status>> + Send,
    T: Send,
{
    replies.chain(futures::stream::once(end).filter_map(|end| async move { end.ok().map(Err) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_refused_while_in_progress_and_free_after() {
        let ids = Arc::new(OpIds::default());
        let first = ids.claim(7).unwrap();
        assert!(ids.claim(7).is_none());
        let other = ids.claim(8).unwrap();
        drop(first);
        assert!(ids.claim(7).is_some());
        drop(other);
        assert!(ids.ids.lock().unwrap().is_empty());
    }

    #[test]
    fn oversize_and_malformed_messages_end_with_a_typed_status() {
        let too_large = inbound_failed(&Status::out_of_range("found 9 bytes, the limit is 8"));
        let too_large = too_large.unwrap();
        assert_eq!(too_large.code(), Code::InvalidArgument);
        let detail = pb::Error::decode(too_large.details()).unwrap();
        assert_eq!(detail.code(), pb::ErrorCode::ValueTooLarge);
        let malformed = inbound_failed(&Status::invalid_argument("bad wire type")).unwrap();
        let detail = pb::Error::decode(malformed.details()).unwrap();
        assert_eq!(detail.code(), pb::ErrorCode::InvalidRequest);
        assert!(inbound_failed(&Status::cancelled("gone")).is_none());
    }
}
