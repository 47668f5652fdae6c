//! `cache-bench ring`: the ring at scale: the balance of members' shares, the keys that move
//! when one member joins or leaves against the ideal, and the time and memory of a rebuild,
//! for several member counts and points per member. Shares and moves are exact (arcs of the
//! hash space), not sampled.

use std::time::{Duration, Instant};

use cache_core::Membership;

use crate::report::Table;

/// The measurement's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct RingArgs {
    /// Member counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "3,100,1000")]
    pub members: Vec<usize>,
    /// Points per member to measure (the nodes use `cache_core::ring::VNODES`).
    #[arg(long, value_delimiter = ',', default_value = "512,1024,2048")]
    pub vnodes: Vec<usize>,
    /// Key lookups timed per ring.
    #[arg(long, default_value_t = 1_000_000)]
    pub lookups: usize,
}

fn members(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}:7070", i / 65536, (i / 256) % 256, i % 256))
        .collect()
}

/// Prints the table.
///
/// # Errors
/// When a member list is invalid.
pub fn run(args: &RingArgs) -> anyhow::Result<()> {
    let mut table = Table::new([
        "members",
        "points/member",
        "build ms",
        "ring MiB",
        "max/mean",
        "min/mean",
        "join moves/ideal",
        "leave moves/ideal",
        "lookup ns",
    ]);
    for &n in &args.members {
        let all = members(n + 1);
        for &v in &args.vnodes {
            let mut builds = Vec::new();
            let mut ring = None;
            for _ in 0..3 {
                let started = Instant::now();
                ring = Some(Membership::with_vnodes(1, all[..n].to_vec(), v)?);
                builds.push(started.elapsed());
            }
            builds.sort();
            let ring = ring.expect("built");
            let shares = ring.shares();
            let mean = 1.0 / n as f64;
            let max = shares.iter().copied().fold(0.0, f64::max) / mean;
            let min = shares.iter().copied().fold(1.0, f64::min) / mean;
            let grown = Membership::with_vnodes(2, all.clone(), v)?;
            let join = ring.moved_share(&grown) * (n + 1) as f64;
            let leave = if n > 1 {
                let shrunk = Membership::with_vnodes(3, all[1..n].to_vec(), v)?;
                format!("{:.3}", ring.moved_share(&shrunk) * n as f64)
            } else {
                "-".into()
            };
            let keys: Vec<String> = (0..1024).map(|i| format!("obj/{i:08}")).collect();
            let started = Instant::now();
            let mut sink = 0usize;
            for i in 0..args.lookups {
                sink += ring.owner(&keys[i % keys.len()]).len();
            }
            let per = started.elapsed().as_nanos() as f64 / args.lookups.max(1) as f64;
            std::hint::black_box(sink);
            let bytes = n * v * 12;
            table.row([
                &n.to_string(),
                &v.to_string(),
                &format!("{:.1}", ms(builds[1])),
                &format!("{:.2}", bytes as f64 / f64::from(1u32 << 20)),
                &format!("{max:.3}"),
                &format!("{min:.3}"),
                &format!("{join:.3}"),
                &leave,
                &format!("{per:.0}"),
            ]);
        }
    }
    println!(
        "The ring: exact shares and moves; build time the median of 3; {} lookups per ring",
        args.lookups
    );
    print!("{table}");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
