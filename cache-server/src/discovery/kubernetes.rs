//! `kubernetes:NAMESPACE/SERVICE`: the ready endpoints of a Service, from its
//! `discovery.k8s.io/v1` EndpointSlices, watched with kube's runtime watcher (a list, then a
//! watch from its resource version, listed again whenever the watch breaks).
//!
//! An endpoint counts as alive when its `ready` condition is true or unset (the API says an
//! unset condition is to be read as ready); a pod that is terminating or failing its
//! readiness probe is not ready. Each address becomes a member with this node's own port:
//! every sidecar of the app listens on the same one.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use super::View;
use super::dns::member;
use crate::node::CacheNode;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// A watch of one Service's EndpointSlices.
pub(crate) struct Watcher {
    api: Api<EndpointSlice>,
    service: String,
    port: u16,
    count_unready: bool,
}

impl Watcher {
    /// Connects with the in-cluster configuration, or else `KUBECONFIG` (or
    /// `~/.kube/config`).
    pub(crate) async fn connect(
        node: &CacheNode,
        namespace: &str,
        service: &str,
    ) -> crate::Result<Self> {
        let me = node.me();
        let port = me
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .ok_or_else(|| {
                crate::Error::Config(format!(
                    "Kubernetes discovery needs a member address with a port (--advertise), not {me:?}"
                ))
            })?;
        let client = Client::try_default()
            .await
            .map_err(|e| crate::Error::Config(format!("Kubernetes discovery: {e}")))?;
        Ok(Self {
            api: Api::namespaced(client, namespace),
            service: service.to_owned(),
            port,
            count_unready: false,
        })
    }

    /// Counts endpoints that are not ready as alive: the fault of
    /// [`crate::CacheNodeBuilder::discovery_count_unready`].
    pub(crate) fn count_unready(mut self, on: bool) -> Self {
        self.count_unready = on;
        self
    }

    /// Reports the ready endpoints to `view` until `stop`.
    pub(crate) async fn run(self, view: View, mut stop: watch::Receiver<bool>) {
        let (reader, writer) = reflector::store();
        let config =
            watcher::Config::default().labels(&format!("{SERVICE_LABEL}={}", self.service));
        let events = reflector::reflector(writer, watcher(self.api, config)).default_backoff();
        let mut events = std::pin::pin!(events);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                event = events.next() => match event {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        // The watcher lists again after a backoff; the last view stands.
                        tracing::warn!(service = %self.service, error = %e, "Kubernetes discovery: watch failed");
                        continue;
                    }
                    None => return,
                },
            }
            // The store is ready once the first list is complete; until then it holds part
            // of the slices, and a partial view would remove members.
            if reader.wait_until_ready().now_or_never().is_none() {
                continue;
            }
            let alive = ready_members(&reader, self.port, self.count_unready);
            view.send_if_modified(|v| {
                let changed = v.as_ref() != Some(&alive);
                *v = Some(alive);
                changed
            });
        }
    }
}

/// Every ready endpoint address of the slices in `store`, with `port`.
fn ready_members(store: &Store<EndpointSlice>, port: u16, count_unready: bool) -> BTreeSet<String> {
    store
        .state()
        .iter()
        .filter(|slice| slice.address_type != "FQDN")
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .filter(|ep| count_unready || ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|ep| ep.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| member(ip, port))
        .collect()
}
