//! `gossip:SEEDS`: membership and failure detection from chitchat (scuttlebutt
//! reconciliation, a phi-accrual failure detector) over UDP.
//!
//! Each node gossips under its member address, with a generation of its start time, so that
//! a process that restarts on the same address is a new incarnation. A node that is shutting
//! down says so in its gossip state (`leaving`), and the others stop counting it as alive at
//! once rather than after the failure-detection period.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::UdpTransport;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState, ProtocolVersion,
    spawn_chitchat,
};
use tokio::sync::watch;

use super::{DEFAULT_GOSSIP_PORT, DiscoveryConfig, View};
use crate::node::CacheNode;

/// The gossip interval, by default.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);

/// The phi threshold above which a silent node counts as dead: chitchat's default. Heartbeat
/// gaps are close to exponential, so a node is declared dead after about
/// `PHI_THRESHOLD · ln 10 ≈ 18` mean intervals of silence: with the default interval and
/// five nodes, a few seconds.
const PHI_THRESHOLD: f64 = 8.0;

/// The key a node sets in its gossip state when it is shutting down.
const LEAVING: &str = "leaving";

/// A started gossip member.
pub(crate) struct Gossip {
    handle: ChitchatHandle,
    interval: Duration,
}

impl Gossip {
    /// Binds the gossip socket and starts gossiping with `seeds`.
    pub(crate) async fn start(
        node: &CacheNode,
        config: &DiscoveryConfig,
        seeds: Vec<String>,
    ) -> crate::Result<Self> {
        let me = node.me();
        let member: SocketAddr = me.parse().map_err(|_| {
            crate::Error::Config(format!(
                "gossip needs a member address of the form IP:PORT (--advertise), not {me:?}"
            ))
        })?;
        let listen = config
            .gossip_listen
            .unwrap_or_else(|| SocketAddr::new(member.ip(), DEFAULT_GOSSIP_PORT));
        // Peers reach this node's gossip at its member address's IP when it listens on all
        // interfaces.
        let advertise = if listen.ip().is_unspecified() {
            SocketAddr::new(member.ip(), listen.port())
        } else {
            listen
        };
        // Gossip carries no data, and a node it names becomes a member only once it answers
        // an authenticated call; still, like every listener, it is not exposed without
        // credentials.
        node.check_exposure("gossip", listen)?;
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(me.clone(), generation, advertise),
            cluster_id: format!("cachelet/{}", node.app()),
            gossip_interval: config.gossip_interval,
            listen_addr: listen,
            seed_nodes: seeds,
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: PHI_THRESHOLD,
                sampling_window_size: 1_000,
                max_interval: Duration::from_secs(10),
                initial_interval: config.gossip_interval * 2,
                dead_node_grace_period: Duration::from_secs(3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: Some(Box::new(|state: &NodeState| {
                state.get(LEAVING).is_none()
            })),
            protocol_version: ProtocolVersion::V0,
        };
        let handle = spawn_chitchat(chitchat_config, Vec::new(), &UdpTransport)
            .await
            .map_err(|e| crate::Error::Config(format!("gossip on {listen}: {e}")))?;
        tracing::info!(gossip_addr = %advertise, %listen, "gossip listening");
        Ok(Self {
            handle,
            interval: config.gossip_interval,
        })
    }

    /// Reports the live members to `view` until `stop`; says `leaving` once the node is
    /// shutting down.
    pub(crate) async fn run(self, node: CacheNode, view: View, mut stop: watch::Receiver<bool>) {
        let chitchat = self.handle.chitchat();
        let mut live = chitchat.lock().await.live_nodes_watcher();
        let mut leaving = false;
        loop {
            let alive: BTreeSet<String> = live
                .borrow_and_update()
                .keys()
                .map(|id| id.node_id.to_string())
                .collect();
            view.send_if_modified(|v| {
                let changed = v.as_ref() != Some(&alive);
                *v = Some(alive);
                changed
            });
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                changed = live.changed() => if changed.is_err() { break },
                // The shutdown flag is polled, at the gossip interval.
                () = tokio::time::sleep(self.interval) => {}
            }
            if !leaving && node.is_shutting_down() {
                leaving = true;
                chitchat.lock().await.self_node_state().set(LEAVING, "1");
                tracing::info!("gossip: leaving");
            }
        }
        if let Err(e) = self.handle.shutdown().await {
            tracing::debug!(error = %e, "gossip stopped with an error");
        }
    }
}
