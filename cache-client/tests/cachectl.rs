//! `cachectl` against a live cluster: output, messages and exit codes.

use std::process::ExitCode;

use cache_client::cli::{Args, run};
use cache_server::cluster::LocalCluster;
use cache_server::store::open_store;
use clap::Parser;

struct Outcome {
    code: ExitCode,
    out: Vec<u8>,
    err: String,
}

async fn cachectl(cluster: &LocalCluster, args: &[&str]) -> Outcome {
    cachectl_at(&cluster.addrs().join(","), args).await
}

async fn cachectl_at(nodes: &str, args: &[&str]) -> Outcome {
    let mut argv = vec!["cachectl", "--nodes", nodes, "--app", "ctl"];
    argv.extend_from_slice(args);
    let args = Args::try_parse_from(argv).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(args, &mut out, &mut err).await;
    Outcome {
        code,
        out,
        err: String::from_utf8(err).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_put_del_stats_members_and_exit_codes() {
    let store = open_store("memory:///").unwrap();
    let cluster = LocalCluster::start(3, |b| b.app("ctl").store(store.clone()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("value.bin");
    std::fs::write(&file, b"\x00binary\xffvalue").unwrap();

    let put = cachectl(&cluster, &["put", "blobs/one", file.to_str().unwrap()]).await;
    assert_eq!(put.code, ExitCode::SUCCESS, "{}", put.err);
    assert!(!put.out.is_empty(), "put prints the new version");

    let get = cachectl(&cluster, &["get", "blobs/one"]).await;
    assert_eq!(get.code, ExitCode::SUCCESS);
    assert_eq!(get.out, b"\x00binary\xffvalue");

    let missing = cachectl(&cluster, &["get", "blobs/none"]).await;
    assert_eq!(missing.code, ExitCode::from(1));
    assert!(missing.err.contains("not found"), "{}", missing.err);
    assert!(missing.out.is_empty());

    let invalid = cachectl(&cluster, &["get", "a//b"]).await;
    assert_eq!(invalid.code, ExitCode::from(2));
    assert!(
        invalid.err.contains("invalid key") && invalid.err.contains("empty path segment"),
        "{}",
        invalid.err
    );

    let del = cachectl(&cluster, &["del", "blobs/one"]).await;
    assert_eq!(del.code, ExitCode::SUCCESS);
    assert_eq!(
        cachectl(&cluster, &["get", "blobs/one"]).await.code,
        ExitCode::from(1)
    );

    let stats = cachectl(&cluster, &["stats"]).await;
    assert_eq!(stats.code, ExitCode::SUCCESS);
    let lines: Vec<serde_json::Value> = String::from_utf8(stats.out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "one JSON object per node");
    for line in &lines {
        assert_eq!(line["stats"]["app"], "ctl");
        assert!(line["stats"]["capacity_bytes"].as_u64().unwrap() > 0);
    }

    let members = cachectl(&cluster, &["members"]).await;
    let view: serde_json::Value = serde_json::from_slice(&members.out).unwrap();
    assert_eq!(view["members"].as_array().unwrap().len(), 3);

    let nodes = cluster.addrs().join(",");
    cluster.shutdown().await;
    let down = cachectl_at(&nodes, &["--timeout-ms", "500", "get", "blobs/x"]).await;
    assert_eq!(down.code, ExitCode::from(3));
    assert!(down.err.contains("unavailable"), "{}", down.err);
}
