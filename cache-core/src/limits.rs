//! Key and value validation, with the documented limits.
//!
//! A key is the blob's name inside the application's store, so the cache is transparent: the
//! key `a/b.json` is the blob `a/b.json`. To keep one blob from having two cache entries under
//! two spellings, keys must be in canonical form.

use crate::chunks::{DEFAULT_CHUNK_BYTES, DEFAULT_MAX_OBJECT_BYTES, DEFAULT_PART_BYTES};
use crate::error::{Error, Result, echo};

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The default largest value, in bytes (16 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 16 * 1024 * 1024;

/// The prefix reserved for cachelet's own objects in the store; never served as user data.
pub const RESERVED_PREFIX: &str = "_cachelet/";

/// The key reserved as the directory of cachelet's own objects: [`RESERVED_PREFIX`] without
/// its slash. A blob by that name would stand where the directory must be, in a file store.
pub const RESERVED_KEY: &str = "_cachelet";

/// Size limits that a node enforces on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest value a put may carry, and the largest blob a get will cache whole.
    /// Default: [`DEFAULT_MAX_VALUE_BYTES`] (16 MiB).
    pub max_value_bytes: u64,
    /// The size of the chunks of larger objects ([`crate::chunks`]), at most
    /// `max_value_bytes`. Default: [`DEFAULT_CHUNK_BYTES`] (4 MiB).
    pub chunk_bytes: u64,
    /// The largest object served in chunks; larger ones are not cached. Default:
    /// [`DEFAULT_MAX_OBJECT_BYTES`] (1 GiB).
    pub max_object_bytes: u64,
    /// The size of the parts in which large objects are read from the store and cached, as
    /// set; [`Limits::part_bytes`] gives the size in force. Default: [`DEFAULT_PART_BYTES`]
    /// (16 MiB).
    pub part_bytes_wanted: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            part_bytes_wanted: DEFAULT_PART_BYTES,
        }
    }
}

impl Limits {
    /// Sets the largest value in bytes. Default: 16 MiB. The chunk size is lowered to it
    /// when larger.
    pub fn with_max_value_bytes(mut self, max: u64) -> Self {
        self.max_value_bytes = max;
        self.chunk_bytes = self.chunk_bytes.min(max).max(1);
        self
    }

    /// Sets the chunk size of large objects in bytes, at most the largest value and at least
    /// one byte. Default: 4 MiB.
    pub fn with_chunk_bytes(mut self, chunk: u64) -> Self {
        self.chunk_bytes = chunk.clamp(1, self.max_value_bytes.max(1));
        self
    }

    /// Sets the size of the parts in which large objects are read from the store and cached.
    /// Default: 16 MiB. See [`Limits::part_bytes`].
    pub fn with_part_bytes(mut self, part: u64) -> Self {
        self.part_bytes_wanted = part;
        self
    }

    /// The part size in force: the size set, at most the largest value, rounded down to a
    /// whole number of chunks, and at least one chunk.
    pub fn part_bytes(&self) -> u64 {
        let chunk = self.chunk_bytes.max(1);
        let part = self.part_bytes_wanted.min(self.max_value_bytes);
        (part / chunk).max(1) * chunk
    }

    /// Sets the largest object served in chunks, in bytes. Default: 1 GiB.
    pub fn with_max_object_bytes(mut self, max: u64) -> Self {
        self.max_object_bytes = max;
        self
    }

    /// Checks a value's size against `max_value_bytes`.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`] when the value is larger than the limit.
    pub fn check_value(&self, size: usize) -> Result<()> {
        let size = size as u64;
        if size > self.max_value_bytes {
            return Err(Error::ValueTooLarge {
                size,
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

/// Checks that `key` is a valid cache key.
///
/// A valid key:
/// - is 1 to [`MAX_KEY_BYTES`] bytes of UTF-8;
/// - is a valid object path: `/`-separated segments, none empty, none `.` or `..`, and no ASCII
///   control characters;
/// - has no leading or trailing `/` (the canonical spelling of the path);
/// - is not [`RESERVED_KEY`] and does not start with [`RESERVED_PREFIX`].
///
/// # Errors
/// [`Error::InvalidKey`] with the reason.
///
/// # Examples
/// ```
/// use cache_core::validate_key;
/// assert!(validate_key("images/cat.png").is_ok());
/// assert!(validate_key("").is_err());
/// assert!(validate_key("a//b").is_err());
/// ```
pub fn validate_key(key: &str) -> Result<()> {
    let invalid = |reason: String| Err(Error::InvalidKey { reason });
    if key.is_empty() {
        return invalid("the key is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return invalid(format!(
            "the key is {} bytes, longer than the limit of {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    if key.starts_with('/') || key.ends_with('/') {
        return invalid("the key starts or ends with '/'".into());
    }
    if key == RESERVED_KEY {
        return invalid(format!("the key {RESERVED_KEY:?} is reserved"));
    }
    if key.starts_with(RESERVED_PREFIX) {
        return invalid(format!("the prefix {RESERVED_PREFIX:?} is reserved"));
    }
    // The same rules as `object_store::path::Path::parse`, segment by segment, without
    // building a path: this runs on every request.
    for segment in key.split('/') {
        if segment.is_empty() {
            return invalid(format!(
                "not a valid object path: {:?} contains an empty path segment",
                echo(key)
            ));
        }
        if let Err(e) = object_store::path::PathPart::parse(segment) {
            return invalid(format!("not a valid object path: {}", echo(&e.to_string())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_whole_chunks_within_the_largest_value() {
        let l = Limits::default();
        assert_eq!((l.chunk_bytes, l.part_bytes()), (4 << 20, 16 << 20));
        let l = Limits::default().with_max_value_bytes(10 << 20);
        assert_eq!(l.part_bytes(), 8 << 20, "rounded down to whole chunks");
        let l = Limits::default().with_chunk_bytes(3).with_part_bytes(10);
        assert_eq!(l.part_bytes(), 9);
        let l = Limits::default().with_part_bytes(1);
        assert_eq!(l.part_bytes(), l.chunk_bytes, "at least one chunk");
    }

    #[test]
    fn accepts_plain_paths() {
        for key in [
            "a",
            "foo/bar.json",
            "ünïcode/ключ",
            &"k".repeat(MAX_KEY_BYTES),
        ] {
            validate_key(key).unwrap();
        }
    }

    #[test]
    fn rejects_bad_keys_with_reasons() {
        let cases = [
            ("", "empty"),
            (&*"k".repeat(MAX_KEY_BYTES + 1), "longer than"),
            ("/a", "starts or ends"),
            ("a/", "starts or ends"),
            ("a//b", "object path"),
            ("a/../b", "object path"),
            ("a/./b", "object path"),
            ("a\u{0}b", "object path"),
            ("a\nb", "object path"),
            ("_cachelet/prewarm/x", "reserved"),
            ("_cachelet", "reserved"),
        ];
        for (key, why) in cases {
            match validate_key(key) {
                Err(Error::InvalidKey { reason }) => {
                    assert!(reason.contains(why), "{key:?}: {reason}")
                }
                other => panic!("{key:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_the_reserved_name_itself_is_reserved() {
        for key in ["_cachelet_x", "_cachelets", "a/_cachelet", "x_cachelet"] {
            validate_key(key).unwrap();
        }
        assert!(validate_key(RESERVED_KEY).is_err());
    }

    #[test]
    fn reasons_never_repeat_a_long_key() {
        let key = format!("{}//b", "k".repeat(MAX_KEY_BYTES - 4));
        let Err(Error::InvalidKey { reason }) = validate_key(&key) else {
            panic!("accepted {key:?}");
        };
        assert!(reason.len() < 256, "{} bytes: {reason}", reason.len());
        let key = format!("{}\u{1}", "k".repeat(MAX_KEY_BYTES - 1));
        let Err(Error::InvalidKey { reason }) = validate_key(&key) else {
            panic!("accepted {key:?}");
        };
        assert!(reason.len() < 256, "{} bytes: {reason}", reason.len());
    }

    #[test]
    fn value_limit() {
        let limits = Limits::default().with_max_value_bytes(10);
        limits.check_value(10).unwrap();
        assert_eq!(
            limits.check_value(11),
            Err(Error::ValueTooLarge { size: 11, max: 10 })
        );
    }
}
