//! Consistency modes and the local tier, checked on recorded histories.
//!
//! Several clients with local tiers read and write a few keys concurrently, while another
//! writer writes the blob store directly. Every operation is recorded on one clock by
//! `cache_testkit`'s recorder. `Strong` and `Strict` histories must be linearizable
//! (`cache_testkit::linear`). `Bounded` histories are checked for bounded staleness instead
//! (`cache_testkit::staleness`): a read must not miss a write that finished more than the
//! bound before it began.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_client::{CacheClient, Consistency, Error, LocalAdmission, Tier};
use cache_core::clock::{Clock, ManualClock, SystemClock};
use cache_server::cluster::LocalCluster;
use cache_server::store::open_store;
use cache_testkit::history::{HistoryOp, Recorder};
use cache_testkit::{linear, staleness};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

const APP: &str = "consistency";
const KEYS: usize = 3;
/// The process number of the writer that bypasses the cache.
const DIRECT: u64 = 100;
/// How far each read moves a manual clock: the 900 reads of a run span 90 ms on it, however
/// fast the machine, so a run crosses a bound of 20 ms several times. Readers also sleep that
/// long (at least) after each read, so that their reads spread over the writers' writes,
/// which are much slower than local hits.
const TICK: Duration = Duration::from_micros(100);

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

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Each key's value before the history: written before time 0.
fn initial_values() -> impl Iterator<Item = (String, Option<String>)> {
    (0..KEYS).map(|k| (key(k), Some(k.to_string())))
}

struct Setup {
    consistency: Consistency,
    invalidations: bool,
    /// Whether the mode promises to see the direct store writes (only `Strict` does). When it
    /// does not, a direct write is recorded with an unknown outcome: as far as the cache is
    /// concerned, it may take effect at any time after it began, or never.
    direct_counted: bool,
    /// Allowed staleness in the check of `Bounded` histories.
    staleness: Duration,
    /// A manual clock for `Bounded`, advanced by [`TICK`] after each read of the readers.
    manual: Option<ManualClock>,
    /// Each client runs in the process of one node, which it calls directly for the keys
    /// that node owns ([`cache_client::CacheClientBuilder::embedded`]).
    embedded: bool,
}

/// What a run recorded.
struct Run {
    ops: Vec<HistoryOp>,
    /// Local hits served with no network call, over all clients.
    local_unchecked: u64,
    /// Local hits confirmed by the home node, over all clients.
    local_confirmed: u64,
    /// `Strong` local hits served under a read lease, over all clients.
    local_leased: u64,
    /// Ops answered by a client's embedded node by a direct call, over all clients.
    direct_calls: u64,
}

impl Run {
    /// Checks the history against what the mode promises.
    fn check(&self, setup: &Setup) -> Result<(), String> {
        if let Consistency::Bounded(_) = setup.consistency {
            return self.check_staleness(setup.staleness);
        }
        self.check_linear()
    }

    fn check_linear(&self) -> Result<(), String> {
        let report = linear::check_with_initial(&self.ops, initial_values());
        if report.is_ok() {
            Ok(())
        } else {
            Err(report.to_string())
        }
    }

    fn check_staleness(&self, allowed: Duration) -> Result<(), String> {
        let events =
            staleness::events_from_history(&self.ops, |_| true).map_err(|e| e.to_string())?;
        staleness::check(&events, nanos(allowed)).map_err(|v| v.to_string())
    }

    /// The least staleness the history's reads need: how far the stalest read lagged.
    fn lag(&self) -> Duration {
        let (mut lo, mut hi) = (0u64, 1u64 << 40);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.check_staleness(Duration::from_nanos(mid)).is_ok() {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Duration::from_nanos(lo)
    }

    /// From the first invoke to the last completion, on the run's clock.
    fn span(&self) -> Duration {
        let first = self.ops.iter().map(|o| o.invoke_ns).min().unwrap_or(0);
        let last = self.ops.iter().map(|o| o.complete_ns).max().unwrap_or(0);
        Duration::from_nanos(last - first)
    }
}

fn mode(c: Consistency) -> &'static str {
    match c {
        Consistency::Strict => "strict",
        Consistency::Strong => "strong",
        Consistency::Bounded(_) => "bounded",
    }
}

async fn run_history(setup: &Setup) -> Run {
    run_history_with(setup, |b| b).await
}

/// As [`run_history`], with the nodes' builders changed by `configure`.
async fn run_history_with(
    setup: &Setup,
    configure: impl Fn(cache_server::CacheNodeBuilder) -> cache_server::CacheNodeBuilder,
) -> Run {
    let store = open_store("memory:///").unwrap();
    let cluster = LocalCluster::start(3, |b| configure(b.app(APP).store(store.clone())))
        .await
        .unwrap();
    let clock: Arc<dyn Clock> = match &setup.manual {
        Some(m) => Arc::new(m.clone()),
        None => Arc::new(SystemClock),
    };
    let rec = {
        let clock = clock.clone();
        Recorder::with_clock(100_000, move || clock.now())
    };
    let ids = Arc::new(AtomicU64::new(1000));
    for k in 0..KEYS {
        // The initial values, written before time 0 of the history.
        store
            .put(&Path::from(key(k)), value_of(k as u64).into())
            .await
            .unwrap();
    }
    let mut clients = Vec::new();
    for c in 0..3 {
        let mut builder = CacheClient::builder()
            .app(APP)
            .nodes(cluster.addrs())
            .consistency(setup.consistency)
            .local_capacity_bytes(1 << 20)
            .invalidations(setup.invalidations)
            .leases(setup.consistency == Consistency::Strong)
            .clock(clock.clone());
        if setup.embedded {
            builder = builder.embedded(Arc::new(cluster.node(c).clone()));
        }
        clients.push(builder.build().await.unwrap());
    }
    let mode = mode(setup.consistency);
    let read =
        move |process: u64, k: &str, start: u64, got: Option<cache_client::Fetched>, end: u64| {
            let got = got.unwrap();
            let value = id_of(&got.value).to_string();
            HistoryOp::read(process, k, Some(&value), start, end)
                .with_version(got.version)
                .with_mode(mode)
        };

    let mut tasks = Vec::new();
    // Readers: every client reads every key first, so each holds local copies.
    for (c, client) in clients.iter().enumerate() {
        for r in 0..2 {
            let (client, rec, manual) = (client.clone(), rec.clone(), setup.manual.clone());
            let process = (c * 2 + r) as u64;
            tasks.push(tokio::spawn(async move {
                for i in 0..150usize {
                    let k = key((i * 7 + r + c) % KEYS);
                    let start = rec.now_ns();
                    let got = client.get_entry(&k).await.unwrap();
                    rec.record(read(process, &k, start, got, rec.now_ns()));
                    if let Some(m) = &manual {
                        m.advance(TICK);
                        tokio::time::sleep(TICK).await;
                    }
                }
            }));
        }
    }
    // Writers through the cache.
    for (w, client) in clients.iter().take(2).enumerate() {
        let (client, rec, ids) = (client.clone(), rec.clone(), ids.clone());
        let process = 10 + w as u64;
        tasks.push(tokio::spawn(async move {
            for i in 0..40usize {
                let k = key((i + w) % KEYS);
                let id = ids.fetch_add(1, Ordering::SeqCst);
                let start = rec.now_ns();
                let version = client.put(&k, value_of(id)).await.unwrap();
                let end = rec.now_ns();
                rec.record(
                    HistoryOp::write(process, &k, &id.to_string(), start, end)
                        .with_version(version)
                        .with_mode(mode),
                );
                tokio::task::yield_now().await;
            }
        }));
    }
    // A writer that bypasses the cache.
    {
        let (store, rec, ids) = (store.clone(), rec.clone(), ids.clone());
        let ok = setup.direct_counted.then_some(true);
        tasks.push(tokio::spawn(async move {
            for i in 0..30usize {
                let k = key(i % KEYS);
                let id = ids.fetch_add(1, Ordering::SeqCst);
                let start = rec.now_ns();
                let put = store
                    .put(&Path::from(k.clone()), value_of(id).into())
                    .await
                    .unwrap();
                let mut op = HistoryOp::write(DIRECT, &k, &id.to_string(), start, rec.now_ns())
                    .with_ok(ok)
                    .with_mode("direct");
                op.version = put.e_tag;
                rec.record(op);
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
            let start = rec.now_ns();
            let got = client.get_entry(&k).await.unwrap();
            rec.record(read(200 + c as u64, &k, start, got, rec.now_ns()));
        }
    }
    let stats: Vec<_> = clients.iter().map(CacheClient::client_stats).collect();
    let local_hits: u64 = stats.iter().map(|s| s.hits_local).sum();
    assert!(local_hits > 0, "the local tier was used");
    cluster.shutdown().await;
    assert_eq!(rec.dropped(), 0);
    Run {
        ops: rec.take(),
        local_unchecked: stats.iter().map(|s| s.local_unchecked).sum(),
        local_confirmed: stats.iter().map(|s| s.local_confirmed).sum(),
        local_leased: stats.iter().map(|s| s.local_leased).sum(),
        direct_calls: stats.iter().map(|s| s.direct_calls).sum(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_reads_see_every_write_through_the_cache() {
    for invalidations in [true, false] {
        let setup = Setup {
            consistency: Consistency::Strong,
            invalidations,
            direct_counted: false,
            staleness: Duration::ZERO,
            manual: None,
            embedded: false,
        };
        let run = run_history(&setup).await;
        // Leased copies were served with no round trip, and the history still checks.
        assert!(run.local_leased > 0, "no read was served under a lease");
        run.check(&setup)
            .unwrap_or_else(|v| panic!("invalidations {invalidations}: {v}"));
    }
}

/// The negative control for leases: when writes do not wait for lease holders to drop their
/// copies, the same history has anomalies in some of a few runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_do_not_wait_for_lease_holders_are_caught() {
    let setup = Setup {
        consistency: Consistency::Strong,
        invalidations: false,
        direct_counted: false,
        staleness: Duration::ZERO,
        manual: None,
        embedded: false,
    };
    let mut anomalies = 0;
    for _ in 0..10 {
        let run = run_history_with(&setup, |b| b.leased_writes(false)).await;
        if run.check(&setup).is_err() {
            anomalies += 1;
        }
        if anomalies > 0 {
            break;
        }
    }
    assert!(anomalies > 0, "no anomaly in 10 runs without lease waits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reads_see_direct_store_writes_too() {
    let setup = Setup {
        consistency: Consistency::Strict,
        invalidations: false,
        direct_counted: true,
        staleness: Duration::ZERO,
        manual: None,
        embedded: false,
    };
    run_history(&setup).await.check(&setup).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_reads_are_never_older_than_the_bound() {
    let bound = Duration::from_millis(20);
    let setup = Setup {
        consistency: Consistency::Bounded(bound),
        invalidations: false,
        direct_counted: false,
        staleness: bound,
        manual: Some(ManualClock::new()),
        embedded: false,
    };
    let run = run_history(&setup).await;
    run.check(&setup).unwrap();
    // The check above proves something only if the run needed the bound, and crossed it.
    let (span, lag) = (run.span(), run.lag());
    eprintln!(
        "bounded run: span {span:?}, lag {lag:?}, unchecked {}, confirmed {}",
        run.local_unchecked, run.local_confirmed
    );
    assert!(
        span > bound * 3,
        "the run spans {span:?}, not several bounds"
    );
    assert!(
        run.local_unchecked > 0,
        "no read was served from a local copy within the bound"
    );
    // Reads lagged by a good part of the bound (so a tighter bound would have failed them),
    // and copies that outlived it were confirmed rather than served.
    assert!(
        lag > bound / 2,
        "the stalest read lagged {lag:?}: the bound was hardly needed"
    );
    assert!(
        run.local_confirmed > 0,
        "no local copy outlived the bound: its expiry was never exercised"
    );
}

/// Without validation (an unbounded `Bounded`, invalidations dropped), the checker must find
/// stale reads: this shows it can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_reads_without_validation() {
    let setup = Setup {
        consistency: Consistency::Bounded(Duration::from_secs(3600)),
        invalidations: false,
        direct_counted: false,
        staleness: Duration::ZERO,
        manual: None,
        embedded: false,
    };
    let result = run_history(&setup).await.check(&setup);
    let violation = result.expect_err("unvalidated local copies must be caught");
    assert!(violation.contains("stale read"), "{violation}");
}

/// The same run fails the linearizability check too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_linearizability_checker_catches_reads_without_validation() {
    let setup = Setup {
        consistency: Consistency::Bounded(Duration::from_secs(3600)),
        invalidations: false,
        direct_counted: false,
        staleness: Duration::ZERO,
        manual: None,
        embedded: false,
    };
    let report = run_history(&setup)
        .await
        .check_linear()
        .expect_err("unvalidated local copies must be caught");
    assert!(
        ["stale_read on", "lost_write on", "non_linearizable on"]
            .iter()
            .any(|kind| report.contains(kind)),
        "{report}"
    );
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
    // Without leases: each Strong read asks the home node.
    let cache = client_with(&cluster, Consistency::Strong, |b| b.leases(false)).await;
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

    // The invalidation reaches the listening client: its copy dies before the bound (the
    // injected clock does not move, so nothing else can end it). Polled on the reads, not on
    // the invalidation counter: the first write's own invalidation may arrive late too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while listening.get("k").await.unwrap().as_deref() != Some(&b"new"[..]) {
        assert!(Instant::now() < deadline, "no invalidation arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(listening.client_stats().invalidations > seen);

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
    // Without the best-effort invalidation stream: a late invalidation of the first write's
    // version would drop the copy that the last check counts on confirming without bytes.
    let cache = client_with(&cluster, Consistency::Strong, |b| b.invalidations(false)).await;
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

/// Clients that each run in the process of one node, and call it directly for its keys,
/// keep `Strong` and `Strict` reads linearizable: the direct path runs the same op under the
/// same rules as the network path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_embedded_nodes_see_every_write() {
    for (consistency, direct_counted) in [(Consistency::Strong, false), (Consistency::Strict, true)]
    {
        let setup = Setup {
            consistency,
            invalidations: true,
            direct_counted,
            staleness: Duration::ZERO,
            manual: None,
            embedded: true,
        };
        let run = run_history(&setup).await;
        assert!(run.direct_calls > 0, "{consistency:?}: no direct call");
        run.check(&setup)
            .unwrap_or_else(|v| panic!("{consistency:?} with embedded nodes: {v}"));
    }
}
