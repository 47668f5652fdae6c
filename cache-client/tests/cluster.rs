//! A 3-node cluster on ephemeral loopback ports, exercised through the client's public API.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_client::{CacheClient, Error, Tier};
use cache_core::Limits;
use cache_server::cluster::LocalCluster;
use cache_server::store::{InstrumentedStore, open_store};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

const APP: &str = "testapp";

async fn client(cluster: &LocalCluster) -> CacheClient {
    CacheClient::builder()
        .app(APP)
        .nodes(cluster.addrs())
        .timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap()
}

async fn cluster_over(store: Arc<dyn ObjectStore>) -> LocalCluster {
    LocalCluster::start(3, |b| {
        b.app(APP).store(store.clone()).capacity_bytes(4 << 20)
    })
    .await
    .unwrap()
}

/// One node over `store`.
async fn one_node_over(store: Arc<dyn ObjectStore>) -> LocalCluster {
    LocalCluster::start(1, |b| b.app(APP).store(store.clone()))
        .await
        .unwrap()
}

async fn read_store(store: &dyn ObjectStore, key: &str) -> Option<Bytes> {
    match store.get(&Path::from(key)).await {
        Ok(r) => Some(r.bytes().await.unwrap()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_round_trip() {
    let store = open_store("memory:///").unwrap();
    let cluster = cluster_over(store.clone()).await;
    let cache = client(&cluster).await;

    assert_eq!(cache.get("nothing/here").await.unwrap(), None);
    for i in 0..60 {
        let key = format!("dir/obj-{i}.json");
        let version = cache.put(&key, format!("value {i}")).await.unwrap();
        assert!(!version.is_empty());
    }
    for i in 0..60 {
        let key = format!("dir/obj-{i}.json");
        let got = cache.get_entry(&key).await.unwrap().unwrap();
        assert_eq!(got.value, format!("value {i}"));
        // Written through, so the home node holds it.
        assert_eq!(got.tier, Tier::Home, "{key}");
    }
    cache.delete("dir/obj-7.json").await.unwrap();
    assert_eq!(cache.get("dir/obj-7.json").await.unwrap(), None);
    assert_eq!(read_store(&*store, "dir/obj-7.json").await, None);
    // Deleting a missing blob succeeds.
    cache.delete("dir/obj-7.json").await.unwrap();

    let many = cache
        .get_many(["dir/obj-1.json", "dir/obj-7.json", "dir/obj-2.json"])
        .await
        .unwrap();
    assert_eq!(many[0].as_deref(), Some(&b"value 1"[..]));
    assert_eq!(many[1], None);
    assert_eq!(many[2].as_deref(), Some(&b"value 2"[..]));

    // Every key lives on exactly its home node.
    let stats = cache.stats().await.unwrap();
    let entries: u64 = stats
        .nodes
        .iter()
        .map(|n| n.stats.as_ref().unwrap().entries)
        .sum();
    assert_eq!(entries, 59);
    for (i, node) in cluster.nodes().iter().enumerate() {
        for k in 0..60 {
            let key = format!("dir/obj-{k}.json");
            let held = node.node.entries().peek(&key).await.is_some();
            assert_eq!(
                held,
                k != 7 && cache.home_of(&key) == node.addr,
                "node {i} {key}"
            );
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_a_blob_written_directly_to_the_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("reports")).unwrap();
    std::fs::write(dir.path().join("foo"), b"written beside the cache").unwrap();
    std::fs::write(dir.path().join("reports/q1.csv"), b"a,b\n1,2\n").unwrap();
    let store = open_store(&format!("file://{}", dir.path().display())).unwrap();
    let cluster = cluster_over(store).await;
    let cache = client(&cluster).await;

    let first = cache.get_entry("foo").await.unwrap().unwrap();
    assert_eq!(first.value.as_ref(), b"written beside the cache");
    assert_eq!(first.tier, Tier::Store);
    let again = cache.get_entry("foo").await.unwrap().unwrap();
    assert_eq!((again.tier, &again.version), (Tier::Home, &first.version));
    assert_eq!(
        cache.get("reports/q1.csv").await.unwrap().as_deref(),
        Some(&b"a,b\n1,2\n"[..])
    );

    // Write-through: the file on disk holds the new value.
    cache.put("foo", "new").await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("foo")).unwrap(), b"new");
    assert_eq!(
        cache.get("foo").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_reaches_the_store_before_the_put_returns() {
    let store = open_store("memory:///").unwrap();
    let cluster = cluster_over(store.clone()).await;
    let cache = client(&cluster).await;
    for round in 0..3 {
        let value = format!("round {round}");
        let version = cache.put("config/app.json", value.clone()).await.unwrap();
        assert_eq!(read_store(&*store, "config/app.json").await.unwrap(), value);
        let got = cache.get_entry("config/app.json").await.unwrap().unwrap();
        assert_eq!((got.value, got.version), (Bytes::from(value), version));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_on_one_key_make_one_store_read() {
    let inner = open_store("memory:///").unwrap();
    inner
        .put(&Path::from("hot/key"), Bytes::from_static(b"hot").into())
        .await
        .unwrap();
    let counted = InstrumentedStore::new(inner);
    // Slow enough that every get arrives while the first read is in progress.
    counted.set_latency(Duration::from_millis(200));
    let cluster = cluster_over(Arc::new(counted.clone())).await;
    let clients = [client(&cluster).await, client(&cluster).await];
    // Starting nodes read their membership epoch from the store: count from here.
    let before = counted.calls().gets;
    let gets = (0..64).map(|i| {
        let c = clients[i % 2].clone();
        tokio::spawn(async move { c.get("hot/key").await })
    });
    for get in futures::future::join_all(gets).await {
        assert_eq!(get.unwrap().unwrap().as_deref(), Some(&b"hot"[..]));
    }
    assert_eq!(counted.calls().gets - before, 1, "{:?}", counted.calls());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_capacity_holds_under_ten_times_the_data() {
    let store = open_store("memory:///").unwrap();
    let capacity = 1u64 << 20;
    let cluster = LocalCluster::start(3, |b| {
        b.app(APP).store(store.clone()).capacity_bytes(capacity)
    })
    .await
    .unwrap();
    let cache = client(&cluster).await;
    let value = Bytes::from(vec![42u8; 4096]);
    let total = 10 * 3 * capacity;
    let n = total / value.len() as u64;
    let puts = (0..n).map(|i| {
        let (cache, value) = (cache.clone(), value.clone());
        async move { cache.put(&format!("blob/{i}"), value).await }
    });
    for put in futures::future::join_all(puts).await {
        put.unwrap();
    }
    for node in cluster.nodes() {
        node.node.entries().sync().await;
        let s = node.node.stats();
        assert!(
            s.bytes_used <= capacity,
            "{} holds {} > {capacity}",
            node.addr,
            s.bytes_used
        );
        assert!(s.evictions > 0);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_succeed_through_the_fallback_when_a_node_dies() {
    let store = open_store("memory:///").unwrap();
    let mut cluster = cluster_over(store.clone()).await;
    let cache = client(&cluster).await;
    let keys: Vec<String> = (0..90).map(|i| format!("k/{i}")).collect();
    for key in &keys {
        cache.put(key, key.clone()).await.unwrap();
    }
    let victim = cluster.addrs()[1].clone();
    let victims_keys = keys.iter().filter(|k| cache.home_of(k) == victim).count();
    assert!(victims_keys > 0);
    cluster.stop_node(1).await;

    for key in &keys {
        let got = cache
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(got.as_deref(), Some(key.as_bytes()));
    }
    let c = cache.client_stats();
    assert_eq!(c.fallbacks as usize, victims_keys, "{c:?}");
    assert_eq!(c.errors, 0);
    // Writes to a dead home node fail clearly instead of bypassing its cache.
    let victim_key = keys.iter().find(|k| cache.home_of(k) == victim).unwrap();
    assert!(matches!(
        cache.put(victim_key, "x").await,
        Err(Error::Unavailable(_))
    ));
    // The fallback node served from the store and cached nothing for the dead node.
    for node in cluster.nodes().iter().filter(|n| n.is_running()) {
        assert_eq!(node.node.entries().peek(victim_key).await, None);
        assert!(node.node.stats().fallback_reads <= victims_keys as u64 + 1);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_the_node_keeps_serving() {
    let store = open_store("memory:///").unwrap();
    let limits = Limits::default().with_max_value_bytes(64 * 1024);
    let cluster = LocalCluster::start(3, |b| b.app(APP).store(store.clone()).limits(limits))
        .await
        .unwrap();
    let cache = client(&cluster).await;
    cache.put("ok", "fine").await.unwrap();

    let long = "k".repeat(2048);
    for (key, why) in [
        ("", "empty"),
        (long.as_str(), "longer than"),
        ("a//b", "object path"),
        ("/abs", "starts or ends"),
    ] {
        match cache.get(key).await {
            Err(Error::InvalidKey(reason)) => assert!(reason.contains(why), "{reason}"),
            other => panic!("{key:?}: {other:?}"),
        }
        assert!(matches!(
            cache.put(key, "v").await,
            Err(Error::InvalidKey(_))
        ));
    }
    match cache.put("big", vec![0u8; 64 * 1024 + 1]).await {
        Err(e @ Error::ValueTooLarge(_)) => assert!(e.to_string().contains("65537"), "{e}"),
        other => panic!("{other:?}"),
    }
    let other_app = CacheClient::builder()
        .app("someone-else")
        .nodes(cluster.addrs())
        .build()
        .await
        .unwrap();
    match other_app.get("ok").await {
        // The message names neither app: a caller learns nothing of what the node serves.
        Err(e @ Error::UnknownApp(_)) => assert!(
            !e.to_string().contains("someone-else") && e.to_string().contains("does not serve"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }

    // The nodes check keys themselves too: send bad keys past the client's validation.
    let mut raw =
        cache_proto::v1::data_client::DataClient::connect(format!("http://{}", cluster.addrs()[0]))
            .await
            .unwrap();
    for key in ["", long.as_str(), "a/../b", "x\u{1}y"] {
        let status = raw
            .get(cache_proto::v1::GetRequest {
                app: APP.into(),
                key: key.into(),
                fallback: false,
                epoch: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{key:?}");
        assert!(matches!(Error::from_status(&status), Error::InvalidKey(_)));
    }
    let status = raw
        .batch(cache_proto::v1::Batch {
            app: "nope".into(),
            timeout_ms: 0,
            ops: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(Error::from_status(&status), Error::UnknownApp(_)));

    // Still serving.
    assert_eq!(
        cache.get("ok").await.unwrap().as_deref(),
        Some(&b"fine"[..])
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_unavailable_then_recovers() {
    let counted = InstrumentedStore::new(open_store("memory:///").unwrap());
    let cluster = cluster_over(Arc::new(counted.clone())).await;
    let cache = client(&cluster).await;
    cache.put("cached", "yes").await.unwrap();

    counted.set_failing(true);
    assert!(matches!(
        cache.get("uncached").await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        cache.put("new", "v").await,
        Err(Error::Unavailable(_))
    ));
    // What is cached is still served.
    assert_eq!(
        cache.get("cached").await.unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    counted.set_failing(false);
    cache.put("new", "v").await.unwrap();
    assert_eq!(cache.get("new").await.unwrap().as_deref(), Some(&b"v"[..]));
    let errors: u64 = cluster
        .nodes()
        .iter()
        .map(|n| n.node.stats().store_errors)
        .sum();
    assert_eq!(errors, 2);
    cluster.shutdown().await;
}

/// One node over an instrumented in-memory store, with a 200 ms store timeout.
async fn one_node_with_a_short_store_timeout() -> (InstrumentedStore, LocalCluster) {
    let instrumented = InstrumentedStore::new(open_store("memory:///").unwrap());
    let store: Arc<dyn ObjectStore> = Arc::new(instrumented.clone());
    let cluster = LocalCluster::start(1, |b| {
        b.app(APP)
            .store(store.clone())
            .store_timeout(Duration::from_millis(200))
    })
    .await
    .unwrap();
    (instrumented, cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_times_out_as_unavailable() {
    let (slow, cluster) = one_node_with_a_short_store_timeout().await;
    let cache = client(&cluster).await;
    // The store turns slow once the node runs (it reads its epoch from the store to start).
    slow.set_latency(Duration::from_secs(30));
    match cache.get("k").await {
        Err(Error::Unavailable(why)) => assert!(why.contains("did not answer"), "{why}"),
        other => panic!("{other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_while_a_client_holds_a_stream() {
    let store = open_store("memory:///").unwrap();
    let cluster = cluster_over(store).await;
    let cache = client(&cluster).await;
    cache.put("k", "v").await.unwrap();
    // The client's streams are open; shutdown must still complete (stop_node waits up to 10 s
    // and reports a node that did not stop).
    let started = std::time::Instant::now();
    cluster.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(cache.get("k").await.is_err());
}

/// A write whose answer is lost after the store applied it (an unknown outcome) must not
/// leave the old value cached: the next read returns what the store holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_of_unknown_outcome_leaves_no_stale_copy() {
    let (flaky, cluster) = one_node_with_a_short_store_timeout().await;
    let cache = client(&cluster).await;
    cache.put("k", "old").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"old"[..]));
    flaky.set_write_acks_lost(true);
    match cache.put("k", "new").await {
        Err(Error::Unavailable(why)) => assert!(why.contains("did not answer"), "{why}"),
        other => panic!("{other:?}"),
    }
    flaky.set_write_acks_lost(false);
    // The write landed although it failed: reads must not serve the old copy.
    for _ in 0..3 {
        assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
    }
    let node = cluster.node(0);
    assert!(node.entries().is_suspect("k"));
    assert_eq!(
        node.entries().peek("k").await,
        None,
        "a suspect key's reads are not cached"
    );
    cluster.shutdown().await;
}

/// A conditional put is checked by the store itself: a writer that goes straight to the store
/// between the put's start and its write makes it fail, instead of being overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_writer_cannot_slip_into_a_conditional_put() {
    let inner = open_store("memory:///").unwrap();
    let slow = InstrumentedStore::new(inner.clone());
    let cluster = one_node_over(Arc::new(slow.clone())).await;
    let cache = client(&cluster).await;
    let v1 = cache.put("c", "one").await.unwrap();
    slow.set_put_latency(Duration::from_millis(300));
    let racing = {
        let cache = cache.clone();
        let v1 = v1.clone();
        tokio::spawn(async move { cache.put_if_version("c", "two", &v1).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Straight to the store, while the conditional put waits to write.
    inner
        .put(&Path::from("c"), Bytes::from_static(b"direct").into())
        .await
        .unwrap();
    match racing.await.unwrap() {
        Err(Error::VersionMismatch(_)) => {}
        other => panic!("the conditional put must lose to the direct write: {other:?}"),
    }
    slow.set_put_latency(Duration::ZERO);
    let got = cache
        .get_entry_with("c", cache_client::Consistency::Strict)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.value.as_ref(), b"direct");
    // "Only if absent" is checked by the store too.
    assert!(matches!(
        cache.put_if_version("c", "again", "").await,
        Err(Error::VersionMismatch(_))
    ));
    cache.put_if_version("fresh", "first", "").await.unwrap();
    cluster.shutdown().await;
}

/// On local files, which cannot check a version themselves, a conditional put reads the
/// version and then writes; a delete of the same key through the cache must not fall in
/// between (the `cache-bench check` run found exactly that as a lost delete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_local_files_a_delete_does_not_split_a_conditional_put() {
    let dir = tempfile::tempdir().unwrap();
    let files = open_store(&format!("file://{}", dir.path().display())).unwrap();
    let slow = InstrumentedStore::new(files);
    let cluster = one_node_over(Arc::new(slow.clone())).await;
    let cache = client(&cluster).await;
    let v1 = cache.put("c", "one").await.unwrap();
    // The first conditional put finds out that the store cannot check versions.
    let v1 = cache.put_if_version("c", "one", &v1).await.unwrap();
    slow.set_put_latency(Duration::from_millis(300));
    let cas = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.put_if_version("c", "two", &v1).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    cache.delete("c").await.unwrap();
    let cas = cas.await.unwrap();
    slow.set_put_latency(Duration::ZERO);
    // The delete finished after the conditional put began, so whatever the conditional put
    // did, the delete came last: the blob is gone.
    assert!(cas.is_ok(), "{cas:?}");
    assert_eq!(
        cache
            .get_entry_with("c", cache_client::Consistency::Strict)
            .await
            .unwrap(),
        None
    );
    cluster.shutdown().await;
}

/// A client in the same process as a node calls it directly for the keys it owns: no op goes
/// over the network for them, and what it reads and writes is what every other client reads
/// and writes. Keys of other nodes go over the network as before, and after a change of
/// members the direct calls follow ownership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_is_called_directly_for_the_keys_it_owns() {
    let store = open_store("memory:///").unwrap();
    let mut cluster = cluster_over(store.clone()).await;
    let embedded = Arc::new(cluster.node(0).clone());
    let own = cluster.addrs()[0].clone();
    let local = CacheClient::builder()
        .app(APP)
        .nodes(cluster.addrs())
        .embedded(embedded)
        .build()
        .await
        .unwrap();
    let remote = client(&cluster).await;
    let keys: Vec<String> = (0..60).map(|i| format!("embedded/{i}")).collect();
    let (mine, theirs): (Vec<&String>, Vec<&String>) =
        keys.iter().partition(|k| local.home_of(k) == own);
    assert!(!mine.is_empty() && !theirs.is_empty());

    let before = local.client_stats();
    for key in &mine {
        local.put(key, format!("local {key}")).await.unwrap();
        assert_eq!(
            local.get(key).await.unwrap().as_deref(),
            Some(format!("local {key}").as_bytes())
        );
        // Another client, over the network, reads what the direct call wrote...
        assert_eq!(
            remote.get(key).await.unwrap().as_deref(),
            Some(format!("local {key}").as_bytes())
        );
        // ...and the direct call reads what it writes.
        remote.put(key, format!("remote {key}")).await.unwrap();
        assert_eq!(
            local.get(key).await.unwrap().as_deref(),
            Some(format!("remote {key}").as_bytes())
        );
    }
    let after = local.client_stats();
    assert_eq!(
        after.ops_sent, before.ops_sent,
        "no op went over the network"
    );
    assert_eq!(
        after.direct_calls - before.direct_calls,
        3 * mine.len() as u64
    );
    for key in &theirs {
        local.put(key, "v").await.unwrap();
    }
    let last = local.client_stats();
    assert_eq!(last.ops_sent - after.ops_sent, theirs.len() as u64);
    assert_eq!(last.direct_calls, after.direct_calls);

    // A node joins and takes some of the embedded node's keys: direct calls stop for those
    // (the embedded node answers them with its new member list) and go over the network.
    let added = cluster
        .add_node(|b| b.app(APP).store(store.clone()))
        .await
        .unwrap();
    let mut members = cluster.addrs();
    members.retain(|m| *m != added);
    members.push(added.clone());
    remote.set_members(None, members).await.unwrap();
    for key in &mine {
        assert_eq!(
            local.get(key).await.unwrap().as_deref(),
            Some(format!("remote {key}").as_bytes())
        );
    }
    let moved = mine.iter().filter(|k| local.home_of(k) == added).count();
    assert!(moved > 0, "none of the embedded node's keys moved");
    cluster.shutdown().await;
}

/// A write whose store call never ends keeps its key fenced only up to the abandon limit:
/// then the node drops the call, counts it, and the key takes writes again. Without the
/// limit (the control: a limit longer than the test), the next write cannot be admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_call_that_never_ends_is_abandoned_at_the_limit() {
    for (limit, abandoned) in [
        (Duration::from_millis(300), true),
        (Duration::from_secs(60), false),
    ] {
        let hung = InstrumentedStore::new(open_store("memory:///").unwrap());
        let store: Arc<dyn ObjectStore> = Arc::new(hung.clone());
        let cluster = LocalCluster::start(1, |b| {
            b.app(APP)
                .store(store.clone())
                .store_timeout(Duration::from_millis(200))
                .abandon_writes_after(limit)
        })
        .await
        .unwrap();
        let cache = client(&cluster).await;
        cache.put("k", "one").await.unwrap();
        hung.set_write_acks_lost(true);
        assert!(matches!(
            cache.put("k", "two").await,
            Err(Error::Unavailable(_))
        ));
        hung.set_write_acks_lost(false);
        let stats = cluster.node(0).stats();
        assert_eq!(stats.writes_outlived, 1, "{stats:?}");
        // A newer epoch is sealed only once the node has fenced itself, which waits for
        // the write in flight: only once the call is abandoned.
        let epoch = cache.set_members(None, cluster.addrs()).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while cluster.node(0).stats().sealed < epoch && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sealed = cluster.node(0).stats().sealed >= epoch;
        assert_eq!(sealed, abandoned, "limit {limit:?}");
        assert_eq!(
            cluster.node(0).stats().writes_abandoned,
            u64::from(abandoned)
        );
        cluster.shutdown().await;
    }
}

/// A node embedded through the library serves a Unix domain socket beside its TCP listener,
/// and a client whose node list names the socket reaches it there. The node advertises a TCP
/// address nothing listens on, so every call that succeeds went over the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_serves_a_unix_socket_beside_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sock");
    let unreachable = "127.0.0.1:1";
    let listeners = cache_server::Listeners {
        tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        unix: Some(tokio::net::UnixListener::bind(&path).unwrap()),
    };
    let node = cache_server::CacheNode::builder()
        .app(APP)
        .store(open_store("memory:///").unwrap())
        .members([unreachable])
        .advertise(unreachable)
        .build()
        .unwrap();
    let mut serving = cache_server::cluster::LocalNode::serve(node, listeners).unwrap();
    let cache = CacheClient::builder()
        .app(APP)
        .nodes([format!("unix:{}", path.display())])
        .timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    assert_eq!(cache.membership().members(), [unreachable]);
    cache.put("k", "v").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    serving.stop().await.unwrap();
}
