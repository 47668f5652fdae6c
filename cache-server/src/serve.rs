//! Serving a node on a bound listener until a shutdown future completes.

use std::future::Future;

use cache_proto::v1 as pb;
use tokio::sync::watch;
use tonic::transport::Server;

use crate::connections::Listeners;
use crate::node::CacheNode;
use crate::service::{AdminService, DataService, PeerService};

/// Room in a message beyond one maximal value: keys, versions, and the coalesced replies
/// that share the message (at most 1 MiB of values).
pub(crate) const MESSAGE_SLACK: usize = 2 << 20;

/// The HTTP/2 flow-control window of a connection, in bytes.
const CONNECTION_WINDOW: u32 = 4 << 20;
/// The HTTP/2 flow-control window of a stream, in bytes.
const STREAM_WINDOW: u32 = 1 << 20;

impl CacheNode {
    /// Serves the data and admin services on `listeners` until `shutdown` completes, then
    /// finishes the requests in progress and returns.
    ///
    /// `listeners` is a bound `TcpListener`, or [`Listeners`] to serve a Unix domain socket
    /// as well. They are already bound, so tests can bind `127.0.0.1:0`. Unless the builder
    /// set `advertise`, the node's own address is the TCP listener's local address, and it
    /// must be in the member list.
    ///
    /// With TLS ([`crate::node::CacheNodeBuilder::tls`]) every connection is TLS; with
    /// credentials ([`crate::node::CacheNodeBuilder::auth`]) every call needs a token.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when the node's address is not a member, or when the listener
    /// is not on a loopback address and the node has neither credentials nor `insecure` set
    /// (see [`crate::security`]); transport errors.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn run() -> cache_server::Result<()> {
    /// use std::sync::Arc;
    /// use cache_server::CacheNode;
    /// use object_store::memory::InMemory;
    ///
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = listener.local_addr()?.to_string();
    /// let node = CacheNode::builder()
    ///     .app("demo")
    ///     .store(Arc::new(InMemory::new()))
    ///     .members([addr])
    ///     .build()?;
    /// node.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
    /// # }
    /// ```
    pub async fn serve<F>(&self, listeners: impl Into<Listeners>, shutdown: F) -> crate::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let listeners = listeners.into();
        let local = listeners.tcp.local_addr()?;
        let unix = match &listeners.unix {
            Some(unix) => Some(unix.local_addr()?),
            None => None,
        };
        self.check_exposure("data, admin and peer gRPC", local)?;
        self.check_security()?;
        self.set_addr(local.to_string())?;
        // The membership epoch comes from the store before anything is served.
        self.boot().await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let max_message = usize::try_from(self.limits().max_value_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(MESSAGE_SLACK);
        let data =
            pb::data_server::DataServer::new(DataService::new(self.clone(), stop_rx.clone()))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(usize::MAX);
        let admin = pb::admin_server::AdminServer::new(AdminService::new(self.clone()));
        let peer = pb::peer_server::PeerServer::new(PeerService::new(self.clone()))
            .max_decoding_message_size(max_message);
        // Discovery first: it may fail (a Kubernetes configuration that cannot be read, a
        // gossip port in use) before any other task is spawned.
        let discovery = self.start_discovery(stop_rx.clone()).await?;
        // Background work: gossip, discovery, manifests, pre-warming. It stops with the node.
        let mut background = vec![
            tokio::spawn({
                let (node, stop) = (self.clone(), stop_rx.clone());
                async move { node.gossip(stop).await }
            }),
            // Leases that ended leave the directory.
            tokio::spawn({
                let node = self.clone();
                async move {
                    let every = node.inner.leases.sweep_interval();
                    loop {
                        tokio::time::sleep(every).await;
                        node.inner.leases.expire();
                    }
                }
            }),
        ];
        background.extend(discovery);
        if self.inner.scale.config.prewarm {
            background.push(tokio::spawn({
                let (node, stop) = (self.clone(), stop_rx.clone());
                async move { node.write_manifests(stop).await }
            }));
            background.push(tokio::spawn({
                let node = self.clone();
                async move {
                    // Pre-warm once the node owns keys and they are settled.
                    node.wait_member_and_sealed().await;
                    node.prewarm().await;
                }
            }));
        }
        let node = self.clone();
        let mut stopped = stop_rx.clone();
        let grace = self.inner.scale.config.shutdown_grace;
        let signal = async move {
            shutdown.await;
            node.begin_shutdown();
            // With discovery, the others take this node out of the list (it no longer
            // reports itself alive), and it drains below.
            node.await_removal(node.inner.scale.config.drain_timeout)
                .await;
            let me = node.addr().unwrap_or_default().to_owned();
            if node.membership().contains(&me) {
                if node.inner.scale.config.prewarm
                    && let Err(e) = node.write_manifest().await
                {
                    tracing::warn!(error = %e, "could not write the hot-key manifest");
                }
            } else {
                let timeout = node.inner.scale.config.drain_timeout;
                tracing::info!(?timeout, "no longer a member: draining before exit");
                if !node.wait_drained(timeout).await {
                    tracing::warn!("the drain did not finish in time");
                }
            }
            tracing::info!("shutting down: finishing requests in progress");
            let _ = stop_tx.send(true);
        };
        tracing::info!(addr = %local, ?unix, app = self.app(), "serving");
        // Accepted under the connection cap, each with idle deadlines (and without Nagle's
        // delay: tonic's `tcp_nodelay` applies only to listeners that it binds itself).
        let limits = &self.inner.connections;
        let incoming = crate::connections::incoming(listeners, limits);
        let mut server = crate::connections::tune(Server::builder(), limits);
        if let Some(tls) = self.tls() {
            server = server.tls_config(tls.tonic_server())?;
        }
        let serving = server
            .layer(tonic::service::InterceptorLayer::new(self.authenticator()))
            // Fixed flow-control windows rather than adaptive ones: h2 closes a connection
            // whose unread small DATA frames pass a budget of half the connection window, and
            // clients send many small batches. 4 MiB per connection (a 2 MiB budget, about
            // 13,000 small frames) and 1 MiB per stream bound what a client can push unread.
            .initial_connection_window_size(Some(CONNECTION_WINDOW))
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .add_service(data)
            .add_service(admin)
            .add_service(peer)
            .serve_with_incoming_shutdown(incoming, signal);
        // A connection that never finishes closing must not keep the node from stopping.
        let forced = async move {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = serving => served?,
            () = forced => tracing::warn!(?grace, "connections still open after the grace period; stopping anyway"),
        }
        for task in background {
            task.abort();
        }
        Ok(())
    }
}
