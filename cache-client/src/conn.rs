//! One node's connection: a tonic channel (one HTTP/2 connection, multiplexed), a long-lived
//! `Pipe` stream over it, and the node's up/down state.
//!
//! # Tasks of one pipe
//! ```text
//!  callers ──op + reply slot──▶ request body (polled by the transport) ──Batch (every op that is ready)──▶ node
//!                                  │ registers reply slots by op id
//!  callers ◀──reply── reader task ◀──BatchReply──────────────────────────────────────────────────── node
//! ```
//! The request body takes ops straight from the callers' queue when the transport asks for
//! the next message, so no task sits between a caller and the connection. Replies are read
//! by a task of their own, so that a full send window never stops replies from being read.
//! When the stream breaks, every op waiting on it fails `Unavailable`, and the next call
//! opens a new stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{Error, Result};

/// A batch sent on the stream is closed once it holds this many ops.
const BATCH_OPS: usize = 1024;
/// A batch sent on the stream is closed once it carries this many value bytes.
const BATCH_BYTES: usize = 1 << 20;
/// Ops queued for the stream before callers wait (backpressure).
const QUEUE: usize = 4096;
/// The HTTP/2 receive window of the connection to a node, in bytes.
const CONNECTION_WINDOW: u32 = 4 << 20;
/// The HTTP/2 receive window of each stream to a node, in bytes.
const STREAM_WINDOW: u32 = 1 << 20;

type ReplySlot = oneshot::Sender<Result<pb::Reply>>;

struct Pending {
    op: pb::Op,
    reply: ReplySlot,
}

#[derive(Default)]
struct Waiting {
    slots: HashMap<u64, ReplySlot>,
    closed: bool,
}

/// A live `Pipe` stream to one node, shared by its callers.
struct Pipe {
    tx: mpsc::Sender<Pending>,
    /// Set when the stream ended; the same fact as `Waiting::closed`, readable without a lock.
    closed: Arc<AtomicBool>,
}

impl Pipe {
    fn is_open(&self) -> bool {
        !self.tx.is_closed() && !self.closed.load(Ordering::Acquire)
    }
}

fn lock(w: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    // The map stays consistent if a holder panicked: every operation on it is one call.
    w.lock().unwrap_or_else(|e| e.into_inner())
}

fn fail_all(waiting: &Mutex<Waiting>, closed: &AtomicBool, why: Error) {
    closed.store(true, Ordering::Release);
    let slots = {
        let mut w = lock(waiting);
        w.closed = true;
        std::mem::take(&mut w.slots)
    };
    for (_, slot) in slots {
        let _ = slot.send(Err(why.clone()));
    }
}

/// The error for the ops still waiting when a pipe ends with `status`: the node's own error
/// when the status carries one (a message it refused: too large, malformed, another app),
/// else `Unavailable`, which the caller may retry on a new stream.
fn ended_with(addr: &str, status: &tonic::Status) -> Error {
    use prost::Message;
    match pb::Error::decode(status.details()) {
        Ok(detail) if detail.code() != pb::ErrorCode::Unspecified => Error::from_wire(detail),
        _ => Error::Unavailable(format!("{addr}: {}", status.message())),
    }
}

#[derive(Debug)]
struct Health {
    down_until: Option<Instant>,
    backoff: Duration,
}

/// Settings shared by every node connection of a client.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    pub app: String,
    pub op_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_message_bytes: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Ops sent to any node, counted on the transport.
    pub ops_sent: Arc<AtomicU64>,
    /// TLS to the nodes, when on.
    pub tls: Option<ClientTlsConfig>,
    /// `Bearer TOKEN`, sent on every call when set.
    pub token: Option<MetadataValue<Ascii>>,
    /// Members reached over a Unix domain socket instead of TCP: member address → socket.
    pub sockets: HashMap<String, std::path::PathBuf>,
}

/// Adds the client's token to every call.
#[derive(Debug, Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A node's channel, with the client's token on every call.
pub(crate) type Transport = InterceptedService<Channel, Bearer>;

/// One node: its channel, its pipe, and whether it is believed down.
pub(crate) struct NodeConn {
    addr: String,
    channel: Transport,
    config: Arc<ConnConfig>,
    /// The open pipe, read on every call.
    pipe: std::sync::RwLock<Option<Arc<Pipe>>>,
    /// Set while the node is believed down: lets the common case skip the `health` lock.
    down: AtomicBool,
    /// Held while a pipe is being opened, so that only one caller opens it.
    opening: tokio::sync::Mutex<()>,
    health: Mutex<Health>,
    next_id: AtomicU64,
}

impl NodeConn {
    pub(crate) fn new(addr: &str, config: Arc<ConnConfig>) -> Result<Self> {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Error::Config(format!("bad node address {addr:?}: {e}")))?;
        if let Some(tls) = &config.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| Error::Config(format!("TLS to {addr:?}: {e}")))?;
        }
        // Fixed receive windows, as large as the node's: replies start at full speed, and no
        // window probes (BDP pings) travel with small messages. Adaptive windows cost about
        // 6% of hit throughput here (see the README's "Measuring").
        let endpoint = endpoint
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW));
        // A member on this host may be reached over its Unix socket. The URI still names the
        // member, so TLS checks the same name as over TCP.
        let channel = match config.sockets.get(addr) {
            Some(path) => endpoint.connect_with_connector_lazy(unix_connector(path.clone())),
            None => endpoint.connect_lazy(),
        };
        Ok(Self {
            addr: addr.to_owned(),
            channel: Transport::new(channel, Bearer(config.token.clone())),
            health: Mutex::new(Health {
                down_until: None,
                backoff: config.min_backoff,
            }),
            config,
            pipe: std::sync::RwLock::new(None),
            down: AtomicBool::new(false),
            opening: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
        })
    }

    pub(crate) fn channel(&self) -> Transport {
        self.channel.clone()
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the node failed recently and its backoff has not yet passed.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
            && matches!(self.health().down_until, Some(t) if Instant::now() < t)
    }

    /// Records a connection failure: the node is skipped for a backoff that doubles with
    /// each failure, up to the maximum.
    pub(crate) fn mark_down(&self) {
        let mut h = self.health();
        self.down.store(true, Ordering::Release);
        h.down_until = Some(Instant::now() + h.backoff);
        tracing::debug!(node = %self.addr, backoff = ?h.backoff, "node marked down");
        h.backoff = (h.backoff * 2).min(self.config.max_backoff);
    }

    fn mark_up(&self) {
        if !self.down.load(Ordering::Acquire) {
            return;
        }
        let mut h = self.health();
        self.down.store(false, Ordering::Release);
        if h.down_until.is_some() {
            tracing::debug!(node = %self.addr, "node back up");
        }
        h.down_until = None;
        h.backoff = self.config.min_backoff;
    }

    /// Sends one op, routed by membership `epoch`, on the node's pipe and waits for its reply.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no stream can be opened or it breaks before the reply;
    /// [`Error::Timeout`] when `timeout` passes first.
    pub(crate) async fn call(
        &self,
        kind: pb::op::Kind,
        epoch: u64,
        timeout: Duration,
    ) -> Result<pb::Reply> {
        let deadline = tokio::time::Instant::now() + timeout;
        // The common case, an open pipe, arms no timer.
        let pipe = match self.open_pipe() {
            Some(pipe) => pipe,
            None => tokio::time::timeout_at(deadline, self.pipe())
                .await
                .map_err(|_| Error::Timeout(timeout))??,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.config.ops_sent.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            op: pb::Op {
                id,
                kind: Some(kind),
                epoch,
            },
            reply,
        };
        tokio::time::timeout_at(deadline, async {
            pipe.tx
                .send(pending)
                .await
                .map_err(|_| Error::Unavailable(format!("stream to {} closed", self.addr)))?;
            rx.await
                .map_err(|_| Error::Unavailable(format!("stream to {} closed", self.addr)))?
        })
        .await
        .map_err(|_| Error::Timeout(timeout))?
    }

    fn open_pipe(&self) -> Option<Arc<Pipe>> {
        let slot = self.pipe.read().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().filter(|p| p.is_open()).cloned()
    }

    /// The open pipe, or a new one.
    async fn pipe(&self) -> Result<Arc<Pipe>> {
        if let Some(pipe) = self.open_pipe() {
            return Ok(pipe);
        }
        let _opening = self.opening.lock().await;
        // Another caller may have opened it while this one waited.
        if let Some(pipe) = self.open_pipe() {
            return Ok(pipe);
        }
        let pipe = self.open().await?;
        *self.pipe.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&pipe));
        Ok(pipe)
    }

    async fn open(&self) -> Result<Arc<Pipe>> {
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let (tx, rx) = mpsc::channel::<Pending>(QUEUE);
        let timeout_ms = u32::try_from(self.config.op_timeout.as_millis()).unwrap_or(u32::MAX);
        let requests = outbound(
            rx,
            Arc::clone(&waiting),
            self.config.app.clone(),
            timeout_ms,
        );
        let mut client = pb::data_client::DataClient::new(self.channel.clone())
            .max_decoding_message_size(self.config.max_message_bytes)
            .max_encoding_message_size(self.config.max_message_bytes);
        let response = client
            .pipe(requests)
            .await
            .map_err(|status| match status.code() {
                // Credentials refused: retrying or trying another node cannot help.
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    Error::from_status(&status)
                }
                _ => Error::Unavailable(format!("{}: {}", self.addr, status.message())),
            })?;
        self.mark_up();
        let mut inbound = response.into_inner();
        let closed = Arc::new(AtomicBool::new(false));

        let reader_waiting = Arc::clone(&waiting);
        let reader_closed = Arc::clone(&closed);
        let addr = self.addr.clone();
        tokio::spawn(async move {
            let why = loop {
                match inbound.message().await {
                    Ok(Some(batch)) => {
                        let mut w = lock(&reader_waiting);
                        for reply in batch.replies {
                            if let Some(slot) = w.slots.remove(&reply.id) {
                                let _ = slot.send(Ok(reply));
                            }
                        }
                    }
                    Ok(None) => break Error::Unavailable(format!("{addr} closed the stream")),
                    Err(status) => break ended_with(&addr, &status),
                }
            };
            tracing::debug!(reason = %why, "pipe ended");
            fail_all(&reader_waiting, &reader_closed, why);
        });
        Ok(Arc::new(Pipe { tx, closed }))
    }
}

/// Asks the node that listens on the Unix domain socket `path` for its member list and its
/// own member address. The call verifies TLS, when it is on, against the name `localhost`.
///
/// # Errors
/// [`Error::Unavailable`] when nothing answers at `path` in time, or the answer names no
/// member address; the node's error when it refuses the call.
pub(crate) async fn ask_socket(
    path: &std::path::Path,
    config: &ConnConfig,
) -> Result<pb::MembersReply> {
    let at = |why: String| Error::Unavailable(format!("unix:{}: {why}", path.display()));
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://localhost"))
        .map_err(|e| Error::Config(e.to_string()))?
        .connect_timeout(config.connect_timeout);
    if let Some(tls) = &config.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| Error::Config(format!("TLS to unix:{}: {e}", path.display())))?;
    }
    let channel = endpoint.connect_with_connector_lazy(unix_connector(path.to_owned()));
    let mut admin =
        pb::admin_client::AdminClient::new(Transport::new(channel, Bearer(config.token.clone())));
    let reply = tokio::time::timeout(config.op_timeout, admin.members(pb::MembersRequest {}))
        .await
        .map_err(|_| at(format!("no answer in {:?}", config.op_timeout)))?
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => at(status.message().to_owned()),
            _ => Error::from_status(&status),
        })?
        .into_inner();
    if reply.self_addr.is_empty() {
        return Err(at("the node named no member address".into()));
    }
    Ok(reply)
}

/// Connects to the Unix domain socket at `path`, whatever the URI.
fn unix_connector(
    path: std::path::PathBuf,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<hyper_util::rt::TokioIo<tokio::net::UnixStream>>>
             + Send,
> + Send
+ Clone
+ 'static {
    tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(&path).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        }
    })
}

/// The request side of a pipe: each time the transport asks for the next message, every op
/// that is ready, up to the batch limits, as one `Batch`. The transport polls it in its own
/// task, so a caller's op goes from its queue straight onto the connection, with no task in
/// between. It ends when every caller's sender is gone.
fn outbound(
    mut rx: mpsc::Receiver<Pending>,
    waiting: Arc<Mutex<Waiting>>,
    app: String,
    timeout_ms: u32,
) -> impl futures::Stream<Item = pb::Batch> + Send + 'static {
    futures::stream::poll_fn(move |cx| {
        loop {
            let Some(first) = std::task::ready!(rx.poll_recv(cx)) else {
                return std::task::Poll::Ready(None);
            };
            let mut ops = Vec::with_capacity(16);
            let mut bytes = 0usize;
            let mut next = Some(first);
            {
                let mut w = lock(&waiting);
                while let Some(Pending { op, reply }) = next.take() {
                    if w.closed {
                        let _ = reply.send(Err(Error::Unavailable("stream closed".into())));
                    } else {
                        if let Some(pb::op::Kind::Put(p)) = &op.kind {
                            bytes += p.value.len();
                        }
                        w.slots.insert(op.id, reply);
                        ops.push(op);
                    }
                    if ops.len() < BATCH_OPS && bytes < BATCH_BYTES {
                        next = rx.try_recv().ok();
                    }
                }
            }
            if !ops.is_empty() {
                return std::task::Poll::Ready(Some(pb::Batch {
                    app: app.clone(),
                    timeout_ms,
                    ops,
                }));
            }
        }
    })
}
