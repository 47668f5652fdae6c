//! `cache-bench s3`: the S3 endpoint against the stores it stands in for, in one run.
//!
//! - GetObject latency, one request at a time, of a cached 1 KiB and a cached 1 MiB object:
//!   through a `cache-server` node's S3 endpoint (over moto), straight from moto, straight from
//!   Azurite, and through `CacheClient::get` from the same node. Every S3 GET is made by
//!   `object_store`'s own clients (`AmazonS3`, `MicrosoftAzure`), so the client side costs the
//!   same; the systems take turns, round by round.
//! - The throughput of reading a large object (256 MiB by default): through the endpoint on a
//!   miss (the node reads its chunks from moto with parallel ranged GETs), through the endpoint
//!   cached, and with one GET straight from moto.
//!
//! The node runs as a process of its own, as moto and Azurite do. The measuring runs in a
//! child process (`cache-bench s3-client`), which gets the emulator's address in its
//! environment, as `object_store`'s Azure client requires.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use cache_client::CacheClient;
use cache_testkit::azurite::Azurite;
use cache_testkit::moto::Moto;
use futures::StreamExt;
use hdrhistogram::Histogram;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::procs::{ProcessCluster, ProcessStore, ServerBin};
use crate::report::Table;

const APP: &str = "bench";
const BUCKET: &str = "cachelet-bench";
const CONTAINER: &str = "bench";
const KEY_ID: &str = "AKIDBENCH";
const SECRET: &str = "YmVuY2gtc2VjcmV0LWtleQ";
/// The nodes' part size (the default), which the miss path reads the store by.
const MISS_CHUNK: u64 = cache_core::chunks::DEFAULT_PART_BYTES;

/// The comparison's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct S3Args {
    /// GETs per system, object size and round.
    #[arg(long, default_value_t = 200)]
    pub gets: usize,
    /// Rounds; the systems take turns each round.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The large object's size.
    #[arg(long, default_value = "256MiB")]
    pub large: bytesize::ByteSize,
    /// Reads of the large object per way of reading it.
    #[arg(long, default_value_t = 2)]
    pub large_reads: usize,
    /// The cache-server to run (default: cache-server next to this executable, else this
    /// executable's own copy of it; `self` forces the latter).
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
}

/// What the measuring process is told.
#[derive(Debug, Clone, clap::Args)]
pub struct S3ClientArgs {
    /// The comparison's settings.
    #[command(flatten)]
    pub settings: S3Args,
    /// The node's S3 endpoint, `http://HOST:PORT`.
    #[arg(long)]
    pub endpoint: String,
    /// moto's endpoint.
    #[arg(long)]
    pub moto: String,
    /// The node's gRPC address.
    #[arg(long)]
    pub node: String,
}

/// Starts moto, Azurite and a node with `--s3`, then runs the measurements in a child.
///
/// # Errors
/// When a part does not start, or the child fails.
pub async fn run(args: S3Args) -> anyhow::Result<()> {
    let moto = Moto::start("127.0.0.1".parse()?, BUCKET).await?;
    let azurite = Azurite::start()?;
    azurite.create_container(CONTAINER)?;
    let bin = ServerBin::resolve(args.server_bin.as_deref())?;
    let store = ProcessStore {
        url: format!("s3://{BUCKET}"),
        env: vec![
            ("AWS_ENDPOINT".into(), moto.endpoint()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ],
    };
    let capacity = bytesize::ByteSize::b(args.large.as_u64() * 2 + (64 << 20));
    let cluster = ProcessCluster::start(
        1,
        bin,
        APP,
        Some(store),
        |dir| {
            use std::os::unix::fs::PermissionsExt;
            let keys = dir.join("s3-keys");
            std::fs::write(&keys, format!("{KEY_ID} {SECRET}\n"))?;
            std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600))?;
            Ok(vec![
                "--s3".into(),
                "127.0.0.1:0".into(),
                "--s3-keys".into(),
                keys.display().to_string(),
                "--capacity".into(),
                capacity.to_string().replace(' ', ""),
            ])
        },
        CacheClient::builder().app(APP),
    )
    .await?;
    let s3_addr = cluster
        .logged("s3_addr")
        .context("the node did not log its S3 endpoint")?;
    println!(
        "{}, over moto; moto and Azurite as processes of their own",
        cluster.describe()
    );
    let me = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(me);
    child
        .arg("s3-client")
        .args(["--gets", &args.gets.to_string()])
        .args(["--rounds", &args.rounds.to_string()])
        .args(["--large", &args.large.as_u64().to_string()])
        .args(["--large-reads", &args.large_reads.to_string()])
        .args(["--endpoint", &format!("http://{s3_addr}")])
        .args(["--moto", &moto.endpoint()])
        .args(["--node", &cluster.addrs()[0]])
        .envs(azurite.env());
    let status = child.status().await?;
    anyhow::ensure!(status.success(), "the measuring process failed: {status}");
    Ok(())
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}

fn s3_client(
    endpoint: &str,
    bucket: &str,
    key: &str,
    secret: &str,
) -> anyhow::Result<Box<dyn ObjectStore>> {
    Ok(Box::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .with_allow_http(true)
            .build()?,
    ))
}

/// One way of reading an object by key.
enum Reader<'a> {
    Store(&'a dyn ObjectStore),
    Cache(&'a CacheClient),
}

impl Reader<'_> {
    async fn read(&self, key: &str) -> anyhow::Result<usize> {
        Ok(match self {
            Reader::Store(store) => store.get(&Path::from(key)).await?.bytes().await?.len(),
            Reader::Cache(cache) => cache.get(key).await?.context("missing")?.len(),
        })
    }
}

/// Runs the measurements (the `s3-client` subcommand).
///
/// # Errors
/// When a system fails a request.
pub async fn measure(args: S3ClientArgs) -> anyhow::Result<()> {
    let settings = &args.settings;
    let endpoint = s3_client(&args.endpoint, APP, KEY_ID, SECRET)?;
    let moto = s3_client(&args.moto, BUCKET, "testing", "testing")?;
    let azurite: Box<dyn ObjectStore> = Box::new(
        MicrosoftAzureBuilder::from_env()
            .with_container_name(CONTAINER)
            .build()?,
    );
    let cache = CacheClient::builder()
        .app(APP)
        .nodes([args.node.clone()])
        .build()
        .await?;

    let sizes = [("1 KiB", 1usize << 10), ("1 MiB", 1 << 20)];
    for (label, size) in sizes {
        let value = Bytes::from(vec![b'v'; size]);
        let key = format!("objects/{}", label.replace(' ', ""));
        moto.put(&Path::from(key.as_str()), value.clone().into())
            .await?;
        azurite.put(&Path::from(key.as_str()), value.into()).await?;
        // Cached: the first read through the node loads it.
        endpoint
            .get(&Path::from(key.as_str()))
            .await?
            .bytes()
            .await?;
    }
    let systems: [(&str, Reader<'_>); 4] = [
        ("S3 endpoint (cached)", Reader::Store(endpoint.as_ref())),
        ("CacheClient::get", Reader::Cache(&cache)),
        ("moto GET", Reader::Store(moto.as_ref())),
        ("Azurite GET", Reader::Store(azurite.as_ref())),
    ];
    let mut hists: Vec<Vec<Histogram<u64>>> = sizes
        .iter()
        .map(|_| systems.iter().map(|_| hist()).collect())
        .collect();
    for _ in 0..settings.rounds {
        for (s, (label, size)) in sizes.iter().enumerate() {
            let key = format!("objects/{}", label.replace(' ', ""));
            for (i, (_, reader)) in systems.iter().enumerate() {
                for _ in 0..settings.gets {
                    let started = Instant::now();
                    let n = reader.read(&key).await?;
                    let took = started.elapsed();
                    anyhow::ensure!(n == *size, "a short read");
                    hists[s][i].record(took.as_micros().max(1) as u64)?;
                }
            }
        }
    }
    let mut table = Table::new(["object", "system", "p50 µs", "p99 µs", "p50 / endpoint"]);
    for (s, (label, _)) in sizes.iter().enumerate() {
        let base = hists[s][0].value_at_quantile(0.5) as f64;
        for (i, (name, _)) in systems.iter().enumerate() {
            let h = &hists[s][i];
            let p50 = h.value_at_quantile(0.5);
            table.row([
                label,
                name,
                &p50.to_string(),
                &h.value_at_quantile(0.99).to_string(),
                &format!("{:.2}", p50 as f64 / base),
            ]);
        }
    }
    println!(
        "GetObject, one at a time: {} rounds of {} GETs per system and size",
        settings.rounds, settings.gets
    );
    print!("{table}");

    large(settings, endpoint.as_ref(), moto.as_ref()).await
}

/// The large object: through the endpoint on a miss and cached, and one GET from moto.
async fn large(
    settings: &S3Args,
    endpoint: &dyn ObjectStore,
    moto: &dyn ObjectStore,
) -> anyhow::Result<()> {
    let size = usize::try_from(settings.large.as_u64())?;
    let data: Bytes = (0..size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut times: [Vec<Duration>; 4] = Default::default();
    for rep in 0..settings.large_reads {
        // A key of its own per read, so that the first read through the node is a miss.
        let path = Path::from(format!("large/{rep}.bin"));
        let mut upload = moto.put_multipart(&path).await?;
        for part in data.chunks(16 << 20) {
            upload
                .put_part(PutPayload::from(Bytes::copy_from_slice(part)))
                .await?;
        }
        upload.complete().await?;
        for (way, store) in [(0, endpoint), (1, endpoint), (2, moto)] {
            let started = Instant::now();
            let mut body = store.get(&path).await?.into_stream();
            let mut n = 0;
            while let Some(piece) = body.next().await {
                n += piece?.len();
            }
            times[way].push(started.elapsed());
            anyhow::ensure!(n == size, "a short read of the large object");
        }
        // The miss path's pattern, straight from moto: the same ranges, as many at once.
        let started = Instant::now();
        let ranges = cache_core::chunks::covering(0..size as u64, MISS_CHUNK);
        let mut pieces = futures::stream::iter(ranges)
            .map(|(index, within)| {
                let start = index * MISS_CHUNK + within.start;
                moto.get_range(&path, start..index * MISS_CHUNK + within.end)
            })
            .buffered(cache_client::objects::CHUNKS_IN_FLIGHT);
        let mut n = 0;
        while let Some(piece) = pieces.next().await {
            n += piece?.len();
        }
        times[3].push(started.elapsed());
        anyhow::ensure!(n == size, "a short ranged read of the large object");
    }
    let mib = size as f64 / f64::from(1u32 << 20);
    let mut table = Table::new(["read", "median s", "MiB/s"]);
    for (way, name) in [
        "S3 endpoint, miss (parts from moto, parallel ranged GETs)",
        "S3 endpoint, cached",
        "moto, one GET",
        "moto, the miss path's ranged GETs (16 MiB, 4 at once)",
    ]
    .iter()
    .enumerate()
    {
        let mut t = times[way].clone();
        t.sort();
        let median = t[t.len() / 2].as_secs_f64();
        table.row([
            name,
            &format!("{median:.2}"),
            &format!("{:.0}", mib / median),
        ]);
    }
    println!(
        "A {} object, {} reads each",
        settings.large, settings.large_reads
    );
    print!("{table}");
    Ok(())
}
