//! Pre-warming after scale-to-zero: hot-key manifests and the plan for loading them.
//!
//! Each node writes a manifest of its hottest cached keys to the store under
//! [`MANIFEST_PREFIX`], on graceful shutdown and periodically. A node that starts reads every
//! manifest and loads the keys it owns, hottest first, up to a share of its capacity.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::limits::RESERVED_PREFIX;

/// Where manifests live in the store. Under the reserved prefix, so never served as data.
pub const MANIFEST_PREFIX: &str = "_cachelet/prewarm/";

/// The most keys a manifest lists.
pub const MAX_MANIFEST_ENTRIES: usize = 20_000;

/// One key of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The blob's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// The version that was cached.
    pub version: String,
    /// Its estimated recent read count.
    pub freq: u32,
}

/// A node's hot keys at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The node that wrote it.
    pub node: String,
    /// Its membership epoch then.
    pub epoch: u64,
    /// When, in milliseconds since 1970.
    pub written_unix_ms: u64,
    /// The keys, hottest first.
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// A manifest of `entries`: the hottest first, at most [`MAX_MANIFEST_ENTRIES`].
    pub fn new(
        node: &str,
        epoch: u64,
        written_unix_ms: u64,
        mut entries: Vec<ManifestEntry>,
    ) -> Self {
        entries.sort_by(|a, b| b.freq.cmp(&a.freq).then_with(|| a.key.cmp(&b.key)));
        entries.truncate(MAX_MANIFEST_ENTRIES);
        Self {
            node: node.to_owned(),
            epoch,
            written_unix_ms,
            entries,
        }
    }

    /// The manifest's key in the store for `node`.
    pub fn path_for(node: &str) -> String {
        let id: String = node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        debug_assert!(MANIFEST_PREFIX.starts_with(RESERVED_PREFIX));
        format!("{MANIFEST_PREFIX}{id}.json")
    }
}

/// The keys to load: those `owns` accepts, from every manifest, hottest first (a key listed
/// by several manifests counts at its highest frequency), until their sizes add up to
/// `budget_bytes`.
pub fn plan<F>(manifests: &[Manifest], owns: F, budget_bytes: u64) -> Vec<ManifestEntry>
where
    F: Fn(&str) -> bool,
{
    let mut best: HashMap<&str, &ManifestEntry> = HashMap::new();
    for entry in manifests.iter().flat_map(|m| &m.entries) {
        if !owns(&entry.key) {
            continue;
        }
        let slot = best.entry(entry.key.as_str()).or_insert(entry);
        if entry.freq > slot.freq {
            *slot = entry;
        }
    }
    let mut ranked: Vec<&ManifestEntry> = best.into_values().collect();
    ranked.sort_by(|a, b| b.freq.cmp(&a.freq).then_with(|| a.key.cmp(&b.key)));
    let mut used = 0u64;
    let mut chosen = Vec::new();
    for entry in ranked {
        if used + entry.size > budget_bytes {
            continue;
        }
        used += entry.size;
        chosen.push(entry.clone());
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, size: u64, freq: u32) -> ManifestEntry {
        ManifestEntry {
            key: key.into(),
            size,
            version: "v".into(),
            freq,
        }
    }

    #[test]
    fn plan_takes_owned_keys_hottest_first_within_budget() {
        let a = Manifest::new(
            "a",
            1,
            0,
            vec![e("x", 10, 5), e("y", 10, 50), e("other", 10, 99)],
        );
        let b = Manifest::new(
            "b",
            1,
            0,
            vec![e("x", 10, 70), e("z", 100, 60), e("w", 10, 1)],
        );
        let keys: Vec<String> = plan(&[a, b], |k| k != "other", 35)
            .into_iter()
            .map(|e| e.key)
            .collect();
        // x (70), then z (60) does not fit, y (50), w (1).
        assert_eq!(keys, ["x", "y", "w"]);
    }

    #[test]
    fn manifests_are_bounded_sorted_and_reserved() {
        let entries = (0..MAX_MANIFEST_ENTRIES as u32 + 10)
            .map(|i| e(&format!("k{i}"), 1, i))
            .collect();
        let m = Manifest::new("127.0.0.1:7070", 3, 0, entries);
        assert_eq!(m.entries.len(), MAX_MANIFEST_ENTRIES);
        assert!(m.entries.windows(2).all(|w| w[0].freq >= w[1].freq));
        let path = Manifest::path_for("127.0.0.1:7070");
        assert_eq!(path, "_cachelet/prewarm/127.0.0.1_7070.json");
        assert!(crate::validate_key(&path).is_err(), "never served as data");
    }
}
