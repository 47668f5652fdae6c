//! Versions of blobs, as the blob store reports them.

use std::fmt;
use std::sync::Arc;

use object_store::{ObjectMeta, PutResult};

/// The version of a blob's content: the store's ETag, or a tag derived from the store's
/// metadata when the store gives none.
///
/// Versions are opaque: two equal versions name the same content, and nothing else is implied.
/// A version also carries when its content was written, where known; that time is metadata
/// and takes no part in equality.
#[derive(Clone)]
pub struct Version {
    tag: Arc<str>,
    // Milliseconds since the Unix epoch; 0 when unknown.
    modified_ms: u64,
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.tag == other.tag
    }
}

impl Eq for Version {}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.tag.hash(state);
    }
}

impl Version {
    /// A version with the given tag, written at an unknown time.
    pub fn new(tag: impl Into<Arc<str>>) -> Self {
        Self {
            tag: tag.into(),
            modified_ms: 0,
        }
    }

    /// The same version, written at `modified_ms` milliseconds since the Unix epoch (0:
    /// unknown).
    pub fn with_modified_ms(mut self, modified_ms: u64) -> Self {
        self.modified_ms = modified_ms;
        self
    }

    /// When the content was written, in milliseconds since the Unix epoch: the store's
    /// last-modified time when the version was read from the store, the writing node's clock
    /// when the write went through the cache. `None` when unknown.
    pub fn modified_ms(&self) -> Option<u64> {
        (self.modified_ms > 0).then_some(self.modified_ms)
    }

    /// The version of an object as listed or read from the store.
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        let modified = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
        let version = match (&meta.e_tag, &meta.version) {
            (Some(tag), _) => Self::new(tag.as_str()),
            (None, Some(version)) => Self::new(format!("v:{version}")),
            (None, None) => Self::new(format!(
                "m:{}-{}",
                meta.last_modified.timestamp_micros(),
                meta.size
            )),
        };
        version.with_modified_ms(modified)
    }

    /// The version a put produced, when the store reports one.
    pub fn from_put(result: &PutResult) -> Option<Self> {
        match (&result.e_tag, &result.version) {
            (Some(tag), _) => Some(Self::new(tag.as_str())),
            (None, Some(version)) => Some(Self::new(format!("v:{version}"))),
            (None, None) => None,
        }
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.tag
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({:?})", &*self.tag)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::path::Path;

    fn meta(e_tag: Option<&str>, version: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            location: Path::from("k"),
            last_modified: Default::default(),
            size: 7,
            e_tag: e_tag.map(Into::into),
            version: version.map(Into::into),
        }
    }

    #[test]
    fn prefers_etag_then_version_then_metadata() {
        assert_eq!(
            Version::from_meta(&meta(Some("e"), Some("v"))).as_str(),
            "e"
        );
        assert_eq!(Version::from_meta(&meta(None, Some("v"))).as_str(), "v:v");
        assert_eq!(Version::from_meta(&meta(None, None)).as_str(), "m:0-7");
    }

    #[test]
    fn the_write_time_is_metadata_not_identity() {
        let a = Version::new("e").with_modified_ms(5);
        let b = Version::new("e").with_modified_ms(9);
        assert_eq!(a, b);
        assert_eq!(a.modified_ms(), Some(5));
        assert_eq!(Version::new("e").modified_ms(), None);
        assert_ne!(a, Version::new("f").with_modified_ms(5));
    }
}
