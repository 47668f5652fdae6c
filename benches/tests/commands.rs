//! The `demo`, `ping`, `ring` and `s3` commands, on small settings.

mod common;

use cache_bench::demo::{self, DemoArgs};
use cache_bench::ping::{self, PingArgs};
use cache_bench::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_without_errors_and_draws_its_charts() {
    let dir = tempfile::tempdir().unwrap();
    // `run` fails if any request failed.
    demo::run(DemoArgs {
        objects: 300,
        ops: 3000,
        concurrency: 8,
        read_ratio: 0.9,
        capacity: bytesize::ByteSize::kib(128),
        seed: 3,
        plot: Some(dir.path().join("plots")),
        json: Some(dir.path().join("demo.json")),
    })
    .await
    .unwrap();
    for chart in ["hit_ratio.svg", "latency_cdf.svg"] {
        assert!(dir.path().join("plots").join(chart).is_file(), "{chart}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("demo.json")).unwrap()).unwrap();
    assert_eq!(json["ops"], 3000);
    assert!(
        json["baselines"]["store"]["throughput_ops_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

/// Runs `cache-bench ping` as a user does, with `extra` flags; returns its output.
fn ping_binary(extra: &[&str]) -> String {
    let base = [
        "ping", "--keys", "50", "--gets", "100", "--rounds", "2", "--nodes", "2",
    ];
    common::run_binary(base.iter().chain(extra))
}

/// By default the nodes are `cache-server` processes of their own, as Redis is, and the
/// report says so.
#[test]
fn ping_compares_cache_server_processes_with_redis() {
    RedisServer::require_for_test();
    let out = ping_binary(&[]);
    assert!(out.contains("2 cache-server processes"), "{out}");
    assert!(out.contains("p50 cachelet / redis, TCP"), "{out}");
    assert!(out.contains("p50 cachelet / redis, Unix socket"), "{out}");
    assert!(out.contains("home hit, Unix socket"), "{out}");
    assert!(out.contains("redis-server (Unix socket)"), "{out}");
    assert!(out.contains("gRPC floor (unary Members, TCP)"), "{out}");
    assert!(out.contains("embedded node, direct call"), "{out}");
}

/// The same with TLS and tokens: the processes get their credentials as files.
#[test]
fn ping_runs_processes_with_tls_and_tokens() {
    RedisServer::require_for_test();
    let out = ping_binary(&["--security", "tls"]);
    assert!(out.contains("2 cache-server processes"), "{out}");
    assert!(out.contains("home hit, Unix socket"), "{out}");
    assert!(
        !out.contains("gRPC floor"),
        "the floor's channel has no credentials: {out}"
    );
}

/// `--in-process` keeps the embedded cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_runs_in_process_on_request() {
    RedisServer::require_for_test();
    ping::run(PingArgs {
        keys: 20,
        value_size: bytesize::ByteSize::kib(1),
        gets: 50,
        rounds: 1,
        nodes: 2,
        in_process: true,
        server_bin: None,
        security: cache_bench::security::SecurityMode::Token,
    })
    .await
    .unwrap();
}

/// `cache-bench ring` as the README runs it, on small rings: every row is there.
#[test]
fn ring_reports_balance_moves_and_rebuilds() {
    let out = common::run_binary(
        [
            "ring",
            "--members",
            "3,50",
            "--vnodes",
            "64,512",
            "--lookups",
            "1000",
        ]
        .iter(),
    );
    assert!(out.contains("join moves/ideal"), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.trim_start().starts_with("50 "))
            .count(),
        2,
        "{out}"
    );
}

/// `cache-bench s3` as the README runs it, on small settings: moto, Azurite and a
/// `cache-server` process with `--s3`, and every row of both tables.
#[test]
fn s3_compares_the_endpoint_with_moto_and_azurite() {
    let out = common::run_binary(
        [
            "s3",
            "--gets",
            "3",
            "--rounds",
            "1",
            "--large",
            "20MiB",
            "--large-reads",
            "1",
        ]
        .iter(),
    );
    for row in [
        "S3 endpoint (cached)",
        "CacheClient::get",
        "moto GET",
        "Azurite GET",
        "S3 endpoint, miss",
        "S3 endpoint, cached",
        "moto, one GET",
    ] {
        assert!(out.contains(row), "{row}: {out}");
    }
}
