//! Large objects in chunks and parts.
//!
//! An object larger than the largest whole value ([`Limits::max_value_bytes`]) and at most
//! [`Limits::max_object_bytes`] travels one chunk ([`Limits::chunk_bytes`], 4 MiB) a message.
//! Its home node reads it from the store, and caches it, in parts of several chunks
//! ([`Limits::part_bytes`], 16 MiB: the size of the parallel ranged GETs that InfiniCache and
//! the AWS S3 performance guide use). A part is named by the object's key, the object's version
//! and its index, so its bytes never change: a part of one version is never served for
//! another, and a write needs no part invalidated (the old version's parts are only
//! unreachable, and are evicted like any entry). A read first learns the object's current
//! version and size, then asks for each chunk of that version.
//!
//! Parts live in the entry store under [`CHUNK_PREFIX`], inside the reserved prefix, so that
//! no user key can name one.
//!
//! [`Limits::max_value_bytes`]: crate::Limits::max_value_bytes
//! [`Limits::max_object_bytes`]: crate::Limits::max_object_bytes
//! [`Limits::chunk_bytes`]: crate::Limits::chunk_bytes
//! [`Limits::part_bytes`]: crate::Limits::part_bytes

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the parts of large objects are kept in a node's entry store (never in the blob
/// store).
pub const CHUNK_PREFIX: &str = "_cachelet/parts/";

/// The default chunk size, in bytes (4 MiB).
pub const DEFAULT_CHUNK_BYTES: u64 = 4 << 20;

/// The default part size, in bytes (16 MiB).
pub const DEFAULT_PART_BYTES: u64 = 16 << 20;

/// The default largest object the cache serves in chunks, in bytes (1 GiB).
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 1 << 30;

/// The entry-store key of part `index` of version `version` of the object `key`.
pub fn part_key(key: &str, version: &str, index: u64) -> String {
    let mut out = String::with_capacity(CHUNK_PREFIX.len() + 2 * version.len() + key.len() + 24);
    out.push_str(CHUNK_PREFIX);
    for b in version.as_bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out.push('/');
    out.push_str(&index.to_string());
    out.push('/');
    out.push_str(key);
    out
}

/// The object key that `part_key` is a part of, or `None` when it is no part key.
pub fn object_of(part_key: &str) -> Option<&str> {
    let rest = part_key.strip_prefix(CHUNK_PREFIX)?;
    let (_version, rest) = rest.split_once('/')?;
    let (_index, key) = rest.split_once('/')?;
    (!key.is_empty()).then_some(key)
}

/// How many chunks of `chunk_bytes` an object of `size` bytes has (at least one).
pub fn chunk_count(size: u64, chunk_bytes: u64) -> u64 {
    size.div_ceil(chunk_bytes.max(1)).max(1)
}

/// The part that holds chunk `index`, and where in the part the chunk lies. `part_bytes` is
/// a multiple of `chunk_bytes`, so a chunk never spans two parts.
pub fn locate(index: u64, chunk_bytes: u64, part_bytes: u64) -> (u64, Range<u64>) {
    let chunk = chunk_bytes.max(1);
    let part_bytes = part_bytes.max(chunk);
    let start = index.saturating_mul(chunk);
    let part = start / part_bytes;
    let offset = start - part * part_bytes;
    (part, offset..offset.saturating_add(chunk))
}

/// The bytes of the object that chunk `index` holds.
pub fn chunk_range(index: u64, chunk_bytes: u64, size: u64) -> Range<u64> {
    let start = index.saturating_mul(chunk_bytes).min(size);
    start..start.saturating_add(chunk_bytes).min(size)
}

/// The chunks that cover `range` of an object, in order, each with the part of the chunk the
/// range takes (relative to the chunk's start).
pub fn covering(range: Range<u64>, chunk_bytes: u64) -> impl Iterator<Item = (u64, Range<u64>)> {
    let chunk = chunk_bytes.max(1);
    let first = range.start / chunk;
    let last = if range.end > range.start {
        (range.end - 1) / chunk + 1
    } else {
        first
    };
    (first..last).map(move |index| {
        let base = index * chunk;
        let from = range.start.max(base) - base;
        let to = range.end.min(base + chunk) - base;
        (index, from..to)
    })
}

/// Which keys were lately found to hold objects too large to cache whole: a hint, so that a
/// node answers a get of one after a metadata call instead of starting a read of the whole
/// object. A wrong hint costs a metadata call, never a wrong answer. Bounded: a fixed table of
/// key hashes, where a newer key takes an older one's slot.
#[derive(Debug)]
pub struct LargeHint {
    slots: Box<[AtomicU64]>,
}

impl LargeHint {
    /// A hint of `slots` entries (at least one).
    pub fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, hash: u64) -> &AtomicU64 {
        &self.slots[(hash % self.slots.len() as u64) as usize]
    }

    /// Whether the key of `hash` was marked large (and not since taken over or cleared).
    pub fn is_large(&self, hash: u64) -> bool {
        hash != 0 && self.slot(hash).load(Ordering::Relaxed) == hash
    }

    /// Marks the key of `hash` large.
    pub fn mark(&self, hash: u64) {
        self.slot(hash).store(hash, Ordering::Relaxed);
    }

    /// Forgets the mark of the key of `hash`, if it is still there.
    pub fn clear(&self, hash: u64) {
        let _ = self
            .slot(hash)
            .compare_exchange(hash, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::validate_key;
    use proptest::prelude::*;

    #[test]
    fn part_keys_name_their_object_and_no_user_key() {
        let k = part_key("videos/a b.mp4", "\"etag/1\"", 7);
        assert_eq!(object_of(&k), Some("videos/a b.mp4"));
        assert!(
            validate_key(&k).is_err(),
            "reserved: no user key is a chunk key"
        );
        assert_ne!(part_key("k", "v1", 0), part_key("k", "v2", 0));
        assert_ne!(part_key("k", "v", 0), part_key("k", "v", 1));
        assert_eq!(object_of("videos/a.mp4"), None);
        assert_eq!(object_of("_cachelet/prewarm/x"), None);
    }

    #[test]
    fn chunks_split_an_object() {
        assert_eq!(chunk_count(10, 4), 3);
        assert_eq!(chunk_count(8, 4), 2);
        assert_eq!(chunk_count(0, 4), 1);
        assert_eq!(chunk_range(2, 4, 10), 8..10);
        assert_eq!(chunk_range(5, 4, 10), 10..10);
        let got: Vec<_> = covering(3..9, 4).collect();
        assert_eq!(got, [(0, 3..4), (1, 0..4), (2, 0..1)]);
        assert_eq!(covering(4..4, 4).count(), 0);
    }

    #[test]
    fn the_large_hint_is_bounded_and_forgets() {
        let hint = LargeHint::new(4);
        assert!(!hint.is_large(7));
        hint.mark(7);
        assert!(hint.is_large(7));
        hint.mark(11); // the same slot: takes it over
        assert!(!hint.is_large(7) && hint.is_large(11));
        hint.clear(7); // not its slot any more: no effect
        assert!(hint.is_large(11));
        hint.clear(11);
        assert!(!hint.is_large(11));
        assert!(!hint.is_large(0), "the empty slot is no key");
    }

    proptest! {
        /// A chunk lies inside its part, at the object's bytes of the chunk.
        #[test]
        fn chunks_lie_inside_their_part(index in 0u64..10_000, chunk in 1u64..64, per_part in 1u64..8) {
            let part_bytes = chunk * per_part;
            let (part, within) = locate(index, chunk, part_bytes);
            prop_assert!(within.end <= part_bytes);
            prop_assert_eq!(part * part_bytes + within.start, index * chunk);
            prop_assert_eq!(within.end - within.start, chunk);
        }

        /// The covering chunks, trimmed, are exactly the range, in order.
        #[test]
        fn covering_chunks_are_the_range(
            size in 0u64..5000,
            chunk in 1u64..700,
            a in 0u64..5000,
            b in 0u64..5000,
        ) {
            let (start, end) = (a.min(b).min(size), a.max(b).min(size));
            let mut bytes = Vec::new();
            for (index, within) in covering(start..end, chunk) {
                let r = chunk_range(index, chunk, size);
                prop_assert!(within.end <= r.end - r.start);
                bytes.extend((r.start + within.start)..(r.start + within.end));
            }
            prop_assert_eq!(bytes, (start..end).collect::<Vec<_>>());
        }

        #[test]
        fn part_keys_round_trip(key in "[a-z0-9/ ._-]{1,40}", version in ".{0,20}", index in 0u64..1 << 40) {
            let named = part_key(&key, &version, index);
            prop_assert_eq!(object_of(&named), Some(key.as_str()));
        }
    }
}
