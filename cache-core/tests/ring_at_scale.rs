//! The ring at the scale of a busy application: 1,000 members.

use cache_core::Membership;
use cache_core::ring::VNODES;

fn members(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}:7070", i / 65536, (i / 256) % 256, i % 256))
        .collect()
}

/// The largest and smallest share against the mean.
fn balance(ring: &Membership) -> (f64, f64) {
    let shares = ring.shares();
    let mean = 1.0 / shares.len() as f64;
    let max = shares.iter().copied().fold(0.0, f64::max);
    let min = shares.iter().copied().fold(1.0, f64::min);
    (max / mean, min / mean)
}

/// Whether a ring meets the targets: every share within 10% of the mean, and a member added
/// or removed moves at most 1.1 × the ideal share of keys.
fn meets_targets(n: usize, vnodes: usize) -> Result<(), String> {
    let all = members(n + 1);
    let ring = Membership::with_vnodes(1, all[..n].to_vec(), vnodes).unwrap();
    let (max, min) = balance(&ring);
    if max > 1.10 || min < 0.90 {
        return Err(format!("balance max/mean {max:.3}, min/mean {min:.3}"));
    }
    let grown = Membership::with_vnodes(2, all.clone(), vnodes).unwrap();
    let added = ring.moved_share(&grown) * (n + 1) as f64;
    let shrunk = Membership::with_vnodes(3, all[1..n].to_vec(), vnodes).unwrap();
    let removed = ring.moved_share(&shrunk) * n as f64;
    if added > 1.1 || removed > 1.1 {
        return Err(format!(
            "moves against ideal: N→N+1 {added:.3}, N→N−1 {removed:.3}"
        ));
    }
    Ok(())
}

#[test]
fn a_ring_of_1000_members_is_balanced_and_moves_little() {
    meets_targets(1000, VNODES).unwrap();
}

/// The control: a ring with 64 points a member is too coarse, and the check says so.
#[test]
fn the_check_catches_a_coarse_ring() {
    let err = meets_targets(1000, 64).unwrap_err();
    assert!(err.contains("balance"), "{err}");
}

#[test]
fn the_moved_share_of_a_ring_against_itself_is_zero_and_shares_sum_to_one() {
    let ring = Membership::new(1, members(50)).unwrap();
    assert_eq!(ring.moved_share(&ring), 0.0);
    let sum: f64 = ring.shares().iter().sum();
    assert!((sum - 1.0).abs() < 1e-9, "{sum}");
    let one = Membership::new(1, members(1)).unwrap();
    assert!((one.shares()[0] - 1.0).abs() < 1e-9);
}
