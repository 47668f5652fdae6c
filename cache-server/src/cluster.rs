//! [`LocalCluster`]: several nodes in this process, each on its own ephemeral loopback port.
//! The demo, the benches and the integration tests run on it.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::connections::Listeners;
use crate::node::{CacheNode, CacheNodeBuilder};

/// One node of a [`LocalCluster`].
#[derive(Debug)]
pub struct LocalNode {
    /// The node's address, as in the member list.
    pub addr: String,
    /// The node itself (for its counters and entry store).
    pub node: CacheNode,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<crate::Result<()>>>,
}

impl LocalNode {
    /// Serves `node` on `listeners` in a task of its own, until [`LocalNode::stop`].
    pub fn serve(node: CacheNode, listeners: impl Into<Listeners>) -> crate::Result<Self> {
        let listeners = listeners.into();
        let addr = match node.addr() {
            Some(addr) => addr.to_owned(),
            None => listeners.tcp.local_addr()?.to_string(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = node.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listeners, async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            addr,
            node,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Whether the node is still serving.
    pub fn is_running(&self) -> bool {
        self.stop.is_some()
    }

    /// Stops the node gracefully and waits until it has stopped: a node that is no longer a
    /// member drains first (`drain_timeout`), then requests in progress finish
    /// (`shutdown_grace`). Gives up after 60 s.
    ///
    /// # Errors
    /// The error the node stopped with, or `Io` when it did not stop in time or its task
    /// panicked.
    pub async fn stop(&mut self) -> crate::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Ok(Ok(served)) => served,
            Ok(Err(e)) => Err(std::io::Error::other(format!("node task failed: {e}")).into()),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{} did not stop within 60 s", self.addr),
            )
            .into()),
        }
    }
}

/// Nodes serving in this process on `127.0.0.1:0` ports.
///
/// # Examples
/// ```
/// # #[tokio::main] async fn main() -> cache_server::Result<()> {
/// use std::sync::Arc;
/// use cache_server::cluster::LocalCluster;
/// use object_store::memory::InMemory;
///
/// let store = Arc::new(InMemory::new());
/// let cluster = LocalCluster::start(3, |b| b.app("demo").store(store.clone())).await?;
/// assert_eq!(cluster.addrs().len(), 3);
/// cluster.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<LocalNode>,
}

/// Waits (up to 10 s) until `node` has its membership epoch from the store.
async fn wait_ready(node: &CacheNode) {
    if tokio::time::timeout(Duration::from_secs(10), node.ready())
        .await
        .is_err()
    {
        tracing::warn!(addr = ?node.addr(), "node was not ready within 10 s");
    }
}

impl LocalCluster {
    /// Binds `n` listeners, builds a node on each with `configure` (which must at least set
    /// the app and the store; members and addresses are filled in), and serves them.
    ///
    /// # Errors
    /// Binding or configuration errors.
    pub async fn start<F>(n: usize, configure: F) -> crate::Result<Self>
    where
        F: Fn(CacheNodeBuilder) -> CacheNodeBuilder,
    {
        let mut listeners = Vec::with_capacity(n);
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await?);
        }
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut nodes = Vec::with_capacity(n);
        for (listener, addr) in listeners.into_iter().zip(&addrs) {
            let node = configure(CacheNode::builder())
                .members(addrs.clone())
                .advertise(addr.clone())
                .build()?;
            nodes.push(LocalNode::serve(node, listener)?);
        }
        for node in &nodes {
            wait_ready(&node.node).await;
        }
        // A store that a cluster used before holds that cluster's epochs: make these nodes
        // the members, as a platform does after starting them.
        if let Some(first) = nodes.first() {
            let mut wanted = addrs.clone();
            wanted.sort();
            if first.node.membership().members() != wanted.as_slice() {
                first
                    .node
                    .set_members(None, addrs)
                    .await
                    .map_err(|e| crate::Error::Config(e.to_string()))?;
            }
        }
        Ok(Self { nodes })
    }

    /// Starts one more node, configured by `configure`. It adopts the cluster's newest epoch
    /// from the store, in which it is not a member yet: add it with
    /// [`CacheNode::set_members`]. Returns its address.
    ///
    /// # Errors
    /// Binding or configuration errors.
    pub async fn add_node<F>(&mut self, configure: F) -> crate::Result<String>
    where
        F: FnOnce(CacheNodeBuilder) -> CacheNodeBuilder,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let mut members: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.addr.clone())
            .collect();
        members.push(addr.clone());
        let node = configure(CacheNode::builder())
            .members(members)
            .advertise(addr.clone())
            .build()?;
        self.nodes.push(LocalNode::serve(node.clone(), listener)?);
        wait_ready(&node).await;
        Ok(addr)
    }

    /// The addresses of the nodes still running.
    pub fn running(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.addr.clone())
            .collect()
    }

    /// Every node's address, in start order.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[LocalNode] {
        &self.nodes
    }

    /// The node at `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn node(&self, i: usize) -> &CacheNode {
        &self.nodes[i].node
    }

    /// Stops node `i` gracefully and waits until it has stopped: a node that is no longer a
    /// member drains first (`drain_timeout`), then requests in progress finish
    /// (`shutdown_grace`). Gives up after 60 s.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub async fn stop_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Err(e) = node.stop().await {
            tracing::warn!(addr = %node.addr, error = %e, "node stopped with an error");
        }
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
    }
}
