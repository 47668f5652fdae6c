//! Read leases on a node: a write waits for every holder of a lease on its key to drop its
//! copy, or for the lease to end; a holder that never acknowledges costs a writer one lease
//! length, and no more. The negative control: with writes that do not wait, the same write
//! returns while the holder still holds its lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_client::CacheClient;
use cache_proto::v1 as pb;
use cache_server::CacheNodeBuilder;
use cache_server::cluster::{LocalCluster, LocalNode};
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
    // Counted apart: how long that write waited for the lease to end.
    let waited = Duration::from_micros(stats.lease_expiry_wait_us);
    assert!(waited >= LEASE - Duration::from_millis(300), "{stats:?}");
    assert!(waited <= took, "{stats:?}");
    assert_eq!(stats.lease_expiry_wait_max_us, stats.lease_expiry_wait_us);
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

/// A write that waits for a lease holder while its key moves to another node must not leave
/// the old value behind for the new owner. The old owner sets its copies aside when it adopts
/// the change, for handoff and for the new owner's first read; the waiting write had not yet
/// dropped its key's copy then, so the copy set aside is older than the write. Found by
/// `cache-bench check` with client pauses: the new owner served the value from before three
/// writes that it had itself seen acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_for_a_holder_across_a_move_leaves_no_old_copy_behind() {
    let store = Arc::new(InMemory::new());
    let configure = |b: CacheNodeBuilder| {
        b.app(APP)
            .store(store.clone())
            .lease(LEASE)
            .prewarm(false)
            .gossip_interval(Duration::from_millis(50))
    };
    let (cluster, old, added, key) = one_node_and_an_added_one(configure).await;
    let cache = client(&cluster).await;
    cache.put(&key, "before").await.unwrap();
    let mut holder = SilentHolder::open(&old).await;
    assert!(holder.read_leased(&key).await > 0);

    // The write waits for the silent holder's lease to end...
    let write = {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move { cache.put(&key, "after").await })
    };
    let events = holder.events.message().await.unwrap().unwrap();
    assert_eq!(events.invalidations[0].key, key);
    // ...while the key moves to the added node.
    cache.set_members(None, vec![old, added]).await.unwrap();
    write.await.unwrap().unwrap();
    for _ in 0..3 {
        assert_eq!(
            cache.get(&key).await.unwrap().as_deref(),
            Some(&b"after"[..]),
            "the new owner served the copy set aside before the write"
        );
    }
    let stats = cluster.node(1).stats();
    assert_eq!(stats.epoch, 2, "{stats:?}");
    drop(holder);
    cluster.shutdown().await;
}

/// A process that starts on the address of one that ended takes no write for one lease
/// length: holders may still honour leases the ended process granted (one that was paused
/// while the process ended has not seen its stream break), and no one can invalidate them.
/// A process first on its address writes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_waits_out_the_leases_of_its_previous_process() {
    let store = Arc::new(InMemory::new());
    let configure =
        |b: CacheNodeBuilder| b.app(APP).store(store.clone()).lease(LEASE).prewarm(false);
    let mut cluster = LocalCluster::start(1, configure).await.unwrap();
    let addr = cluster.addrs()[0].clone();
    let cache = client(&cluster).await;
    let took = timed_put(&cache, "k", "v1").await;
    assert!(took < LEASE / 2, "a first process writes at once: {took:?}");
    cluster.stop_node(0).await;

    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let node = configure(cache_server::CacheNode::builder())
        .members([addr.clone()])
        .advertise(addr.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    let mut serving = LocalNode::serve(node.clone(), listener).unwrap();
    node.ready().await;
    let cache = client(&cluster).await;
    timed_put(&cache, "k", "v2").await;
    let waited = started.elapsed();
    assert!(
        waited >= LEASE - Duration::from_millis(100),
        "the restarted process wrote after {waited:?}"
    );
    assert!(waited < LEASE * 3, "{waited:?}");
    let took = timed_put(&cache, "k", "v3").await;
    assert!(
        took < LEASE / 2,
        "only the first lease length waits: {took:?}"
    );
    drop(cache);
    serving.stop().await.unwrap();
}

/// Moves a key that a silent holder holds a lease on from its node to an added one, then
/// writes it through the new owner. Returns how long after the lease was granted the write
/// completed.
async fn write_after_a_move(leased_writes: bool) -> Duration {
    let store = Arc::new(InMemory::new());
    let configure = |b: CacheNodeBuilder| {
        b.app(APP)
            .store(store.clone())
            .lease(LEASE)
            .prewarm(false)
            .leased_writes(leased_writes)
    };
    let (cluster, old, added, key) = one_node_and_an_added_one(configure).await;
    let cache = client(&cluster).await;
    cache.put(&key, "v1").await.unwrap();
    let mut holder = SilentHolder::open(&old).await;
    let leased_at = Instant::now();
    assert!(holder.read_leased(&key).await > 0);
    cache.set_members(None, vec![old, added]).await.unwrap();
    cache.put(&key, "v2").await.unwrap();
    let took = leased_at.elapsed();
    drop(holder);
    cluster.shutdown().await;
    took
}

/// At a change of members, the node that gives a key up revokes the leases on it before it
/// acknowledges the fence, and the key's new owner writes only after that acknowledgement:
/// a holder that never answers holds the new owner's first write until its lease has ended.
/// The negative control: when fences do not wait for holders, the new owner writes while the
/// old owner's lease is still valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_moves_only_once_the_old_owners_leases_are_revoked() {
    let took = write_after_a_move(true).await;
    assert!(took >= LEASE - Duration::from_millis(100), "{took:?}");
    let took = write_after_a_move(false).await;
    assert!(
        took < LEASE - Duration::from_millis(500),
        "the negative control waited for the lease: {took:?}"
    );
}

/// A cluster of one node, another node started but not yet a member, and a key that the
/// added node will own once it is: the cluster, the two addresses, the key.
async fn one_node_and_an_added_one(
    configure: impl Fn(CacheNodeBuilder) -> CacheNodeBuilder + Copy,
) -> (LocalCluster, String, String, String) {
    let mut cluster = LocalCluster::start(1, configure).await.unwrap();
    let old = cluster.addrs()[0].clone();
    let added = cluster.add_node(configure).await.unwrap();
    let after = cache_core::Membership::new(2, [old.clone(), added.clone()]).unwrap();
    let key = (0..)
        .map(|i| format!("moving/{i}"))
        .find(|k| after.owner(k) == added)
        .unwrap();
    (cluster, old, added, key)
}
