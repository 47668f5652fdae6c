//! A `redis-server` process on a free loopback port, for baselines.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, stopped when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
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

    /// For tests: whether `redis-server` is on `PATH`. Without it a test skips, except under
    /// `CI=true`, where this panics: CI installs it.
    ///
    /// # Panics
    /// Under `CI=true` when `redis-server` is missing.
    pub fn available_for_test() -> bool {
        if Self::available() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server is required in CI"
        );
        eprintln!("skipping: redis-server not found (scripts/test installs it)");
        false
    }

    /// Starts `redis-server` with no persistence, `maxmemory` bytes and `allkeys-lru`, and
    /// waits until it answers.
    ///
    /// # Errors
    /// When it cannot be started or does not answer within 10 s.
    pub async fn start(maxmemory: u64) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory", &maxmemory.to_string()])
            .args(["--maxmemory-policy", "allkeys-lru"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
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
