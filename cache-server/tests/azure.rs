//! The `az://` store against Azurite, through the `cache-server` binary, as the S3 tests run
//! against moto: a blob written straight into the container is read through the node, a blob
//! put through the node lands in the container, conditional writes keep their one winner, and
//! a delete removes the blob.

mod common;

use cache_client::{CacheClient, Error, Tier};
use cache_testkit::azurite::Azurite;

const CONTAINER: &str = "cache";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_and_writes_through_to_azure_blob_storage() {
    let azurite = Azurite::start().expect("Azurite and its client (scripts/test installs them)");
    azurite.create_container(CONTAINER).unwrap();
    azurite
        .put_blob(CONTAINER, "reports/q1.csv", b"written behind the cache")
        .unwrap();
    let env = azurite.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let store = format!("az://{CONTAINER}");
    let server = common::Server::spawn(&["--app", "az", "--store", &store], &env);
    let cache = CacheClient::builder()
        .app("az")
        .nodes([server.addr.clone()])
        .build()
        .await
        .unwrap();

    // Read through: the first read comes from the container, the second from the node.
    let first = cache.get_entry("reports/q1.csv").await.unwrap().unwrap();
    assert_eq!(first.value.as_ref(), b"written behind the cache");
    assert_eq!(first.tier, Tier::Store);
    let second = cache.get_entry("reports/q1.csv").await.unwrap().unwrap();
    assert_eq!(second.tier, Tier::Home);
    assert_eq!(second.version, first.version);
    assert_eq!(cache.get("no/such/blob").await.unwrap(), None);

    // Write through: the blob is in the container when the put returns.
    let value = vec![7u8; 100_000];
    let version = cache.put("out/result.bin", value.clone()).await.unwrap();
    assert_eq!(
        azurite.get_blob(CONTAINER, "out/result.bin").unwrap(),
        value
    );

    // Conditional writes on Azure's ETags: the holder of the current version wins once.
    let newer = cache
        .put_if_version("out/result.bin", "second", &version)
        .await
        .unwrap();
    let stale = cache
        .put_if_version("out/result.bin", "third", &version)
        .await;
    assert!(matches!(stale, Err(Error::VersionMismatch(_))), "{stale:?}");
    assert_eq!(
        azurite.get_blob(CONTAINER, "out/result.bin").unwrap(),
        b"second"
    );
    assert_eq!(
        cache.get_with_version("out/result.bin").await.unwrap(),
        Some(("second".into(), newer))
    );
    // Create-only: the empty version means "only if there is none".
    common::check_create_only(&cache, "out/result.bin", "out/new.bin").await;
    assert_eq!(
        azurite.get_blob(CONTAINER, "out/new.bin").unwrap(),
        b"fresh"
    );

    // A delete removes the blob from the container and from the cache.
    cache.delete("out/result.bin").await.unwrap();
    assert!(azurite.get_blob(CONTAINER, "out/result.bin").is_err());
    assert_eq!(cache.get("out/result.bin").await.unwrap(), None);
    server.terminate();
}
