//! Ring lookup: which node owns a key, for 3 and 16 members.

use std::hint::black_box;

use cache_core::Membership;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn ring(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024).map(|i| format!("obj/{i:08}")).collect();
    let mut group = c.benchmark_group("ring_owner");
    group.throughput(Throughput::Elements(keys.len() as u64));
    for members in [3usize, 16] {
        let m = Membership::new(1, (0..members).map(|i| format!("10.0.0.{i}:7070"))).unwrap();
        group.bench_function(format!("{members}_members"), |b| {
            b.iter(|| {
                for k in &keys {
                    black_box(m.owner(black_box(k)));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
