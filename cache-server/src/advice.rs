//! Scaling advice: every member's counters, turned into rates and fed to the pure
//! [`cache_core::advisor::Advisor`].

use std::time::Instant;

use cache_core::advisor::Observation;
use cache_proto::v1 as pb;

use crate::node::CacheNode;
use crate::scale::PEER_TIMEOUT;
use crate::scale_state::{Totals, lock};

impl CacheNode {
    /// Scaling advice from every member's counters, with rates since the previous call.
    pub async fn advice(&self) -> pb::AdviceReply {
        let membership = self.membership();
        let me = self.me();
        let stats = futures::future::join_all(membership.members().iter().map(|addr| {
            let node = self.clone();
            let me = me.clone();
            async move {
                if *addr == me {
                    node.inner.entries.sync().await;
                    return Some(node.stats());
                }
                let mut admin = pb::admin_client::AdminClient::new(node.peer(addr));
                match tokio::time::timeout(PEER_TIMEOUT, admin.stats(pb::StatsRequest {})).await {
                    Ok(Ok(r)) => Some(r.into_inner()),
                    _ => None,
                }
            }
        }))
        .await;
        let stats: Vec<pb::NodeStats> = stats.into_iter().flatten().collect();
        let totals = Totals {
            reads: stats.iter().map(|s| s.hits + s.misses).sum(),
            ghost_hits: stats.iter().map(|s| s.ghost_hits).sum(),
            requests: stats.iter().map(|s| s.gets + s.puts + s.deletes).sum(),
            bytes_served: stats.iter().map(|s| s.bytes_served).sum(),
        };
        let now = Instant::now();
        let mut guard = lock(&self.scale().advisor);
        let (since, before) = guard.1.unwrap_or((self.scale().started, Totals::default()));
        let secs = now.saturating_duration_since(since).as_secs_f64().max(1e-3);
        let reads = totals.reads.saturating_sub(before.reads);
        let served = totals.bytes_served.saturating_sub(before.bytes_served);
        let obs = Observation {
            nodes: membership.members().len() as u32,
            bytes_used: stats.iter().map(|s| s.bytes_used).sum(),
            capacity_bytes: stats.iter().map(|s| s.capacity_bytes).sum(),
            reads,
            ghost_hits: totals.ghost_hits.saturating_sub(before.ghost_hits),
            requests_per_s: totals.requests.saturating_sub(before.requests) as f64 / secs,
            bytes_served_per_s: served as f64 / secs,
            mean_object_bytes: if reads == 0 {
                0.0
            } else {
                served as f64 / reads as f64
            },
        };
        guard.1 = Some((now, totals));
        let advice = guard.0.advise(&obs, now);
        pb::AdviceReply {
            current_nodes: obs.nodes,
            desired_nodes: advice.desired_nodes,
            reason: advice.reason,
            bytes_used: obs.bytes_used,
            capacity_bytes: obs.capacity_bytes,
            ghost_hit_ratio: obs.ghost_ratio(),
            requests_per_s: obs.requests_per_s,
            bytes_served_per_s: obs.bytes_served_per_s,
            mean_object_bytes: obs.mean_object_bytes,
        }
    }
}
