//! The per-entry overhead the weigher charges ([`ENTRY_OVERHEAD_BYTES`]) is measured, not
//! guessed: this test fills an entry store with empty blobs in a process of its own and
//! checks that the resident memory each entry really costs, beyond its key, value and
//! version, is within the charge.
#![cfg(target_os = "linux")]

use bytes::Bytes;
use cache_core::{ENTRY_OVERHEAD_BYTES, Entry, EntryStore, Version};

const ENTRIES: usize = 200_000;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
        * 1024
}

#[tokio::test(flavor = "current_thread")]
async fn the_charged_overhead_covers_what_an_entry_really_costs() {
    let store = EntryStore::new(1 << 40);
    // Keys and versions of typical length: a 16-byte key, an S3-style quoted MD5 ETag.
    let keys: Vec<String> = (0..ENTRIES).map(|i| format!("objects/{i:08}")).collect();
    let etag = "\"9e107d9d372bb6826bd81d3542a419d6\"";
    let payload: u64 = keys
        .iter()
        .map(|k| k.len() as u64 + etag.len() as u64)
        .sum();
    store.sync().await;
    let before = rss_bytes();
    for key in &keys {
        let entry = Entry::new(Bytes::new(), Version::new(etag));
        store.load(key, || async { Ok(entry) }).await.unwrap();
    }
    store.sync().await;
    let after = rss_bytes();
    assert_eq!(store.stats().entries, ENTRIES as u64);
    // The `keys` vector itself was allocated before the first reading.
    let per_entry = (after.saturating_sub(before)).saturating_sub(payload) / ENTRIES as u64;
    eprintln!(
        "{ENTRIES} empty entries: {} bytes of RSS each beyond key and version; charged {ENTRY_OVERHEAD_BYTES}",
        per_entry
    );
    assert!(
        per_entry <= ENTRY_OVERHEAD_BYTES,
        "an entry costs {per_entry} bytes beyond its key and version, but the weigher charges \
         {ENTRY_OVERHEAD_BYTES}"
    );
    // The negative control: the old charge of 64 bytes would not have covered it.
    assert!(per_entry > 64, "{per_entry}");
}
