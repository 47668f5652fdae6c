//! Read leases on a node: a write waits for every holder of a lease on its key to drop its
//! copy, or for the lease to end; a holder that never acknowledges costs a writer one lease
//! length, and no more. The negative control: with writes that do not wait, the same write
//! returns while the holder still holds its lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_client::CacheClient;
use cache_proto::v1 as pb;
use cache_server::CacheNodeBuilder;
use cache_server::cluster::LocalCluster;
use object_store::memory::InMemory;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const APP: &str = "leases";
const LEASE: Duration = Duration::from_secs(2);

async fn node(configure: impl Fn(CacheNodeBuilder) -> CacheNodeBuilder) -> LocalCluster {
    let store = Arc::new(InMemory::new());
    LocalCluster::start(1, |b| {
        configure(b.app(APP).store(store.clone()).lease(LEASE).prewarm(false))
    })
    .await
    .unwrap()
}

/// A holder that takes a lease and then never acknowledges anything: its stream stays open,
/// and it keeps what the node sends it.
struct SilentHolder {
    id: u64,
    events: tonic::Streaming<pb::LeaseEvents>,
    _acks: mpsc::Sender<pb::LeaseAcks>,
    data: pb::data_client::DataClient<tonic::transport::Channel>,
}

impl SilentHolder {
    async fn open(addr: &str) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut data = pb::data_client::DataClient::new(channel);
        let (acks, rx) = mpsc::channel(4);
        acks.send(pb::LeaseAcks {
            app: APP.into(),
            acks: Vec::new(),
        })
        .await
        .unwrap();
        let mut events = data
            .leases(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let id = events.message().await.unwrap().unwrap().holder;
        assert_ne!(id, 0);
        Self {
            id,
            events,
            _acks: acks,
            data,
        }
    }

    /// Reads `key` asking for a lease; returns the lease granted, in milliseconds.
    async fn read_leased(&mut self, key: &str) -> u32 {
        let batch = pb::Batch {
            app: APP.into(),
            timeout_ms: 5_000,
            ops: vec![pb::Op {
                id: 1,
                kind: Some(pb::op::Kind::Get(pb::Get {
                    key: key.into(),
                    lease_holder: self.id,
                    ..Default::default()
                })),
                epoch: 0,
            }],
        };
        let reply = self.data.batch(batch).await.unwrap().into_inner();
        match &reply.replies[0].result {
            Some(pb::reply::Result::Value(v)) => v.lease_ms,
            other => panic!("unexpected reply {other:?}"),
        }
    }
}

/// Puts `key` through a client and returns how long the put took.
async fn timed_put(cache: &CacheClient, key: &str, value: &str) -> Duration {
    let started = Instant::now();
    cache.put(key, value.to_owned()).await.unwrap();
    started.elapsed()
}

async fn client(cluster: &LocalCluster) -> CacheClient {
    CacheClient::builder()
        .app(APP)
        .nodes(cluster.addrs())
        .timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_never_acknowledges_delays_a_write_by_one_lease_at_most() {
    let cluster = node(|b| b).await;
    let cache = client(&cluster).await;
    cache.put("k", "v1").await.unwrap();
    let mut holder = SilentHolder::open(&cluster.addrs()[0]).await;
    let granted = holder.read_leased("k").await;
    assert_eq!(u128::from(granted), LEASE.as_millis());
    let took = timed_put(&cache, "k", "v2").await;
    // The invalidation reached the holder; the write waited for its lease to end.
    let events = holder.events.message().await.unwrap().unwrap();
    assert_eq!(events.invalidations[0].key, "k");
    assert!(took >= LEASE - Duration::from_millis(100), "took {took:?}");
    assert!(took < LEASE + Duration::from_secs(3), "took {took:?}");
    let stats = cluster.node(0).stats();
    assert_eq!(stats.lease_expiry_waits, 1, "{stats:?}");
    assert!(stats.leases_granted >= 1 && stats.lease_invalidations >= 1);
    // No lease, no wait.
    let took = timed_put(&cache, "k", "v3").await;
    assert!(took < LEASE / 2, "took {took:?}");
}

/// A holder that acknowledges lets the write go on at once: the client of `cache-client`
/// drops its copy and acknowledges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_acknowledges_releases_the_write_and_sees_it() {
    let cluster = node(|b| b).await;
    let writer = client(&cluster).await;
    writer.put("k", "v1").await.unwrap();
    let reader = CacheClient::builder()
        .app(APP)
        .nodes(cluster.addrs())
        .local_capacity_bytes(1 << 20)
        .leases(true)
        .build()
        .await
        .unwrap();
    // The reader's lease stream opens in the background; read until a lease is granted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.client_stats().local_leased == 0 {
        assert!(Instant::now() < deadline, "no leased read");
        reader.get("k").await.unwrap();
    }
    let took = timed_put(&writer, "k", "v2").await;
    assert!(
        took < LEASE / 2,
        "took {took:?}: the holder did not acknowledge"
    );
    // The write completed: the reader's next Strong read sees it.
    assert_eq!(reader.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(cluster.node(0).stats().lease_expiry_waits, 0);
}

/// The negative control: with writes that do not wait for lease holders, the write returns
/// while the silent holder's lease is still valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_waiting_the_write_returns_while_the_lease_holds() {
    let cluster = node(|b| b.leased_writes(false)).await;
    let cache = client(&cluster).await;
    cache.put("k", "v1").await.unwrap();
    let mut holder = SilentHolder::open(&cluster.addrs()[0]).await;
    let leased_at = Instant::now();
    assert!(holder.read_leased("k").await > 0);
    cache.put("k", "v2").await.unwrap();
    assert!(
        leased_at.elapsed() < LEASE / 2,
        "the write waited although writes do not wait"
    );
}
