//! The example function through its binary, as the README runs it: from the workspace root
//! with no flags but the port, it serves the shipped documents, the second read from the
//! cache; and with a store of its own, writes go through to the store.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The function's process, killed when dropped.
struct Function {
    child: Child,
    addr: String,
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary in `dir` with `args`, and reads the address it listens on from its log.
fn start(dir: &Path, args: &[&str]) -> Function {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cachelet-function"))
        .current_dir(dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("CACHELET_NODES")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the function");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the function logs its address");
        if line.contains("function listening")
            && let Some(rest) = line.split("addr=").nth(1)
        {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        assert!(!line.contains("Error"), "the function failed: {line}");
    };
    // Keep reading, so that the function never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Function { child, addr }
}

/// One HTTP/1.1 request; the status, the headers (lowercase names) and the body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete reply");
    let head = String::from_utf8_lossy(&reply[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, reply[split + 4..].to_vec())
}

/// `cargo run -p cachelet-function`, from the workspace root: the shipped documents, read
/// through the embedded node; the first read comes from the store, later ones from the cache.
#[test]
fn serves_the_shipped_documents_through_the_cache() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let f = start(&root, &[]);
    let (status, headers, body) = http(&f.addr, "GET", "/api/docs/hello", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache-tier"], "store");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["title"], "Hello from the blob store");
    // A node that takes over the list from a previous run reads from the store uncached until
    // the old address counts as fenced (about one lease length); then reads are hits.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, headers, again) = http(&f.addr, "GET", "/api/docs/hello", &[], b"");
        assert_eq!((status, again.as_slice()), (200, body.as_slice()));
        assert!(headers.contains_key("etag"));
        if headers["x-cache-tier"] != "store" {
            break;
        }
        assert!(Instant::now() < deadline, "no read was a cache hit");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (status, _, _) = http(&f.addr, "GET", "/api/docs/nothing-here", &[], b"");
    assert_eq!(status, 404);
    let (status, _, _) = http(&f.addr, "GET", "/api/docs/..%2Fsecret", &[], b"");
    assert_eq!(status, 400);
    let (status, _, _) = http(&f.addr, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
}

/// Writes go through the cache to the store, conditionally with `If-Match`; a body that is
/// not JSON, or too large, is refused.
#[test]
fn writes_go_through_to_the_store() {
    let store = tempfile::tempdir().unwrap();
    let docs = store.path().display().to_string();
    let f = start(store.path(), &["--docs", &docs]);
    let (status, _, body) = http(&f.addr, "PUT", "/api/docs/order", &[], br#"{"n":1}"#);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let written: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let tag = written["etag"].as_str().unwrap().to_owned();
    assert_eq!(
        std::fs::read(store.path().join("order.json")).unwrap(),
        br#"{"n":1}"#,
        "the store holds the write"
    );
    let (status, headers, body) = http(&f.addr, "GET", "/api/docs/order", &[], b"");
    assert_eq!((status, body.as_slice()), (200, br#"{"n":1}"#.as_slice()));
    assert_eq!(headers["etag"], tag);

    let (status, _, _) = http(
        &f.addr,
        "PUT",
        "/api/docs/order",
        &[("if-match", &tag)],
        br#"{"n":2}"#,
    );
    assert_eq!(status, 200, "the version matched");
    let (status, _, _) = http(
        &f.addr,
        "PUT",
        "/api/docs/order",
        &[("if-match", &tag)],
        br#"{"n":3}"#,
    );
    assert_eq!(status, 412, "the version is old now");
    let (_, _, body) = http(&f.addr, "GET", "/api/docs/order", &[], b"");
    assert_eq!(body, br#"{"n":2}"#);

    let (status, _, _) = http(&f.addr, "PUT", "/api/docs/bad", &[], b"not json");
    assert_eq!(status, 400);
    let big = vec![b' '; 2 << 20];
    let (status, _, _) = http(&f.addr, "PUT", "/api/docs/big", &[], &big);
    assert_eq!(status, 413);
}
