//! The gRPC services: `Data` (unary calls, `Batch`, and the `Pipe` stream) and `Admin`.
//!
//! # Tasks of one `Pipe` stream
//! ```text
//!  client ──Batch──▶ reader ──hit / error────────────────────────────────┐
//!                       │  (starts at most max_inflight ops at once,     ▼
//!                       │   queues a bounded number more)           reply channel ──▶ coalescer ──BatchReply──▶ client
//!                       └─miss / put / delete──▶ one task per op ───────▲   (all ready replies, up to 1 MiB, in one message)
//! ```
//! The reader and the coalescer are one stream, the reply body, polled by the transport's
//! task for this stream. A hit is answered inline by the reader, so the common case spawns
//! nothing and wakes no other task. On shutdown the reader stops taking ops, the ops in
//! progress finish, and the reply stream ends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cache_core::Error;
use cache_core::auth::Action;
use cache_proto::v1 as pb;
use futures::{Stream, StreamExt};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::budget::{Account, Held};
use crate::node::{Answer, CacheNode, ReadOptions};
use crate::streams::{self, OpIds};
use crate::wire::{to_status, to_wire};

/// A reply message is closed once it holds this many value bytes.
const COALESCE_BYTES: usize = 1 << 20;
/// A reply message is closed once it holds this many replies.
const COALESCE_REPLIES: usize = 1024;
/// A `Pipe` stream queues this many ops per in-flight slot before it refuses more.
const QUEUED_PER_SLOT: usize = 4;
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

    /// The most value bytes one unary or `Batch` reply carries: one message.
    fn max_reply_bytes(&self) -> u64 {
        crate::budget::stream_cap(self.node.limits().max_value_bytes)
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
        Answer::Value {
            entry,
            tier,
            hot,
            lease_ms,
        } => pb::reply::Result::Value(pb::Value {
            value: entry.value,
            version: Some(pb::Version {
                etag: entry.version.as_str().to_owned(),
                modified_ms: entry.version.modified_ms().unwrap_or(0),
            }),
            tier: tier as i32,
            hot,
            lease_ms,
            size: 0,
            chunk_bytes: 0,
        }),
        Answer::NotModified {
            version,
            hot,
            lease_ms,
        } => pb::reply::Result::NotModified(pb::NotModified {
            version: Some(pb::Version {
                etag: version.as_str().to_owned(),
                modified_ms: version.modified_ms().unwrap_or(0),
            }),
            hot,
            lease_ms,
        }),
    }
}

fn written(version: cache_core::Version) -> pb::Written {
    pb::Written {
        version: Some(pb::Version {
            etag: version.as_str().to_owned(),
            modified_ms: version.modified_ms().unwrap_or(0),
        }),
    }
}

fn error_reply(id: u64, err: &Error) -> pb::Reply {
    pb::Reply {
        id,
        result: Some(pb::reply::Result::Error(to_wire(err))),
    }
}

/// The embedded path: an op from a client in this process, run as an op of a `Batch` is,
/// with no socket, no encoding and no credentials (the caller is this process).
impl cache_proto::in_process::InProcessNode for CacheNode {
    fn member_addr(&self) -> Option<&str> {
        self.addr()
    }

    fn call(
        &self,
        app: &str,
        op: pb::Op,
        budget: Duration,
    ) -> cache_proto::in_process::ReplyFuture<'_> {
        let checked = self.check_app(app);
        Box::pin(async move {
            if let Err(e) = checked {
                return error_reply(op.id, &self.failed(e));
            }
            // The value goes to the caller as shared bytes: no reply is held for a transport.
            let account = self.reply_budget().node_account();
            match triage(self, &account, op, budget).await {
                Ok((reply, _held)) => reply,
                Err((id, kind)) => run_op(self, &account, id, kind, budget).await.0,
            }
        })
    }
}

/// Holds a value answer's bytes against `account`, unless `held` already does.
async fn hold_answer(
    account: &Account,
    answer: &Answer,
    mut held: Held,
    wait: Duration,
) -> Result<Held, Error> {
    if let Answer::Value { entry, .. } = answer
        && held.is_empty()
    {
        held.absorb(account.hold(entry.size(), wait).await?);
    }
    Ok(held)
}

/// Runs one op that may wait on the store, bounded by its deadline. A value in the reply is
/// held against `account` until the reply is taken.
async fn run_op(
    node: &CacheNode,
    account: &Account,
    id: u64,
    kind: OpKind,
    budget: Duration,
) -> (pb::Reply, Held) {
    let work = async {
        match kind {
            OpKind::Load { get, hot, epoch } => {
                let (answer, held) = node
                    .load(
                        &get.key,
                        read_options(&get, epoch, Some(account)),
                        hot,
                        budget,
                    )
                    .await?;
                let held = hold_answer(account, &answer, held, budget).await?;
                Ok((answer_reply(id, answer), held))
            }
            OpKind::Put {
                key,
                value,
                if_match,
                epoch,
            } => node
                .put(&key, value, if_match.as_deref(), epoch, budget)
                .await
                .map(|v| {
                    let reply = pb::Reply {
                        id,
                        result: Some(pb::reply::Result::Written(written(v))),
                    };
                    (reply, Held::none())
                }),
            OpKind::Chunk {
                key,
                version,
                index,
                fallback,
                epoch,
            } => {
                let chunk = node
                    .read_chunk(&key, &version, index, fallback, epoch, budget)
                    .await?;
                let held = account.hold(chunk.entry.size(), budget).await?;
                let version = &chunk.entry.version;
                let reply = pb::Reply {
                    id,
                    result: Some(pb::reply::Result::Value(pb::Value {
                        version: Some(pb::Version {
                            etag: version.as_str().to_owned(),
                            modified_ms: version.modified_ms().unwrap_or(0),
                        }),
                        value: chunk.entry.value,
                        tier: chunk.tier as i32,
                        hot: false,
                        lease_ms: 0,
                        size: chunk.size,
                        chunk_bytes: chunk.chunk_bytes,
                    })),
                };
                Ok((reply, held))
            }
            OpKind::Delete { key, epoch, forget } => {
                let deleted = if forget {
                    node.forget(&key, epoch, budget).await
                } else {
                    node.delete(&key, epoch, budget).await
                };
                deleted.map(|()| {
                    let reply = pb::Reply {
                        id,
                        result: Some(pb::reply::Result::Deleted(pb::Deleted {})),
                    };
                    (reply, Held::none())
                })
            }
        }
    };
    match tokio::time::timeout(budget + GRACE, work).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => (error_reply(id, &node.failed(e)), Held::none()),
        Err(_) => (
            error_reply(id, &node.failed(Error::Timeout(budget))),
            Held::none(),
        ),
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
        // Only the cached copy (`pb::Delete::forget`).
        forget: bool,
    },
    Chunk {
        key: String,
        version: String,
        index: u64,
        fallback: bool,
        epoch: u64,
    },
}

fn read_options<'a>(get: &'a pb::Get, epoch: u64, account: Option<&'a Account>) -> ReadOptions<'a> {
    ReadOptions {
        fallback: get.fallback,
        strict: get.consistency() == pb::Consistency::Strict,
        if_none_match: Some(get.if_none_match.as_str()).filter(|v| !v.is_empty()),
        epoch,
        account,
        lease_holder: get.lease_holder,
    }
}

/// What to do with one op: answer it now (a hit, with its value held against `account`, or
/// an error), or run it as a task.
async fn triage(
    node: &CacheNode,
    account: &Account,
    op: pb::Op,
    budget: Duration,
) -> Result<(pb::Reply, Held), (u64, OpKind)> {
    let (id, epoch) = (op.id, op.epoch);
    match op.kind {
        Some(pb::op::Kind::Get(get)) => {
            match node.lookup(&get.key, read_options(&get, epoch, None)).await {
                Ok((Some(answer), _)) => {
                    match hold_answer(account, &answer, Held::none(), budget).await {
                        Ok(held) => Ok((answer_reply(id, answer), held)),
                        Err(e) => Ok((error_reply(id, &node.failed(e)), Held::none())),
                    }
                }
                Ok((None, hot)) => Err((id, OpKind::Load { get, hot, epoch })),
                Err(e) => Ok((error_reply(id, &node.failed(e)), Held::none())),
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
        Some(pb::op::Kind::GetChunk(c)) => Err((
            id,
            OpKind::Chunk {
                key: c.key,
                version: c.version,
                index: c.index,
                fallback: c.fallback,
                epoch,
            },
        )),
        Some(pb::op::Kind::Delete(d)) => Err((
            id,
            OpKind::Delete {
                key: d.key,
                epoch,
                forget: d.forget,
            },
        )),
        None => Ok((
            error_reply(id, &Error::InvalidRequest("the op has no kind".into())),
            Held::none(),
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

/// Groups every reply that is ready into one message, up to the size limits. A message's holds
/// on the reply budget are released when the transport asks for the next message, which it
/// does once it has taken this one.
fn coalesce(
    rx: mpsc::Receiver<(pb::Reply, Held)>,
) -> impl Stream<Item = Result<pb::BatchReply, Status>> {
    futures::stream::unfold((rx, Held::none()), |(mut rx, sent)| async move {
        drop(sent);
        let (first, mut held) = rx.recv().await?;
        let mut bytes = reply_bytes(&first);
        let mut replies = vec![first];
        while bytes < COALESCE_BYTES && replies.len() < COALESCE_REPLIES {
            match rx.try_recv() {
                Ok((reply, more)) => {
                    bytes += reply_bytes(&reply);
                    replies.push(reply);
                    held.absorb(more);
                }
                Err(_) => break,
            }
        }
        Some((Ok(pb::BatchReply { replies }), (rx, held)))
    })
}

fn reply_bytes(reply: &pb::Reply) -> usize {
    match &reply.result {
        Some(pb::reply::Result::Value(v)) => v.value.len(),
        _ => 0,
    }
}

/// The value bytes an op carries in.
fn put_bytes(op: &pb::Op) -> u64 {
    match &op.kind {
        Some(pb::op::Kind::Put(p)) => p.value.len() as u64,
        _ => 0,
    }
}

/// What a `Pipe` reader does next.
enum Next {
    Stop,
    Ended(Option<Status>),
    Slot(tokio::sync::OwnedSemaphorePermit),
    Batch(pb::Batch),
}

/// Starts one op of a `Pipe` stream in the slot `permit`: a hit or an error is answered here,
/// anything else runs as a task. False when the stream's replies are no longer wanted.
async fn start_op(
    node: &CacheNode,
    account: &Arc<Account>,
    tx: &mpsc::Sender<(pb::Reply, Held)>,
    next: Queued,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> bool {
    let Queued { op, budget, claim } = next;
    match triage(node, account, op, budget).await {
        Ok(done) => {
            drop((claim, permit));
            tx.send(done).await.is_ok()
        }
        Err((id, kind)) => {
            let (node, tx, account) = (node.clone(), tx.clone(), Arc::clone(account));
            tokio::spawn(async move {
                let done = run_op(&node, &account, id, kind, budget).await;
                drop(claim);
                let _ = tx.send(done).await;
                drop(permit);
            });
            true
        }
    }
}

/// An op of a `Pipe` stream that waits for a slot: its deadline, and its claim on its id.
struct Queued {
    op: pb::Op,
    budget: Duration,
    claim: streams::OpId,
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
        let account = node.reply_budget().call_account(self.max_reply_bytes());
        let opts = ReadOptions {
            fallback: req.fallback,
            epoch: req.epoch,
            account: Some(&account),
            ..ReadOptions::default()
        };
        let budget = node.op_budget(0);
        // Held until the reply is handed to the transport.
        let mut _held = Held::none();
        let result = async {
            node.check_app(&req.app)?;
            let answer = node.get(&req.key, opts, budget).await?;
            _held = hold_answer(&account, &answer, Held::none(), budget).await?;
            Ok(answer)
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
        // The whole reply is one message: its values share one message's worth of the budget.
        let account = &node.reply_budget().call_account(self.max_reply_bytes());
        let ids = Arc::new(OpIds::default());
        let done = futures::future::join_all(batch.ops.into_iter().map(|op| {
            let claim = ids.claim(op.id);
            async move {
                let Some(_claim) = claim else {
                    return (streams::duplicate_id(op.id), Held::none());
                };
                match triage(node, account, op, budget).await {
                    Ok(done) => done,
                    Err((id, kind)) => run_op(node, account, id, kind, budget).await,
                }
            }
        }))
        .await;
        let (replies, _held): (Vec<_>, Vec<_>) = done.into_iter().unzip();
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
        let (tx, rx) = mpsc::channel::<(pb::Reply, Held)>(max_inflight);
        let account = Arc::new(
            node.reply_budget()
                .stream_account(crate::budget::stream_cap(node.limits().max_value_bytes)),
        );
        let permits = Arc::new(Semaphore::new(max_inflight));
        // The status the reply stream ends with, after the ops in progress (see `streams`).
        let (end_tx, end_rx) = oneshot::channel();
        let ids = Arc::new(OpIds::default());
        // Ops read but not started yet, with their deadlines. The reader keeps reading the
        // stream while every slot is busy, so that HTTP/2 frames never pile up unread (h2
        // takes many small unread DATA frames for a flood, and closes the connection), and
        // refuses ops beyond this queue instead.
        let max_queued = max_inflight.saturating_mul(QUEUED_PER_SLOT);
        let max_queued_bytes = crate::budget::stream_cap(node.limits().max_value_bytes);
        let reader = async move {
            let mut queued: VecDeque<Queued> = VecDeque::new();
            // Value bytes of the queued puts: past the stream's cap, the reader waits.
            let mut queued_bytes = 0u64;
            let mut reading = true;
            let mut end = None;
            loop {
                // Start what slots allow.
                while !queued.is_empty() {
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        break;
                    };
                    let Some(next) = queued.pop_front() else {
                        break;
                    };
                    queued_bytes -= put_bytes(&next.op);
                    if !start_op(&node, &account, &tx, next, permit).await {
                        return;
                    }
                }
                if !reading && queued.is_empty() {
                    break;
                }
                let next = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => Next::Stop,
                    permit = Arc::clone(&permits).acquire_owned(), if !queued.is_empty() => {
                        permit.map_or(Next::Stop, Next::Slot)
                    }
                    msg = inbound.message(), if reading && queued_bytes < max_queued_bytes => match msg {
                        Ok(Some(batch)) => Next::Batch(batch),
                        Ok(None) => Next::Ended(None),
                        Err(status) => {
                            tracing::debug!(%status, "pipe closed by the client");
                            Next::Ended(streams::inbound_failed(&status))
                        }
                    },
                };
                let batch = match next {
                    Next::Stop => break,
                    Next::Ended(status) => {
                        end = status;
                        reading = false;
                        continue;
                    }
                    Next::Slot(permit) => {
                        if let Some(next) = queued.pop_front() {
                            queued_bytes -= put_bytes(&next.op);
                            if !start_op(&node, &account, &tx, next, permit).await {
                                return;
                            }
                        }
                        continue;
                    }
                    Next::Batch(batch) => batch,
                };
                // A batch refused whole ends the stream with one status, not one per op,
                // once the ops in progress are answered.
                let app = Action::Data { app: &batch.app };
                let checked = node.authorize(caller.as_ref(), app);
                if let Err(e) = checked.and_then(|()| check_batch(&node, &batch)) {
                    end = Some(to_status(&e));
                    reading = false;
                    continue;
                }
                let budget = node.op_budget(batch.timeout_ms);
                for op in batch.ops {
                    let refused = match ids.claim(op.id) {
                        None => (streams::duplicate_id(op.id), Held::none()),
                        Some(claim) if queued.len() < max_queued => {
                            queued_bytes += put_bytes(&op);
                            queued.push_back(Queued { op, budget, claim });
                            continue;
                        }
                        Some(_) => {
                            let refused = Error::Overloaded(format!(
                                "more than {} ops of this stream are waiting",
                                max_inflight + max_queued
                            ));
                            (error_reply(op.id, &node.failed(refused)), Held::none())
                        }
                    };
                    if tx.send(refused).await.is_err() {
                        return;
                    }
                }
            }
            if let Some(status) = end {
                let _ = end_tx.send(status);
            }
        };
        // The reader runs inside the reply stream, in the task that the transport polls it
        // from: a hit read from the connection is answered without waking another task.
        let reader = futures::stream::once(reader).filter_map(|()| async { None });
        Ok(Response::new(Box::pin(streams::then_end(
            futures::stream::select(reader, coalesce(rx)),
            end_rx,
        ))))
    }

    type LeasesStream = Pin<Box<dyn Stream<Item = Result<pb::LeaseEvents, Status>> + Send>>;

    async fn leases(
        &self,
        request: Request<Streaming<pb::LeaseAcks>>,
    ) -> Result<Response<Self::LeasesStream>, Status> {
        let caller = crate::security::caller(&request);
        let mut inbound = request.into_inner();
        let node = self.node.clone();
        // The first message names the app.
        let first = inbound.message().await?.unwrap_or_default();
        let app = Action::Data { app: &first.app };
        node.authorize(caller.as_ref(), app)
            .and_then(|()| node.check_app(&first.app))
            .map_err(|e| to_status(&e))?;
        let (holder, invalidations) = node.inner.leases.open();
        // Acknowledgements, until the caller's side ends.
        tokio::spawn({
            let node = node.clone();
            let mut acks = first.acks;
            async move {
                loop {
                    for ack in acks.drain(..) {
                        node.inner.leases.ack(holder, &ack.key, ack.seq);
                    }
                    match inbound.message().await {
                        Ok(Some(more)) => acks = more.acks,
                        _ => break,
                    }
                }
                node.inner.leases.close(holder);
            }
        });
        let hello = futures::stream::once(async move {
            Ok(pb::LeaseEvents {
                holder,
                invalidations: Vec::new(),
            })
        });
        let wire = |inv: cache_core::lease::Invalidation| pb::LeaseInvalidation {
            key: inv.key.to_string(),
            seq: inv.seq,
        };
        let rest = futures::stream::unfold(
            (invalidations, self.shutdown.clone()),
            move |(mut rx, mut shutdown)| async move {
                let first = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => return None,
                    inv = rx.recv() => inv?,
                };
                let mut batch = vec![wire(first)];
                while batch.len() < COALESCE_REPLIES {
                    match rx.try_recv() {
                        Ok(inv) => batch.push(wire(inv)),
                        Err(_) => break,
                    }
                }
                let events = pb::LeaseEvents {
                    holder: 0,
                    invalidations: batch,
                };
                Some((Ok(events), (rx, shutdown)))
            },
        );
        Ok(Response::new(Box::pin(hello.chain(rest))))
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
            // The batch's values count against the budget until they are cached.
            let bytes = batch.entries.iter().map(|e| e.value.len() as u64).sum();
            let _held = self
                .node
                .reply_budget()
                .node_account()
                .hold(bytes, self.node.op_budget(0))
                .await
                .map_err(|e| to_status(&e))?;
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
        let mut _held = Held::none();
        let reply = match self.node.departed(&req.key, req.epoch) {
            Some(entry) => {
                _held = self
                    .node
                    .reply_budget()
                    .node_account()
                    .hold(entry.size(), self.node.op_budget(0))
                    .await
                    .map_err(|e| to_status(&e))?;
                pb::PeekReply {
                    found: true,
                    value: entry.value,
                    version: entry.version.as_str().to_owned(),
                    modified_ms: entry.version.modified_ms().unwrap_or(0),
                }
            }
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
