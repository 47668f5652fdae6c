//! Synthetic workloads: a reproducible sequence of gets and puts over a key space.

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
}

impl std::str::FromStr for KeyDist {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("zipf", exp)) => exp
                .parse::<f64>()
                .ok()
                .filter(|e| *e >= 0.0)
                .map(KeyDist::Zipf)
                .ok_or_else(|| format!("bad Zipf exponent {exp:?}")),
            None if s == "uniform" => Ok(KeyDist::Uniform),
            _ => Err(format!("unknown distribution {s:?}: use zipf:S or uniform")),
        }
    }
}

/// One request of a workload.
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
    /// How many requests.
    pub ops: usize,
    /// The seed: the same seed gives the same sequence.
    pub seed: u64,
}

impl Workload {
    /// The request sequence.
    ///
    /// # Panics
    /// If `keys` is 0.
    pub fn generate(&self) -> Vec<Op> {
        assert!(self.keys > 0, "a workload needs at least one key");
        let mut rng = StdRng::seed_from_u64(self.seed);
        let zipf = match self.dist {
            KeyDist::Zipf(s) => Some(Zipf::new(f64::from(self.keys), s).expect("valid Zipf")),
            KeyDist::Uniform => None,
        };
        (0..self.ops)
            .map(|_| {
                let key = match &zipf {
                    // Zipf samples ranks 1..=n.
                    Some(z) => (z.sample(&mut rng) as u32).clamp(1, self.keys) - 1,
                    None => rng.random_range(0..self.keys),
                };
                if rng.random_bool(self.read_ratio.clamp(0.0, 1.0)) {
                    Op::Get(key)
                } else {
                    Op::Put(key)
                }
            })
            .collect()
    }
}

/// The blob name of key `i`.
pub fn key_name(i: u32) -> String {
    format!("obj/{i:08}")
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
    fn parses_distributions() {
        assert_eq!("zipf:0.99".parse::<KeyDist>(), Ok(KeyDist::Zipf(0.99)));
        assert_eq!("uniform".parse::<KeyDist>(), Ok(KeyDist::Uniform));
        assert!("zipf:x".parse::<KeyDist>().is_err());
        assert!("pareto".parse::<KeyDist>().is_err());
    }
}
