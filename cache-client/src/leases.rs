//! Read leases held from each node: the shell around [`cache_core::lease::Holder`]. One task
//! per node keeps a `Leases` stream open, applies the node's invalidations to the local tier
//! and acknowledges them; `Strong` reads ask for leases and serve leased copies locally.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::lease::{Holder, LeaseConfig, Ticket};
use cache_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::local::LocalTier;

/// Acknowledgements queued for a node's stream before they wait.
const ACK_QUEUE: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The leases this client holds from one node.
#[derive(Debug)]
pub(crate) struct NodeLeases {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    holder: Holder,
    /// The id the node gave this client's stream; 0 while none is open.
    id: u64,
}

impl NodeLeases {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                holder: Holder::new(LeaseConfig::default()),
                id: 0,
            }),
        }
    }

    /// Whether the copy of `key` at `version` may be served now with no round trip.
    pub(crate) fn valid(&self, key: &str, version: &str, now: Instant) -> bool {
        let state = lock(&self.state);
        state.id != 0 && state.holder.valid(key, version, now)
    }

    /// A read of `key` about to be sent: the holder id to ask a lease for, and the ticket
    /// that takes it. `None` while no stream is open.
    pub(crate) fn begin(&self, key: &str, now: Instant) -> Option<(u64, Ticket)> {
        let state = lock(&self.state);
        (state.id != 0).then(|| (state.id, state.holder.begin_read(key, now)))
    }

    /// The reply granted a lease of `lease_ms` on `key` at `version`.
    pub(crate) fn granted(&self, key: &str, version: &str, ticket: Ticket, lease_ms: u32) -> bool {
        let lease = Duration::from_millis(lease_ms.into());
        lock(&self.state)
            .holder
            .granted(key, version, ticket, lease)
    }

    fn connected(&self, id: u64) {
        let mut state = lock(&self.state);
        state.holder.connected();
        state.id = id;
    }

    fn broken(&self) {
        let mut state = lock(&self.state);
        state.holder.broken();
        state.id = 0;
    }

    fn invalidate(&self, key: &str) {
        lock(&self.state).holder.invalidate(key);
    }

    fn expire(&self, now: Instant) {
        lock(&self.state).holder.expire(now);
    }
}

/// Keeps a `Leases` stream to one node open until aborted: drops the copy and the lease of
/// each key the node invalidates, then acknowledges it. When the stream breaks, every lease
/// from the node is dropped at once (invalidations may be lost), and it reconnects with
/// backoff.
pub(crate) async fn hold_leases(
    leases: Arc<NodeLeases>,
    tier: LocalTier,
    channel: crate::conn::Transport,
    app: String,
    (min_backoff, max_backoff): (Duration, Duration),
) {
    let mut backoff = min_backoff;
    loop {
        let (acks, rx) = mpsc::channel::<pb::LeaseAcks>(ACK_QUEUE);
        let hello = pb::LeaseAcks {
            app: app.clone(),
            acks: Vec::new(),
        };
        if acks.send(hello).await.is_err() {
            return;
        }
        let mut client = pb::data_client::DataClient::new(channel.clone());
        if let Ok(response) = client.leases(ReceiverStream::new(rx)).await {
            let mut stream = response.into_inner();
            if let Ok(Some(first)) = stream.message().await
                && first.holder != 0
            {
                backoff = min_backoff;
                leases.connected(first.holder);
                while let Ok(Some(events)) = stream.message().await {
                    let mut done = Vec::with_capacity(events.invalidations.len());
                    for inv in events.invalidations {
                        // The copy goes before the acknowledgement does.
                        leases.invalidate(&inv.key);
                        tier.remove(&inv.key);
                        done.push(inv);
                    }
                    leases.expire(Instant::now());
                    let ack = pb::LeaseAcks {
                        app: String::new(),
                        acks: done,
                    };
                    if acks.send(ack).await.is_err() {
                        break;
                    }
                }
            }
        }
        leases.broken();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}
