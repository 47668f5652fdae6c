//! Fuzzing request handling with proptest, a bounded number of cases per run: arbitrary bytes
//! and arbitrary `Op` batches (weird keys, sizes, duplicate ids, epochs, missing kinds, wrong
//! and huge app names) go to one node's `Data` and `Peer` services, in process and as raw
//! frames. After each input: no panic, no `INTERNAL` status, no reply message over the size
//! budget, short error texts, and the node still serves a canary put and get. `fuzz/` runs
//! the same entry ([`cache_server::fuzz::Target`]) under libFuzzer for longer runs.

use std::sync::Arc;

use bytes::Bytes;
use cache_core::Limits;
use cache_proto::v1 as pb;
use cache_server::cluster::LocalCluster;
use cache_server::fuzz::Target;
use object_store::memory::InMemory;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const APP: &str = "fuzz";

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-c]{1,2}(/[a-c]{1,2})?",
        1 => any::<String>(),
        1 => "\\PC{0,40}",
        1 => Just("_cachelet".to_owned()),
        1 => Just("_cachelet/epochs/1".to_owned()),
        1 => Just("a//b".to_owned()),
        1 => Just("../x".to_owned()),
        1 => (1_000usize..1_100).prop_map(|n| "k".repeat(n)),
    ]
}

fn kind() -> impl Strategy<Value = Option<pb::op::Kind>> {
    prop_oneof![
        4 => (key(), any::<bool>(), any::<i32>(), "\\PC{0,8}", any::<u64>()).prop_map(
            |(key, fallback, consistency, etag, lease_holder)| {
                Some(pb::op::Kind::Get(pb::Get {
                    key,
                    fallback,
                    consistency,
                    if_none_match: etag,
                    lease_holder,
                }))
            }
        ),
        3 => (key(), prop::collection::vec(any::<u8>(), 0..512), prop::option::of("\\PC{0,8}"))
            .prop_map(|(key, value, if_match)| {
                Some(pb::op::Kind::Put(pb::Put { key, value: Bytes::from(value), if_match }))
            }),
        1 => (key(), any::<bool>())
            .prop_map(|(key, forget)| Some(pb::op::Kind::Delete(pb::Delete { key, forget }))),
        1 => (key(), "\\PC{0,8}", any::<u64>(), any::<bool>()).prop_map(
            |(key, version, index, fallback)| {
                Some(pb::op::Kind::GetChunk(pb::GetChunk { key, version, index, fallback }))
            }
        ),
        1 => Just(None),
    ]
}

fn op() -> impl Strategy<Value = pb::Op> {
    let epoch = prop_oneof![4 => Just(0u64), 2 => 1u64..4, 1 => any::<u64>()];
    // Few ids, so that duplicates are common.
    (0u64..8, epoch, kind()).prop_map(|(id, epoch, kind)| pb::Op { id, epoch, kind })
}

fn batch() -> impl Strategy<Value = pb::Batch> {
    let app = prop_oneof![
        8 => Just(APP.to_owned()),
        1 => "\\PC{0,16}",
        1 => Just("x".repeat(10_000)),
    ];
    let timeout = prop_oneof![Just(0u32), 1u32..50, Just(u32::MAX)];
    (app, timeout, prop::collection::vec(op(), 0..48)).prop_map(|(app, timeout_ms, ops)| {
        pb::Batch {
            app,
            timeout_ms,
            ops,
        }
    })
}

#[derive(Debug, Clone)]
enum Input {
    Bytes(Vec<u8>),
    Batch(pb::Batch),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Input::Bytes),
        2 => batch().prop_map(Input::Batch),
    ]
}

#[test]
fn arbitrary_requests_leave_the_node_serving_within_budget() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (cluster, target) = rt.block_on(async {
        let store = Arc::new(InMemory::new());
        let cluster = LocalCluster::start(1, |b| {
            b.app(APP)
                .store(store.clone())
                .prewarm(false)
                .limits(Limits::default().with_max_value_bytes(64 << 10))
        })
        .await
        .unwrap();
        let target = Target::new(cluster.node(0).clone(), &cluster.addrs()[0])
            .await
            .unwrap();
        (cluster, target)
    });
    let cases = std::env::var("CACHELET_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let count = std::sync::atomic::AtomicU64::new(0);
    let started = std::time::Instant::now();
    runner
        .run(&input(), |input| {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            rt.block_on(async {
                match &input {
                    Input::Bytes(b) => target.bytes(b).await,
                    Input::Batch(b) => target.batch(b.clone()).await,
                }
                .map_err(TestCaseError::fail)?;
                target.canary(n).await.map_err(TestCaseError::fail)
            })
        })
        .unwrap();
    println!(
        "{} inputs in {:?}",
        count.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed()
    );
    rt.block_on(cluster.shutdown());
}
