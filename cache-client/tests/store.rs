//! `CachedStore`: the cache behind the `ObjectStore` trait, over a 3-node cluster.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_client::{CacheClient, CachedStore};
use cache_core::Limits;
use cache_server::cluster::LocalCluster;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};

const APP: &str = "storeapp";
/// The nodes' and the client's largest value: larger objects go around the cache.
const MAX_VALUE: u64 = 1 << 20;

async fn setup() -> (LocalCluster, Arc<dyn ObjectStore>, CachedStore) {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cluster = LocalCluster::start(3, |b| {
        b.app(APP)
            .store(inner.clone())
            .limits(Limits::default().with_max_value_bytes(MAX_VALUE))
    })
    .await
    .unwrap();
    let cache = CacheClient::builder()
        .app(APP)
        .nodes(cluster.addrs())
        .max_value_bytes(MAX_VALUE)
        .timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let store = CachedStore::new(cache, inner.clone());
    (cluster, inner, store)
}

async fn read(store: &dyn ObjectStore, path: &Path) -> Bytes {
    store.get(path).await.unwrap().bytes().await.unwrap()
}

#[tokio::test]
async fn gets_and_puts_go_through_the_cache_with_the_stores_semantics() {
    let (cluster, inner, store) = setup().await;
    let path = Path::from("thumbs/cat.png");
    let put = store
        .put(&path, Bytes::from_static(b"0123456789").into())
        .await
        .unwrap();
    // Write-through: it is in the store.
    assert_eq!(read(inner.as_ref(), &path).await.as_ref(), b"0123456789");
    let got = store.get(&path).await.unwrap();
    assert_eq!(got.meta.e_tag, put.e_tag);
    assert_eq!(got.meta.size, 10);
    assert!(got.meta.last_modified.timestamp() > 0, "a write time");
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"0123456789");
    assert!(
        store.cache().client_stats().hits_home >= 1,
        "served by the home node"
    );

    assert_eq!(store.get_range(&path, 2..5).await.unwrap().as_ref(), b"234");
    let suffix = GetOptions {
        range: Some(GetRange::Suffix(3)),
        ..Default::default()
    };
    let r = store.get_opts(&path, suffix).await.unwrap();
    assert_eq!(r.range, 7..10);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"789");
    let head = store.head(&path).await.unwrap();
    assert_eq!((head.size, head.e_tag.clone()), (10, put.e_tag.clone()));

    let not_modified = GetOptions {
        if_none_match: put.e_tag.clone(),
        ..Default::default()
    };
    assert!(matches!(
        store.get_opts(&path, not_modified).await,
        Err(object_store::Error::NotModified { .. })
    ));
    let stale = GetOptions {
        if_match: Some("stale".into()),
        ..Default::default()
    };
    assert!(matches!(
        store.get_opts(&path, stale).await,
        Err(object_store::Error::Precondition { .. })
    ));

    // PutMode: create-only refuses an existing object; an update needs the current version.
    let create = PutOptions::from(PutMode::Create);
    let refused = store
        .put_opts(&path, PutPayload::from_static(b"x"), create.clone())
        .await;
    assert!(
        matches!(refused, Err(object_store::Error::AlreadyExists { .. })),
        "{refused:?}"
    );
    store
        .put_opts(
            &Path::from("thumbs/new.png"),
            PutPayload::from_static(b"n"),
            create,
        )
        .await
        .unwrap();
    let update = |e_tag: Option<String>| {
        PutOptions::from(PutMode::Update(UpdateVersion {
            e_tag,
            version: None,
        }))
    };
    let updated = store
        .put_opts(
            &path,
            PutPayload::from_static(b"v2"),
            update(put.e_tag.clone()),
        )
        .await
        .unwrap();
    let late = store
        .put_opts(
            &path,
            PutPayload::from_static(b"v3"),
            update(put.e_tag.clone()),
        )
        .await;
    assert!(
        matches!(late, Err(object_store::Error::Precondition { .. })),
        "{late:?}"
    );
    assert_eq!(store.head(&path).await.unwrap().e_tag, updated.e_tag);

    let listed: Vec<_> = store
        .list(Some(&Path::from("thumbs")))
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    assert_eq!(listed, ["thumbs/cat.png", "thumbs/new.png"]);

    store.delete(&path).await.unwrap();
    assert!(matches!(
        inner.head(&path).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert!(matches!(
        store.get(&path).await,
        Err(object_store::Error::NotFound { .. })
    ));
    cluster.shutdown().await;
}

/// Writes around the cache (multipart uploads, objects above the largest value, copies) end
/// with the home node forgetting its copy, so no stale copy is served after them. The control
/// writes around the cache without telling it, and the check sees the stale copy.
#[tokio::test]
async fn writes_around_the_cache_leave_no_stale_copy() {
    let (cluster, inner, store) = setup().await;
    let big: Vec<u8> = (0..(3 * MAX_VALUE)).map(|i| (i % 241) as u8).collect();

    // A multipart upload over a cached small object.
    let path = Path::from("videos/clip.bin");
    store
        .put(&path, Bytes::from_static(b"small").into())
        .await
        .unwrap();
    assert_eq!(read(&store, &path).await.as_ref(), b"small");
    let mut upload = store.put_multipart(&path).await.unwrap();
    for part in big.chunks(1 << 20) {
        upload
            .put_part(PutPayload::from(Bytes::copy_from_slice(part)))
            .await
            .unwrap();
    }
    upload.complete().await.unwrap();
    assert!(
        read(&store, &path).await.as_ref() == big.as_slice(),
        "not the stale copy"
    );
    assert_eq!(
        store.get_range(&path, 5..9).await.unwrap().as_ref(),
        &big[5..9],
        "a range of a large object, from the store"
    );

    // One put above the largest value.
    let single = Path::from("videos/single.bin");
    store
        .put(&single, Bytes::from_static(b"small").into())
        .await
        .unwrap();
    assert_eq!(read(&store, &single).await.as_ref(), b"small");
    store
        .put(&single, Bytes::from(big.clone()).into())
        .await
        .unwrap();
    assert_eq!(read(&store, &single).await.len(), big.len());

    // A copy onto a cached object.
    let copy = Path::from("videos/copy.bin");
    store
        .put(&copy, Bytes::from_static(b"old").into())
        .await
        .unwrap();
    assert_eq!(read(&store, &copy).await.as_ref(), b"old");
    store
        .put(&path, Bytes::from_static(b"new").into())
        .await
        .unwrap();
    store.copy(&path, &copy).await.unwrap();
    assert_eq!(read(&store, &copy).await.as_ref(), b"new");

    // Control: the same write around the cache, but without `forget`, is served stale.
    let control = Path::from("videos/control.bin");
    store
        .put(&control, Bytes::from_static(b"old").into())
        .await
        .unwrap();
    assert_eq!(read(&store, &control).await.as_ref(), b"old");
    inner
        .put(&control, Bytes::from_static(b"new").into())
        .await
        .unwrap();
    assert_eq!(
        read(&store, &control).await.as_ref(),
        b"old",
        "without forget the cache serves its stale copy: the check above would catch it"
    );
    store.cache().forget(control.as_ref()).await.unwrap();
    assert_eq!(read(&store, &control).await.as_ref(), b"new");
    cluster.shutdown().await;
}
