//! Running the `cache-server` binary in tests.
#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `cache-server` process listening on an ephemeral port.
pub struct Server {
    pub addr: String,
    child: Child,
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

    fn try_spawn_at(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cache-server"))
            .args(["--listen", listen])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
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
        };
        // Keep draining its log, so that the server never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Ok(Self { addr, child })
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
