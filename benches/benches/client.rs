//! A client get from an in-process node that holds the key: over loopback, one request at a
//! time and 64 outstanding; and by a direct call to the node embedded in this process.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use cache_client::CacheClient;
use cache_server::cluster::LocalCluster;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use object_store::memory::InMemory;

const KEYS: usize = 256;

fn client(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("obj/{i:08}")).collect();
    let (cluster, client) = rt.block_on(async {
        let store = Arc::new(InMemory::new());
        let cluster = LocalCluster::start(1, |b| {
            b.app("bench").store(store.clone()).capacity_bytes(64 << 20)
        })
        .await
        .unwrap();
        let client = CacheClient::builder()
            .app("bench")
            .nodes(cluster.addrs())
            .build()
            .await
            .unwrap();
        let value = Bytes::from(vec![b'v'; 1024]);
        for k in &keys {
            client.put(k, value.clone()).await.unwrap();
        }
        (cluster, client)
    });
    let direct = rt.block_on(async {
        CacheClient::builder()
            .app("bench")
            .nodes(cluster.addrs())
            .embedded(Arc::new(cluster.node(0).clone()))
            .build()
            .await
            .unwrap()
    });

    let mut group = c.benchmark_group("client_get_1KiB");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("single", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % KEYS;
            let (client, key) = (&client, &keys[i]);
            async move { black_box(client.get(key).await.unwrap().expect("held")) }
        })
    });
    group.throughput(Throughput::Elements(64));
    let mut j = 0usize;
    group.bench_function("64_outstanding", |b| {
        b.to_async(&rt).iter(|| {
            j = (j + 64) % KEYS;
            let start = j;
            let (client, keys) = (&client, &keys);
            let gets = (0..64).map(move |n| client.get(&keys[(start + n) % KEYS]));
            async move {
                for got in futures::future::join_all(gets).await {
                    black_box(got.unwrap().expect("held"));
                }
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    let mut k = 0usize;
    group.bench_function("embedded_direct_call", |b| {
        b.to_async(&rt).iter(|| {
            k = (k + 1) % KEYS;
            let (direct, key) = (&direct, &keys[k]);
            async move { black_box(direct.get(key).await.unwrap().expect("held")) }
        })
    });
    group.finish();
    assert_eq!(
        direct.client_stats().ops_sent,
        0,
        "a direct get used the network"
    );
    rt.block_on(cluster.shutdown());
}

criterion_group!(benches, client);
criterion_main!(benches);
