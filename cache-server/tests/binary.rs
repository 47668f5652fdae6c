//! The `cache-server` binary: flags, a local-file store, graceful exit on SIGTERM.

mod common;

use cache_client::CacheClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_file_store_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("foo"), b"from disk").unwrap();
    let store = format!("file://{}", dir.path().display());
    let server = common::Server::spawn(
        &["--app", "bin", "--store", &store, "--capacity", "8MiB"],
        &[],
    );
    let cache = CacheClient::builder()
        .app("bin")
        .nodes([server.addr.clone()])
        .build()
        .await
        .unwrap();
    assert_eq!(
        cache.get("foo").await.unwrap().as_deref(),
        Some(&b"from disk"[..])
    );
    cache.put("bar/baz", "written").await.unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("bar/baz")).unwrap(),
        b"written"
    );
    let stats = cache.stats().await.unwrap();
    assert_eq!(
        stats.nodes[0].stats.as_ref().unwrap().capacity_bytes,
        8 << 20
    );
    // The client keeps its stream open; the server still exits promptly.
    server.terminate();
}

#[test]
fn bad_flags_fail_with_a_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cache-server"))
        .args([
            "--app",
            "a",
            "--store",
            "ftp://x",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown scheme"), "{err}");
}

/// Two `cache-server` processes form a cluster; one is removed from the member list and sent
/// SIGTERM: it hands its entries to the other before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_server_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let args = [
        "--app",
        "drain",
        "--store",
        &store,
        "--drain-timeout-ms",
        "10000",
    ];
    let a = common::Server::spawn(&args, &[]);
    let b = common::Server::spawn(&args, &[]);
    let both = vec![a.addr.clone(), b.addr.clone()];
    let cache = CacheClient::builder()
        .app("drain")
        .nodes([a.addr.clone()])
        .build()
        .await
        .unwrap();
    cache.set_members(None, both.clone()).await.unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("k/{i}")).collect();
    for key in &keys {
        cache.put(key, key.clone()).await.unwrap();
    }
    let on_b = keys.iter().filter(|k| cache.home_of(k) == b.addr).count();
    assert!(on_b > 10, "{on_b} keys live on b");

    // Remove b, then stop it: it drains to a first.
    cache.set_members(None, vec![a.addr.clone()]).await.unwrap();
    b.terminate();
    let stats = cache.stats().await.unwrap();
    let a_stats = stats.nodes[0].stats.as_ref().unwrap();
    assert_eq!(a_stats.entries, keys.len() as u64, "every entry is at a");
    for key in &keys {
        let got = cache.get_entry(key).await.unwrap().unwrap();
        assert_eq!(got.tier, cache_client::Tier::Home, "{key}");
    }
    a.terminate();
}
