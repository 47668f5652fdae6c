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
