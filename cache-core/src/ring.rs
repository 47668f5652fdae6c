//! Who owns a key: the consistent-hash ring and the epoch-numbered member list.
//!
//! A [`Membership`] is immutable. A change of members builds a new one with a higher epoch,
//! which [`SharedMembership`] swaps in; readers hold an `Arc` to the snapshot they started with.
//! Client and server both call [`Membership::owner`], so they agree on every key's home.

use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};

/// Virtual nodes per member: points on the ring, each owning the keys up to it. A member's
/// share of keys varies by about 1/√VNODES around even. At 2,048 the largest and smallest of
/// 1,000 members stay within 10% of the mean; at 1,024 the largest was 10.2% over
/// (`ring_at_scale` in this crate's tests, and `cache-bench ring`). A point costs 12 bytes:
/// 72 KiB for 3 members, 24 MiB for 1,000.
pub const VNODES: usize = 2048;

/// The hash that places a key on the ring, and that client and server both use: 64-bit
/// FNV-1a of the key as a `str`, then MurmurHash3's 64-bit finalizer (`fmix64`). FNV alone
/// mixes the last bytes of a key poorly, so keys that differ only in a suffix (`obj/1`,
/// `obj/2`, ...) would crowd together on the ring; the finalizer spreads them.
pub fn key_hash(key: &str) -> u64 {
    fmix64(fnv::FnvBuildHasher::default().hash_one(key))
}

/// The most addresses a member list may hold.
pub const MAX_MEMBERS: usize = 1024;

/// Checks a member list that arrives from outside (a `SetMembers` request): at most
/// [`MAX_MEMBERS`] addresses, each a syntactically valid `host:port` with a nonzero port,
/// where the host is an IPv4 address, a bracketed IPv6 address, or a DNS name.
///
/// # Errors
/// [`Error::InvalidMembership`] naming the first bad address (shortened) or the count.
pub fn validate_addresses(members: &[String]) -> Result<()> {
    if members.is_empty() {
        return Err(Error::InvalidMembership("the member list is empty".into()));
    }
    if members.len() > MAX_MEMBERS {
        return Err(Error::InvalidMembership(format!(
            "{} addresses exceed the limit of {MAX_MEMBERS}",
            members.len()
        )));
    }
    for (i, m) in members.iter().enumerate() {
        if !valid_address(m) {
            let shown: String = m.chars().take(64).collect();
            return Err(Error::InvalidMembership(format!(
                "member {} ({shown:?}) is not host:port",
                i + 1
            )));
        }
    }
    Ok(())
}

/// Whether `addr` is `host:port` as [`validate_addresses`] describes.
pub fn valid_address(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    // A DNS name: labels of letters, digits and hyphens, not starting or ending with a
    // hyphen, and not all digits (that would be a malformed IPv4 address).
    host.len() <= 253
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// An immutable member list with its epoch and ring.
#[derive(Clone)]
pub struct Membership {
    epoch: u64,
    members: Vec<String>,
    ring: Arc<Ring>,
}

/// The ring: [`VNODES`] points per member, sorted by position, each naming its member by
/// index. Built with one sort, so a ring of 1,000 members (a million points) takes tens of
/// milliseconds; `consistent_hash_ring`, used before, inserted points one at a time into a
/// sorted vector and took 108 s for that ring.
struct Ring {
    /// Point positions, ascending.
    points: Vec<u64>,
    /// The member index of each point.
    owners: Vec<u32>,
}

impl Ring {
    fn build(members: &[String], vnodes: usize) -> Self {
        let mut placed: Vec<(u64, u32)> = Vec::with_capacity(members.len() * vnodes);
        for (i, member) in members.iter().enumerate() {
            let base = fnv::FnvBuildHasher::default().hash_one(member.as_str());
            for v in 0..vnodes as u64 {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                placed.push((fmix64(base ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15)), index));
            }
        }
        // Ties (vanishingly rare) go to the lower member index, the same on every node.
        placed.sort_unstable();
        placed.dedup_by_key(|p| p.0);
        Self {
            points: placed.iter().map(|p| p.0).collect(),
            owners: placed.iter().map(|p| p.1).collect(),
        }
    }

    /// The index of the first point at or after `hash`, wrapping around.
    fn first(&self, hash: u64) -> usize {
        let i = self.points.partition_point(|&p| p < hash);
        if i == self.points.len() { 0 } else { i }
    }
}

/// The size of the hash space, as a float.
const SPACE: f64 = 18_446_744_073_709_551_616.0;

/// MurmurHash3's 64-bit finalizer.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("epoch", &self.epoch)
            .field("members", &self.members)
            .finish()
    }
}

impl Membership {
    /// Builds the member list for `epoch`. Duplicates are dropped; order does not matter.
    ///
    /// # Errors
    /// [`Error::InvalidMembership`] when the list is empty or holds an empty address.
    pub fn new<I, S>(epoch: u64, members: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_vnodes(epoch, members, VNODES)
    }

    /// As [`Membership::new`], with `vnodes` points per member instead of [`VNODES`]. Nodes
    /// and clients route alike only with the same count: this is for measuring rings.
    ///
    /// # Errors
    /// As [`Membership::new`].
    pub fn with_vnodes<I, S>(epoch: u64, members: I, vnodes: usize) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut members: Vec<String> = members.into_iter().map(Into::into).collect();
        members.sort();
        members.dedup();
        if members.is_empty() {
            return Err(Error::InvalidMembership("the member list is empty".into()));
        }
        if members.iter().any(|m| m.trim().is_empty()) {
            return Err(Error::InvalidMembership("a member address is empty".into()));
        }
        let ring = Arc::new(Ring::build(&members, vnodes.max(1)));
        Ok(Self {
            epoch,
            members,
            ring,
        })
    }

    /// The epoch of this member list.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The members, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Whether `addr` is a member.
    pub fn contains(&self, addr: &str) -> bool {
        self.members
            .binary_search_by(|m| m.as_str().cmp(addr))
            .is_ok()
    }

    /// The key's home node.
    pub fn owner(&self, key: &str) -> &str {
        // The constructor guarantees at least one member, so the ring is never empty.
        let ring = &self.ring;
        &self.members[ring.owners[ring.first(key_hash(key))] as usize]
    }

    /// The share of the hash space, and so of keys, that each member owns, in member order.
    pub fn shares(&self) -> Vec<f64> {
        let ring = &self.ring;
        let mut shares = vec![0.0; self.members.len()];
        let mut prev = ring.points[ring.points.len() - 1];
        for (point, owner) in ring.points.iter().zip(&ring.owners) {
            shares[*owner as usize] += point.wrapping_sub(prev) as f64 / SPACE;
            prev = *point;
        }
        if ring.points.len() == 1 {
            shares[0] = 1.0;
        }
        shares
    }

    /// The share of the hash space whose owner differs between this ring and `other`: the
    /// share of keys that move when one replaces the other.
    pub fn moved_share(&self, other: &Membership) -> f64 {
        let (a, b) = (&self.ring, &other.ring);
        let mut bounds: Vec<u64> = a.points.iter().chain(&b.points).copied().collect();
        bounds.sort_unstable();
        bounds.dedup();
        let mut moved = 0.0;
        let mut prev = bounds[bounds.len() - 1];
        for &bound in &bounds {
            // Every position in (prev, bound] has the owner of `bound` in each ring.
            if self.members[a.owners[a.first(bound)] as usize]
                != other.members[b.owners[b.first(bound)] as usize]
            {
                moved += bound.wrapping_sub(prev) as f64 / SPACE;
            }
            prev = bound;
        }
        moved
    }

    /// Every member in the order a request for `key` tries them: the home node first, then
    /// the nodes that serve for it when it is down. The order is the same on every node.
    pub fn candidates<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let ring = &self.ring;
        let start = ring.first(key_hash(key));
        let seen = vec![false; self.members.len()];
        // Walk the points from the key's, naming each member the first time it owns one, and
        // stop once every member is named.
        (0..ring.points.len())
            .map(move |i| ring.owners[(start + i) % ring.points.len()] as usize)
            .scan((seen, self.members.len()), |(seen, left), m| {
                if *left == 0 {
                    return None;
                }
                if std::mem::replace(&mut seen[m], true) {
                    Some(None)
                } else {
                    *left -= 1;
                    Some(Some(m))
                }
            })
            .flatten()
            .map(|m| self.members[m].as_str())
    }
}

/// A shared, swappable [`Membership`] snapshot.
#[derive(Debug, Clone)]
pub struct SharedMembership(Arc<RwLock<Arc<Membership>>>);

impl SharedMembership {
    /// Shares `initial`.
    pub fn new(initial: Membership) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(initial))))
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Membership> {
        // A poisoned lock still holds a complete snapshot: the writer only swaps an Arc.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `f` on the current snapshot without taking a reference to it (cheaper than
    /// [`SharedMembership::load`] on a hot path).
    pub fn with<R>(&self, f: impl FnOnce(&Membership) -> R) -> R {
        f(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Swaps in `next` if its epoch is higher than the current one. Returns whether it did.
    pub fn replace_if_newer(&self, next: Membership) -> bool {
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        if next.epoch > current.epoch {
            *current = Arc::new(next);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[test]
fn key_hash_is_stable() {
    // Client and server of different builds must agree: the hash is part of the protocol.
    // Values worked out independently from the definitions of FNV-1a (over the key's bytes
    // and the 0xff that `Hash for str` appends) and fmix64.
    assert_eq!(key_hash("obj/1"), 0x2166_213c_858d_cdca);
    assert_eq!(key_hash("a/b.json"), 0x7d98_f349_b2e8_c358);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:7070")).collect()
    }

    #[test]
    fn addresses_from_outside_are_host_and_port() {
        for ok in [
            "127.0.0.1:7070",
            "[::1]:1",
            "node-1.svc.local:65535",
            "localhost:80",
        ] {
            assert!(valid_address(ok), "{ok}");
        }
        for bad in [
            "",
            "x",
            "host:",
            "host:0",
            "host:65536",
            ":80",
            "a b:80",
            "1.2.3:80",
            "-a:80",
            "a..b:80",
            "::1:80",
            "[zz]:80",
            "host:+80",
            "http://h:80",
        ] {
            assert!(!valid_address(bad), "{bad}");
        }
        assert!(validate_addresses(&["a:1".into(), "b:2".into()]).is_ok());
        assert!(validate_addresses(&[]).is_err());
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("n{i}:1")).collect();
        assert!(validate_addresses(&many[..MAX_MEMBERS]).is_ok());
        let err = validate_addresses(&many).unwrap_err().to_string();
        assert!(err.contains("1025 addresses"), "{err}");
        let long = format!("{}:1", "x".repeat(10_000));
        let err = validate_addresses(&[long]).unwrap_err().to_string();
        assert!(
            err.len() < 200,
            "the message repeats its input: {}",
            err.len()
        );
    }

    #[test]
    fn empty_is_an_error() {
        assert!(Membership::new(1, Vec::<String>::new()).is_err());
        assert!(Membership::new(1, [""]).is_err());
    }

    #[test]
    fn owner_is_first_candidate_and_candidates_are_distinct() {
        let m = Membership::new(1, nodes(5)).unwrap();
        for i in 0..1000 {
            let key = format!("key-{i}");
            let c: Vec<&str> = m.candidates(&key).collect();
            assert_eq!(c[0], m.owner(&key));
            let mut d = c.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 5);
        }
    }

    #[test]
    fn order_of_members_does_not_matter() {
        let mut rev = nodes(4);
        rev.reverse();
        let a = Membership::new(1, nodes(4)).unwrap();
        let b = Membership::new(1, rev).unwrap();
        for i in 0..500 {
            let key = format!("k{i}");
            assert_eq!(a.owner(&key), b.owner(&key));
        }
    }

    #[test]
    fn newer_epoch_wins() {
        let shared = SharedMembership::new(Membership::new(2, nodes(2)).unwrap());
        assert!(!shared.replace_if_newer(Membership::new(1, nodes(3)).unwrap()));
        assert!(!shared.replace_if_newer(Membership::new(2, nodes(3)).unwrap()));
        assert!(shared.replace_if_newer(Membership::new(3, nodes(3)).unwrap()));
        assert_eq!(shared.load().members().len(), 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// After any change of members, every key's owner is the new ring's owner (a member),
        /// and keys move only to or from the nodes that changed.
        #[test]
        fn ownership_follows_any_member_change(
            before in proptest::collection::btree_set(0u8..24, 1..12),
            after in proptest::collection::btree_set(0u8..24, 1..12),
        ) {
            let name = |i: &u8| format!("10.1.0.{i}:7070");
            let old = Membership::new(1, before.iter().map(name)).unwrap();
            let new = Membership::new(2, after.iter().map(name)).unwrap();
            for k in 0..2000 {
                let key = format!("key/{k}");
                let (was, is) = (old.owner(&key), new.owner(&key));
                prop_assert!(new.contains(is));
                if was != is {
                    // A key moves only off a removed node or onto an added one.
                    prop_assert!(!new.contains(was) || !old.contains(is), "{key}: {was} -> {is}");
                }
            }
        }

        /// Adding one node to N moves about 1/(N+1) of the keys: within 1.25x either way.
        #[test]
        fn scale_out_moves_about_one_share(n in 1usize..=16, salt in any::<u32>()) {
            let old = Membership::new(1, nodes(n)).unwrap();
            let new = Membership::new(2, nodes(n + 1)).unwrap();
            let keys = 40_000;
            let moved = (0..keys)
                .filter(|k| {
                    let key = format!("{salt:x}/{k}");
                    old.owner(&key) != new.owner(&key)
                })
                .count();
            let fraction = moved as f64 / keys as f64;
            let ideal = 1.0 / (n + 1) as f64;
            prop_assert!(
                fraction <= 1.25 * ideal && fraction >= ideal / 1.25,
                "{} -> {}: moved {:.4}, ideal {:.4}", n, n + 1, fraction, ideal
            );
        }

        /// Every key has exactly one owner, a member, and keys spread within ±20% of even.
        #[test]
        fn ring_balance(n in 3usize..=16, salt in any::<u64>()) {
            let m = Membership::new(1, nodes(n)).unwrap();
            let keys = 40_000usize;
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for i in 0..keys {
                let key = format!("{salt:x}/obj-{i}");
                let owner = m.owner(&key);
                prop_assert!(m.contains(owner));
                prop_assert_eq!(owner, m.owner(&key));
                *counts.entry(owner).or_default() += 1;
            }
            prop_assert_eq!(counts.len(), n);
            let even = keys as f64 / n as f64;
            for (node, c) in counts {
                let dev = (c as f64 - even).abs() / even;
                prop_assert!(dev <= 0.20, "{} holds {} keys, {:.1}% from even", node, c, dev * 100.0);
            }
        }
    }
}
