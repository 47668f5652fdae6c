//! Scale events: epochs, handoff, drain, pre-warming, advice — on real nodes on ephemeral
//! ports, through the client's public API.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_client::{CacheClient, Error, Tier};
use cache_proto::v1 as pb;
use cache_server::CacheNodeBuilder;
use cache_server::cluster::LocalCluster;
use cache_server::store::{InstrumentedStore, open_store};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

const APP: &str = "scale";

fn fast(b: CacheNodeBuilder, store: &Arc<dyn ObjectStore>) -> CacheNodeBuilder {
    b.app(APP)
        .store(store.clone())
        .gossip_interval(Duration::from_millis(50))
        .handoff_window(Duration::from_secs(20))
        .prewarm(false)
}

async fn client(addrs: Vec<String>) -> CacheClient {
    CacheClient::builder()
        .app(APP)
        .nodes(addrs)
        .timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap()
}

/// Polls `done` every 10 ms for up to 15 s.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Claims `epoch` for `members` straight in the store, as a controller with store access
/// can, telling no node.
async fn claim_in_store(store: &Arc<dyn ObjectStore>, epoch: u64, members: &[String]) {
    let record = cache_core::fence::EpochRecord {
        epoch,
        members: members.to_vec(),
    };
    store
        .put(
            &Path::from(cache_core::fence::EpochRecord::path(epoch)),
            record.to_bytes().into(),
        )
        .await
        .unwrap();
}

/// Each key's cached version at its home node, over every running node.
async fn cached_at_home(cluster: &LocalCluster, keys: &[String]) -> HashMap<String, String> {
    let mut found = HashMap::new();
    for node in cluster.nodes().iter().filter(|n| n.is_running()) {
        let membership = node.node.membership();
        for key in keys {
            if membership.owner(key) == node.addr
                && let Some(e) = node.node.entries().peek(key).await
            {
                found.insert(key.clone(), e.version.to_string());
            }
        }
    }
    found
}

/// A new epoch claimed in the store by a controller that told no node at all: every node
/// finds it by probing the store. Epochs no record backs, or claimed for another list, are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_converge_from_the_store_and_cannot_be_forged() {
    let store = open_store("memory:///").unwrap();
    let cluster = LocalCluster::start(3, |b| fast(b, &store)).await.unwrap();
    let addrs = cluster.addrs();
    let two: Vec<String> = addrs[..2].to_vec();
    claim_in_store(&store, 2, &two).await;
    eventually("every node at epoch 2", async || {
        cluster
            .nodes()
            .iter()
            .all(|n| n.node.membership().epoch() == 2)
    })
    .await;
    let mut sorted = two.clone();
    sorted.sort();
    assert_eq!(cluster.node(2).membership().members(), sorted.as_slice());

    // A relay of an epoch that no record claims is refused, and changes nothing.
    let mut admin = pb::admin_client::AdminClient::connect(format!("http://{}", addrs[0]))
        .await
        .unwrap();
    let forged = admin
        .set_members(pb::SetMembersRequest {
            epoch: 7,
            members: vec![addrs[0].clone()],
            relay: true,
        })
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::InvalidArgument, "{forged:?}");
    assert_eq!(cluster.node(0).membership().epoch(), 2);

    // Two controllers race for epoch 3 with different lists, through different nodes:
    // exactly one wins, and every node ends up with the winner's list.
    let a = client(vec![addrs[0].clone()]).await;
    let b = client(vec![addrs[1].clone()]).await;
    let (ra, rb) = tokio::join!(
        a.set_members(Some(3), addrs.clone()),
        b.set_members(Some(3), vec![addrs[1].clone()]),
    );
    assert!(ra.is_ok() != rb.is_ok(), "one winner: {ra:?} {rb:?}");
    let loser = if ra.is_ok() { rb } else { ra };
    assert!(
        matches!(loser, Err(Error::InvalidRequest(ref why)) if why.contains("already claimed")),
        "{loser:?}"
    );
    let winner = cluster.node(0).membership().members().to_vec();
    eventually("every node at the winner's epoch 3", async || {
        cluster
            .nodes()
            .iter()
            .all(|n| n.node.membership().epoch() == 3 && n.node.membership().members() == winner)
    })
    .await;
    // Epochs are claimed in order: skipping one is refused.
    assert!(a.set_members(Some(9), addrs.clone()).await.is_err());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_hands_every_entry_to_its_new_home() {
    let store = open_store("memory:///").unwrap();
    let mut cluster = LocalCluster::start(3, |b| fast(b, &store)).await.unwrap();
    let cache = client(cluster.addrs()).await;
    let keys: Vec<String> = (0..400).map(|i| format!("obj/{i}")).collect();
    for key in &keys {
        cache.put(key, key.clone()).await.unwrap();
    }
    let before = cached_at_home(&cluster, &keys).await;
    assert_eq!(before.len(), keys.len());

    let new = cluster.add_node(|b| fast(b, &store)).await.unwrap();
    let epoch = cache.set_members(None, cluster.running()).await.unwrap();
    let moved = keys.iter().filter(|k| cache.home_of(k) == new).count();
    assert!(moved > 40, "about a quarter of 400 keys move: {moved}");
    eventually("every entry at its new home", async || {
        cached_at_home(&cluster, &keys).await == before
    })
    .await;
    for node in cluster.nodes() {
        assert_eq!(node.node.membership().epoch(), epoch);
    }
    let received: u64 = cluster
        .nodes()
        .iter()
        .map(|n| n.node.stats().handoff_received)
        .sum();
    assert_eq!(received as usize, moved);
    // Reads of moved keys are hits at the new home.
    for key in keys.iter().filter(|k| cache.home_of(k) == new).take(20) {
        let got = cache.get_entry(key).await.unwrap().unwrap();
        assert_eq!((got.value.as_ref(), got.tier), (key.as_bytes(), Tier::Home));
    }
    cluster.shutdown().await;
}

/// Just after a change, a new owner's miss asks the key's previous owner (tier handoff)
/// before the store. The previous owners here hand nothing over themselves, so every moved
/// key must come through `Peek`: without it, they would all be store reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_asks_the_previous_owner_before_the_store() {
    let store = open_store("memory:///").unwrap();
    let mut cluster = LocalCluster::start(2, |b| fast(b, &store).handoff(false))
        .await
        .unwrap();
    let cache = client(cluster.addrs()).await;
    let keys: Vec<String> = (0..200).map(|i| format!("k/{i}")).collect();
    for key in &keys {
        cache.put(key, "v").await.unwrap();
    }
    let new = cluster.add_node(|b| fast(b, &store)).await.unwrap();
    let epoch = cache.set_members(None, cluster.running()).await.unwrap();
    // Moved keys are served from caches once every previous owner is fenced (sealed).
    eventually("the new epoch sealed", async || {
        cluster.nodes()[2].node.stats().sealed == epoch
    })
    .await;
    let moved: Vec<&String> = keys.iter().filter(|k| cache.home_of(k) == new).collect();
    assert!(moved.len() > 30, "{} keys moved", moved.len());
    let mut tiers = HashMap::new();
    for key in &moved {
        let got = cache.get_entry(key).await.unwrap().unwrap();
        *tiers.entry(format!("{:?}", got.tier)).or_insert(0) += 1;
    }
    assert_eq!(tiers.get("Handoff"), Some(&moved.len()), "{tiers:?}");
    let stats = cluster.nodes()[2].node.stats();
    assert_eq!(stats.handoff_received, 0);
    assert_eq!(stats.handoff_hits, moved.len() as u64);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_loses_no_entry() {
    let store = open_store("memory:///").unwrap();
    let mut cluster = LocalCluster::start(4, |b| fast(b, &store)).await.unwrap();
    let cache = client(cluster.addrs()).await;
    let keys: Vec<String> = (0..400).map(|i| format!("d/{i}")).collect();
    for key in &keys {
        cache.put(key, key.clone()).await.unwrap();
    }
    let before = cached_at_home(&cluster, &keys).await;
    let leaving = cluster.addrs()[3].clone();
    let staying: Vec<String> = cluster.addrs()[..3].to_vec();
    cache.set_members(None, staying).await.unwrap();
    eventually("the removed node drained", async || {
        cluster.node(3).is_drained()
    })
    .await;
    let mut admin = pb::admin_client::AdminClient::connect(format!("http://{leaving}"))
        .await
        .unwrap();
    let health = admin
        .health(pb::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), pb::health_reply::Status::Drained);
    cluster.stop_node(3).await;
    let after = cached_at_home(&cluster, &keys).await;
    assert_eq!(
        after, before,
        "every entry is cached at its new home with its version"
    );
    for key in keys.iter().take(50) {
        assert_eq!(
            cache.get_entry(key).await.unwrap().unwrap().tier,
            Tier::Home
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_handoff_never_bring_back_an_old_version() {
    let store = open_store("memory:///").unwrap();
    let mut cluster = LocalCluster::start(3, |b| fast(b, &store)).await.unwrap();
    let cache = client(cluster.addrs()).await;
    let keys: Vec<String> = (0..300).map(|i| format!("w/{i}")).collect();
    for key in &keys {
        cache.put(key, "v0").await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (cache, keys, stop) = (cache.clone(), keys.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = &keys[(n as usize * 7 + w * 13) % keys.len()];
                    cache.put(key, format!("w{w}-{n}")).await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    cluster.add_node(|b| fast(b, &store)).await.unwrap();
    cache.set_members(None, cluster.running()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for w in writers {
        writes += w.await.unwrap();
    }
    assert!(writes > 100, "{writes} writes");
    // Let the handoff finish, then compare every cached version with the store's.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cached = cached_at_home(&cluster, &keys).await;
    for (key, version) in &cached {
        let head = store.head(&Path::from(key.as_str())).await.unwrap();
        assert_eq!(
            Some(version),
            head.e_tag.as_ref(),
            "{key} cached at an old version"
        );
    }
    for key in &keys {
        let got = cache.get_with_version(key).await.unwrap().unwrap();
        let head = store.head(&Path::from(key.as_str())).await.unwrap();
        assert_eq!(Some(&got.1), head.e_tag.as_ref(), "{key}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_keep_serving_through_scale_out_and_scale_in() {
    let store = open_store("memory:///").unwrap();
    let mut cluster = LocalCluster::start(3, |b| fast(b, &store)).await.unwrap();
    let admin_client = client(cluster.addrs()).await;
    let keys: Vec<String> = (0..200).map(|i| format!("s/{i}")).collect();
    for key in &keys {
        admin_client.put(key, "v").await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for c in 0..3 {
        let cache = client(cluster.addrs()).await;
        let (keys, stop, failures, ops) =
            (keys.clone(), stop.clone(), failures.clone(), ops.clone());
        load.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let key = &keys[(i * 31) % keys.len()];
                let result = if i % 10 == 0 {
                    cache.put(key, "v").await.map(|_| ())
                } else {
                    cache.get(key).await.map(|_| ())
                };
                if let Err(e) = result {
                    eprintln!("{key}: {e}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                ops.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Scale out 3 → 4.
    cluster.add_node(|b| fast(b, &store)).await.unwrap();
    admin_client
        .set_members(None, cluster.running())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Scale in 4 → 3: remove node 0 from the list, let it drain, stop it.
    let remaining: Vec<String> = cluster.running().into_iter().skip(1).collect();
    admin_client.set_members(None, remaining).await.unwrap();
    eventually("node 0 drained", async || cluster.node(0).is_drained()).await;
    cluster.stop_node(0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let ops = ops.load(Ordering::Relaxed);
    assert!(ops > 300, "{ops} requests");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "of {ops} requests");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewarming_after_scale_to_zero_brings_the_hot_keys_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&format!("file://{}", dir.path().display())).unwrap();
    let configure = |b: CacheNodeBuilder| {
        b.app(APP)
            .store(store.clone())
            .gossip_interval(Duration::from_millis(50))
            .capacity_bytes(4 << 20)
    };
    let cluster = LocalCluster::start(2, configure).await.unwrap();
    let cache = client(cluster.addrs()).await;
    let keys: Vec<String> = (0..300).map(|i| format!("p/{i}")).collect();
    for key in &keys {
        cache.put(key, Bytes::from(vec![7u8; 2048])).await.unwrap();
    }
    let hot = &keys[..40];
    for _ in 0..5 {
        for key in hot {
            cache.get(key).await.unwrap();
        }
    }
    // Scale to zero: a graceful shutdown writes each node's manifest.
    cluster.shutdown().await;
    let manifests = std::fs::read_dir(dir.path().join("_cachelet/prewarm"))
        .unwrap()
        .count();
    assert_eq!(manifests, 2);
    match cache.get("_cachelet/prewarm/x.json").await {
        Err(Error::InvalidKey(reason)) => assert!(reason.contains("reserved")),
        other => panic!("the reserved prefix must not be served: {other:?}"),
    }

    // And back, on new ports: the new nodes load what they own, hottest first.
    let cluster = LocalCluster::start(2, configure).await.unwrap();
    eventually("pre-warming", async || {
        cluster
            .nodes()
            .iter()
            .map(|n| n.node.stats().prewarmed)
            .sum::<u64>()
            >= hot.len() as u64
    })
    .await;
    let cache = client(cluster.addrs()).await;
    for key in hot {
        let got = cache.get_entry(key).await.unwrap().unwrap();
        assert_eq!(got.tier, Tier::Home, "{key} was pre-warmed");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advice_asks_for_a_node_when_the_working_set_outgrows_memory() {
    let store = open_store("memory:///").unwrap();
    let cluster = LocalCluster::start(2, |b| fast(b, &store).capacity_bytes(64 * 1024))
        .await
        .unwrap();
    let cache = client(cluster.addrs()).await;
    let keys: Vec<String> = (0..600).map(|i| format!("a/{i}")).collect();
    for key in &keys {
        cache.put(key, Bytes::from(vec![1u8; 1024])).await.unwrap();
    }
    for _ in 0..2 {
        for key in &keys {
            cache.get(key).await.unwrap();
        }
    }
    let advice = cache.advice().await.unwrap();
    assert_eq!(advice.current_nodes, 2);
    assert_eq!(advice.desired_nodes, 3, "{}", advice.reason);
    assert!(advice.reason.contains("working set"), "{}", advice.reason);
    assert!(advice.ghost_hit_ratio > 0.05);
    cluster.shutdown().await;
}

/// A client adopts the highest epoch any node reports, not the first answer it gets: here the
/// first node it asks is behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_take_the_highest_epoch_any_node_reports() {
    let store = open_store("memory:///").unwrap();
    // Node 0 reaches the store through a wrapper that can cut it off.
    let cut = cache_server::store::InstrumentedStore::new(store.clone());
    let built = AtomicU64::new(0);
    let cluster = LocalCluster::start(2, |b| {
        let own: Arc<dyn ObjectStore> = if built.fetch_add(1, Ordering::SeqCst) == 0 {
            Arc::new(cut.clone())
        } else {
            store.clone()
        };
        b.app(APP)
            .store(own)
            .gossip_interval(Duration::from_secs(3600))
            .prewarm(false)
    })
    .await
    .unwrap();
    let addrs = cluster.addrs();
    claim_in_store(&store, 2, &addrs).await;
    // Only node 1 hears of epoch 2. Node 0 cannot read the record (its store is cut off), so
    // it stays behind however it hears of it.
    cut.set_failing(true);
    let mut admin = pb::admin_client::AdminClient::connect(format!("http://{}", addrs[1]))
        .await
        .unwrap();
    admin
        .set_members(pb::SetMembersRequest {
            epoch: 2,
            members: addrs.clone(),
            relay: true,
        })
        .await
        .unwrap();
    assert_eq!(cluster.node(0).membership().epoch(), 1);
    let cache = client(addrs.clone()).await;
    assert_eq!(cache.membership().epoch(), 2);
    assert_eq!(cluster.node(0).membership().epoch(), 1);
    // A request routed by epoch 2 brings node 0 up to date before it is served.
    cut.set_failing(false);
    let on_zero = (0..1000)
        .map(|i| format!("z/{i}"))
        .find(|k| cache.home_of(k) == addrs[0])
        .unwrap();
    cache.put(&on_zero, "v").await.unwrap();
    assert_eq!(cluster.node(0).membership().epoch(), 2);
    cluster.shutdown().await;
}

/// A write whose store call the node abandoned at its store deadline may still land (a local
/// file written on a blocking thread, a request already sent). Until it could have landed, the
/// key stays fenced at its old owner: the new owner's write must come after it, not be
/// overwritten by it. The `cache-bench check` run found exactly that when a node was stopped
/// in the middle of a write: the store timer fired on resume and released the key while the
/// file was still being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_abandoned_at_the_store_deadline_cannot_land_after_the_next_owner_writes() {
    let inner = open_store("memory:///").unwrap();
    let late = InstrumentedStore::new(inner.clone());
    let store: Arc<dyn ObjectStore> = Arc::new(late.clone());
    let timeout = Duration::from_millis(300);
    let mut cluster = LocalCluster::start(1, |b| fast(b, &store).store_timeout(timeout))
        .await
        .unwrap();
    let cache = client(cluster.addrs()).await;
    let old = cluster.addrs()[0].clone();
    let added = cluster
        .add_node(|b| fast(b, &store).store_timeout(timeout))
        .await
        .unwrap();
    let after = cache_core::Membership::new(2, [old.clone(), added.clone()]).unwrap();
    let key = (0..)
        .map(|i| format!("moving/{i}"))
        .find(|k| after.owner(k) == added)
        .unwrap();
    cache.put(&key, "first").await.unwrap();

    // Given up at 300 ms, landing at 1 s.
    late.set_late_writes(Duration::from_secs(1));
    match cache.put(&key, "late").await {
        Err(Error::Unavailable(why)) => assert!(why.contains("did not answer"), "{why}"),
        other => panic!("the write must time out: {other:?}"),
    }
    late.set_late_writes(Duration::ZERO);
    cache
        .set_members(None, vec![old, added.clone()])
        .await
        .unwrap();
    cache.put(&key, "next").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let stored = inner.get(&Path::from(key.as_str())).await.unwrap();
    assert_eq!(
        stored.bytes().await.unwrap().as_ref(),
        b"next",
        "the abandoned write landed after the next owner's write"
    );
    cluster.shutdown().await;
}
