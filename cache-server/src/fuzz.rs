//! The entry point that fuzzers drive: arbitrary bytes and batches, fed to one node's `Data`
//! and `Peer` services, both by calling the services in process and as raw frames over a real
//! connection, with the checks that must hold whatever the input. Used by the proptest
//! harness in `tests/fuzz.rs` and by the `cargo fuzz` target in `fuzz/`; not a stable API.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use cache_proto::v1 as pb;
use prost::Message;
use tokio::sync::watch;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::node::CacheNode;
use crate::service::{DataService, PeerService};

/// The longest error text a reply may carry: the wire cap and its ellipsis.
const MAX_ERROR_TEXT: usize = crate::wire::MAX_MESSAGE_BYTES + 3;

/// How long one input may take before the node counts as stuck.
const INPUT_DEADLINE: Duration = Duration::from_secs(20);

/// A gRPC codec that sends and receives message bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// One serving node, its services, and a connection to it.
#[derive(Debug, Clone)]
pub struct Target {
    node: CacheNode,
    data: DataService,
    peer: PeerService,
    channel: Channel,
    max_reply: usize,
    _stop: watch::Sender<bool>,
}

impl Target {
    /// A target on `node`, which serves at `addr`.
    ///
    /// # Errors
    /// When no connection to `addr` can be opened.
    pub async fn new(node: CacheNode, addr: &str) -> Result<Self, String> {
        let (stop, stopped) = watch::channel(false);
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let max_reply = usize::try_from(node.limits().max_value_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(crate::serve::MESSAGE_SLACK);
        Ok(Self {
            data: DataService::new(node.clone(), stopped),
            peer: PeerService::new(node.clone()),
            node,
            channel,
            max_reply,
            _stop: stop,
        })
    }

    /// Feeds `bytes` to every entry: as a `Batch`, `PeekRequest` and `FenceRequest` to the
    /// services in process when they decode as one, and as raw frames to `Data.Pipe`,
    /// `Data.Batch` and `Peer.Handoff` over the connection.
    ///
    /// # Errors
    /// A description of the first check that failed.
    pub async fn bytes(&self, bytes: &[u8]) -> Result<(), String> {
        self.bounded(async {
            if let Ok(batch) = pb::Batch::decode(bytes) {
                self.batch_in_process(batch).await?;
            }
            if let Ok(peek) = pb::PeekRequest::decode(bytes) {
                let _ = pb::peer_server::Peer::peek(&self.peer, Request::new(peek)).await;
            }
            if let Ok(fence) = pb::FenceRequest::decode(bytes) {
                check_status(pb::peer_server::Peer::fence(&self.peer, Request::new(fence)).await)?;
            }
            self.raw(bytes).await
        })
        .await
    }

    /// Feeds one batch to `Data.Batch` in process and on a `Pipe` over the connection.
    ///
    /// # Errors
    /// A description of the first check that failed.
    pub async fn batch(&self, batch: pb::Batch) -> Result<(), String> {
        self.bounded(async {
            let encoded = Bytes::from(batch.encode_to_vec());
            self.batch_in_process(batch).await?;
            self.pipe(vec![encoded]).await
        })
        .await
    }

    /// A put and a get of a key of its own, through the service, and that they agree.
    ///
    /// # Errors
    /// When the node does not serve them.
    pub async fn canary(&self, n: u64) -> Result<(), String> {
        let key = format!("canary/{n}");
        let value = Bytes::from(format!("alive {n}"));
        let put = pb::Op {
            id: 1,
            epoch: 0,
            kind: Some(pb::op::Kind::Put(pb::Put {
                key: key.clone(),
                value: value.clone(),
                if_match: None,
            })),
        };
        let get = pb::Op {
            id: 2,
            epoch: 0,
            kind: Some(pb::op::Kind::Get(pb::Get {
                key,
                ..Default::default()
            })),
        };
        for (op, what) in [(put, "put"), (get, "get")] {
            let batch = pb::Batch {
                app: self.node.app().to_owned(),
                timeout_ms: 5_000,
                ops: vec![op],
            };
            let reply = pb::data_server::Data::batch(&self.data, Request::new(batch))
                .await
                .map_err(|s| format!("canary {what}: {s}"))?
                .into_inner();
            match reply.replies.first().and_then(|r| r.result.as_ref()) {
                Some(pb::reply::Result::Written(_)) if what == "put" => {}
                Some(pb::reply::Result::Value(v)) if v.value == value => {}
                other => return Err(format!("canary {what}: {other:?}")),
            }
        }
        Ok(())
    }

    async fn bounded(
        &self,
        work: impl std::future::Future<Output = Result<(), String>>,
    ) -> Result<(), String> {
        tokio::time::timeout(INPUT_DEADLINE, work)
            .await
            .map_err(|_| format!("no answer within {INPUT_DEADLINE:?}"))?
    }

    async fn batch_in_process(&self, batch: pb::Batch) -> Result<(), String> {
        let ops = batch.ops.len();
        match pb::data_server::Data::batch(&self.data, Request::new(batch)).await {
            Ok(reply) => self.check_replies(&reply.into_inner(), Some(ops)),
            Err(status) => check_status::<()>(Err(status)),
        }
    }

    fn check_replies(&self, reply: &pb::BatchReply, ops: Option<usize>) -> Result<(), String> {
        let size = reply.encoded_len();
        if size > self.max_reply {
            return Err(format!(
                "a reply message of {size} bytes, over {}",
                self.max_reply
            ));
        }
        if let Some(ops) = ops
            && reply.replies.len() != ops
        {
            return Err(format!("{} replies to {ops} ops", reply.replies.len()));
        }
        for r in &reply.replies {
            if let Some(pb::reply::Result::Error(e)) = &r.result
                && e.message.len() > MAX_ERROR_TEXT
            {
                return Err(format!("an error text of {} bytes", e.message.len()));
            }
        }
        Ok(())
    }

    async fn raw(&self, bytes: &[u8]) -> Result<(), String> {
        let message = Bytes::copy_from_slice(bytes);
        self.pipe(vec![message.clone()]).await?;
        let mut grpc = self.grpc().await?;
        let path = PathAndQuery::from_static("/cachelet.v1.Data/Batch");
        if let Ok(reply) = grpc
            .unary(Request::new(message.clone()), path, RawCodec)
            .await
        {
            let reply = pb::BatchReply::decode(reply.into_inner())
                .map_err(|e| format!("Batch answered with a malformed reply: {e}"))?;
            self.check_replies(&reply, None)?;
        }
        let path = PathAndQuery::from_static("/cachelet.v1.Peer/Handoff");
        let outbound = futures::stream::iter([message]);
        // Each call needs the channel ready again.
        let mut grpc = self.grpc().await?;
        let handoff = grpc.client_streaming(Request::new(outbound), path, RawCodec);
        check_status(handoff.await)?;
        Ok(())
    }

    async fn grpc(&self) -> Result<tonic::client::Grpc<Channel>, String> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        grpc.ready().await.map_err(|e| e.to_string())?;
        Ok(grpc)
    }

    /// Sends `messages` on a `Pipe` and reads every reply until the stream ends.
    async fn pipe(&self, messages: Vec<Bytes>) -> Result<(), String> {
        let mut grpc = self.grpc().await?;
        let path = PathAndQuery::from_static("/cachelet.v1.Data/Pipe");
        let outbound = futures::stream::iter(messages);
        let mut inbound = match grpc.streaming(Request::new(outbound), path, RawCodec).await {
            Ok(r) => r.into_inner(),
            Err(status) => return check_status::<()>(Err(status)),
        };
        loop {
            match inbound.message().await {
                Ok(Some(message)) => {
                    let reply = pb::BatchReply::decode(message)
                        .map_err(|e| format!("Pipe answered with a malformed reply: {e}"))?;
                    self.check_replies(&reply, None)?;
                }
                Ok(None) => return Ok(()),
                Err(status) => return check_status::<()>(Err(status)),
            }
        }
    }
}

/// An error status passes if it is the caller's fault or a refusal, with a short text; an
/// `INTERNAL` or `UNKNOWN` status means the node mishandled the input.
fn check_status<T>(result: Result<T, Status>) -> Result<(), String> {
    let Err(status) = result else {
        return Ok(());
    };
    if matches!(status.code(), Code::Internal | Code::Unknown) {
        return Err(format!("the node failed on the input: {status}"));
    }
    if status.message().len() > MAX_ERROR_TEXT {
        return Err(format!("a status text of {} bytes", status.message().len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks fail on what they hunt: an `INTERNAL` status, a long text, a reply over the
    /// budget, a missing reply.
    #[tokio::test]
    async fn the_checks_catch_what_they_hunt() {
        assert!(check_status::<()>(Err(Status::internal("decode failed"))).is_err());
        assert!(check_status::<()>(Err(Status::invalid_argument("x".repeat(10_000)))).is_err());
        assert!(check_status::<()>(Err(Status::invalid_argument("bad key"))).is_ok());

        let store = std::sync::Arc::new(object_store::memory::InMemory::new());
        let cluster = crate::cluster::LocalCluster::start(1, |b| {
            b.app("checks")
                .store(store.clone())
                .prewarm(false)
                .limits(cache_core::Limits::default().with_max_value_bytes(1024))
        })
        .await
        .unwrap();
        let target = Target::new(cluster.node(0).clone(), &cluster.addrs()[0])
            .await
            .unwrap();
        let reply = |value: usize, message: usize| pb::BatchReply {
            replies: vec![
                pb::Reply {
                    id: 1,
                    result: Some(pb::reply::Result::Value(pb::Value {
                        value: Bytes::from(vec![0; value]),
                        ..Default::default()
                    })),
                },
                pb::Reply {
                    id: 2,
                    result: Some(pb::reply::Result::Error(pb::Error {
                        message: "e".repeat(message),
                        ..Default::default()
                    })),
                },
            ],
        };
        assert!(target.check_replies(&reply(10, 10), Some(2)).is_ok());
        assert!(target.check_replies(&reply(10, 10), Some(3)).is_err());
        assert!(target.check_replies(&reply(3 << 20, 10), None).is_err());
        assert!(target.check_replies(&reply(10, 10_000), None).is_err());
        target.canary(1).await.unwrap();
        cluster.shutdown().await;
    }
}
