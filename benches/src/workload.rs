//! Synthetic workloads: a reproducible sequence of gets and puts over a key space, and the
//! [`Plan`] that every system and simulator of a run replays.
//!
//! A [`Workload`] names the shape (key count, key distribution, read ratio, seed); a
//! [`Generator`] turns it into an endless, seeded stream of [`Op`]s, so that a run bounded by
//! time (`--duration`) and one bounded by count (`--ops`) draw the same sequence. Value sizes
//! are fixed per key by [`ValueSizes`], from the same seed.

use std::path::Path as FsPath;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    /// Zipf with exponent `s` over the key ranks (key 0 is the hottest).
    Zipf(f64),
    /// Every key equally likely.
    Uniform,
    /// A hot set: the first `frac_keys` of the keys receive `frac_ops` of the requests, each
    /// uniformly; the rest of the requests go uniformly to the other keys.
    Hotspot {
        /// The share of keys that are hot, in (0, 1).
        frac_keys: f64,
        /// The share of requests that go to the hot keys, in [0, 1].
        frac_ops: f64,
    },
}

impl std::str::FromStr for KeyDist {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fraction = |v: &str, what: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|f| (0.0..=1.0).contains(f))
                .ok_or_else(|| format!("bad {what} {v:?}: expected a number in [0, 1]"))
        };
        match s.split(':').collect::<Vec<_>>().as_slice() {
            ["zipf", exp] => exp
                .parse::<f64>()
                .ok()
                .filter(|e| *e >= 0.0)
                .map(KeyDist::Zipf)
                .ok_or_else(|| format!("bad Zipf exponent {exp:?}")),
            ["uniform"] => Ok(KeyDist::Uniform),
            ["hotspot", keys, ops] => {
                let frac_keys = fraction(keys, "hot key share")?;
                let frac_ops = fraction(ops, "hot request share")?;
                if frac_keys <= 0.0 || frac_keys >= 1.0 {
                    return Err(format!("hot key share {keys} must lie strictly in (0, 1)"));
                }
                Ok(KeyDist::Hotspot {
                    frac_keys,
                    frac_ops,
                })
            }
            _ => Err(format!(
                "unknown distribution {s:?}: use zipf:S, uniform or hotspot:FRAC_KEYS:FRAC_OPS"
            )),
        }
    }
}

/// One request of a synthetic workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read the key with this index.
    Get(u32),
    /// Write the key with this index.
    Put(u32),
}

/// A workload's shape.
#[derive(Debug, Clone)]
pub struct Workload {
    /// How many distinct keys.
    pub keys: u32,
    /// How keys are chosen.
    pub dist: KeyDist,
    /// The share of requests that are reads, in [0, 1].
    pub read_ratio: f64,
    /// How many requests [`Workload::generate`] returns.
    pub ops: usize,
    /// The seed: the same seed gives the same sequence.
    pub seed: u64,
}

impl Workload {
    /// The first `ops` requests of the workload's stream.
    ///
    /// # Panics
    /// If `keys` is 0.
    pub fn generate(&self) -> Vec<Op> {
        let mut g = Generator::new(self);
        (0..self.ops).map(|_| g.next_op()).collect()
    }
}

/// An endless, seeded stream of a [`Workload`]'s requests.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    keys: u32,
    dist: KeyDist,
    zipf: Option<Zipf<f64>>,
    read_ratio: f64,
}

impl Generator {
    /// The stream of `w` (its `ops` is ignored).
    ///
    /// # Panics
    /// If `w.keys` is 0.
    pub fn new(w: &Workload) -> Self {
        assert!(w.keys > 0, "a workload needs at least one key");
        let zipf = match w.dist {
            KeyDist::Zipf(s) => Some(Zipf::new(f64::from(w.keys), s).expect("valid Zipf")),
            _ => None,
        };
        Self {
            rng: StdRng::seed_from_u64(w.seed),
            keys: w.keys,
            dist: w.dist,
            zipf,
            read_ratio: w.read_ratio.clamp(0.0, 1.0),
        }
    }

    /// The next request.
    pub fn next_op(&mut self) -> Op {
        let key = match (&self.zipf, self.dist) {
            // Zipf samples ranks 1..=n.
            (Some(z), _) => (z.sample(&mut self.rng) as u32).clamp(1, self.keys) - 1,
            (
                None,
                KeyDist::Hotspot {
                    frac_keys,
                    frac_ops,
                },
            ) => {
                let hot = ((f64::from(self.keys) * frac_keys).round() as u32).clamp(1, self.keys);
                if hot == self.keys || self.rng.random_bool(frac_ops) {
                    self.rng.random_range(0..hot)
                } else {
                    self.rng.random_range(hot..self.keys)
                }
            }
            _ => self.rng.random_range(0..self.keys),
        };
        if self.rng.random_bool(self.read_ratio) {
            Op::Get(key)
        } else {
            Op::Put(key)
        }
    }
}

/// How big each key's value is. Sizes are fixed per key.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueSizes {
    /// Every value has this many bytes.
    Fixed(u32),
    /// Each key draws its size once from these `(size, weight)` classes.
    Weighted(Vec<(u32, f64)>),
}

impl ValueSizes {
    /// Reads a size distribution: one class a line, `SIZE [WEIGHT]` (for example `4KiB 0.25`;
    /// the weight defaults to 1). Blank lines and `#` comments are ignored.
    ///
    /// # Errors
    /// When the file cannot be read, or a line does not parse.
    pub fn from_file(path: &FsPath) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses the text of a size distribution file (see [`ValueSizes::from_file`]).
    ///
    /// # Errors
    /// A message naming the bad line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut classes = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let size = words.next().unwrap_or_default();
            let size = size
                .parse::<bytesize::ByteSize>()
                .ok()
                .and_then(|b| u32::try_from(b.as_u64()).ok())
                .filter(|b| *b > 0)
                .ok_or_else(|| format!("line {}: bad size {size:?}", n + 1))?;
            let weight = match words.next() {
                None => 1.0,
                Some(w) => w
                    .parse::<f64>()
                    .ok()
                    .filter(|w| *w >= 0.0 && w.is_finite())
                    .ok_or_else(|| format!("line {}: bad weight {w:?}", n + 1))?,
            };
            if words.next().is_some() {
                return Err(format!("line {}: expected SIZE [WEIGHT]", n + 1));
            }
            classes.push((size, weight));
        }
        if classes.is_empty() || classes.iter().all(|c| c.1 == 0.0) {
            return Err("no size class with a positive weight".into());
        }
        Ok(Self::Weighted(classes))
    }

    /// The size of each of `keys` keys, drawn with `seed`.
    pub fn assign(&self, keys: u32, seed: u64) -> Vec<u32> {
        match self {
            ValueSizes::Fixed(n) => vec![*n; keys as usize],
            ValueSizes::Weighted(classes) => {
                let total: f64 = classes.iter().map(|c| c.1).sum();
                // A separate stream, so that sizes do not shift the request sequence.
                let mut rng = StdRng::seed_from_u64(seed ^ 0x5153_495a_4553);
                (0..keys)
                    .map(|_| {
                        let mut x = rng.random_range(0.0..total);
                        for &(size, w) in classes {
                            if x < w {
                                return size;
                            }
                            x -= w;
                        }
                        classes.last().map_or(1, |c| c.0)
                    })
                    .collect()
            }
        }
    }
}

/// The blob name of key `i`.
pub fn key_name(i: u32) -> String {
    format!("obj/{i:08}")
}

/// One request of a [`Plan`]: a key index, read or write, and the value size in bytes (for a
/// write the size written, for a read the size the blob has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Index into [`Plan::names`].
    pub key: u32,
    /// A put, not a get.
    pub write: bool,
    /// Value bytes.
    pub size: u32,
}

/// Everything a run replays: the blob names, what to create in the store first, the request
/// sequence, and for traces the apps and timestamps.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Blob name of each key index.
    pub names: Arc<Vec<String>>,
    /// The app of each key index (an index into `apps`).
    pub app_of_key: Arc<Vec<u32>>,
    /// App names.
    pub apps: Vec<String>,
    /// Blobs created in the store before the run: `(key, size)`.
    pub preload: Vec<(u32, u32)>,
    /// The request sequence.
    pub requests: Arc<Vec<Request>>,
    /// For traces: each request's time in milliseconds since the first.
    pub times_ms: Option<Arc<Vec<u64>>>,
}

impl Plan {
    /// The plan of a synthetic workload: every key is created at its size, then `ops`
    /// requests (none when the run is bounded by time).
    pub fn synthetic(w: &Workload, sizes: &[u32], ops: &[Op]) -> Self {
        let names = (0..w.keys).map(key_name).collect();
        Self {
            names: Arc::new(names),
            app_of_key: Arc::new(vec![0; w.keys as usize]),
            apps: vec!["bench".into()],
            preload: (0..w.keys).map(|k| (k, sizes[k as usize])).collect(),
            requests: Arc::new(ops.iter().map(|op| request(*op, sizes)).collect()),
            times_ms: None,
        }
    }

    /// Bytes of the data set: the preloaded blobs.
    pub fn data_bytes(&self) -> u64 {
        self.preload.iter().map(|p| u64::from(p.1)).sum()
    }

    /// The largest value the plan reads or writes.
    pub fn max_size(&self) -> u32 {
        let pre = self.preload.iter().map(|p| p.1).max().unwrap_or(0);
        let req = self.requests.iter().map(|r| r.size).max().unwrap_or(0);
        pre.max(req)
    }
}

/// The [`Request`] of a synthetic op, with its key's size.
pub fn request(op: Op, sizes: &[u32]) -> Request {
    let (key, write) = match op {
        Op::Get(k) => (k, false),
        Op::Put(k) => (k, true),
    };
    Request {
        key,
        write,
        size: sizes[key as usize],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(seed: u64) -> Workload {
        Workload {
            keys: 1000,
            dist: KeyDist::Zipf(0.99),
            read_ratio: 0.9,
            ops: 5000,
            seed,
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        assert_eq!(workload(7).generate(), workload(7).generate());
        assert_ne!(workload(7).generate(), workload(8).generate());
        for dist in [
            KeyDist::Uniform,
            KeyDist::Hotspot {
                frac_keys: 0.1,
                frac_ops: 0.9,
            },
        ] {
            let w = |seed| Workload {
                dist,
                ..workload(seed)
            };
            assert_eq!(w(3).generate(), w(3).generate());
            assert_ne!(w(3).generate(), w(4).generate());
        }
        let sizes = ValueSizes::parse("1KiB 1\n64KiB 1\n").unwrap();
        assert_eq!(sizes.assign(500, 9), sizes.assign(500, 9));
        assert_ne!(sizes.assign(500, 9), sizes.assign(500, 10));
    }

    #[test]
    fn a_longer_stream_starts_with_the_shorter_one() {
        let short = workload(5).generate();
        let long = Workload {
            ops: 8000,
            ..workload(5)
        }
        .generate();
        assert_eq!(short[..], long[..5000]);
    }

    #[test]
    fn zipf_is_skewed_and_reads_match_the_ratio() {
        let ops = workload(1).generate();
        let reads = ops.iter().filter(|o| matches!(o, Op::Get(_))).count();
        assert!((reads as f64 / 5000.0 - 0.9).abs() < 0.03, "{reads}");
        let hottest = ops
            .iter()
            .filter(|o| matches!(o, Op::Get(0) | Op::Put(0)))
            .count();
        assert!(hottest > 5000 / 20, "key 0 is hot: {hottest}");
        assert!(
            ops.iter()
                .all(|o| matches!(o, Op::Get(k) | Op::Put(k) if *k < 1000))
        );
    }

    #[test]
    fn hotspot_sends_its_share_to_the_hot_keys() {
        let ops = Workload {
            dist: KeyDist::Hotspot {
                frac_keys: 0.2,
                frac_ops: 0.8,
            },
            ops: 20_000,
            ..workload(2)
        }
        .generate();
        let hot = ops
            .iter()
            .filter(|o| matches!(o, Op::Get(k) | Op::Put(k) if *k < 200))
            .count();
        let share = hot as f64 / 20_000.0;
        assert!((share - 0.8).abs() < 0.02, "{share}");
    }

    #[test]
    fn parses_distributions() {
        assert_eq!("zipf:0.99".parse::<KeyDist>(), Ok(KeyDist::Zipf(0.99)));
        assert_eq!("uniform".parse::<KeyDist>(), Ok(KeyDist::Uniform));
        assert_eq!(
            "hotspot:0.1:0.9".parse::<KeyDist>(),
            Ok(KeyDist::Hotspot {
                frac_keys: 0.1,
                frac_ops: 0.9
            })
        );
        for bad in [
            "zipf:x",
            "pareto",
            "hotspot:0:0.5",
            "hotspot:0.1",
            "hotspot:0.1:2",
        ] {
            assert!(bad.parse::<KeyDist>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_size_files() {
        let s = ValueSizes::parse("# sizes\n512 3\n4KiB\n\n1MiB 0.5 # big\n").unwrap();
        assert_eq!(
            s,
            ValueSizes::Weighted(vec![(512, 3.0), (4096, 1.0), (1 << 20, 0.5)])
        );
        let drawn = s.assign(9000, 1);
        let small = drawn.iter().filter(|&&x| x == 512).count() as f64 / 9000.0;
        assert!((small - 3.0 / 4.5).abs() < 0.03, "{small}");
        assert!(ValueSizes::parse("").is_err());
        assert!(ValueSizes::parse("12 x").is_err());
        assert!(ValueSizes::parse("huge").is_err());
        assert!(ValueSizes::parse("1KiB 1 2").is_err());
    }
}
