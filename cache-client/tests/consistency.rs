//! Consistency modes and the local tier, checked on recorded histories.
//!
//! Several clients with local tiers read and write a few keys concurrently, while another
//! writer writes the blob store directly. Every operation is recorded with its start and end
//! on one clock, and `cache_core::history::check` looks for a read that missed a write which
//! finished before the read began.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_client::{CacheClient, Consistency, Error, LocalAdmission, Tier};
use cache_core::clock::{Clock, ManualClock, SystemClock};
use cache_core::history::{Action, Event, check};
use cache_server::cluster::LocalCluster;
use cache_server::store::open_store;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

const APP: &str = "consistency";
const KEYS: usize = 3;

fn key(i: usize) -> String {
    format!("h/{i}")
}

fn value_of(id: u64) -> Bytes {
    Bytes::from(format!("id:{id}"))
}

fn id_of(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.strip_prefix("id:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected value {bytes:?}"))
}

/// Records events on one clock.
struct Recorder {
    clock: Arc<dyn Clock>,
    base: Instant,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn new(clock: Arc<dyn Clock>) -> Self {
        let base = clock.now();
        Self {
            clock,
            base,
            events: Mutex::default(),
        }
    }

    fn now(&self) -> u64 {
        self.clock
            .now()
            .saturating_duration_since(self.base)
            .as_nanos() as u64
    }

    fn record(&self, key: &str, action: Action, start: u64, client: &str) {
        let end = self.now();
        self.events.lock().unwrap().push(Event {
            key: key.to_owned(),
            action,
            start,
            end,
            client: client.to_owned(),
        });
    }
}

struct Setup {
    consistency: Consistency,
    invalidations: bool,
    /// Whether the direct store writes count for the check (only `Strict` promises them).
    direct_counted: bool,
    /// Allowed staleness in the check.
    staleness: Duration,
    /// A manual clock, advanced in the background, for `Bounded`.
    manual: Option<ManualClock>,
}

async fn run_history(setup: Setup) -> Result<(), String> {
    let store = open_store("memory:///").unwrap();
    let cluster = LocalCluster::start(3, |b| b.app(APP).store(store.clone()))
        .await
        .unwrap();
    let clock: Arc<dyn Clock> = match &setup.manual {
        Some(m) => Arc::new(m.clone()),
        None => Arc::new(SystemClock),
    };
    let rec = Arc::new(Recorder::new(clock.clone()));
    let ids = Arc::new(AtomicU64::new(1000));
    for k in 0..KEYS {
        // The initial values, written before time 0 of the history.
        store
            .put(&Path::from(key(k)), value_of(k as u64).into())
            .await
            .unwrap();
    }
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            CacheClient::builder()
                .app(APP)
                .nodes(cluster.addrs())
                .consistency(setup.consistency)
                .local_capacity_bytes(1 << 20)
                .invalidations(setup.invalidations)
                .clock(clock.clone())
                .build()
                .await
                .unwrap(),
        );
    }
    let stop_clock = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let advancer = setup.manual.clone().map(|m| {
        let stop = stop_clock.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                m.advance(Duration::from_micros(200));
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    });

    let mut tasks = Vec::new();
    // Readers: every client reads every key first, so each holds local copies.
    for (c, client) in clients.iter().enumerate() {
        for r in 0..2 {
            let (client, rec) = (client.clone(), rec.clone());
            tasks.push(tokio::spawn(async move {
                let name = format!("reader-{c}.{r}");
                for i in 0..150usize {
                    let k = key((i * 7 + r + c) % KEYS);
                    let start = rec.now();
                    let got = client.get(&k).await.unwrap().unwrap();
                    let action = Action::Read {
                        value: Some(id_of(&got)),
                    };
                    rec.record(&k, action, start, &name);
                }
            }));
        }
    }
    // Writers through the cache.
    for (w, client) in clients.iter().take(2).enumerate() {
        let (client, rec, ids) = (client.clone(), rec.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let name = format!("writer-{w}");
            for i in 0..40usize {
                let k = key((i + w) % KEYS);
                let id = ids.fetch_add(1, Ordering::SeqCst);
                let start = rec.now();
                client.put(&k, value_of(id)).await.unwrap();
                let action = Action::Write {
                    value: Some(id),
                    counted: true,
                };
                rec.record(&k, action, start, &name);
                tokio::task::yield_now().await;
            }
        }));
    }
    // A writer that bypasses the cache.
    {
        let (store, rec, ids) = (store.clone(), rec.clone(), ids.clone());
        let counted = setup.direct_counted;
        tasks.push(tokio::spawn(async move {
            for i in 0..30usize {
                let k = key(i % KEYS);
                let id = ids.fetch_add(1, Ordering::SeqCst);
                let start = rec.now();
                store
                    .put(&Path::from(k.clone()), value_of(id).into())
                    .await
                    .unwrap();
                rec.record(
                    &k,
                    Action::Write {
                        value: Some(id),
                        counted,
                    },
                    start,
                    "direct",
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // After every write: each client reads every key once more.
    for (c, client) in clients.iter().enumerate() {
        for k in 0..KEYS {
            let k = key(k);
            let start = rec.now();
            let got = client.get(&k).await.unwrap().unwrap();
            rec.record(
                &k,
                Action::Read {
                    value: Some(id_of(&got)),
                },
                start,
                &format!("final-{c}"),
            );
        }
    }
    stop_clock.store(true, Ordering::Relaxed);
    if let Some(a) = advancer {
        a.await.unwrap();
    }
    let local_hits: u64 = clients.iter().map(|c| c.client_stats().hits_local).sum();
    assert!(local_hits > 0, "the local tier was used");
    cluster.shutdown().await;
    let events = rec.events.lock().unwrap().clone();
    check(&events, setup.staleness.as_nanos() as u64).map_err(|v| v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_reads_see_every_write_through_the_cache() {
    for invalidations in [true, false] {
        run_history(Setup {
            consistency: Consistency::Strong,
            invalidations,
            direct_counted: false,
            staleness: Duration::ZERO,
            manual: None,
        })
        .await
        .unwrap_or_else(|v| panic!("invalidations {invalidations}: {v}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reads_see_direct_store_writes_too() {
    run_history(Setup {
        consistency: Consistency::Strict,
        invalidations: false,
        direct_counted: true,
        staleness: Duration::ZERO,
        manual: None,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_reads_are_never_older_than_the_bound() {
    let bound = Duration::from_millis(20);
    run_history(Setup {
        consistency: Consistency::Bounded(bound),
        invalidations: false,
        direct_counted: false,
        staleness: bound,
        manual: Some(ManualClock::new()),
    })
    .await
    .unwrap();
}

/// Without validation (an unbounded `Bounded`, invalidations dropped), the checker must find
/// stale reads: this shows it can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_reads_without_validation() {
    let result = run_history(Setup {
        consistency: Consistency::Bounded(Duration::from_secs(3600)),
        invalidations: false,
        direct_counted: false,
        staleness: Duration::ZERO,
        manual: None,
    })
    .await;
    let violation = result.expect_err("unvalidated local copies must be caught");
    assert!(violation.contains("stale read"), "{violation}");
}

async fn one_node() -> (LocalCluster, Arc<dyn ObjectStore>) {
    let store = open_store("memory:///").unwrap();
    let cluster = LocalCluster::start(2, |b| b.app(APP).store(store.clone()).hot_threshold(3))
        .await
        .unwrap();
    (cluster, store)
}

async fn client_with(
    cluster: &LocalCluster,
    consistency: Consistency,
    configure: impl FnOnce(cache_client::CacheClientBuilder) -> cache_client::CacheClientBuilder,
) -> CacheClient {
    configure(
        CacheClient::builder()
            .app(APP)
            .nodes(cluster.addrs())
            .consistency(consistency)
            .local_capacity_bytes(1 << 20),
    )
    .build()
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_local_hits_make_no_network_call() {
    let (cluster, _store) = one_node().await;
    let cache = client_with(
        &cluster,
        Consistency::Bounded(Duration::from_secs(60)),
        |b| b,
    )
    .await;
    cache.put("k", "v").await.unwrap();
    let before = cache.client_stats();
    for _ in 0..100 {
        let got = cache.get_entry("k").await.unwrap().unwrap();
        assert_eq!((got.value.as_ref(), got.tier), (&b"v"[..], Tier::Local));
    }
    let after = cache.client_stats();
    assert_eq!(
        after.ops_sent, before.ops_sent,
        "no op reached the transport"
    );
    assert_eq!(after.local_unchecked - before.local_unchecked, 100);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_reuses_a_current_local_copy_without_value_bytes() {
    let (cluster, _store) = one_node().await;
    let cache = client_with(&cluster, Consistency::Strong, |b| b).await;
    let other = client_with(&cluster, Consistency::Strong, |b| b.invalidations(false)).await;
    cache.put("k", "v1").await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            cache.get_entry("k").await.unwrap().unwrap().tier,
            Tier::Local
        );
    }
    let s = cache.client_stats();
    assert_eq!((s.local_confirmed, s.value_replies, s.ops_sent), (5, 0, 6));
    // Another client's write: the next Strong read gets the new value, whether or not the
    // invalidation arrived first.
    other.put("k", "v2").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    let node_confirmations: u64 = cluster
        .nodes()
        .iter()
        .map(|n| n.node.stats().not_modified)
        .sum();
    assert!(node_confirmations >= 5);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_copies_expire_on_the_injected_clock_and_die_early_on_invalidation() {
    let (cluster, _store) = one_node().await;
    let clock = ManualClock::new();
    let bound = Duration::from_secs(10);
    let deaf = client_with(&cluster, Consistency::Bounded(bound), |b| {
        b.invalidations(false).clock(Arc::new(clock.clone()))
    })
    .await;
    let listening = client_with(&cluster, Consistency::Bounded(bound), |b| {
        b.clock(Arc::new(clock.clone()))
    })
    .await;
    let writer = client_with(&cluster, Consistency::Strong, |b| b.local_capacity_bytes(0)).await;
    writer.put("k", "old").await.unwrap();
    assert_eq!(deaf.get("k").await.unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(
        listening.get("k").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    // Let the listening client's watch streams open before the write.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.nodes().iter().any(|n| n.node.watchers() < 1) {
        assert!(Instant::now() < deadline, "watch streams did not open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = listening.client_stats().invalidations;
    writer.put("k", "new").await.unwrap();

    // The invalidation reaches the listening client: its copy dies before the bound.
    let deadline = Instant::now() + Duration::from_secs(10);
    while listening.client_stats().invalidations == seen {
        assert!(Instant::now() < deadline, "no invalidation arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        listening.get("k").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );

    // The deaf client may serve its copy until the bound passes on its clock, not after.
    assert_eq!(deaf.get("k").await.unwrap().as_deref(), Some(&b"old"[..]));
    clock.advance(bound - Duration::from_millis(1));
    assert_eq!(deaf.get("k").await.unwrap().as_deref(), Some(&b"old"[..]));
    clock.advance(Duration::from_millis(2));
    assert_eq!(deaf.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reads_see_writes_that_bypass_the_cache() {
    let (cluster, store) = one_node().await;
    let cache = client_with(&cluster, Consistency::Strong, |b| b).await;
    cache.put("k", "through the cache").await.unwrap();
    store
        .put(&Path::from("k"), Bytes::from_static(b"direct").into())
        .await
        .unwrap();
    // Strong trusts the home node, which has not seen the direct write.
    assert_eq!(
        cache.get("k").await.unwrap().as_deref(),
        Some(&b"through the cache"[..])
    );
    let strict = cache
        .get_entry_with("k", Consistency::Strict)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(strict.value.as_ref(), b"direct");
    // The strict read refreshed the home node: Strong now sees it too.
    assert_eq!(
        cache.get("k").await.unwrap().as_deref(),
        Some(&b"direct"[..])
    );
    // A strict read of an unchanged blob confirms the local copy without value bytes.
    let before = cache.client_stats().value_replies;
    let again = cache
        .get_entry_with("k", Consistency::Strict)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.tier, cache.client_stats().value_replies),
        (Tier::Local, before)
    );
    // Deleted behind the cache's back: strict reads see that too.
    store.delete(&Path::from("k")).await.unwrap();
    assert_eq!(
        cache
            .get_entry_with("k", Consistency::Strict)
            .await
            .unwrap(),
        None
    );
    let heads: u64 = cluster
        .nodes()
        .iter()
        .map(|n| n.node.stats().store_heads)
        .sum();
    assert_eq!(heads, 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_put_races_have_exactly_one_winner() {
    let (cluster, _store) = one_node().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(client_with(&cluster, Consistency::Strong, |b| b).await);
    }
    // Create-if-absent, then update-if-unchanged, each raced by 24 writers.
    let mut expected = String::new();
    for round in 0..2 {
        let races = (0..24).map(|i| {
            let (c, expected) = (clients[i % 3].clone(), expected.clone());
            tokio::spawn(async move {
                c.put_if_version("counter", format!("{round}:{i}"), &expected)
                    .await
            })
        });
        let results: Vec<_> = futures::future::join_all(races)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let winners: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, Error::VersionMismatch(_)), "{e}");
            }
        }
        let (value, version) = clients[0]
            .get_with_version("counter")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&version, winners[0]);
        assert!(value.starts_with(format!("{round}:").as_bytes()));
        expected = version;
    }
    // A stale writer is refused with a typed error.
    match clients[1]
        .put_if_version("counter", "late", "not-the-version")
        .await
    {
        Err(Error::VersionMismatch(msg)) => assert!(msg.contains("not-the-version"), "{msg}"),
        other => panic!("{other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_are_mirrored_locally_and_cold_keys_are_not() {
    let (cluster, _store) = one_node().await;
    let writer = client_with(&cluster, Consistency::Strong, |b| b.local_capacity_bytes(0)).await;
    writer.put("hot", "h").await.unwrap();
    writer.put("cold", "c").await.unwrap();
    let cache = client_with(
        &cluster,
        Consistency::Bounded(Duration::from_secs(60)),
        |b| b.local_admission(LocalAdmission::HotOnly),
    )
    .await;
    // The node's hot threshold is 3 reads.
    for _ in 0..3 {
        cache.get("hot").await.unwrap();
    }
    cache.get("cold").await.unwrap();
    let sent = cache.client_stats().ops_sent;
    assert_eq!(
        cache.get_entry("hot").await.unwrap().unwrap().tier,
        Tier::Local
    );
    assert_ne!(
        cache.get_entry("cold").await.unwrap().unwrap().tier,
        Tier::Local
    );
    assert_eq!(
        cache.client_stats().ops_sent,
        sent + 1,
        "only the cold read went out"
    );
    cluster.shutdown().await;
}
