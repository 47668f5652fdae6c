//! The entry store: get (a hit) and put (write-through with a no-op store call) for 1 KiB and
//! 1 MiB values.

use std::hint::black_box;

use bytes::Bytes;
use cache_core::{Entry, EntryStore, Version};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn entries(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys: Vec<String> = (0..64).map(|i| format!("obj/{i:08}")).collect();
    for (label, size) in [("1KiB", 1usize << 10), ("1MiB", 1 << 20)] {
        let store = EntryStore::new(256 << 20);
        let value = Bytes::from(vec![b'v'; size]);
        let entry = Entry::new(value, Version::new("1"));
        rt.block_on(async {
            for k in &keys {
                let e = entry.clone();
                store
                    .write_through(k, || async move { Ok(Some(e)) })
                    .await
                    .unwrap();
            }
        });
        let mut group = c.benchmark_group("entry_store");
        group.throughput(Throughput::Elements(1));
        let mut i = 0usize;
        group.bench_function(format!("get_{label}"), |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 1) % keys.len();
                let (store, key) = (&store, &keys[i]);
                async move { black_box(store.get(key).await.expect("cached")) }
            })
        });
        let mut j = 0usize;
        group.bench_function(format!("put_{label}"), |b| {
            b.to_async(&rt).iter(|| {
                j = (j + 1) % keys.len();
                let (store, key, e) = (&store, &keys[j], entry.clone());
                async move {
                    black_box(
                        store
                            .write_through(key, || async move { Ok(Some(e)) })
                            .await
                            .unwrap(),
                    )
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, entries);
criterion_main!(benches);
