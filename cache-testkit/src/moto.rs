//! [`Moto`]: the moto S3 emulator as a child process, for tests and correctness runs.
//!
//! The executable comes from `CACHELET_MOTO_SERVER`, or `moto_server` on `PATH`; `scripts/test`
//! installs it. A missing emulator is an error, never a reason to skip: the tests that need it
//! fail and say how to get it.
//!
//! The port is picked by binding port 0 and releasing it, so another process can take it in
//! between: when moto then exits at start, it is started again on another port.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};

/// The variable that names the `moto_server` executable.
pub const MOTO_ENV: &str = "CACHELET_MOTO_SERVER";

/// How long moto may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How many ports are tried when the picked one turns out taken.
const PORT_TRIES: usize = 5;

/// The `moto_server` executable to run.
///
/// # Errors
/// [`Error::Moto`] when `CACHELET_MOTO_SERVER` names no file and `moto_server` is not on `PATH`.
pub fn moto_binary() -> Result<String> {
    if let Ok(path) = std::env::var(MOTO_ENV)
        && !path.is_empty()
    {
        if !std::path::Path::new(&path).exists() {
            return Err(Error::Moto(format!("{MOTO_ENV}={path} does not exist")));
        }
        return Ok(path);
    }
    let found = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        Ok("moto_server".to_owned())
    } else {
        Err(Error::Moto(format!(
            "the moto S3 emulator is missing: set {MOTO_ENV} to the moto_server executable, or \
             put moto_server on PATH (pip install 'moto[server]'; scripts/test installs it into \
             .cache/venv)"
        )))
    }
}

/// Creates `bucket` with an unauthenticated `PUT /bucket`, which moto accepts. An existing
/// bucket is fine.
///
/// # Errors
/// [`Error::Moto`] when moto cannot be reached or refuses.
pub async fn create_bucket(endpoint: &str, bucket: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostport = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let fail = |e: std::io::Error| Error::Moto(format!("creating bucket {bucket}: {e}"));
    let mut conn = tokio::net::TcpStream::connect(&hostport)
        .await
        .map_err(fail)?;
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.map_err(fail)?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await.map_err(fail)?;
    let status = String::from_utf8_lossy(&response[..response.len().min(12)]).into_owned();
    if status.ends_with("200") || status.ends_with("409") {
        Ok(())
    } else {
        Err(Error::Moto(format!(
            "creating bucket {bucket} at {endpoint}: {status}"
        )))
    }
}

/// Sends `signal` (such as `STOP`, `CONT`, `KILL`) to process `pid`.
///
/// # Errors
/// [`Error::Moto`] when `kill` cannot be run or fails.
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| Error::Moto(format!("running kill: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Moto(format!(
            "kill -s {signal} {pid} failed: {status}"
        )))
    }
}

/// A `moto_server` process with a bucket, killed when dropped.
#[derive(Debug)]
pub struct Moto {
    bin: String,
    ip: IpAddr,
    port: u16,
    bucket: String,
    child: Option<Child>,
    stopped: bool,
}

impl Moto {
    /// Starts moto on a free port of `ip` and creates `bucket`.
    ///
    /// # Errors
    /// [`Error::Moto`] when moto is missing, keeps exiting, or does not answer within a minute.
    pub async fn start(ip: IpAddr, bucket: &str) -> Result<Self> {
        let mut moto = Self {
            bin: moto_binary()?,
            ip,
            port: 0,
            bucket: bucket.to_owned(),
            child: None,
            stopped: false,
        };
        let mut last = None;
        for _ in 0..PORT_TRIES {
            moto.port = std::net::TcpListener::bind((ip, 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| Error::Moto(format!("picking a port on {ip}: {e}")))?
                .port();
            match moto.spawn().await {
                Ok(()) => return Ok(moto),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Moto("moto did not start".into())))
    }

    async fn spawn(&mut self) -> Result<()> {
        let child = Command::new(&self.bin)
            .args(["-H", &self.ip.to_string(), "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Moto(format!("starting {}: {e}", self.bin)))?;
        self.child = Some(child);
        self.stopped = false;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(Error::Moto(format!(
                    "{} exited on start ({status}): port {} may be taken",
                    self.bin, self.port
                )));
            }
            if create_bucket(&self.endpoint(), &self.bucket).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Moto(format!(
                    "moto did not answer within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its endpoint, `http://IP:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// Whether it is stopped ([`Moto::stop`]).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| Error::Moto("moto is not running".into()))
    }

    /// SIGSTOP: requests hang until [`Moto::cont`]; its data is kept.
    ///
    /// # Errors
    /// When moto is not running or `kill` fails.
    pub fn stop(&mut self) -> Result<()> {
        signal(self.pid()?, "STOP")?;
        self.stopped = true;
        Ok(())
    }

    /// SIGCONT after [`Moto::stop`].
    ///
    /// # Errors
    /// When moto is not running or `kill` fails.
    pub fn cont(&mut self) -> Result<()> {
        signal(self.pid()?, "CONT")?;
        self.stopped = false;
        Ok(())
    }

    /// Kills moto: requests fail at once, and its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts moto again on the same address, empty but for the bucket, after
    /// [`Moto::kill`]. Retries while the port is still being released.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        let mut last = None;
        for _ in 0..PORT_TRIES {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last.unwrap_or_else(|| Error::Moto("moto did not restart".into())))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if self.stopped
            && let Ok(pid) = self.pid()
        {
            let _ = signal(pid, "CONT");
        }
        self.kill();
    }
}
