//! `cache-bench run` end to end on small settings: the JSON report, the baselines, duration
//! runs, and a `gen-trace` → `run --trace` round trip.

use std::collections::HashMap;
use std::time::Duration;

mod common;

use cache_bench::bench::{self, Baseline, Missing, RunArgs};
use cache_bench::redis_server::RedisServer;
use cache_bench::trace::{self, GenTraceArgs, TraceRecord};
use serde_json::Value;

fn small(dir: &std::path::Path) -> RunArgs {
    RunArgs {
        keys: 2000,
        ops: 6000,
        concurrency: 8,
        nodes: 2,
        in_process: true,
        capacity: Some(bytesize::ByteSize::kib(100)),
        store: "memory".into(),
        json: Some(dir.join("run.json")),
        no_progress: true,
        ..RunArgs::default()
    }
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn field<'a>(doc: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(doc, |v, k| {
        v.get(k)
            .unwrap_or_else(|| panic!("the JSON has no {path} (missing {k}): {doc:#}"))
    })
}

fn unit(doc: &Value, path: &str) -> f64 {
    let x = field(doc, path)
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number"));
    assert!((0.0..=1.0).contains(&x), "{path} = {x} is not in [0, 1]");
    x
}

fn positive(doc: &Value, path: &str) -> f64 {
    let x = field(doc, path)
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number"));
    assert!(x > 0.0, "{path} = {x}");
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_store_and_opt_reports_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(
        RunArgs {
            baseline: vec![Baseline::Store, Baseline::Opt],
            plot: Some(dir.path().join("plots")),
            ..small(dir.path())
        },
        Missing::Fail,
    )
    .await
    .unwrap();
    let doc = read_json(&dir.path().join("run.json"));
    assert_eq!(doc["ops"], report.json["ops"]);
    assert_eq!(doc["apps"], report.json["apps"]);
    assert_eq!(field(&doc, "ops"), 6000);
    positive(&doc, "throughput_ops_s");
    let hit = unit(&doc, "hit_ratio");
    let tiers: f64 = ["local", "home", "handoff", "store"]
        .iter()
        .map(|t| unit(&doc, &format!("hit_ratio_by_tier.{t}")))
        .sum();
    assert!((tiers - 1.0).abs() < 1e-9, "tiers add up to {tiers}");
    for q in ["p50", "p90", "p99", "p999"] {
        positive(&doc, &format!("latency_us.{q}"));
        positive(&doc, &format!("baselines.store.latency_us.{q}"));
    }
    let p = |q| field(&doc, &format!("latency_us.{q}")).as_u64().unwrap();
    assert!(p("p50") <= p("p90") && p("p90") <= p("p99") && p("p99") <= p("p999"));
    positive(&doc, "baselines.store.throughput_ops_s");
    assert_eq!(unit(&doc, "baselines.store.hit_ratio"), 0.0);
    // Redis was not asked for: its fields are there, and null.
    for f in ["hit_ratio", "throughput_ops_s", "latency_us"] {
        assert!(field(&doc, &format!("baselines.redis.{f}")).is_null());
    }
    let opt = unit(&doc, "baselines.opt.hit_ratio");
    let lru = unit(&doc, "baselines.lru.hit_ratio");
    assert!(opt >= lru, "OPT {opt} < LRU {lru}");
    assert!(opt > 0.0 && hit > 0.0);
    for r in ["p50_vs_redis", "throughput_vs_redis"] {
        assert!(field(&doc, &format!("ratios.{r}")).is_null(), "{r}");
    }
    positive(&doc, "ratios.p50_vs_store");
    let vs_opt = positive(&doc, "ratios.hit_ratio_vs_opt");
    assert!((vs_opt - hit / opt).abs() < 1e-9);
    // The store baseline reads the store for every get; the cache reads it less.
    let store_bytes = field(&doc, "baselines.store.store_read_bytes")
        .as_u64()
        .unwrap();
    let ours = field(&doc, "store_read_bytes").as_u64().unwrap();
    assert!(ours < store_bytes, "{ours} >= {store_bytes}");
    assert!(!field(&doc, "timeline").as_array().unwrap().is_empty());
    for chart in ["hit_ratio.svg", "latency_cdf.svg"] {
        let f = dir.path().join("plots").join(chart);
        assert!(std::fs::metadata(&f).unwrap().len() > 1000, "{chart}");
    }
    if cache_bench::plot::ensure_font().is_ok() {
        for chart in ["hit_ratio.png", "latency_cdf.png"] {
            assert!(dir.path().join("plots").join(chart).is_file(), "{chart}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_runs_replay_the_same_sequence_in_the_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(
        RunArgs {
            duration: Some(Duration::from_millis(400)),
            baseline: vec![Baseline::Store, Baseline::Opt],
            ..small(dir.path())
        },
        Missing::Fail,
    )
    .await
    .unwrap();
    let ops = report.cachelet.ops;
    assert!(ops > 0);
    assert_eq!(report.plan.requests.len() as u64, ops);
    let store = report.store.as_ref().unwrap();
    assert_eq!((store.ops, store.gets), (ops, report.cachelet.gets));
    assert_eq!(report.opt.as_ref().unwrap().gets, report.cachelet.gets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_baseline_runs_cache_aside() {
    RedisServer::require_for_test();
    let dir = tempfile::tempdir().unwrap();
    bench::run(
        RunArgs {
            baseline: vec![Baseline::Redis, Baseline::Lru],
            ..small(dir.path())
        },
        Missing::Fail,
    )
    .await
    .unwrap();
    let doc = read_json(&dir.path().join("run.json"));
    let hit = unit(&doc, "baselines.redis.hit_ratio");
    assert!(hit > 0.0, "a Zipf workload hits in Redis");
    positive(&doc, "baselines.redis.throughput_ops_s");
    for q in ["p50", "p90", "p99", "p999"] {
        positive(&doc, &format!("baselines.redis.latency_us.{q}"));
    }
    positive(&doc, "ratios.p50_vs_redis");
    positive(&doc, "ratios.throughput_vs_redis");
    unit(&doc, "baselines.lru.hit_ratio");
    assert!(field(&doc, "baselines.opt.hit_ratio").is_null());
    // Misses read the store; hits do not.
    let gets = field(&doc, "baselines.redis.gets").as_u64().unwrap();
    let reads = field(&doc, "baselines.redis.store_reads").as_u64().unwrap();
    assert!(
        reads > 0 && reads < gets,
        "{reads} store reads for {gets} gets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_trace_then_replay_counts_every_access() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.csv");
    trace::generate(&GenTraceArgs {
        apps: 12,
        objects: 400,
        accesses: 4000,
        seed: 5,
        out: path.clone(),
    })
    .unwrap();
    // Count the file independently.
    let rows: Vec<TraceRecord> = csv::Reader::from_path(&path)
        .unwrap()
        .deserialize()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 4000);
    let mut per_app: HashMap<String, (u64, u64)> = HashMap::new();
    for r in &rows {
        let e = per_app.entry(r.app.clone()).or_default();
        if r.write {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
    let report = bench::run(
        RunArgs {
            trace: Some(path),
            size_scale: 0.01,
            baseline: vec![Baseline::Opt],
            ..small(dir.path())
        },
        Missing::Fail,
    )
    .await
    .unwrap();
    let c = &report.cachelet;
    assert_eq!(c.ops, 4000, "every access is replayed");
    assert_eq!(c.errors, 0);
    assert_eq!(c.not_found, 0, "every blob the trace reads exists");
    assert_eq!(report.plan.apps.len(), per_app.len());
    for (i, app) in report.plan.apps.iter().enumerate() {
        let (gets, puts) = per_app[app];
        assert_eq!(
            (c.per_app[i].gets, c.per_app[i].puts),
            (gets, puts),
            "{app}"
        );
    }
    // The report lists the 10 busiest apps, busiest first, with the file's counts.
    let doc = read_json(&dir.path().join("run.json"));
    let apps = field(&doc, "apps").as_array().unwrap();
    assert_eq!(apps.len(), 10);
    let mut busiest: Vec<u64> = per_app.values().map(|(g, p)| g + p).collect();
    busiest.sort_unstable_by(|a, b| b.cmp(a));
    for (row, expected) in apps.iter().zip(&busiest) {
        assert_eq!(row["accesses"].as_u64().unwrap(), *expected);
        let (gets, puts) = per_app[row["app"].as_str().unwrap()];
        assert_eq!(row["gets"].as_u64().unwrap(), gets);
        assert_eq!(row["puts"].as_u64().unwrap(), puts);
        unit(row, "hit_ratio");
        unit(row, "opt_hit_ratio");
    }
    assert!(unit(&doc, "baselines.opt.hit_ratio") >= unit(&doc, "baselines.lru.hit_ratio"));
}

/// `cache-bench run` as a user runs it: by default its nodes are `cache-server` processes of
/// their own, over local files, and the report says so.
#[test]
fn the_binary_runs_cache_server_processes_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let json_arg = json.display().to_string();
    let stdout = common::run_binary([
        "run",
        "--keys",
        "500",
        "--ops",
        "3000",
        "--concurrency",
        "8",
        "--nodes",
        "2",
        "--no-progress",
        "--json",
        &json_arg,
    ]);
    assert!(stdout.contains("2 cache-server processes"), "{stdout}");
    let doc = read_json(&json);
    assert_eq!(field(&doc, "cluster.processes"), true);
    assert_eq!(field(&doc, "cluster.embedded"), false);
    positive(&doc, "throughput_ops_s");

    // A store only this process can reach needs the embedded cluster.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cache-bench"))
        .args(["run", "--store", "memory", "--ops", "100", "--no-progress"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--in-process"));
}
