//! The wire format: encode and decode a batch of 64 gets, and a reply of 64 1 KiB values.

use std::hint::black_box;

use bytes::Bytes;
use cache_proto::v1 as pb;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

const OPS: u64 = 64;

fn batch() -> pb::Batch {
    pb::Batch {
        app: "bench".into(),
        timeout_ms: 0,
        ops: (0..OPS)
            .map(|i| pb::Op {
                id: i,
                kind: Some(pb::op::Kind::Get(pb::Get {
                    key: format!("obj/{i:08}"),
                    ..Default::default()
                })),
                epoch: 1,
            })
            .collect(),
    }
}

fn reply() -> pb::BatchReply {
    let value = Bytes::from(vec![b'v'; 1024]);
    pb::BatchReply {
        replies: (0..OPS)
            .map(|i| pb::Reply {
                id: i,
                result: Some(pb::reply::Result::Value(pb::Value {
                    value: value.clone(),
                    version: Some(pb::Version {
                        etag: "\"0x8DC1234567890AB\"".into(),
                        modified_ms: 1_764_000_000_000,
                    }),
                    tier: pb::Tier::Home as i32,
                    hot: false,
                    lease_ms: 0,
                    ..Default::default()
                })),
            })
            .collect(),
    }
}

fn proto(c: &mut Criterion) {
    let mut group = c.benchmark_group("proto");
    group.throughput(Throughput::Elements(OPS));
    let (req, rep) = (batch(), reply());
    let (req_bytes, rep_bytes) = (
        Bytes::from(req.encode_to_vec()),
        Bytes::from(rep.encode_to_vec()),
    );
    let mut buf = Vec::with_capacity(rep_bytes.len());
    group.bench_function("encode_batch_64_gets", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&req).encode(&mut buf).unwrap();
            black_box(buf.len())
        })
    });
    group.bench_function("decode_batch_64_gets", |b| {
        b.iter(|| black_box(pb::Batch::decode(black_box(req_bytes.clone())).unwrap()))
    });
    group.bench_function("encode_reply_64x1KiB", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&rep).encode(&mut buf).unwrap();
            black_box(buf.len())
        })
    });
    group.bench_function("decode_reply_64x1KiB", |b| {
        b.iter(|| black_box(pb::BatchReply::decode(black_box(rep_bytes.clone())).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, proto);
criterion_main!(benches);
