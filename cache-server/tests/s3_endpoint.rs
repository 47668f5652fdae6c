//! The S3 endpoint (`cache-server --s3`) through the binary, as the README runs it, driven by
//! S3 clients nobody here wrote: boto3 and the AWS CLI (from PyPI, installed by
//! `scripts/test`), and `object_store`'s own `AmazonS3`. The application's store is moto, or
//! a directory where a test needs a large object on disk.
//!
//! Without moto, Python, boto3 or the AWS CLI the tests fail; they never skip.

mod common;

use std::path::Path as FsPath;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use cache_testkit::moto::Moto;
use common::Server;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

/// The moto bucket behind the cache: the application's store.
const STORE_BUCKET: &str = "cachelet-s3-endpoint";
/// The application, which is the endpoint's bucket.
const APP: &str = "photos";
const KEY_ID: &str = "AKIDCACHELETTEST";
const SECRET: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM";

fn tool(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with scripts/test, which installs it")
    })
}

/// A keys file only its owner may read.
fn keys_file(dir: &FsPath) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("s3-keys");
    std::fs::write(&path, format!("# test keys\n{KEY_ID} {SECRET}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// The moto bucket, written and read behind the cache's back.
fn direct(moto: &Moto) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(moto.endpoint())
            .with_bucket_name(STORE_BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}

fn moto_env(moto: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT", moto.endpoint()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

/// `cache-server --s3` over the moto bucket, with one access key.
fn serve_over_moto(moto: &Moto, dir: &FsPath, extra: &[&str]) -> Server {
    let keys = keys_file(dir);
    let store = format!("s3://{STORE_BUCKET}");
    let mut args = vec![
        "--app",
        APP,
        "--store",
        &store,
        "--s3",
        "127.0.0.1:0",
        "--s3-keys",
        &keys,
    ];
    args.extend_from_slice(extra);
    let env = moto_env(moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::spawn(&args, &env)
}

/// `object_store`'s S3 client, pointed at the endpoint.
fn endpoint_store(s3_addr: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(format!("http://{s3_addr}"))
            .with_bucket_name(APP)
            .with_region("us-east-1")
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}

async fn stats(server: &Server) -> cache_client::Stats {
    let client = cache_client::CacheClient::builder()
        .app(APP)
        .nodes([server.addr.clone()])
        .build()
        .await
        .unwrap();
    client.stats().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_reads_and_writes_through_the_endpoint() {
    let moto = Moto::start("127.0.0.1".parse().unwrap(), STORE_BUCKET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let store = direct(&moto);
    store
        .put(
            &Path::from("direct/seed.txt"),
            Bytes::from_static(b"seeded").into(),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = serve_over_moto(&moto, dir.path(), &[]);
    let s3 = server.s3_addr();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3_sdk.py");
    let out = Command::new(tool("CACHELET_PYTHON"))
        .arg(script)
        .env("ENDPOINT", format!("http://{s3}"))
        .env("BUCKET", APP)
        .env("KEY_ID", KEY_ID)
        .env("SECRET", SECRET)
        .env("SEEDED", "direct/seed.txt")
        .env("SEEDED_VALUE", "seeded")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "read-through",
        "put-get",
        "ranged-get",
        "head",
        "conditional-get",
        "conditional-put",
        "list",
        "copy",
        "multipart",
        "delete",
        "bucket",
        "auth",
    ] {
        assert!(
            stdout.contains(&format!("ok {step}\n")),
            "step {step}: {stdout}"
        );
    }

    // Transparency the other way: what boto3 put through the endpoint is in the store.
    let landed = store.get(&Path::from("photos/cat.txt")).await.unwrap();
    assert_eq!(landed.bytes().await.unwrap().as_ref(), b"meow meow meow");
    let leader = store.get(&Path::from("locks/leader")).await.unwrap();
    assert_eq!(leader.bytes().await.unwrap().as_ref(), b"third");
    let deleted = store.head(&Path::from("photos/copy.txt")).await;
    assert!(matches!(deleted, Err(object_store::Error::NotFound { .. })));
    // No staged part is left behind.
    let staged: Vec<_> = store
        .list(Some(&Path::from("_cachelet/uploads")))
        .collect()
        .await;
    assert!(staged.is_empty(), "{staged:?}");

    // The endpoint's reads are the cache's reads: the node's counters saw them.
    let stats = stats(&server).await;
    let node = stats.nodes[0].stats.as_ref().expect("the node's counters");
    assert!(
        node.hits > 0 && node.store_reads > 0 && node.store_writes > 0,
        "{node:?}"
    );
    // And its own counters, by outcome: the script's refusals are the client's errors.
    assert!(node.s3_requests > 30, "{node:?}");
    assert!(node.s3_client_errors >= 10, "{node:?}");
    assert_eq!(node.s3_server_errors, 0, "{node:?}");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_s3_client_works_against_the_endpoint() {
    let moto = Moto::start("127.0.0.1".parse().unwrap(), STORE_BUCKET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let server = serve_over_moto(&moto, dir.path(), &["--max-value", "4MiB"]);
    let s3 = endpoint_store(&server.s3_addr());

    let path = Path::from("docs/readme.txt");
    let put = s3
        .put(&path, Bytes::from_static(b"hello, cache").into())
        .await
        .unwrap();
    let got = s3.get(&path).await.unwrap();
    assert_eq!(got.meta.e_tag, put.e_tag);
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"hello, cache");
    assert_eq!(s3.get_range(&path, 7..12).await.unwrap().as_ref(), b"cache");
    assert_eq!(s3.head(&path).await.unwrap().size, 12);

    // Create-only writes: the second one is refused.
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let fresh = Path::from("docs/once.txt");
    s3.put_opts(&fresh, PutPayload::from_static(b"1"), create.clone())
        .await
        .unwrap();
    let again = s3
        .put_opts(&fresh, PutPayload::from_static(b"2"), create)
        .await;
    assert!(
        matches!(
            again,
            Err(object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. })
        ),
        "{again:?}"
    );

    // A multipart upload larger than the cache's largest value: it goes around the cache,
    // and reads of it are served from the store in parts.
    let big: Vec<u8> = (0..(11 << 20)).map(|i: u32| (i % 253) as u8).collect();
    let big_path = Path::from("docs/big.bin");
    let mut upload = s3.put_multipart(&big_path).await.unwrap();
    for chunk in big.chunks(5 << 20) {
        upload
            .put_part(PutPayload::from(Bytes::copy_from_slice(chunk)))
            .await
            .unwrap();
    }
    upload.complete().await.unwrap();
    let read = s3.get(&big_path).await.unwrap().bytes().await.unwrap();
    assert!(
        read.as_ref() == big.as_slice(),
        "the large object round-trips"
    );
    let range = s3
        .get_range(&big_path, (9 << 20)..(10 << 20) + 5)
        .await
        .unwrap();
    assert!(range.as_ref() == &big[(9 << 20)..(10 << 20) + 5]);

    // A small object replaced by a large one is not served stale from the cache.
    let swap = Path::from("docs/swap.bin");
    s3.put(&swap, Bytes::from_static(b"small").into())
        .await
        .unwrap();
    assert_eq!(
        s3.get(&swap).await.unwrap().bytes().await.unwrap().as_ref(),
        b"small"
    );
    s3.put(&swap, Bytes::from(big.clone()).into())
        .await
        .unwrap();
    assert_eq!(s3.head(&swap).await.unwrap().size, big.len() as u64);
    assert_eq!(
        s3.get(&swap).await.unwrap().bytes().await.unwrap().len(),
        big.len()
    );

    let listed: Vec<_> = s3
        .list(Some(&Path::from("docs")))
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    assert_eq!(
        listed,
        [
            "docs/big.bin",
            "docs/once.txt",
            "docs/readme.txt",
            "docs/swap.bin"
        ]
    );
    s3.delete(&path).await.unwrap();
    assert!(matches!(
        s3.get(&path).await,
        Err(object_store::Error::NotFound { .. })
    ));
    // Large objects were written around the cache, and read through it in chunks.
    let stats = stats(&server).await;
    let node = stats.nodes[0].stats.as_ref().expect("the node's counters");
    assert!(node.s3_around_writes >= 2, "{node:?}");
    assert_eq!(node.s3_around_reads, 0, "{node:?}");
    assert!(node.chunk_reads >= 6, "{node:?}");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_copies_a_100_mib_file_in_parts_byte_for_byte() {
    let moto = Moto::start("127.0.0.1".parse().unwrap(), STORE_BUCKET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let server = serve_over_moto(&moto, dir.path(), &[]);
    let endpoint = format!("http://{}", server.s3_addr());

    let source = dir.path().join("upload.bin");
    let mut data = vec![0u8; 100 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&source, &data).unwrap();
    let config = dir.path().join("aws-config");
    std::fs::write(&config, "[default]\nregion = us-east-1\n").unwrap();
    let aws = |args: &[&str]| {
        let out = Command::new(tool("CACHELET_AWS"))
            .args(["--endpoint-url", &endpoint])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
            .output()
            .expect("run the AWS CLI");
        assert!(
            out.status.success(),
            "aws {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let src = source.display().to_string();
    aws(&[
        "s3",
        "cp",
        &src,
        "s3://photos/videos/big.bin",
        "--only-show-errors",
    ]);
    let back = dir.path().join("download.bin");
    let dst = back.display().to_string();
    aws(&[
        "s3",
        "cp",
        "s3://photos/videos/big.bin",
        &dst,
        "--only-show-errors",
    ]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the download differs"
    );
    let listing = aws(&["s3", "ls", "s3://photos/videos/"]);
    assert!(
        listing.contains(&format!("{} big.bin", 100 << 20)),
        "{listing}"
    );
    // It is in the store, whole.
    let meta = direct(&moto)
        .head(&Path::from("videos/big.bin"))
        .await
        .unwrap();
    assert_eq!(meta.size, 100 << 20);
    server.terminate();
}

/// Streams `path` from the endpoint and returns how many bytes came and their checksum.
async fn drain(s3: Arc<dyn ObjectStore>, path: Path) -> (u64, u64) {
    let mut stream = s3.get(&path).await.unwrap().into_stream();
    let (mut n, mut sum) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        n += chunk.len() as u64;
        sum = chunk
            .iter()
            .fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
    }
    (n, sum)
}

/// A 1 GiB object in a directory store, and its checksum as [`drain`] computes it.
fn one_gib_object(dir: &FsPath) -> u64 {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join("movie.bin")).unwrap());
    let block: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i * 7 % 251) as u8).collect();
    let mut sum = 0u64;
    for _ in 0..1024 {
        file.write_all(&block).unwrap();
        sum = block
            .iter()
            .fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
    }
    file.flush().unwrap();
    sum
}

/// Serves a 1 GiB object to `readers` clients at once and returns the node's peak RSS.
async fn peak_rss_serving_one_gib(readers: usize, extra: &[&str]) -> u64 {
    let store_dir = tempfile::tempdir().unwrap();
    let expected = one_gib_object(store_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path());
    let store = format!("file://{}", store_dir.path().display());
    let mut args = vec![
        "--app",
        APP,
        "--store",
        &store,
        "--capacity",
        "64MiB",
        "--s3",
        "127.0.0.1:0",
        "--s3-keys",
        &keys,
    ];
    args.extend_from_slice(extra);
    let server = Server::spawn(&args, &[]);
    let s3 = endpoint_store(&server.s3_addr());
    let reads = (0..readers).map(|_| tokio::spawn(drain(Arc::clone(&s3), Path::from("movie.bin"))));
    for read in futures::future::join_all(reads).await {
        assert_eq!(
            read.unwrap(),
            (1 << 30, expected),
            "every reader gets the whole object"
        );
    }
    let (_, peak) = server.rss();
    server.terminate();
    peak
}

/// The memory bound: a node serving a 1 GiB object to 4 clients at once stays under its
/// capacity plus 256 MiB. The control serves it with the whole object read into memory first
/// (`--s3-unbounded-reads`, a fault injected for this check), and one reader is enough to
/// break the bound: the check catches a node that buffers large objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_a_1_gib_object_to_4_clients_stays_within_capacity_plus_256_mib() {
    let limit = (64 << 20) + (256 << 20);
    let peak = peak_rss_serving_one_gib(4, &[]).await;
    assert!(peak < limit, "peak RSS {} MiB", peak >> 20);
    let control = peak_rss_serving_one_gib(1, &["--s3-unbounded-reads"]).await;
    assert!(control > limit, "control peak RSS {} MiB", control >> 20);
    eprintln!("peak RSS {} MiB; control {} MiB", peak >> 20, control >> 20);
}

/// The README's "Use it from any language" flow, as written there: a file store, a keys
/// file of mode 600 with the README's key, the node with `--s3`, then the example boto3
/// function and the AWS CLI with the credentials in the usual variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_boto3_function_and_cli_go_through_the_cache() {
    use std::os::unix::fs::PermissionsExt;
    const README_KEY: &str = "AKIDEXAMPLE";
    const README_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let store_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(store_dir.path().join("cats")).unwrap();
    let image: Vec<u8> = (0..100u8).collect();
    std::fs::write(store_dir.path().join("cats/1.png"), &image).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("s3-keys");
    std::fs::write(&keys, "").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&keys, format!("{README_KEY} {README_SECRET}\n")).unwrap();
    let store = format!("file://{}", store_dir.path().display());
    let keys = keys.display().to_string();
    let server = Server::spawn(
        &[
            "--app",
            "thumbnails",
            "--store",
            &store,
            "--s3",
            "127.0.0.1:0",
            "--s3-keys",
            &keys,
        ],
        &[],
    );
    let endpoint = format!("http://{}", server.s3_addr());
    let env = [
        ("AWS_ACCESS_KEY_ID", README_KEY),
        ("AWS_SECRET_ACCESS_KEY", README_SECRET),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ];
    let isolated = |command: &mut Command| {
        // No configuration of this machine's user leaks in.
        command
            .envs(env)
            .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("no-credentials"),
            );
    };

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/s3/thumbnail.py");
    let mut python = Command::new(tool("CACHELET_PYTHON"));
    python
        .arg(example)
        .arg("cats/1.png")
        .env("CACHELET_S3_ENDPOINT", &endpoint);
    isolated(&mut python);
    let out = python.output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "cats/1.png: 100 bytes, thumbnail 64 bytes");
    let thumbnail = std::fs::read(store_dir.path().join("thumbs/cats/1.png")).unwrap();
    assert_eq!(thumbnail, image[..64], "the write landed in the store");

    let video = dir.path().join("video.mp4");
    std::fs::write(&video, vec![7u8; 3 << 20]).unwrap();
    let video = video.display().to_string();
    for args in [
        vec![
            "s3",
            "cp",
            video.as_str(),
            "s3://thumbnails/videos/video.mp4",
        ],
        vec!["s3", "ls", "s3://thumbnails/videos/"],
    ] {
        let mut aws = Command::new(tool("CACHELET_AWS"));
        aws.args(["--endpoint-url", &endpoint]).args(&args);
        isolated(&mut aws);
        let out = aws.output().expect("run the AWS CLI");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if args[1] == "ls" {
            let listing = String::from_utf8_lossy(&out.stdout);
            assert!(
                listing.contains(&format!("{} video.mp4", 3 << 20)),
                "{listing}"
            );
        }
    }
    let landed = std::fs::read(store_dir.path().join("videos/video.mp4")).unwrap();
    assert_eq!(landed.len(), 3 << 20);
    server.terminate();
}

/// Any node's endpoint serves any key: through one node's endpoint, the keys another node
/// owns are written and read on that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nodes_endpoint_serves_the_keys_of_every_node() {
    let store_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path());
    let store = format!("file://{}", store_dir.path().display());
    let a = Server::spawn(
        &[
            "--app",
            APP,
            "--store",
            &store,
            "--s3",
            "127.0.0.1:0",
            "--s3-keys",
            &keys,
        ],
        &[],
    );
    let b = Server::spawn(&["--app", APP, "--store", &store], &[]);
    let cache = cache_client::CacheClient::builder()
        .app(APP)
        .nodes([a.addr.clone()])
        .build()
        .await
        .unwrap();
    cache
        .set_members(None, vec![a.addr.clone(), b.addr.clone()])
        .await
        .unwrap();
    let s3 = endpoint_store(&a.s3_addr());
    let keys: Vec<String> = (0..40).map(|i| format!("spread/{i}")).collect();
    for key in &keys {
        s3.put(&Path::from(key.as_str()), Bytes::from(key.clone()).into())
            .await
            .unwrap();
    }
    for key in &keys {
        let got = s3.get(&Path::from(key.as_str())).await.unwrap();
        assert_eq!(got.bytes().await.unwrap(), key.as_bytes());
    }
    let on_b = keys.iter().filter(|k| cache.home_of(k) == b.addr).count();
    assert!(on_b >= 5, "{on_b} of the keys live on b");
    let stats = cache.stats().await.unwrap();
    let b_stats = stats
        .nodes
        .iter()
        .find(|n| n.addr == b.addr)
        .and_then(|n| n.stats.clone())
        .expect("b's counters");
    assert_eq!(b_stats.puts, on_b as u64, "b took the writes of its keys");
    assert!(
        b_stats.hits >= on_b as u64,
        "and served their reads: {b_stats:?}"
    );
    a.terminate();
    b.terminate();
}
