//! The gRPC services: `Data` (unary calls, `Batch`, and the `Pipe` stream) and `Admin`.
//!
//! # Tasks of one `Pipe` stream
//! ```text
//!  client ──Batch──▶ reader task ──hit / error──────────────────────────┐
//!                       │  (stops reading while max_inflight ops        ▼
//!                       │   are in progress: backpressure)         reply channel ──▶ coalescer ──BatchReply──▶ client
//!                       └─miss / put / delete──▶ one task per op ───────▲   (all ready replies, up to 1 MiB, in one message)
//! ```
//! A hit is answered inline by the reader, so the common case spawns nothing. On shutdown the
//! reader stops taking ops, the ops in progress finish, and the reply stream ends.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cache_core::Error;
use cache_core::auth::Action;
use cache_proto::v1 as pb;
use futures::Stream;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::node::{Answer, CacheNode, ReadOptions};
use crate::wire::{to_status, to_wire};

/// A reply message is closed once it holds this many value bytes.
const COALESCE_BYTES: usize = 1 << 20;
/// A reply message is closed once it holds this many replies.
const COALESCE_REPLIES: usize = 1024;
/// Extra time an op gets beyond its store deadline before it is answered `Timeout`.
const GRACE: Duration = Duration::from_millis(100);

/// The `Data` service of one node.
#[derive(Debug, Clone)]
pub struct DataService {
    node: CacheNode,
    shutdown: watch::Receiver<bool>,
}

impl DataService {
    /// The service for `node`; `shutdown` turning true ends its streams gracefully.
    pub fn new(node: CacheNode, shutdown: watch::Receiver<bool>) -> Self {
        Self { node, shutdown }
    }
}

fn answer_reply(id: u64, answer: Answer) -> pb::Reply {
    pb::Reply {
        id,
        result: Some(answer_result(answer)),
    }
}

fn answer_result(answer: Answer) -> pb::reply::Result {
    match answer {
        Answer::Value { entry, tier, hot } => pb::reply::Result::Value(pb::Value {
            value: entry.value,
            version: Some(pb::Version {
                etag: entry.version.as_str().to_owned(),
            }),
            tier: tier as i32,
            hot,
        }),
        Answer::NotModified { version, hot } => pb::reply::Result::NotModified(pb::NotModified {
            version: Some(pb::Version {
                etag: version.as_str().to_owned(),
            }),
            hot,
        }),
    }
}

fn written(version: cache_core::Version) -> pb::Written {
    pb::Written {
        version: Some(pb::Version {
            etag: version.as_str().to_owned(),
        }),
    }
}

fn error_reply(id: u64, err: &Error) -> pb::Reply {
    pb::Reply {
        id,
        result: Some(pb::reply::Result::Error(to_wire(err))),
    }
}

/// Runs one op that may wait on the store, bounded by its deadline.
async fn run_op(node: &CacheNode, id: u64, kind: OpKind, budget: Duration) -> pb::Reply {
    let work = async {
        match kind {
            OpKind::Load { get, hot, epoch } => node
                .load(&get.key, read_options(&get, epoch), hot, budget)
                .await
                .map(|answer| answer_reply(id, answer)),
            OpKind::Put {
                key,
                value,
                if_match,
                epoch,
            } => node
                .put(&key, value, if_match.as_deref(), epoch, budget)
                .await
                .map(|v| pb::Reply {
                    id,
                    result: Some(pb::reply::Result::Written(written(v))),
                }),
            OpKind::Delete { key, epoch } => {
                node.delete(&key, epoch, budget).await.map(|()| pb::Reply {
                    id,
                    result: Some(pb::reply::Result::Deleted(pb::Deleted {})),
                })
            }
        }
    };
    match tokio::time::timeout(budget + GRACE, work).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => error_reply(id, &e),
        Err(_) => error_reply(id, &node.failed(Error::Timeout(budget))),
    }
}

enum OpKind {
    Load {
        get: pb::Get,
        hot: bool,
        epoch: u64,
    },
    Put {
        key: String,
        value: bytes::Bytes,
        if_match: Option<String>,
        epoch: u64,
    },
    Delete {
        key: String,
        epoch: u64,
    },
}

fn read_options(get: &pb::Get, epoch: u64) -> ReadOptions<'_> {
    ReadOptions {
        fallback: get.fallback,
        strict: get.consistency() == pb::Consistency::Strict,
        if_none_match: Some(get.if_none_match.as_str()).filter(|v| !v.is_empty()),
        epoch,
    }
}

/// What to do with one op: answer it now, or run it as a task.
async fn triage(node: &CacheNode, op: pb::Op) -> Result<pb::Reply, (u64, OpKind)> {
    let (id, epoch) = (op.id, op.epoch);
    match op.kind {
        Some(pb::op::Kind::Get(get)) => {
            match node.lookup(&get.key, read_options(&get, epoch)).await {
                Ok((Some(answer), _)) => Ok(answer_reply(id, answer)),
                Ok((None, hot)) => Err((id, OpKind::Load { get, hot, epoch })),
                Err(e) => Ok(error_reply(id, &node.failed(e))),
            }
        }
        Some(pb::op::Kind::Put(p)) => Err((
            id,
            OpKind::Put {
                key: p.key,
                value: p.value,
                if_match: p.if_match,
                epoch,
            },
        )),
        Some(pb::op::Kind::Delete(d)) => Err((id, OpKind::Delete { key: d.key, epoch })),
        None => Ok(error_reply(
            id,
            &Error::InvalidRequest("the op has no kind".into()),
        )),
    }
}

/// Why a whole batch is refused, if it is.
fn check_batch(node: &CacheNode, batch: &pb::Batch) -> Result<(), Error> {
    node.check_app(&batch.app)?;
    if batch.ops.len() > node.max_batch_ops() {
        return Err(Error::InvalidRequest(format!(
            "a batch of {} ops exceeds the limit of {}",
            batch.ops.len(),
            node.max_batch_ops()
        )));
    }
    Ok(())
}

/// Groups every reply that is ready into one message, up to the size limits.
fn coalesce(rx: mpsc::Receiver<pb::Reply>) -> impl Stream<Item = Result<pb::BatchReply, Status>> {
    futures::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut bytes = reply_bytes(&first);
        let mut replies = vec![first];
        while bytes < COALESCE_BYTES && replies.len() < COALESCE_REPLIES {
            match rx.try_recv() {
                Ok(reply) => {
                    bytes += reply_bytes(&reply);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        Some((Ok(pb::BatchReply { replies }), rx))
    })
}

fn reply_bytes(reply: &pb::Reply) -> usize {
    match &reply.result {
        Some(pb::reply::Result::Value(v)) => v.value.len(),
        _ => 0,
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<pb::BatchReply, Status>> + Send>>;

#[tonic::async_trait]
impl pb::data_server::Data for DataService {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::Value>, Status> {
        self.node.allow(
            &request,
            Action::Data {
                app: &request.get_ref().app,
            },
        )?;
        let req = request.into_inner();
        let node = &self.node;
        let opts = ReadOptions {
            fallback: req.fallback,
            epoch: req.epoch,
            ..ReadOptions::default()
        };
        let result = async {
            node.check_app(&req.app)?;
            node.get(&req.key, opts, node.op_budget(0)).await
        }
        .await;
        match result.map(answer_result) {
            Ok(pb::reply::Result::Value(value)) => Ok(Response::new(value)),
            Ok(other) => Err(Status::internal(format!("unexpected answer {other:?}"))),
            Err(e) => Err(to_status(&e)),
        }
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::Written>, Status> {
        self.node.allow(
            &request,
            Action::Data {
                app: &request.get_ref().app,
            },
        )?;
        let req = request.into_inner();
        let node = &self.node;
        let result = async {
            node.check_app(&req.app)?;
            node.put(&req.key, req.value, None, req.epoch, node.op_budget(0))
                .await
        }
        .await;
        result
            .map(|v| Response::new(written(v)))
            .map_err(|e| to_status(&e))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Deleted>, Status> {
        self.node.allow(
            &request,
            Action::Data {
                app: &request.get_ref().app,
            },
        )?;
        let req = request.into_inner();
        let node = &self.node;
        let result = async {
            node.check_app(&req.app)?;
            node.delete(&req.key, req.epoch, node.op_budget(0)).await
        }
        .await;
        result
            .map(|()| Response::new(pb::Deleted {}))
            .map_err(|e| to_status(&e))
    }

    async fn batch(&self, request: Request<pb::Batch>) -> Result<Response<pb::BatchReply>, Status> {
        self.node.allow(
            &request,
            Action::Data {
                app: &request.get_ref().app,
            },
        )?;
        let batch = request.into_inner();
        let node = &self.node;
        if let Err(e) = check_batch(node, &batch) {
            return Err(to_status(&e));
        }
        let budget = node.op_budget(batch.timeout_ms);
        let replies = futures::future::join_all(batch.ops.into_iter().map(|op| async move {
            match triage(node, op).await {
                Ok(reply) => reply,
                Err((id, kind)) => run_op(node, id, kind, budget).await,
            }
        }))
        .await;
        Ok(Response::new(pb::BatchReply { replies }))
    }

    type PipeStream = ReplyStream;

    async fn pipe(
        &self,
        request: Request<Streaming<pb::Batch>>,
    ) -> Result<Response<Self::PipeStream>, Status> {
        let caller = crate::security::caller(&request);
        let mut inbound = request.into_inner();
        let node = self.node.clone();
        let mut shutdown = self.shutdown.clone();
        let max_inflight = node.max_inflight_per_stream();
        let (tx, rx) = mpsc::channel::<pb::Reply>(max_inflight);
        let permits = Arc::new(Semaphore::new(max_inflight));
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    msg = inbound.message() => match msg {
                        Ok(Some(batch)) => batch,
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(%status, "pipe closed by the client");
                            break;
                        }
                    },
                };
                let app = Action::Data { app: &batch.app };
                let checked = node.authorize(caller.as_ref(), app);
                if let Err(e) = checked.and_then(|()| check_batch(&node, &batch)) {
                    for op in &batch.ops {
                        if tx.send(error_reply(op.id, &e)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                let budget = node.op_budget(batch.timeout_ms);
                for op in batch.ops {
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                        return;
                    };
                    match triage(&node, op).await {
                        Ok(reply) => {
                            drop(permit);
                            if tx.send(reply).await.is_err() {
                                return;
                            }
                        }
                        Err((id, kind)) => {
                            let (node, tx) = (node.clone(), tx.clone());
                            tokio::spawn(async move {
                                let reply = run_op(&node, id, kind, budget).await;
                                let _ = tx.send(reply).await;
                                drop(permit);
                            });
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(coalesce(rx))))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Invalidations, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.node.allow(
            &request,
            Action::Data {
                app: &request.get_ref().app,
            },
        )?;
        self.node
            .check_app(&request.get_ref().app)
            .map_err(|e| to_status(&e))?;
        let subscription = self.node.subscribe();
        let shutdown = self.shutdown.clone();
        let stream = futures::stream::unfold(
            (subscription, shutdown),
            |(mut sub, mut shutdown)| async move {
                let first = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => return None,
                    next = sub.recv() => next,
                };
                let message = match first {
                    Ok(first) => {
                        let mut keys = vec![first];
                        while keys.len() < COALESCE_REPLIES {
                            match sub.try_recv() {
                                Ok(next) => keys.push(next),
                                Err(_) => break,
                            }
                        }
                        pb::Invalidations { keys, reset: false }
                    }
                    // The subscriber fell behind and missed invalidations.
                    Err(broadcast::error::RecvError::Lagged(_)) => pb::Invalidations {
                        keys: Vec::new(),
                        reset: true,
                    },
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                Some((Ok(message), (sub, shutdown)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The `Admin` service of one node.
#[derive(Debug, Clone)]
pub struct AdminService {
    node: CacheNode,
}

impl AdminService {
    /// The admin service for `node`.
    pub fn new(node: CacheNode) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersReply>, Status> {
        self.node.allow(&request, Action::Members)?;
        let m = self.node.membership();
        Ok(Response::new(pb::MembersReply {
            epoch: m.epoch(),
            members: m.members().to_vec(),
            self_addr: self.node.addr().unwrap_or_default().to_owned(),
        }))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::NodeStats>, Status> {
        self.node.allow(&request, Action::Stats)?;
        // moka applies evictions and size bookkeeping in batches; apply them so that the
        // counts are exact.
        self.node.entries().sync().await;
        Ok(Response::new(self.node.stats()))
    }

    async fn health(
        &self,
        request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthReply>, Status> {
        self.node.allow(&request, Action::Health)?;
        let member = self
            .node
            .addr()
            .is_some_and(|me| self.node.membership().contains(me));
        let status = if !member && self.node.is_drained() {
            pb::health_reply::Status::Drained
        } else if !member {
            pb::health_reply::Status::Draining
        } else if self.node.is_shutting_down() {
            pb::health_reply::Status::ShuttingDown
        } else {
            pb::health_reply::Status::Serving
        };
        Ok(Response::new(pb::HealthReply {
            status: status as i32,
            app: self.node.app_for(&request),
            epoch: self.node.membership().epoch(),
        }))
    }

    async fn set_members(
        &self,
        request: Request<pb::SetMembersRequest>,
    ) -> Result<Response<pb::SetMembersReply>, Status> {
        crate::security::check_set_members(&self.node, &request)?;
        let req = request.into_inner();
        let adopted = if req.relay {
            // An epoch another node claimed: adopt what its record in the store says.
            self.node
                .catch_up(req.epoch)
                .await
                .map_err(|e| to_status(&e))?
        } else {
            let epoch = (req.epoch != 0).then_some(req.epoch);
            self.node
                .set_members(epoch, req.members)
                .await
                .map_err(|e| to_status(&e))?
        };
        let m = self.node.membership();
        Ok(Response::new(pb::SetMembersReply {
            adopted,
            epoch: m.epoch(),
            members: m.members().to_vec(),
        }))
    }

    async fn advice(
        &self,
        request: Request<pb::AdviceRequest>,
    ) -> Result<Response<pb::AdviceReply>, Status> {
        self.node.allow(&request, Action::Advice)?;
        Ok(Response::new(self.node.advice().await))
    }
}

/// The `Peer` service of one node: entries handed over on a change of members.
#[derive(Debug, Clone)]
pub struct PeerService {
    node: CacheNode,
}

impl PeerService {
    /// The peer service for `node`.
    pub fn new(node: CacheNode) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn handoff(
        &self,
        request: Request<Streaming<pb::HandoffBatch>>,
    ) -> Result<Response<pb::HandoffReply>, Status> {
        self.node.allow(&request, Action::Peer)?;
        let mut inbound = request.into_inner();
        let mut reply = pb::HandoffReply::default();
        while let Some(batch) = inbound.message().await? {
            self.node.check_app(&batch.app).map_err(|e| to_status(&e))?;
            let (accepted, refused) = self
                .node
                .accept_handoff(batch.epoch, batch.sealed, batch.entries)
                .await;
            reply.accepted += accepted;
            reply.refused += refused;
        }
        Ok(Response::new(reply))
    }

    async fn peek(
        &self,
        request: Request<pb::PeekRequest>,
    ) -> Result<Response<pb::PeekReply>, Status> {
        self.node.allow(&request, Action::Peer)?;
        let req = request.into_inner();
        self.node.check_app(&req.app).map_err(|e| to_status(&e))?;
        let reply = match self.node.departed(&req.key, req.epoch) {
            Some(entry) => pb::PeekReply {
                found: true,
                value: entry.value,
                version: entry.version.as_str().to_owned(),
            },
            None => pb::PeekReply::default(),
        };
        Ok(Response::new(reply))
    }

    async fn fence(
        &self,
        request: Request<pb::FenceRequest>,
    ) -> Result<Response<pb::FenceReply>, Status> {
        self.node.allow(&request, Action::Peer)?;
        let req = request.into_inner();
        self.node.check_app(&req.app).map_err(|e| to_status(&e))?;
        let (epoch, sealed) = self
            .node
            .fence(req.epoch)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::FenceReply { epoch, sealed }))
    }
}
