//! [`Azurite`]: the Azure Storage emulator's blob service as a child process, for the tests of
//! the `az://` store.
//!
//! The emulator comes from `CACHELET_AZURITE` (its `azurite-blob` executable), and the Python
//! with Microsoft's `azure-storage-blob` client from `CACHELET_PYTHON`; `scripts/test` installs
//! both. Every request to Azurite must be signed with the emulator account's shared key, so
//! containers are made, and blobs written and read behind the cache's back, with that
//! client. A missing emulator or client is an error, never a reason to skip.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};

/// The variable that names the `azurite-blob` executable.
pub const AZURITE_ENV: &str = "CACHELET_AZURITE";

/// The variable that names a Python that has `azure-storage-blob`.
pub const PYTHON_ENV: &str = "CACHELET_PYTHON";

/// The emulator's account, the same in every Azurite.
pub const ACCOUNT: &str = "devstoreaccount1";

/// The emulator account's well-known key, published with Azurite.
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How long Azurite may take to report its port.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The client calls behind [`Azurite`]'s helpers: `OP CONNECTION_STRING CONTAINER [BLOB]`,
/// with blob bytes on stdin (put) or stdout (get).
const CLIENT: &str = r#"
import sys
from azure.storage.blob import BlobServiceClient
op, conn, container = sys.argv[1], sys.argv[2], sys.argv[3]
service = BlobServiceClient.from_connection_string(conn)
if op == "create":
    service.create_container(container)
elif op == "put":
    service.get_blob_client(container, sys.argv[4]).upload_blob(sys.stdin.buffer.read(), overwrite=True)
elif op == "get":
    sys.stdout.buffer.write(service.get_blob_client(container, sys.argv[4]).download_blob().readall())
"#;

fn env_path(var: &str, what: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(path) if std::path::Path::new(&path).exists() => Ok(path),
        Ok(path) => Err(Error::Azurite(format!("{var}={path} does not exist"))),
        Err(_) => Err(Error::Azurite(format!(
            "{what} is missing: set {var} (scripts/test installs it and sets the variable)"
        ))),
    }
}

/// A running Azurite blob service on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct Azurite {
    child: Child,
    url: String,
    python: String,
    _dir: tempfile::TempDir,
}

impl Azurite {
    /// Starts the blob service on `127.0.0.1` at a port it picks, with its data in a
    /// temporary directory, and waits until it reports the port.
    ///
    /// # Errors
    /// [`Error::Azurite`] when the emulator or the Python client is missing, or Azurite does
    /// not start.
    pub fn start() -> Result<Self> {
        let bin = env_path(AZURITE_ENV, "Azurite (npm azurite)")?;
        let python = env_path(PYTHON_ENV, "a Python with azure-storage-blob")?;
        let dir = tempfile::tempdir().map_err(|e| Error::Azurite(e.to_string()))?;
        let mut child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0", "--location"])
            .arg(dir.path())
            .args(["--disableTelemetry", "--skipApiVersionCheck", "--silent"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Azurite(format!("starting {bin}: {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log to its end, so that the pipe never fills; reports the URL once.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listens on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => Ok(Self {
                child,
                url,
                python,
                _dir: dir,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::Azurite(format!(
                    "Azurite did not report its port within {START_TIMEOUT:?}"
                )))
            }
        }
    }

    /// The blob service's URL, such as `http://127.0.0.1:41235`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The variables that point `object_store`'s Azure client (and so `cache-server
    /// --store az://CONTAINER`) at this emulator.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), self.url.clone()),
        ]
    }

    fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};\
             BlobEndpoint={}/{ACCOUNT};",
            self.url
        )
    }

    fn client(&self, args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
        use std::io::Write;
        let mut child = Command::new(&self.python)
            .args(["-c", CLIENT])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Azurite(format!("running {}: {e}", self.python)))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .map_err(|e| Error::Azurite(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::Azurite(e.to_string()))?;
        if !out.status.success() {
            return Err(Error::Azurite(format!(
                "azure-storage-blob {}: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            )));
        }
        Ok(out.stdout)
    }

    /// Creates `container`.
    ///
    /// # Errors
    /// [`Error::Azurite`] when the client fails (the container exists, say).
    pub fn create_container(&self, container: &str) -> Result<()> {
        self.client(&["create", &self.connection_string(), container], &[])
            .map(drop)
    }

    /// Writes `blob` in `container` straight into the emulator, behind any cache's back.
    ///
    /// # Errors
    /// [`Error::Azurite`] when the client fails.
    pub fn put_blob(&self, container: &str, blob: &str, bytes: &[u8]) -> Result<()> {
        self.client(&["put", &self.connection_string(), container, blob], bytes)
            .map(drop)
    }

    /// Reads `blob` of `container` straight from the emulator.
    ///
    /// # Errors
    /// [`Error::Azurite`] when the client fails (no such blob, say).
    pub fn get_blob(&self, container: &str, blob: &str) -> Result<Vec<u8>> {
        self.client(&["get", &self.connection_string(), container, blob], &[])
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
