//! Who may call the S3 endpoint: SigV4 access keys from a file, and anonymous callers only
//! where the node allows them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

use crate::Error;

/// The access keys of `--s3-keys`: one `ACCESS_KEY_ID SECRET_ACCESS_KEY` pair a line. Blank
/// lines and lines that start with `#` are skipped.
#[derive(Default)]
pub struct AccessKeys {
    keys: HashMap<String, SecretKey>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeys")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AccessKeys {
    /// Parses the text of a keys file.
    ///
    /// # Errors
    /// A line that is not two words, or an access key given twice.
    pub fn parse(text: &str) -> crate::Result<Self> {
        let mut keys = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let [id, secret] = words[..] else {
                return Err(Error::Config(format!(
                    "S3 keys, line {}: expected `ACCESS_KEY_ID SECRET_ACCESS_KEY`",
                    n + 1
                )));
            };
            if keys
                .insert(id.to_owned(), SecretKey::from(secret.to_owned()))
                .is_some()
            {
                return Err(Error::Config(format!(
                    "S3 keys, line {}: access key {id:?} given twice",
                    n + 1
                )));
            }
        }
        Ok(Self { keys })
    }

    /// Reads a keys file. SigV4 needs the secrets themselves, so a file that the group or
    /// others may read is refused.
    ///
    /// # Errors
    /// An unreadable file, one that others may read, or bad lines.
    pub fn read(path: &Path) -> crate::Result<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| Error::Config(format!("S3 keys {}: {e}", path.display())))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(Error::Config(format!(
                    "S3 keys {}: mode {:o} lets others read the secrets; chmod 600 it",
                    path.display(),
                    mode & 0o777
                )));
            }
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("S3 keys {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[async_trait::async_trait]
impl S3Auth for AccessKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.keys
            .get(access_key)
            .cloned()
            .ok_or_else(|| s3_error!(InvalidAccessKeyId))
    }
}

/// The address of the connection a request came on, put into each request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller(pub SocketAddr);

/// Signed requests pass (their signature was checked already). Unsigned ones pass only with
/// `--s3-anonymous`, and then, on a node that requires tokens, only from loopback.
#[derive(Debug)]
pub(crate) struct Anonymous {
    /// `--s3-anonymous`.
    pub allowed: bool,
    /// The node requires tokens on its gRPC services.
    pub loopback_only: bool,
}

#[async_trait::async_trait]
impl S3Access for Anonymous {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_some() {
            return Ok(());
        }
        if !self.allowed {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        }
        let loopback = cx
            .extensions_mut()
            .get::<Caller>()
            .is_some_and(|c| c.0.ip().is_loopback());
        if self.loopback_only && !loopback {
            return Err(s3_error!(
                AccessDenied,
                "this node takes unsigned requests only from loopback"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_file_is_pairs_of_words() {
        let keys = AccessKeys::parse("# comment\n\nAKID secret\n  B  s2  \n").unwrap();
        assert_eq!(keys.len(), 2);
        for bad in ["AKID", "AKID secret extra", "A s\nA t"] {
            assert!(AccessKeys::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_keys_file_that_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "AKID secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = AccessKeys::read(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(AccessKeys::read(&path).unwrap().len(), 1);
    }
}
