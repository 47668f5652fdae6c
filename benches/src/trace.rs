//! Traces in the Azure Functions Blob Access Trace 2020 schema: reading one into a [`Plan`]
//! for `run --trace`, and [`generate`], the synthetic generator behind `gen-trace`.
//!
//! The schema is a CSV with the columns `Timestamp` (ms since 1970), `AnonRegion`,
//! `AnonUserId`, `AnonAppName`, `AnonFunctionInvocationId`, `AnonBlobName`, `BlobType`,
//! `AnonBlobETag`, `BlobBytes`, `Read` and `Write` (`True`/`False`).
//!
//! # Replay
//! - A row with `Write` true is a put of `BlobBytes` bytes; otherwise a row with `Read` true
//!   is a get. A row that is neither is refused.
//! - Blobs are namespaced by app: the key is `APP/BLOB` (each part hex-encoded if it is not a
//!   plain token of letters, digits, `-`, `_` and `.`).
//! - Every blob the trace reads is created in the store before the replay, at the size of its
//!   first access.
//! - Sizes are `BlobBytes × size_scale`, at least 1 byte and at most `max_value` bytes.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path as FsPath;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Geometric, Zipf};
use serde::{Deserialize, Serialize};

use crate::workload::{Plan, Request};

/// One row of the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// Milliseconds since 1970.
    #[serde(rename = "Timestamp")]
    pub timestamp: u64,
    /// The (anonymised) region.
    #[serde(rename = "AnonRegion")]
    pub region: String,
    /// The (anonymised) user.
    #[serde(rename = "AnonUserId")]
    pub user: String,
    /// The (anonymised) application.
    #[serde(rename = "AnonAppName")]
    pub app: String,
    /// The (anonymised) function invocation that made the access.
    #[serde(rename = "AnonFunctionInvocationId")]
    pub invocation: String,
    /// The (anonymised) blob name.
    #[serde(rename = "AnonBlobName")]
    pub blob: String,
    /// The blob type.
    #[serde(rename = "BlobType")]
    pub blob_type: String,
    /// The (anonymised) ETag: the blob's version.
    #[serde(rename = "AnonBlobETag")]
    pub etag: String,
    /// The blob's size in bytes.
    #[serde(rename = "BlobBytes")]
    pub bytes: f64,
    /// Whether the access read the blob.
    #[serde(rename = "Read", with = "py_bool")]
    pub read: bool,
    /// Whether the access wrote the blob.
    #[serde(rename = "Write", with = "py_bool")]
    pub write: bool,
}

/// `True`/`False` as the trace spells them (also accepts `true`, `1`, `0`).
mod py_bool {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *v { "True" } else { "False" })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "True" | "true" | "TRUE" | "1" => Ok(true),
            "False" | "false" | "FALSE" | "0" | "" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "expected True or False, got {other:?}"
            ))),
        }
    }
}

/// How to turn a trace into a plan.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// Multiply every size by this.
    pub size_scale: f64,
    /// Clamp sizes to this many bytes (the cache's value limit).
    pub max_value: u32,
}

/// A trace loaded for replay, with what the loader had to adjust.
#[derive(Debug, Clone)]
pub struct LoadedTrace {
    /// The plan to replay.
    pub plan: Plan,
    /// Rows read.
    pub rows: u64,
    /// Sizes clamped to the value limit.
    pub clamped: u64,
    /// Accesses per app, as counted in the file (indexed like `plan.apps`).
    pub reads_per_app: Vec<u64>,
    /// Writes per app, as counted in the file.
    pub writes_per_app: Vec<u64>,
}

fn token(s: &str) -> String {
    let plain = !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        s.to_owned()
    } else {
        let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x{hex}")
    }
}

/// Reads the trace at `path` into a plan.
///
/// # Errors
/// When the file cannot be read, a row does not parse, or a row is neither a read nor a write.
pub fn load(path: &FsPath, opts: ReplayOptions) -> anyhow::Result<LoadedTrace> {
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| anyhow::anyhow!("opening trace {}: {e}", path.display()))?;
    let mut apps: Vec<String> = Vec::new();
    let mut app_index: HashMap<String, u32> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut app_of_key: Vec<u32> = Vec::new();
    let mut key_index: HashMap<(u32, String), u32> = HashMap::new();
    let mut first_size: Vec<u32> = Vec::new();
    let mut read_ever: Vec<bool> = Vec::new();
    let mut requests = Vec::new();
    let mut times = Vec::new();
    let (mut rows, mut clamped) = (0u64, 0u64);
    let (mut reads_per_app, mut writes_per_app) = (Vec::new(), Vec::new());
    for (n, row) in reader.deserialize::<TraceRecord>().enumerate() {
        let row = row.map_err(|e| anyhow::anyhow!("{} row {}: {e}", path.display(), n + 2))?;
        rows += 1;
        anyhow::ensure!(
            row.read || row.write,
            "{} row {}: neither Read nor Write is True",
            path.display(),
            n + 2
        );
        let app = *app_index.entry(row.app.clone()).or_insert_with(|| {
            apps.push(row.app.clone());
            reads_per_app.push(0);
            writes_per_app.push(0);
            apps.len() as u32 - 1
        });
        let key = *key_index.entry((app, row.blob.clone())).or_insert_with(|| {
            names.push(format!("{}/{}", token(&row.app), token(&row.blob)));
            app_of_key.push(app);
            first_size.push(0);
            read_ever.push(false);
            names.len() as u32 - 1
        });
        let scaled = (row.bytes.max(0.0) * opts.size_scale).round().max(1.0);
        let size = if scaled > f64::from(opts.max_value) {
            clamped += 1;
            opts.max_value
        } else {
            scaled as u32
        };
        if first_size[key as usize] == 0 {
            first_size[key as usize] = size;
        }
        if row.write {
            writes_per_app[app as usize] += 1;
        } else {
            reads_per_app[app as usize] += 1;
            read_ever[key as usize] = true;
        }
        requests.push(Request {
            key,
            write: row.write,
            size,
        });
        times.push(row.timestamp);
    }
    let t0 = times.iter().copied().min().unwrap_or(0);
    let times = times.into_iter().map(|t| t - t0).collect();
    let preload = (0..names.len() as u32)
        .filter(|k| read_ever[*k as usize])
        .map(|k| (k, first_size[k as usize]))
        .collect();
    Ok(LoadedTrace {
        plan: Plan {
            names: Arc::new(names),
            app_of_key: Arc::new(app_of_key),
            apps,
            preload,
            requests: Arc::new(requests),
            times_ms: Some(Arc::new(times)),
        },
        rows,
        clamped,
        reads_per_app,
        writes_per_app,
    })
}

/// The shape of a synthetic trace.
#[derive(Debug, Clone, clap::Args)]
pub struct GenTraceArgs {
    /// Applications.
    #[arg(long, default_value_t = 50)]
    pub apps: u32,
    /// Distinct blobs over all apps.
    #[arg(long, default_value_t = 20_000)]
    pub objects: u32,
    /// Accesses (rows) to write.
    #[arg(long, default_value_t = 100_000)]
    pub accesses: u64,
    /// Seed: the same seed writes the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output CSV file.
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// Size classes of blobs: `(share of blobs, smallest, largest)`; a blob's size is drawn
/// log-uniformly within its class.
pub const SIZE_CLASSES: [(f64, f64, f64); 4] = [
    // Small JSON, configuration and state documents.
    (0.60, 200.0, 4096.0),
    // Documents, thumbnails and small images.
    (0.22, 4096.0, 65536.0),
    // Images and media.
    (0.13, 65536.0, 1048576.0),
    // Zip archives, packages and models.
    (0.05, 1048576.0, 8388608.0),
];

/// The exponent of the Zipf law over apps (which apps are invoked).
pub const APP_ZIPF: f64 = 1.0;
/// The exponent of the Zipf law over each app's blobs (which blob an access touches).
pub const BLOB_ZIPF: f64 = 0.9;
/// The share of blobs that are ever written.
pub const WRITABLE_SHARE: f64 = 0.2;
/// The share of accesses to a writable blob that are writes.
pub const WRITE_SHARE: f64 = 0.3;
/// Mean accesses per invocation (geometric, at least 1).
pub const ACCESSES_PER_INVOCATION: f64 = 3.0;
/// Mean gap between invocations outside a burst, in ms (exponential).
pub const CALM_GAP_MS: f64 = 50.0;
/// Mean gap between invocations in a burst, in ms (exponential).
pub const BURST_GAP_MS: f64 = 1.0;
/// The chance that an invocation outside a burst starts one.
pub const BURST_START: f64 = 0.02;
/// Mean invocations in a burst (geometric).
pub const BURST_LENGTH: f64 = 200.0;

struct Blob {
    name: String,
    size: u64,
    etag: u64,
    writable: bool,
}

fn hex_id(rng: &mut StdRng, digits: usize) -> String {
    (0..digits)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// Writes a synthetic trace in the Azure schema to `out`.
///
/// The distributions (see the constants of this module):
/// - **Apps.** Invocations pick an app by Zipf([`APP_ZIPF`]) over the apps. The blobs are
///   dealt to apps in proportion to the same weights, at least one each.
/// - **Blobs.** An access picks one of its app's blobs by Zipf([`BLOB_ZIPF`]).
/// - **Sizes.** Each blob draws a class from [`SIZE_CLASSES`] (60% small JSON of 200 B–4 KiB,
///   22% of 4–64 KiB, 13% of 64 KiB–1 MiB, 5% zips of 1–8 MiB) and a size log-uniform in it.
/// - **Writes.** [`WRITABLE_SHARE`] of the blobs are writable; [`WRITE_SHARE`] of the accesses
///   to them are writes. A write gives the blob a new ETag, and a size within ±25% of the old.
/// - **Invocations and bursts.** Each invocation makes a geometric number of accesses (mean
///   [`ACCESSES_PER_INVOCATION`]), 0–2 ms apart. Gaps between invocations are exponential
///   with mean [`CALM_GAP_MS`]; with chance [`BURST_START`] an invocation starts a burst of
///   a geometric number of invocations (mean [`BURST_LENGTH`]) of the same app, with mean gap
///   [`BURST_GAP_MS`].
///
/// # Errors
/// When the arguments are out of range or the file cannot be written.
pub fn generate(args: &GenTraceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.apps > 0, "--apps must be at least 1");
    anyhow::ensure!(
        args.objects >= args.apps,
        "--objects must be at least --apps (each app has a blob)"
    );
    let mut rng = StdRng::seed_from_u64(args.seed);
    // App weights and blob shares.
    let weights: Vec<f64> = (1..=args.apps)
        .map(|r| 1.0 / f64::from(r).powf(APP_ZIPF))
        .collect();
    let total_w: f64 = weights.iter().sum();
    let spare = args.objects - args.apps;
    let mut counts: Vec<u32> = weights
        .iter()
        .map(|w| 1 + (f64::from(spare) * w / total_w).floor() as u32)
        .collect();
    let dealt: u32 = counts.iter().sum();
    counts[0] += args.objects - dealt;
    let app_names: Vec<String> = (0..args.apps).map(|_| hex_id(&mut rng, 16)).collect();
    let users: Vec<String> = (0..args.apps).map(|_| hex_id(&mut rng, 12)).collect();
    let regions: Vec<String> = (0..args.apps)
        .map(|_| format!("region-{}", rng.random_range(0..4)))
        .collect();
    let class_total: f64 = SIZE_CLASSES.iter().map(|c| c.0).sum();
    let mut blobs: Vec<Vec<Blob>> = counts
        .iter()
        .map(|&n| {
            (0..n)
                .map(|_| {
                    let mut x = rng.random_range(0.0..class_total);
                    let mut class = SIZE_CLASSES[SIZE_CLASSES.len() - 1];
                    for c in SIZE_CLASSES {
                        if x < c.0 {
                            class = c;
                            break;
                        }
                        x -= c.0;
                    }
                    let size = (class.1.ln() + rng.random::<f64>() * (class.2 / class.1).ln())
                        .exp()
                        .round() as u64;
                    Blob {
                        name: hex_id(&mut rng, 24),
                        size,
                        etag: rng.random(),
                        writable: rng.random_bool(WRITABLE_SHARE),
                    }
                })
                .collect()
        })
        .collect();
    let app_zipf = Zipf::new(f64::from(args.apps), APP_ZIPF)?;
    let blob_zipf: Vec<Zipf<f64>> = counts
        .iter()
        .map(|&n| Zipf::new(f64::from(n), BLOB_ZIPF))
        .collect::<Result<_, _>>()?;
    let per_invocation = Geometric::new(1.0 / ACCESSES_PER_INVOCATION)?;
    let burst_len = Geometric::new(1.0 / BURST_LENGTH)?;
    let calm_gap = Exp::new(1.0 / CALM_GAP_MS)?;
    let burst_gap = Exp::new(1.0 / BURST_GAP_MS)?;

    let file = std::fs::File::create(&args.out)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", args.out.display()))?;
    let mut out = csv::Writer::from_writer(std::io::BufWriter::new(file));
    // 2020-11-23 00:00:00 UTC, the start of the real trace.
    let mut now_ms = 1_606_089_600_000f64;
    let mut burst: Option<(usize, u64)> = None;
    let mut written = 0u64;
    while written < args.accesses {
        let app = match &mut burst {
            Some((app, left)) if *left > 0 => {
                *left -= 1;
                now_ms += burst_gap.sample(&mut rng);
                *app
            }
            _ => {
                burst = None;
                now_ms += calm_gap.sample(&mut rng);
                let app = (app_zipf.sample(&mut rng) as usize).clamp(1, args.apps as usize) - 1;
                if rng.random_bool(BURST_START) {
                    burst = Some((app, burst_len.sample(&mut rng)));
                }
                app
            }
        };
        let invocation = hex_id(&mut rng, 20);
        let accesses = (1 + per_invocation.sample(&mut rng)).min(args.accesses - written);
        let mut t = now_ms;
        for _ in 0..accesses {
            let n = blobs[app].len();
            let b = (blob_zipf[app].sample(&mut rng) as usize).clamp(1, n) - 1;
            let blob = &mut blobs[app][b];
            let write = blob.writable && rng.random_bool(WRITE_SHARE);
            if write {
                blob.etag = rng.random();
                let factor = rng.random_range(0.75..1.25);
                blob.size = ((blob.size as f64 * factor).round() as u64).max(1);
            }
            out.serialize(TraceRecord {
                timestamp: t as u64,
                region: regions[app].clone(),
                user: users[app].clone(),
                app: app_names[app].clone(),
                invocation: invocation.clone(),
                blob: blob.name.clone(),
                blob_type: "BlockBlob".into(),
                etag: format!("{:016x}", blob.etag),
                bytes: blob.size as f64,
                read: !write,
                write,
            })?;
            t += rng.random_range(0.0..2.0);
            written += 1;
        }
        now_ms = now_ms.max(t);
    }
    out.flush()?;
    out.into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.out.display()))?
        .flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(dir: &FsPath, seed: u64) -> GenTraceArgs {
        GenTraceArgs {
            apps: 5,
            objects: 200,
            accesses: 3000,
            seed,
            out: dir.join(format!("t{seed}.csv")),
        }
    }

    #[test]
    fn generated_traces_follow_the_schema_and_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            small(dir.path(), 1),
            small(dir.path(), 1),
            small(dir.path(), 2),
        );
        let b = GenTraceArgs {
            out: dir.path().join("copy.csv"),
            ..b
        };
        for args in [&a, &b, &c] {
            generate(args).unwrap();
        }
        let text = std::fs::read_to_string(&a.out).unwrap();
        assert_eq!(text, std::fs::read_to_string(&b.out).unwrap());
        assert_ne!(text, std::fs::read_to_string(&c.out).unwrap());
        assert_eq!(
            text.lines().next().unwrap(),
            "Timestamp,AnonRegion,AnonUserId,AnonAppName,AnonFunctionInvocationId,\
             AnonBlobName,BlobType,AnonBlobETag,BlobBytes,Read,Write"
        );
        let rows: Vec<TraceRecord> = csv::Reader::from_path(&a.out)
            .unwrap()
            .deserialize()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 3000);
        assert!(rows.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        assert!(rows.iter().all(|r| r.read != r.write));
        let writes = rows.iter().filter(|r| r.write).count();
        assert!(writes > 0 && writes < 600, "{writes}");
        // A write changes the blob's ETag: the next access shows the new one.
        let mut etag: HashMap<&str, &str> = HashMap::new();
        let mut changed = 0;
        for r in &rows {
            if let Some(old) = etag.insert(&r.blob, &r.etag) {
                if r.write {
                    assert_ne!(old, r.etag);
                    changed += 1;
                } else {
                    assert_eq!(old, r.etag, "a read sees the last write's version");
                }
            }
        }
        assert!(changed > 0);
    }

    #[test]
    fn loads_and_namespaces_by_app() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "Timestamp,AnonRegion,AnonUserId,AnonAppName,AnonFunctionInvocationId,AnonBlobName,\
             BlobType,AnonBlobETag,BlobBytes,Read,Write\n\
             1000,r,u,appA,i1,blob1,BlockBlob,e1,2048.0,True,False\n\
             1005,r,u,appB,i2,blob1,BlockBlob,e1,100,True,False\n\
             1010,r,u,appA,i3,blob1,BlockBlob,e2,4096,False,True\n\
             1020,r,u,appA,i3,new blob,BlockBlob,e1,10,False,True\n\
             1030,r,u,appA,i4,blob1,BlockBlob,e2,4096,True,False\n",
        )
        .unwrap();
        let t = load(
            &path,
            ReplayOptions {
                size_scale: 0.5,
                max_value: 1500,
            },
        )
        .unwrap();
        let p = &t.plan;
        assert_eq!(t.rows, 5);
        assert_eq!(p.apps, vec!["appA", "appB"]);
        assert_eq!(
            *p.names,
            vec!["appA/blob1", "appB/blob1", "appA/x6e657720626c6f62"]
        );
        assert_eq!(*p.app_of_key, vec![0, 1, 0]);
        // Blobs that are read are created at their first size; the write-only blob is not.
        assert_eq!(p.preload, vec![(0, 1024), (1, 50)]);
        let sizes: Vec<u32> = p.requests.iter().map(|r| r.size).collect();
        assert_eq!(sizes, vec![1024, 50, 1500, 5, 1500]);
        assert_eq!(t.clamped, 2);
        let writes: Vec<bool> = p.requests.iter().map(|r| r.write).collect();
        assert_eq!(writes, vec![false, false, true, true, false]);
        assert_eq!(**p.times_ms.as_ref().unwrap(), vec![0, 5, 10, 20, 30]);
        assert_eq!(t.reads_per_app, vec![2, 1]);
        assert_eq!(t.writes_per_app, vec![2, 0]);
    }

    #[test]
    fn refuses_rows_that_neither_read_nor_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "Timestamp,AnonRegion,AnonUserId,AnonAppName,AnonFunctionInvocationId,AnonBlobName,\
             BlobType,AnonBlobETag,BlobBytes,Read,Write\n\
             1000,r,u,a,i,b,BlockBlob,e,1,False,False\n",
        )
        .unwrap();
        let opts = ReplayOptions {
            size_scale: 1.0,
            max_value: 100,
        };
        let err = load(&path, opts).unwrap_err().to_string();
        assert!(err.contains("row 2"), "{err}");
    }
}
