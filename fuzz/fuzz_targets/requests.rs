//! Arbitrary bytes into one node's request handling: decoded as a `Batch` (and as the peer
//! requests) for the services in process, and sent as raw frames to `Pipe`, `Batch` and
//! `Handoff`. The checks are those of `cache-server/tests/fuzz.rs`: no panic, no `INTERNAL`
//! status, replies within the size budget, short error texts, and a canary served after
//! every input.

#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use cache_server::cluster::LocalCluster;
use cache_server::fuzz::Target;
use libfuzzer_sys::fuzz_target;

struct Harness {
    rt: tokio::runtime::Runtime,
    target: Target,
    _cluster: LocalCluster,
    inputs: AtomicU64,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (cluster, target) = rt.block_on(async {
            let store = Arc::new(object_store::memory::InMemory::new());
            let cluster = LocalCluster::start(1, |b| {
                b.app("fuzz")
                    .store(store.clone())
                    .prewarm(false)
                    .limits(cache_core::Limits::default().with_max_value_bytes(64 << 10))
            })
            .await
            .expect("a node");
            let target = Target::new(cluster.node(0).clone(), &cluster.addrs()[0])
                .await
                .expect("a connection to the node");
            (cluster, target)
        });
        Harness {
            rt,
            target,
            _cluster: cluster,
            inputs: AtomicU64::new(0),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let n = h.inputs.fetch_add(1, Ordering::Relaxed);
    h.rt.block_on(async {
        if let Err(e) = h.target.bytes(data).await {
            panic!("{e}");
        }
        if let Err(e) = h.target.canary(n).await {
            panic!("{e}");
        }
    });
});
