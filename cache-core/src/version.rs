//! Versions of blobs, as the blob store reports them.

use std::fmt;
use std::sync::Arc;

use object_store::{ObjectMeta, PutResult};

/// The version of a blob's content: the store's ETag, or a tag derived from the store's
/// metadata when the store gives none.
///
/// Versions are opaque: two equal versions name the same content, and nothing else is implied.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Version(Arc<str>);

impl Version {
    /// A version with the given tag.
    pub fn new(tag: impl Into<Arc<str>>) -> Self {
        Self(tag.into())
    }

    /// The version of an object as listed or read from the store.
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        match (&meta.e_tag, &meta.version) {
            (Some(tag), _) => Self::new(tag.as_str()),
            (None, Some(version)) => Self::new(format!("v:{version}")),
            (None, None) => Self::new(format!(
                "m:{}-{}",
                meta.last_modified.timestamp_micros(),
                meta.size
            )),
        }
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
        &self.0
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({:?})", &*self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
}
