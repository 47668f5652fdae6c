//! The `cache-server` binary: flags, a local-file store, graceful exit on SIGTERM.

mod common;

use cache_client::CacheClient;
use clap::Parser;

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

/// The documented scale-out flow, through the binaries: start the new node with the full
/// member list, then `cachectl members set` the same list. The new node must take the keys
/// that move to it from their previous owner, and serve them as home hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_scale_out_flow_hands_entries_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let base = ["--app", "flow", "--store", &store, "--capacity", "16MiB"];
    let a = common::Server::spawn(&base, &[]);
    let cache = CacheClient::builder()
        .app("flow")
        .nodes([a.addr.clone()])
        .build()
        .await
        .unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("flow/{i}")).collect();
    for key in &keys {
        cache.put(key, key.clone()).await.unwrap();
    }

    // Start the new node with the full list...
    let a_addr = a.addr.clone();
    let b = common::Server::spawn_known(
        |me| {
            let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
            args.extend(["--peers".into(), format!("{a_addr},{me}")]);
            args
        },
        &[],
    );
    let full = format!("{},{}", a.addr, b.addr);
    // ...then set it, as the README says, with cachectl.
    let ctl = |args: &[&str]| {
        let mut argv = vec!["cachectl", "--nodes", a.addr.as_str(), "--app", "flow"];
        argv.extend_from_slice(args);
        cache_client::cli::Args::try_parse_from(argv).unwrap()
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cache_client::cli::run(ctl(&["members", "set", &full]), &mut out, &mut err).await;
    assert_eq!(
        code,
        std::process::ExitCode::SUCCESS,
        "{}",
        String::from_utf8_lossy(&err)
    );

    cache.refresh_members().await.unwrap();
    let moved: Vec<&String> = keys.iter().filter(|k| cache.home_of(k) == b.addr).collect();
    assert!(
        moved.len() > 60,
        "about half the keys move: {}",
        moved.len()
    );
    // The handoff streams what moved to b; its accepted count is in b's stats.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let received = loop {
        let stats = cache.stats().await.unwrap();
        let at_b = stats
            .nodes
            .iter()
            .find(|n| n.addr == b.addr)
            .and_then(|n| n.stats.clone())
            .map_or(0, |s| s.handoff_received);
        if at_b as usize >= moved.len() || std::time::Instant::now() > deadline {
            break at_b;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        received as usize,
        moved.len(),
        "every moved entry was accepted"
    );
    for key in moved.iter().take(50) {
        let got = cache.get_entry(key).await.unwrap().unwrap();
        assert_eq!(got.tier, cache_client::Tier::Home, "{key}");
        assert_eq!(got.value.as_ref(), key.as_bytes());
    }
    b.terminate();
    a.terminate();
}

/// SIGTERM straight after start-up stops the server cleanly: the signal handlers are installed
/// before the node starts, not when it first waits for a signal.
#[test]
fn sigterm_right_after_start_up_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    for _ in 0..3 {
        let server = common::Server::spawn(&["--app", "early", "--store", &store], &[]);
        server.terminate();
    }
}

/// A sidecar that also listens on a Unix domain socket serves a client whose node list names
/// only that socket. The node advertises a TCP address that nothing listens on, so every call
/// that succeeds went over the socket; the control, a client given that address, fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_is_reached_over_its_unix_socket() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let socket = dir.path().join("node.sock");
    let listen = format!("unix:{}", socket.display());
    let unreachable = "127.0.0.1:1";
    // Credentials as the README's sidecar has them: an auth file, and the function's token.
    let auth = dir.path().join("auth.toml");
    let (token, admin_token) = ("function-token", "operator-token");
    let entries = [
        cache_core::auth::token_entry(token, cache_core::auth::Role::Data, Some("uds")),
        cache_core::auth::token_entry(admin_token, cache_core::auth::Role::Admin, None),
    ];
    std::fs::write(&auth, entries.join("\n")).unwrap();
    let auth = auth.display().to_string();
    let args = [
        "--app",
        "uds",
        "--store",
        &store,
        "--listen",
        &listen,
        "--advertise",
        unreachable,
        "--auth",
        &auth,
        // A sidecar under a CPU limit of one.
        "--threads",
        "1",
    ];
    let server = common::Server::spawn(&args, &[]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is for this user only");

    // The socket asks for credentials as TCP does: without the token, nothing is served.
    let refused = CacheClient::builder()
        .app("uds")
        .nodes([listen.clone()])
        .build()
        .await;
    assert!(
        matches!(refused, Err(cache_client::Error::Unauthenticated(_))),
        "{:?}",
        refused.err()
    );
    let cache = CacheClient::builder()
        .app("uds")
        .nodes([listen.clone()])
        .token(token)
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    assert_eq!(cache.membership().members(), [unreachable]);
    cache.put("k", "over the socket").await.unwrap();
    assert_eq!(
        cache.get("k").await.unwrap().as_deref(),
        Some(&b"over the socket"[..])
    );
    let admin = CacheClient::builder()
        .app("uds")
        .nodes([listen.clone()])
        .token(admin_token)
        .build()
        .await
        .unwrap();
    let stats = admin.stats().await.unwrap();
    assert_eq!(stats.nodes.len(), 1);
    assert_eq!(stats.nodes[0].stats.as_ref().unwrap().puts, 1, "{stats:?}");

    // The control: the same node by its advertised TCP address is not reachable.
    let over_tcp = CacheClient::builder()
        .app("uds")
        .nodes([unreachable])
        .token(token)
        .timeout(std::time::Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    assert!(over_tcp.get("k").await.is_err());

    // A second node cannot take a socket that a live node answers on.
    let taken = common::Server::spawn_at("127.0.0.1:0", &args, &[]);
    let Err(e) = taken else {
        panic!("a second node bound a live socket")
    };
    assert!(e.contains("already listens"), "{e}");

    server.terminate();
    assert!(!socket.exists(), "the socket file is removed on exit");
    // A socket nobody serves is a clear error when the client is built.
    let Err(e) = CacheClient::builder()
        .app("uds")
        .nodes([listen.clone()])
        .build()
        .await
    else {
        panic!("a client was built on a socket nobody serves")
    };
    assert!(e.to_string().contains(&listen), "{e}");
}

#[test]
fn listen_and_threads_flags_are_checked() {
    // A socket path taken by a regular file is refused; a socket file that nobody serves (a
    // node that was killed) is replaced.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"data").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cache-server"))
        .args([
            "--app",
            "a",
            "--store",
            "memory:///",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--listen")
        .arg(format!("unix:{}", file.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a socket"), "{err}");
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let listen = format!("unix:{}", stale.display());
    let server = common::Server::spawn(
        &["--app", "a", "--store", "memory:///", "--listen", &listen],
        &[],
    );
    assert!(std::os::unix::net::UnixStream::connect(&stale).is_ok());
    server.terminate();

    for (listen, expected) in [
        ("unix:", "needs a path"),
        ("localhost", "neither HOST:PORT nor unix:PATH"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cache-server"))
            .args(["--app", "a", "--store", "memory:///", "--listen", listen])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{listen}: {err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cache-server"))
        .args(["--app", "a", "--store", "memory:///", "--threads", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threads"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cache-server"))
        .args(["--app", "a", "--store", "memory:///"])
        .args(["--listen", "127.0.0.1:0", "--listen", "127.0.0.2:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than one TCP address"), "{err}");
}
