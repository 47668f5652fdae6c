//! Test certificates, generated at run time with `rcgen`, so that no key is checked in.
//!
//! # Examples
//! ```
//! let pki = cache_testkit::certs::TestPki::generate().unwrap();
//! assert!(std::fs::read_to_string(&pki.ca).unwrap().contains("BEGIN CERTIFICATE"));
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

use crate::error::{Error, Result};

/// A CA, a node certificate and a client certificate signed by it, and an unrelated CA, as
/// PEM files in a temporary directory that lives as long as this value.
#[derive(Debug)]
pub struct TestPki {
    /// The directory holding the files.
    pub dir: tempfile::TempDir,
    /// The CA certificate that signed the node and client certificates.
    pub ca: PathBuf,
    /// The node certificate, for `127.0.0.1`, `::1` and `localhost`, usable as server and
    /// client (nodes present it to their peers).
    pub node_cert: PathBuf,
    /// The node certificate's private key.
    pub node_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// The client certificate's private key.
    pub client_key: PathBuf,
    /// A self-signed CA that signed nothing here: a client that trusts only it must fail.
    pub other_ca: PathBuf,
    /// A client certificate signed by [`TestPki::other_ca`]: a node that requires client
    /// certificates of [`TestPki::ca`] must refuse it.
    pub other_client_cert: PathBuf,
    /// The private key of [`TestPki::other_client_cert`].
    pub other_client_key: PathBuf,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Certs(e.to_string())
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(err)?).map_err(err)
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    sans: &[&str],
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> Result<(String, String)> {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = usages;
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, issuer).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(err)?;
    Ok(path)
}

impl TestPki {
    /// Generates every certificate and writes them to a new temporary directory.
    ///
    /// # Errors
    /// [`Error::Certs`] when generation or writing fails.
    pub fn generate() -> Result<Self> {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let dir = tempfile::tempdir().map_err(err)?;
        let root = ca("cachelet test CA")?;
        let other = ca("cachelet untrusted CA")?;
        let (node_cert, node_key) = leaf(
            &root,
            "cachelet node",
            &["127.0.0.1", "::1", "localhost"],
            vec![ServerAuth, ClientAuth],
        )?;
        let (client_cert, client_key) = leaf(&root, "cachelet client", &[], vec![ClientAuth])?;
        let (other_cert, other_key) = leaf(&other, "cachelet stranger", &[], vec![ClientAuth])?;
        let d = dir.path();
        Ok(Self {
            ca: write(d, "ca.pem", &root.pem())?,
            node_cert: write(d, "node.pem", &node_cert)?,
            node_key: write(d, "node.key", &node_key)?,
            client_cert: write(d, "client.pem", &client_cert)?,
            client_key: write(d, "client.key", &client_key)?,
            other_ca: write(d, "other-ca.pem", &other.pem())?,
            other_client_cert: write(d, "other-client.pem", &other_cert)?,
            other_client_key: write(d, "other-client.key", &other_key)?,
            dir,
        })
    }

    /// The contents of one of the files.
    ///
    /// # Panics
    /// When the file cannot be read (the directory was removed under the test).
    pub fn read(&self, path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("test certificate file")
    }
}
