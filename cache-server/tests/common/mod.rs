//! Running the `cache-server` binary in tests.
#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Log lines a [`Server`] keeps, at most.
const KEPT_LOG_LINES: usize = 10_000;

/// A `cache-server` process listening on an ephemeral port.
pub struct Server {
    pub addr: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary with `--listen 127.0.0.1:0` and `args`, and reads the address it
    /// bound from its log.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::try_spawn_at("127.0.0.1:0", args, env).expect("start cache-server")
    }

    /// Starts the binary with `--listen listen` and `args`.
    pub fn spawn_at(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        Self::try_spawn_at(listen, args, env)
    }

    /// Starts the binary on a port this process picked, retrying on another port when the
    /// server reports the address in use (another process took it meanwhile). `args` is given
    /// the address, for flags that name it (such as `--peers`).
    pub fn spawn_known(args: impl Fn(&str) -> Vec<String>, env: &[(&str, &str)]) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .to_string();
            let args = args(&addr);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match Self::try_spawn_at(&addr, &args, env) {
                Ok(server) => return server,
                Err(e) => last = e,
            }
        }
        panic!("cache-server did not start: {last}");
    }

    /// Starts the binary like [`Server::spawn`], under a limit of `nofile` open files (set
    /// with the shell's `ulimit -n`, which then `exec`s the server: the pid is the server's).
    pub fn spawn_with_fd_limit(nofile: u64, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!("ulimit -n {nofile} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_cache-server"),
        ]);
        Self::try_spawn_with(command, "127.0.0.1:0", args, env).expect("start cache-server")
    }

    /// The address of the S3 endpoint (`--s3`), as the server logged it when it bound it.
    pub fn s3_addr(&self) -> String {
        let line = self
            .log_lines("S3 endpoint listening")
            .pop()
            .expect("the server logs its S3 endpoint before it serves");
        let rest = line
            .split("s3_addr=")
            .nth(1)
            .expect("s3_addr in the log line");
        rest.split_whitespace().next().unwrap().to_owned()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log lines so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    fn try_spawn_at(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        let command = Command::new(env!("CARGO_BIN_EXE_cache-server"));
        Self::try_spawn_with(command, listen, args, env)
    }

    fn try_spawn_with(
        mut command: Command,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut child = command
            .args(["--listen", listen])
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("CACHELET_TEST_SERVER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cache-server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut startup = Vec::new();
        let addr = loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
                let _ = child.kill();
                let _ = child.wait();
                return Err("cache-server did not report its address within 30 s".into());
            };
            if let Some(rest) = line.split("addr=").nth(1)
                && line.contains("serving")
            {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
            if line.contains("Error") {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cache-server failed: {line}"));
            }
            startup.push(line);
        };
        // Keep draining its log, so that the server never blocks on a full pipe.
        let log = Arc::new(Mutex::new(startup));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                if std::env::var_os("CACHELET_TEST_SERVER_LOG").is_some() {
                    eprintln!("server: {line}");
                }
                let mut log = kept.lock().unwrap();
                if log.len() < KEPT_LOG_LINES {
                    log.push(line);
                }
            }
        });
        Ok(Self { addr, child, log })
    }

    /// The process's resident set now and at its peak, in bytes (`VmRSS`, `VmHWM`).
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read the server's /proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "cache-server exited with {status}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cache-server did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Create-only writes (the empty version) against a real store: refused for `existing`,
/// which the store holds, and accepted for `fresh`, which it does not.
pub async fn check_create_only(cache: &cache_client::CacheClient, existing: &str, fresh: &str) {
    let refused = cache.put_if_version(existing, "again", "").await;
    assert!(
        matches!(refused, Err(cache_client::Error::VersionMismatch(_))),
        "a create-only write of {existing} succeeded: {refused:?}"
    );
    cache.put_if_version(fresh, "fresh", "").await.unwrap();
}
