//! The data path against moto, a real S3 API server, including a store outage.
//!
//! The test starts `moto_server` itself (from `CACHELET_MOTO_SERVER`, or `moto_server` on
//! `PATH`) on a free loopback port, so that it can stop and restart it. Without moto the test
//! is skipped, except under `CI=true`, where that is a failure.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_client::{CacheClient, Error, Tier};
use cache_server::cluster::LocalCluster;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUCKET: &str = "cachelet-test";

fn moto_binary() -> Option<String> {
    if let Ok(path) = std::env::var("CACHELET_MOTO_SERVER") {
        return Some(path);
    }
    let found = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    found.then(|| "moto_server".to_owned())
}

/// Skips the test when moto is missing, unless running in CI.
fn require_moto() -> Option<String> {
    match moto_binary() {
        Some(bin) => Some(bin),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("moto_server is required in CI: set CACHELET_MOTO_SERVER or put it on PATH")
        }
        None => {
            eprintln!("skipping: moto_server not found (run scripts/test to install it)");
            None
        }
    }
}

struct Moto {
    bin: String,
    port: u16,
    child: Option<Child>,
}

impl Moto {
    async fn start(bin: String) -> Self {
        // Ask the OS for a free port, then hand it to moto.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut moto = Self {
            bin,
            port,
            child: None,
        };
        moto.restart().await;
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new(&self.bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        self.child = Some(child);
        // Ready when the bucket can be created.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if create_bucket(self.port).await {
                return;
            }
            assert!(Instant::now() < deadline, "moto did not start within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `PUT /bucket`, which moto accepts without credentials. Returns whether it answered 200.
async fn create_bucket(port: u16) -> bool {
    let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = format!(
        "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if conn.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = conn.read_to_end(&mut response).await;
    response.starts_with(b"HTTP/1.1 200") || response.starts_with(b"HTTP/1.0 200")
}

fn s3_store(endpoint: &str) -> Arc<dyn ObjectStore> {
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 1,
            retry_timeout: Duration::from_secs(2),
        })
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(3)),
        )
        // After the client options, which would otherwise reset it.
        .with_allow_http(true)
        .build()
        .unwrap();
    Arc::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_read_through_write_through_and_outage() {
    let Some(bin) = require_moto() else { return };
    let mut moto = Moto::start(bin).await;
    let store = s3_store(&moto.endpoint());
    let cluster = LocalCluster::start(3, |b| {
        b.app("s3app")
            .store(store.clone())
            .store_timeout(Duration::from_secs(3))
    })
    .await
    .unwrap();
    let cache = CacheClient::builder()
        .app("s3app")
        .nodes(cluster.addrs())
        .timeout(Duration::from_secs(8))
        .build()
        .await
        .unwrap();

    // Read-through of a blob written straight to S3.
    store
        .put(
            &Path::from("direct/a.json"),
            Bytes::from_static(b"{\"a\":1}").into(),
        )
        .await
        .unwrap();
    let first = cache.get_entry("direct/a.json").await.unwrap().unwrap();
    assert_eq!(first.value.as_ref(), b"{\"a\":1}");
    assert_eq!(first.tier, Tier::Store);
    let head = store.head(&Path::from("direct/a.json")).await.unwrap();
    assert_eq!(
        Some(first.version.clone()),
        head.e_tag,
        "cached with S3's ETag"
    );
    assert_eq!(
        cache
            .get_entry("direct/a.json")
            .await
            .unwrap()
            .unwrap()
            .tier,
        Tier::Home
    );
    assert_eq!(cache.get("direct/missing").await.unwrap(), None);

    // Write-through: S3 holds the value once the put returns.
    let version = cache.put("written/b.txt", "through").await.unwrap();
    let in_s3 = store.get(&Path::from("written/b.txt")).await.unwrap();
    assert_eq!(in_s3.meta.e_tag.as_deref(), Some(version.as_str()));
    assert_eq!(in_s3.bytes().await.unwrap().as_ref(), b"through");

    // Conditional writes are checked by S3 itself (If-Match, If-None-Match).
    store
        .put(
            &Path::from("written/b.txt"),
            Bytes::from_static(b"direct").into(),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            cache
                .put_if_version("written/b.txt", "stale", &version)
                .await,
            Err(Error::VersionMismatch(_))
        ),
        "a conditional put on a version S3 no longer holds fails"
    );
    let current = store.head(&Path::from("written/b.txt")).await.unwrap();
    cache
        .put_if_version(
            "written/b.txt",
            "through",
            current.e_tag.as_deref().unwrap(),
        )
        .await
        .unwrap();
    assert!(matches!(
        cache.put_if_version("written/b.txt", "x", "").await,
        Err(Error::VersionMismatch(_))
    ));
    cache
        .put_if_version("written/new.txt", "x", "")
        .await
        .unwrap();

    // Outage: the emulator stops mid-test.
    moto.stop();
    match cache.get("direct/never-read").await {
        Err(Error::Unavailable(_)) => {}
        other => panic!("expected Unavailable during the outage, got {other:?}"),
    }
    assert!(matches!(
        cache.put("written/c.txt", "x").await,
        Err(Error::Unavailable(_))
    ));
    // Cached blobs are still served, and every node still answers.
    assert_eq!(
        cache.get("written/b.txt").await.unwrap().as_deref(),
        Some(&b"through"[..])
    );
    let stats = cache.stats().await.unwrap();
    assert!(stats.nodes.iter().all(|n| n.stats.is_some()));
    assert!(
        stats
            .nodes
            .iter()
            .map(|n| n.stats.as_ref().unwrap().store_errors)
            .sum::<u64>()
            >= 2
    );

    // Back again (moto starts empty): everything works.
    moto.restart().await;
    cache.put("written/c.txt", "after").await.unwrap();
    assert_eq!(
        cache.get("written/c.txt").await.unwrap().as_deref(),
        Some(&b"after"[..])
    );
    store
        .put(&Path::from("direct/d"), Bytes::from_static(b"d").into())
        .await
        .unwrap();
    assert_eq!(
        cache.get("direct/d").await.unwrap().as_deref(),
        Some(&b"d"[..])
    );
    cluster.shutdown().await;
}

/// The `cache-server` binary with `--store s3://BUCKET`, its endpoint from `AWS_*` variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_opens_s3_from_its_url_and_environment() {
    let Some(bin) = require_moto() else { return };
    let moto = Moto::start(bin).await;
    let server = common::Server::spawn(
        &["--app", "bin", "--store", &format!("s3://{BUCKET}/prefix")],
        &[
            ("AWS_ENDPOINT", moto.endpoint().as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let cache = CacheClient::builder()
        .app("bin")
        .nodes([server.addr.clone()])
        .build()
        .await
        .unwrap();
    cache.put("k", "v").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    // The URL's prefix scopes the cache: key `k` is the object `prefix/k`.
    let store = s3_store(&moto.endpoint());
    let raw = store.get(&Path::from("prefix/k")).await.unwrap();
    assert_eq!(raw.bytes().await.unwrap().as_ref(), b"v");
    server.terminate();
}

mod common;
