//! Connection bounds through the `cache-server` binary, at a limit of 1,024 open files:
//! 5,000 idle connections, half of them silent and half that send the HTTP/2 preface and then
//! nothing, are closed after the idle timeout, a client connected before them is served
//! throughout, and a new client is served once they are closed. With the timeouts off (the
//! negative control) the node stays full and the new client is not served.

mod common;

use std::time::{Duration, Instant};

use cache_client::CacheClient;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Idle connections opened against the node.
const FLOOD: usize = 5_000;
/// The node's limit on open files.
const NODE_FD_LIMIT: u64 = 1_024;
/// The node's connection cap at that limit: the limit less the reserve.
const NODE_CAP: usize = 1_024 - 128;
/// The idle timeout the node runs with (and, being shorter than 10 s, its preface timeout).
const IDLE_MS: u64 = 1_500;
/// How long a new client may take to be served once the idle connections are closed.
const SERVED_WITHIN: Duration = Duration::from_secs(5);
/// How long one idle connection may take to connect: the node accepts more as it closes
/// idle ones, and clients that found the backlog full retry their SYN after 1, 3, 7 and 15 s.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// The HTTP/2 client preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// The two tests each open 5,000 sockets: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Raises this process's soft limit on open files so that it can hold the flood.
fn raise_own_fd_limit() {
    let (soft, hard) = rlimit::Resource::NOFILE.get().expect("read RLIMIT_NOFILE");
    let want = (FLOOD as u64 + 2_048).min(hard);
    assert!(
        want >= FLOOD as u64 + 1_024,
        "this test holds {FLOOD} sockets: the hard limit on open files, {hard}, is too low"
    );
    if soft < want {
        rlimit::Resource::NOFILE
            .set(want, hard)
            .expect("raise RLIMIT_NOFILE");
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Opens [`FLOOD`] connections at once; every other one sends the preface, then nothing.
/// The task's output is the connections that connected, still open on this side.
fn flood(addr: &str) -> tokio::task::JoinHandle<Vec<TcpStream>> {
    let addr = addr.to_owned();
    tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        for i in 0..FLOOD {
            let addr = addr.clone();
            tasks.spawn(async move {
                let connect = TcpStream::connect(addr);
                let mut conn = tokio::time::timeout(CONNECT_WITHIN, connect)
                    .await
                    .ok()?
                    .ok()?;
                if i % 2 == 1 {
                    conn.write_all(PREFACE).await.ok()?;
                }
                Some(conn)
            });
        }
        let mut open = Vec::with_capacity(FLOOD);
        while let Some(done) = tasks.join_next().await {
            if let Ok(Some(conn)) = done {
                open.push(conn);
            }
        }
        open
    })
}

async fn client(addr: &str) -> cache_client::Result<CacheClient> {
    CacheClient::builder()
        .app("conns")
        .nodes([addr.to_owned()])
        .timeout(SERVED_WITHIN)
        .connect_timeout(SERVED_WITHIN)
        .build()
        .await
}

/// A new client's put and get, within [`SERVED_WITHIN`]; how long they took.
async fn served(addr: &str, key: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let work = async {
        let c = client(addr).await.map_err(|e| e.to_string())?;
        c.put(key, "new").await.map_err(|e| e.to_string())?;
        let got = c.get(key).await.map_err(|e| e.to_string())?;
        if got.as_deref() != Some(&b"new"[..]) {
            return Err(format!("read back {got:?}"));
        }
        Ok(())
    };
    match tokio::time::timeout(SERVED_WITHIN, work).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("not served within {SERVED_WITHIN:?}")),
    }
}

fn node(dir: &tempfile::TempDir, idle_ms: u64) -> common::Server {
    let store = format!("file://{}", dir.path().display());
    let idle = idle_ms.to_string();
    common::Server::spawn_with_fd_limit(
        NODE_FD_LIMIT,
        &[
            "--app",
            "conns",
            "--store",
            &store,
            "--idle-timeout-ms",
            &idle,
            "--preface-timeout-ms",
            &idle,
            "--prewarm-fraction",
            "0",
        ],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_new_clients_served_at_an_fd_limit_of_1024() {
    let _serial = SERIAL.lock().await;
    raise_own_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let server = node(&dir, IDLE_MS);
    let pid = server.pid();
    let canary = client(&server.addr).await.unwrap();
    canary.put("canary", "alive").await.unwrap();
    let baseline = open_fds(pid);

    // The flood; the canary, connected before it, keeps being served meanwhile.
    let started = Instant::now();
    let flooding = flood(&server.addr);
    let (mut peak, mut canary_ops, mut canary_slowest) = (0, 0, Duration::ZERO);
    while !flooding.is_finished() {
        peak = peak.max(open_fds(pid));
        let t = Instant::now();
        let got = tokio::time::timeout(SERVED_WITHIN, canary.get("canary")).await;
        let got = got.expect("the canary is served during the flood").unwrap();
        assert_eq!(got.as_deref(), Some(&b"alive"[..]));
        canary_ops += 1;
        canary_slowest = canary_slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = flooding.await.unwrap();
    let connected_in = started.elapsed();
    println!(
        "{} of {FLOOD} idle connections connected in {connected_in:?}; node fds: baseline \
         {baseline}, peak {peak}; canary: {canary_ops} gets, slowest {canary_slowest:?}",
        held.len()
    );
    assert_eq!(held.len(), FLOOD, "every idle connection got through");
    assert!(
        peak >= NODE_CAP,
        "the node reached its cap: peak {peak} fds"
    );
    assert!(peak < NODE_FD_LIMIT as usize, "peak {peak} fds");

    // The node closes them: its fds fall back while this side still holds every socket.
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_fds(pid) > baseline + 16 {
        assert!(
            Instant::now() < deadline,
            "the node still holds {} fds",
            open_fds(pid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "node fds back to {} {:?} after the last connect",
        open_fds(pid),
        started.elapsed() - connected_in
    );
    let took = served(&server.addr, "new/1").await.unwrap();
    println!("a new client's put and get took {took:?}");
    assert_eq!(
        canary.get("canary").await.unwrap().as_deref(),
        Some(&b"alive"[..])
    );
    // One warning per time the cap was reached, not one per connection.
    let warnings = server.log_lines("connection cap reached").len();
    println!("cap warnings: {warnings}");
    assert!((1..=20).contains(&warnings), "{warnings} cap warnings");
    drop(held);
    server.terminate();
}

/// The negative control: the same flood against a node whose idle and preface timeouts are an
/// hour. The node fills up to its cap and stays there, and the new client is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idle_timeouts_the_flood_keeps_new_clients_out() {
    let _serial = SERIAL.lock().await;
    raise_own_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let server = node(&dir, 3_600_000);
    let pid = server.pid();
    let canary = client(&server.addr).await.unwrap();
    canary.put("canary", "alive").await.unwrap();

    let flooding = flood(&server.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_fds(pid) < NODE_CAP {
        assert!(Instant::now() < deadline, "the node never reached its cap");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Three idle timeouts of the positive test later, the node is still full...
    let watch_until = Instant::now() + 3 * Duration::from_millis(IDLE_MS);
    let mut lowest = usize::MAX;
    while Instant::now() < watch_until {
        lowest = lowest.min(open_fds(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("node fds stayed at or above {lowest}");
    assert!(lowest >= NODE_CAP, "the node's fds fell to {lowest}");
    // ...a new client is not served within the bound...
    let refused = served(&server.addr, "new/1").await;
    println!("the new client: {refused:?}");
    assert!(refused.is_err(), "served: {refused:?}");
    // ...while the canary, connected before, still is.
    assert_eq!(
        canary.get("canary").await.unwrap().as_deref(),
        Some(&b"alive"[..])
    );
    assert_eq!(server.log_lines("connection cap reached").len(), 1);
    flooding.abort();
    let _ = flooding.await;
    drop(server);
}
