//! The `cache-server` binary with TLS and credentials, used as the README's Security section
//! documents; `cachectl` through its command-line entry point with the same arguments.

mod common;

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use cache_client::cli::{Args, run};
use cache_testkit::certs::TestPki;
use clap::Parser;
use common::Server;

struct Outcome {
    code: ExitCode,
    out: String,
    err: String,
}

async fn cachectl(argv: &[&str]) -> Outcome {
    let mut full = vec!["cachectl"];
    full.extend_from_slice(argv);
    let args = Args::try_parse_from(full).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(args, &mut out, &mut err).await;
    Outcome {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

/// `cachectl token new ...`: the token and its entry.
async fn token_new(args: &[&str]) -> (String, String) {
    let mut argv = vec!["token", "new"];
    argv.extend_from_slice(args);
    let o = cachectl(&argv).await;
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    let (token, entry) = o.out.split_once('\n').unwrap();
    assert_eq!(token.len(), 64, "{token}");
    assert!(entry.starts_with("[[token]]"), "{entry}");
    assert!(!entry.contains(token), "the entry holds the token in clear");
    (token.to_owned(), entry.to_owned())
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// What a secured node is started with: the auth file holding `entries`, the peer token's
/// file, and a file store, all in `dir`.
struct Secrets {
    auth: std::path::PathBuf,
    peer_file: std::path::PathBuf,
    store: String,
}

fn write_secrets(dir: &Path, peer: &str, entries: &[&str]) -> Secrets {
    let auth = dir.join("auth.toml");
    std::fs::write(&auth, entries.join("\n")).unwrap();
    let peer_file = dir.join("peer.token");
    std::fs::write(&peer_file, format!("{peer}\n")).unwrap();
    std::fs::create_dir_all(dir.join("store")).unwrap();
    let store = format!("file://{}", dir.join("store").display());
    Secrets {
        auth,
        peer_file,
        store,
    }
}

/// The flags every node of the app `payroll` with TLS and credentials gets, as the README's
/// Security section gives them.
fn secured_flags(pki: &TestPki, secrets: &Secrets) -> Vec<String> {
    [
        "--app",
        "payroll",
        "--store",
        &secrets.store,
        "--tls-cert",
        &p(&pki.node_cert),
        "--tls-key",
        &p(&pki.node_key),
        "--tls-ca",
        &p(&pki.ca),
        "--auth",
        &p(&secrets.auth),
        "--peer-token-file",
        &p(&secrets.peer_file),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_auth_nodes_scale_out_through_cachectl() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (peer, peer_entry) = token_new(&["--role", "peer"]).await;
    let (admin, admin_entry) = token_new(&["--role", "admin"]).await;
    let (data, data_entry) = token_new(&["--role", "data", "--app", "payroll"]).await;
    let secrets = write_secrets(dir.path(), &peer, &[&peer_entry, &admin_entry, &data_entry]);
    let flags = |peers: &str| -> Vec<String> {
        let mut flags = secured_flags(&pki, &secrets);
        for extra in [
            "--peers",
            peers,
            "--tls-client-ca",
            &p(&pki.ca),
            "--gossip-interval-ms",
            "200",
        ] {
            flags.push(extra.to_owned());
        }
        flags
    };
    let a = Server::spawn_known(|me| flags(me), &[]);
    let b = Server::spawn_known(|me| flags(&format!("{},{me}", a.addr)), &[]);
    let tls = [
        "--tls-ca",
        &p(&pki.ca),
        "--tls-cert",
        &p(&pki.client_cert),
        "--tls-key",
        &p(&pki.client_key),
    ];
    let ctl = |nodes: &str, token: &str, rest: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["--nodes", nodes, "--app", "payroll", "--token", token]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        v.extend(tls.iter().map(|s| (*s).to_owned()));
        v.extend(rest.iter().map(|s| (*s).to_owned()));
        v
    };
    let run_ctl = |args: Vec<String>| async move {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        cachectl(&argv).await
    };
    let value = dir.path().join("v.txt");
    for i in 0..100 {
        std::fs::write(&value, format!("v{i}")).unwrap();
        let o = run_ctl(ctl(&a.addr, &data, &["put", &format!("k/{i}"), &p(&value)])).await;
        assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    }
    // A wrong token exits 4 with a message; so does a token of the wrong role.
    let o = run_ctl(ctl(&a.addr, "wrong", &["get", "k/1"])).await;
    assert_eq!(o.code, ExitCode::from(4), "{}", o.err);
    assert!(o.err.contains("unauthenticated"), "{}", o.err);
    let o = run_ctl(ctl(
        &a.addr,
        &data,
        &["members", "set", &format!("{},{}", a.addr, b.addr)],
    ))
    .await;
    assert_eq!(o.code, ExitCode::from(4), "{}", o.err);
    assert!(o.err.contains("permission denied"), "{}", o.err);
    // Without TLS the node does not answer (exit 3, unreachable).
    let o = run_ctl(vec![
        "--nodes".into(),
        a.addr.clone(),
        "--app".into(),
        "payroll".into(),
        "--token".into(),
        data.clone(),
        "get".into(),
        "k/1".into(),
    ])
    .await;
    assert_eq!(o.code, ExitCode::from(3), "{}", o.err);

    // The scale-out, as the README's example: the admin sets the new list.
    let both = format!("{},{}", a.addr, b.addr);
    let o = run_ctl(ctl(&a.addr, &admin, &["members", "set", &both])).await;
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let o = run_ctl(ctl(&b.addr, &admin, &["stats"])).await;
        assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
        let received: u64 = o
            .out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["addr"].as_str() == Some(b.addr.as_str()))
            .filter_map(|v| v["stats"]["handoff_received"].as_u64())
            .sum();
        if received > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no handoff to the new node: {}",
            o.out
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in (0..100).step_by(7) {
        let o = run_ctl(ctl(&both, &data, &["get", &format!("k/{i}")])).await;
        assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
        assert_eq!(o.out, format!("v{i}"));
    }
    a.terminate();
    b.terminate();
}

fn server(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cache-server"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn a_non_loopback_listener_needs_auth_or_insecure() {
    let out = server(&[
        "--listen",
        "0.0.0.0:0",
        "--app",
        "a",
        "--store",
        "memory:///",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve") && err.contains("--insecure"),
        "{err}"
    );
    let out = server(&[
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "0.0.0.0:0",
        "--app",
        "a",
        "--store",
        "memory:///",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics"));
    // Negative control: with --insecure it starts, and so does a node with an auth file.
    let insecure = Server::spawn_at(
        "0.0.0.0:0",
        &["--app", "a", "--store", "memory:///", "--insecure"],
        &[],
    )
    .unwrap();
    drop(insecure);
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        cache_core::auth::token_entry("t", cache_core::auth::Role::Admin, None),
    )
    .unwrap();
    let secured = Server::spawn_at(
        "0.0.0.0:0",
        &["--app", "a", "--store", "memory:///", "--auth", &p(&auth)],
        &[],
    )
    .unwrap();
    drop(secured);
}

#[test]
fn bad_certificate_and_auth_files_fail_at_start_up() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let base = [
        "--listen",
        "127.0.0.1:0",
        "--app",
        "a",
        "--store",
        "memory:///",
    ];
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--tls-cert".into(),
                p(&junk),
                "--tls-key".into(),
                p(&pki.node_key),
            ],
            "--tls-cert",
        ),
        (
            vec![
                "--tls-cert".into(),
                p(&pki.node_cert),
                "--tls-key".into(),
                p(&junk),
            ],
            "--tls-key",
        ),
        (
            vec![
                "--tls-cert".into(),
                p(&pki.node_cert),
                "--tls-key".into(),
                p(&pki.client_key),
            ],
            "key",
        ),
        (
            vec![
                "--tls-cert".into(),
                p(&pki.node_cert),
                "--tls-key".into(),
                p(&pki.node_key),
                "--tls-ca".into(),
                p(&junk),
            ],
            "--tls-ca",
        ),
        (vec!["--auth".into(), p(&junk)], "--auth"),
        (
            vec!["--auth".into(), p(&dir.path().join("missing"))],
            "cannot read",
        ),
    ];
    for (extra, want) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter().map(String::as_str));
        let out = server(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} started");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    // Negative control: the good files start.
    let good = Server::spawn(
        &[
            "--app",
            "a",
            "--store",
            "memory:///",
            "--tls-cert",
            &p(&pki.node_cert),
            "--tls-key",
            &p(&pki.node_key),
            "--tls-ca",
            &p(&pki.ca),
        ],
        &[],
    );
    drop(good);
}

/// The README's gossip flow with credentials and TLS: three nodes, each with the auth file,
/// the peer token and certificates, and `--discovery gossip:SEED`, form one cluster. The
/// check of each joining node (an authenticated `Health` call over TLS) passes with the peer
/// token; `cachectl members` with the admin token shows the same list on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_nodes_with_tls_and_auth_form_one_cluster() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (peer, peer_entry) = token_new(&["--role", "peer"]).await;
    let (admin, admin_entry) = token_new(&["--role", "admin"]).await;
    let secrets = write_secrets(dir.path(), &peer, &[&peer_entry, &admin_entry]);
    let gossip: Vec<String> = (0..3)
        .map(|_| {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .to_string()
        })
        .collect();
    let seed = format!("gossip:{}", gossip[0]);
    let nodes: Vec<Server> = gossip
        .iter()
        .map(|listen| {
            let mut flags = secured_flags(&pki, &secrets);
            for extra in [
                "--discovery",
                &seed,
                "--gossip-listen",
                listen,
                "--join-after-ms",
                "300",
            ] {
                flags.push(extra.to_owned());
            }
            Server::spawn(&flags.iter().map(String::as_str).collect::<Vec<_>>(), &[])
        })
        .collect();
    let mut want: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    want.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = Vec::new();
        for n in &nodes {
            let o = cachectl(&[
                "--nodes",
                &n.addr,
                "--app",
                "payroll",
                "--token",
                &admin,
                "--tls-ca",
                &p(&pki.ca),
                "members",
            ])
            .await;
            let view: Option<Vec<String>> = serde_json::from_str::<serde_json::Value>(&o.out)
                .ok()
                .and_then(|v| serde_json::from_value(v["members"].clone()).ok())
                .map(|mut m: Vec<String>| {
                    m.sort();
                    m
                });
            views.push(view);
        }
        if views.iter().all(|v| v.as_ref() == Some(&want)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no agreement: {views:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
