//! The `modes` command on small settings. It checks the tier of every latency sample, so a
//! local hit that went to the network fails it.

mod common;

use cache_bench::modes::{self, ModesArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_runs_and_serves_local_hits_locally() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("modes.json");
    modes::run(ModesArgs {
        keys: 50,
        gets: 50,
        rounds: 1,
        zipf_keys: 500,
        zipf_ops: 3000,
        local_fraction: 0.1,
        bound_ms: 50,
        lease_writes: 5,
        stopped_writes: 2,
        in_process: true,
        server_bin: None,
        holder_bin: Some(env!("CARGO_BIN_EXE_cache-bench").into()),
        json: Some(json.clone()),
    })
    .await
    .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for row in [
        "local hit, Strong (leased)",
        "local hit, Strong",
        "home hit (no local tier)",
        "put, 8 lease holders",
    ] {
        assert!(rows[row]["p50_us"].as_f64().unwrap() > 0.0, "{row}: {rows}");
    }
    // A stopped holder costs a writer one lease length (2 s) at most, and it does cost: the
    // write waited for the lease, it did not skip it.
    let stopped = &rows["put, 1 stopped lease holder"];
    let max_us = stopped["max_us"].as_f64().unwrap();
    assert!(max_us < 2_500_000.0, "{stopped}");
    assert!(
        stopped["p50_us"].as_f64().unwrap() > 1_000_000.0,
        "{stopped}"
    );
}

/// `cache-bench modes` as a user runs it: its nodes are `cache-server` processes.
#[test]
fn the_binary_measures_cache_server_processes() {
    let stdout = common::run_binary([
        "modes",
        "--keys",
        "50",
        "--gets",
        "50",
        "--rounds",
        "1",
        "--zipf-keys",
        "500",
        "--zipf-ops",
        "3000",
        "--lease-writes",
        "5",
        "--stopped-writes",
        "1",
    ]);
    assert!(stdout.contains("3 cache-server processes"), "{stdout}");
    assert!(stdout.contains("put, 1 stopped lease holder"), "{stdout}");
}
