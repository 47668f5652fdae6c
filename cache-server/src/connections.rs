//! Bounds on the node's connections: a read deadline on every connection, a shorter one for
//! its first bytes, a cap on how many are open at once, and the HTTP/2 settings that bound
//! each connection's streams.
//!
//! # How a connection is bounded
//! ```text
//!  listeners ──accept (only while a slot is free)──▶ IdleIo(TCP or Unix stream, slot) ──▶ [TLS] ──▶ hyper h2
//!              at the cap: stop accepting; new                │
//!              clients wait in the kernel's backlog           └ no byte read for the deadline:
//!                                                               reads and writes fail, the
//!                                                               connection closes, the slot frees
//! ```
//! - **Deadlines.** A connection must send its first bytes (the HTTP/2 preface, or a TLS
//!   hello) within the preface timeout, and then some bytes within every idle timeout. The
//!   server sends an HTTP/2 PING every third of the idle timeout on a connection that has
//!   read nothing for that long, so a healthy client, even one that only holds a long-lived
//!   `Pipe` or `Watch` stream open, answers and stays connected. A peer that never sent the
//!   preface, stopped answering, or vanished without a FIN is closed after the timeout.
//! - **The cap.** At most [`CacheNodeBuilder::max_connections`] connections are open. By default it
//!   is the process's soft limit on open files (`RLIMIT_NOFILE`) less [`FD_RESERVE`], which is
//!   left for the blob store's connections, files and the node's own sockets. At the cap the
//!   node stops accepting until a connection closes: new clients wait in the kernel's listen
//!   backlog (and then in their connect timeout) instead of being accepted and dropped, and
//!   connections already open keep being served. The node logs one warning when it reaches
//!   the cap, and one line when it falls well below it again.
//! - **Streams.** At most [`DEFAULT_MAX_CONCURRENT_STREAMS`] streams per connection (a client
//!   uses two long-lived streams per node, plus its unary calls), header lists of at most
//!   [`MAX_HEADER_LIST_BYTES`], and hyper's defaults for frame size and reset-stream floods.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::node::CacheNodeBuilder;

/// The default idle timeout: a connection that sends no byte for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default deadline for a new connection's first bytes.
pub const DEFAULT_PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// File descriptors left out of the default connection cap, for the blob store's
/// connections, files being read, and the node's own sockets.
pub const FD_RESERVE: u64 = 128;

/// The most connections the default cap allows, whatever the fd limit.
pub const MAX_DEFAULT_CONNECTIONS: u64 = 1 << 20;

/// The default number of concurrent HTTP/2 streams per connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;

/// The largest HTTP/2 header list the node accepts, in bytes.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;

/// After the cap was reached, the node logs that it is below it again only once this share
/// (one in ten) of the slots is free, so that a node held at the cap logs once.
const RELOG_FREE_FRACTION: usize = 10;

/// Pause after an accept error that concerns the process, such as running out of fds.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The connection bounds of a node; set through [`CacheNodeBuilder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnLimits {
    pub(crate) idle_timeout: Duration,
    pub(crate) preface_timeout: Duration,
    /// `None`: derived from the fd limit when the node starts serving.
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_concurrent_streams: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            preface_timeout: DEFAULT_PREFACE_TIMEOUT,
            max_connections: None,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
        }
    }
}

impl ConnLimits {
    /// The deadline for the first bytes: never longer than the idle timeout.
    fn first_bytes(&self) -> Duration {
        self.preface_timeout.min(self.idle_timeout)
    }

    /// How long a connection may read nothing before the server pings it, and how long the
    /// client has to answer: both a third of the idle timeout, so that an answering client
    /// always reads within it.
    fn keepalive(&self) -> Duration {
        (self.idle_timeout / 3).max(Duration::from_millis(1))
    }

    /// The connection cap in force.
    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections
            .unwrap_or_else(default_max_connections)
            .max(1)
    }
}

/// The process's soft limit on open files, if it can be read.
pub fn fd_soft_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get_soft().ok()
}

/// The default connection cap: the soft fd limit less [`FD_RESERVE`] (less a quarter of a
/// limit under 512), at most [`MAX_DEFAULT_CONNECTIONS`]; [`MAX_DEFAULT_CONNECTIONS`] when the
/// limit cannot be read.
pub fn default_max_connections() -> usize {
    cap_for_fd_limit(fd_soft_limit())
}

fn cap_for_fd_limit(soft: Option<u64>) -> usize {
    let cap = match soft {
        Some(soft) if soft >= 4 * FD_RESERVE => soft - FD_RESERVE,
        Some(soft) => soft - soft / 4,
        None => MAX_DEFAULT_CONNECTIONS,
    };
    usize::try_from(cap.clamp(1, MAX_DEFAULT_CONNECTIONS)).unwrap_or(1)
}

/// Applies the HTTP/2 bounds to a tonic server: keepalive pings, streams per connection,
/// header list size.
pub(crate) fn tune<L>(server: Server<L>, limits: &ConnLimits) -> Server<L> {
    server
        .http2_keepalive_interval(Some(limits.keepalive()))
        .http2_keepalive_timeout(Some(limits.keepalive()))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
}

/// The sockets a node serves on.
///
/// The TCP listener is the node's address: peers and remote clients reach it there, and its
/// address is the node's member address unless the builder sets `advertise`. The Unix domain
/// socket, when there is one, is for clients on the same host (a sidecar's function): the same
/// services, credentials and limits, with no TCP on the way. Both share one connection cap.
#[derive(Debug)]
pub struct Listeners {
    /// The node's TCP listener.
    pub tcp: TcpListener,
    /// A Unix domain socket for clients on the same host (default: none).
    pub unix: Option<UnixListener>,
}

impl From<TcpListener> for Listeners {
    fn from(tcp: TcpListener) -> Self {
        Self { tcp, unix: None }
    }
}

/// Why the accept loop is waiting, for logging once per episode.
struct AcceptState {
    listeners: Listeners,
    slots: Arc<Semaphore>,
    cap: usize,
    limits: ConnLimits,
    at_cap: bool,
}

/// The connections `listener` accepts, bounded by `limits`, for
/// `Server::serve_with_incoming_shutdown`. It never yields an error: accept errors are
/// logged and retried.
pub(crate) fn incoming(
    listeners: Listeners,
    limits: &ConnLimits,
) -> impl Stream<Item = io::Result<IdleIo>> + Send + 'static {
    let cap = limits.max_connections();
    tracing::info!(
        max_connections = cap,
        fd_limit = fd_soft_limit(),
        idle_timeout = ?limits.idle_timeout,
        "connection limits"
    );
    let state = AcceptState {
        listeners,
        slots: Arc::new(Semaphore::new(cap)),
        cap,
        limits: *limits,
        at_cap: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let slot = state.take_slot().await?;
        let stream = state.accept().await;
        let io = IdleIo::new(stream, slot, &state.limits);
        Some((Ok(io), state))
    })
}

impl AcceptState {
    /// A free connection slot; waits, without accepting, while there is none.
    async fn take_slot(&mut self) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            if self.at_cap && self.slots.available_permits() >= self.cap / RELOG_FREE_FRACTION {
                self.at_cap = false;
                tracing::info!(
                    open = self.cap - self.slots.available_permits(),
                    "connections are below the cap again"
                );
            }
            return Some(slot);
        }
        if !self.at_cap {
            self.at_cap = true;
            tracing::warn!(
                max_connections = self.cap,
                fd_limit = fd_soft_limit(),
                "connection cap reached: new connections wait in the listen backlog until one \
                 closes (idle connections close after the idle timeout)"
            );
        }
        Arc::clone(&self.slots).acquire_owned().await.ok()
    }

    async fn accept(&mut self) -> Io {
        loop {
            let accepted = match &self.listeners.unix {
                None => self.listeners.tcp.accept().await.map(|(s, _)| Io::Tcp(s)),
                Some(unix) => tokio::select! {
                    tcp = self.listeners.tcp.accept() => tcp.map(|(s, _)| Io::Tcp(s)),
                    local = unix.accept() => local.map(|(s, _)| Io::Unix(s)),
                },
            };
            match accepted {
                Ok(Io::Tcp(stream)) => {
                    // Replies are small and latency-bound: no Nagle's delay.
                    let _ = stream.set_nodelay(true);
                    return Io::Tcp(stream);
                }
                Ok(unix) => return unix,
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "a connection failed before it was accepted");
                }
                Err(e) => {
                    // Out of fds or memory: the cap is set too high for this process.
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// An accepted connection, over TCP or a Unix domain socket.
#[derive(Debug)]
enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Runs `$body` with `$s` bound to the pinned stream inside `$io`, whichever kind it is.
macro_rules! on_stream {
    ($io:expr, $s:ident => $body:expr) => {
        match $io {
            Io::Tcp(stream) => {
                let $s = Pin::new(stream);
                $body
            }
            Io::Unix(stream) => {
                let $s = Pin::new(stream);
                $body
            }
        }
    };
}

/// An accepted connection that fails, and so closes, once no byte has been read from it for
/// its deadline: [`DEFAULT_PREFACE_TIMEOUT`] for the first bytes, then the idle timeout. It
/// holds one of the node's connection slots until it is dropped.
#[derive(Debug)]
pub struct IdleIo {
    inner: Io,
    _slot: OwnedSemaphorePermit,
    timer: Pin<Box<Sleep>>,
    /// When the last byte was read, or `None` before the first.
    last_read: Option<Instant>,
    accepted: Instant,
    limits: ConnLimits,
    expired: bool,
}

impl IdleIo {
    fn new(inner: Io, slot: OwnedSemaphorePermit, limits: &ConnLimits) -> Self {
        let accepted = Instant::now();
        Self {
            inner,
            _slot: slot,
            timer: Box::pin(tokio::time::sleep_until(accepted + limits.first_bytes())),
            last_read: None,
            accepted,
            limits: *limits,
            expired: false,
        }
    }

    fn deadline(&self) -> Instant {
        match self.last_read {
            Some(at) => at + self.limits.idle_timeout,
            None => self.accepted + self.limits.first_bytes(),
        }
    }

    /// Whether the deadline has passed; if not, the timer wakes the task when it does.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.expired {
            return true;
        }
        loop {
            // Reads only move the deadline later, so the timer is never late. It catches up
            // when it fires, not on every read: resetting a timer costs a trip to the timer
            // driver, and a busy connection reads thousands of times a second.
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return false,
                Poll::Ready(()) if Instant::now() < self.deadline() => {
                    let deadline = self.deadline();
                    self.timer.as_mut().reset(deadline);
                }
                Poll::Ready(()) => {
                    self.expired = true;
                    let phase = if self.last_read.is_some() {
                        "idle"
                    } else {
                        "no preface"
                    };
                    let peer = match &self.inner {
                        Io::Tcp(s) => s.peer_addr().ok(),
                        Io::Unix(_) => None,
                    };
                    tracing::debug!(
                        ?peer,
                        phase,
                        "closing a connection that read nothing before its deadline"
                    );
                    return true;
                }
            }
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "connection idle for longer than its timeout",
        )
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(Self::timed_out()));
        }
        let before = buf.filled().len();
        match on_stream!(&mut this.inner, s => s.poll_read(cx, buf)) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.last_read = Some(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.poll_expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(Self::timed_out()));
        }
        match on_stream!(&mut this.inner, s => s.poll_write(cx, buf)) {
            // A peer that neither reads nor sends: its window is full and it is idle.
            Poll::Pending if this.poll_expired(cx) => Poll::Ready(Err(Self::timed_out())),
            other => other,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(Self::timed_out()));
        }
        match on_stream!(&mut this.inner, s => s.poll_write_vectored(cx, bufs)) {
            Poll::Pending if this.poll_expired(cx) => Poll::Ready(Err(Self::timed_out())),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match on_stream!(&mut this.inner, s => s.poll_flush(cx)) {
            Poll::Pending if this.poll_expired(cx) => Poll::Ready(Err(Self::timed_out())),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(&mut self.get_mut().inner, s => s.poll_shutdown(cx))
    }
}

impl Connected for IdleIo {
    type ConnectInfo = TcpConnectInfo;

    /// A Unix domain socket's peer has no IP address: both addresses are `None`.
    fn connect_info(&self) -> Self::ConnectInfo {
        match &self.inner {
            Io::Tcp(s) => s.connect_info(),
            Io::Unix(_) => TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }
}

/// Connection bounds.
impl CacheNodeBuilder {
    /// How long a connection may send nothing before the node closes it. The node pings a
    /// quiet connection every third of this, and a live client's answer counts, so only
    /// peers that stopped answering (or never spoke HTTP/2) are closed.
    /// Default: [`DEFAULT_IDLE_TIMEOUT`] (60 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.connections.idle_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a new connection may take to send its first bytes (the HTTP/2 preface, or a
    /// TLS hello); never longer than the idle timeout. Default: [`DEFAULT_PREFACE_TIMEOUT`]
    /// (10 s).
    pub fn preface_timeout(mut self, timeout: Duration) -> Self {
        self.connections.preface_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The most connections open at once; at the cap the node stops accepting until one
    /// closes. Default: the process's soft fd limit less [`FD_RESERVE`] (see
    /// [`default_max_connections`]).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.connections.max_connections = Some(n.max(1));
        self
    }

    /// The most concurrent HTTP/2 streams per connection.
    /// Default: [`DEFAULT_MAX_CONCURRENT_STREAMS`] (256).
    pub fn max_concurrent_streams(mut self, n: u32) -> Self {
        self.connections.max_concurrent_streams = n.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn the_cap_leaves_a_reserve_below_the_fd_limit() {
        assert_eq!(cap_for_fd_limit(Some(1024)), 1024 - 128);
        assert_eq!(cap_for_fd_limit(Some(256)), 192);
        assert_eq!(cap_for_fd_limit(Some(1)), 1);
        assert_eq!(cap_for_fd_limit(Some(0)), 1);
        assert_eq!(
            cap_for_fd_limit(Some(u64::MAX)),
            MAX_DEFAULT_CONNECTIONS as usize
        );
        assert_eq!(cap_for_fd_limit(None), MAX_DEFAULT_CONNECTIONS as usize);
    }

    fn limits(idle_ms: u64, preface_ms: u64, cap: usize) -> ConnLimits {
        ConnLimits {
            idle_timeout: Duration::from_millis(idle_ms),
            preface_timeout: Duration::from_millis(preface_ms),
            max_connections: Some(cap),
            ..ConnLimits::default()
        }
    }

    /// Accepts one connection through [`incoming`] and echoes what it reads until it fails.
    async fn echo_server(
        limits: ConnLimits,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        use futures::StreamExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut incoming = Box::pin(incoming(listener.into(), &limits));
            while let Some(Ok(mut io)) = incoming.next().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = io.read(&mut buf).await {
                        if io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    /// Reads until the server closes the connection; how long that took.
    async fn closed_after(mut conn: TcpStream) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 64];
        while let Ok(1..) = conn.read(&mut buf).await {}
        start.elapsed()
    }

    #[tokio::test]
    async fn silence_closes_a_connection_and_traffic_keeps_it() {
        let (addr, server) = echo_server(limits(1000, 300, 16)).await;
        // Never sends a byte: closed at the preface deadline, well before the idle timeout.
        let silent = TcpStream::connect(addr).await.unwrap();
        let waited = closed_after(silent).await;
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_millis(900),
            "{waited:?}"
        );
        // Talks every 300 ms for 2.4 s: kept open past two idle timeouts.
        let mut chatty = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        for _ in 0..8 {
            chatty.write_all(b"x").await.unwrap();
            chatty.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Then stops: closed one idle timeout after its last byte.
        let waited = closed_after(chatty).await;
        assert!(waited >= Duration::from_millis(600), "{waited:?}");
        assert!(waited < Duration::from_millis(3000), "{waited:?}");
        server.abort();
    }

    #[tokio::test]
    async fn at_the_cap_the_next_connection_waits_for_a_slot() {
        let (addr, server) = echo_server(limits(60_000, 60_000, 1)).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(b"a").await.unwrap();
        let mut buf = [0u8; 1];
        first.read_exact(&mut buf).await.unwrap();
        // The kernel completes the handshake, but the node does not accept: no echo.
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(b"b").await.unwrap();
        let echo = tokio::time::timeout(Duration::from_millis(300), second.read_exact(&mut buf));
        assert!(
            echo.await.is_err(),
            "a connection beyond the cap was served"
        );
        // Closing the first frees its slot; the second is then served.
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut buf))
            .await
            .expect("served once a slot freed")
            .unwrap();
        assert_eq!(&buf, b"b");
        server.abort();
    }
}
