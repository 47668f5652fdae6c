//! A `redis-server` process on a free loopback port, and a Unix domain socket, for baselines.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, stopped when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    /// Holds the Unix domain socket.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Whether `redis-server` is on `PATH`.
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// For tests: fails when `redis-server` is not on `PATH` (`scripts/test` installs it).
    ///
    /// # Panics
    /// When `redis-server` is missing.
    pub fn require_for_test() {
        assert!(
            Self::available(),
            "redis-server is missing: run scripts/test, which installs it (Debian package \
             redis-server)"
        );
    }

    /// Starts `redis-server` with no persistence, `maxmemory` bytes and `allkeys-lru`, and
    /// waits until it answers.
    ///
    /// # Errors
    /// When it cannot be started or does not answer within 10 s.
    pub async fn start(maxmemory: u64) -> anyhow::Result<Self> {
        // The port is picked by binding port 0 and releasing it; another process may take it
        // in between, and then redis-server exits at once: try another.
        let mut last = None;
        for _ in 0..5 {
            match Self::start_on_free_port(maxmemory).await {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    async fn start_on_free_port(maxmemory: u64) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory", &maxmemory.to_string()])
            .args(["--maxmemory-policy", "allkeys-lru"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("redis-server exited on start ({status}): port {port} may be taken");
            }
            if let Ok(mut con) = server.connect().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .is_ok()
            {
                return Ok(server);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not answer in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets `maxmemory` to `data_bytes` on top of the memory the server uses before it holds
    /// any data, so that a baseline gives Redis's data the same byte budget as the cache's.
    /// Returns the `maxmemory` set.
    ///
    /// # Errors
    /// When the server cannot be reached or does not report its memory.
    pub async fn limit_data_memory(&self, data_bytes: u64) -> anyhow::Result<u64> {
        let mut con = self.connect().await?;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut con)
            .await?;
        let used = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("redis-server did not report used_memory"))?;
        let max = used + data_bytes;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(max)
            .query_async::<()>(&mut con)
            .await?;
        Ok(max)
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The URL of the server's Unix domain socket.
    pub fn unix_url(&self) -> String {
        format!(
            "redis+unix://{}",
            self.dir.path().join("redis.sock").display()
        )
    }

    /// A multiplexed connection over the Unix domain socket.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn connect_unix(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.unix_url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// A multiplexed connection (one TCP connection shared by concurrent requests).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn connect(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
