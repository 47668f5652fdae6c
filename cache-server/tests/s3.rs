//! The data path against moto, a real S3 API server, including a store outage.
//!
//! The test starts `moto_server` itself (from `CACHELET_MOTO_SERVER`, or `moto_server` on
//! `PATH`) on a free loopback port, so that it can stop and restart it. Without moto the test
//! fails: `scripts/test` installs it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_client::{CacheClient, Error, Tier};
use cache_server::cluster::LocalCluster;
use cache_testkit::moto::Moto;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

const BUCKET: &str = "cachelet-test";

/// moto on a free loopback port. A missing emulator fails the test: scripts/test installs it.
async fn start_moto() -> Moto {
    Moto::start("127.0.0.1".parse().unwrap(), BUCKET)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
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
    let mut moto = start_moto().await;
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
    common::check_create_only(&cache, "written/b.txt", "written/new.txt").await;

    // Outage: the emulator stops mid-test.
    moto.kill();
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
    moto.restart().await.unwrap();
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
    let moto = start_moto().await;
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
