//! Membership from discovery, through the `cache-server` binary as the README runs it:
//! gossip among five processes with a kill and a restart, two nodes that start together with
//! one seed, Kubernetes EndpointSlices from a fake API server that speaks list-and-watch, DNS
//! records from a fake name server, and the fault controls of each rule.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use cache_client::CacheClient;
use cache_proto::v1 as pb;
use cache_testkit::certs::TestPki;
use cache_testkit::dns::FakeDns;
use cache_testkit::kubernetes::{Endpoint, FakeKubernetes};
use common::Server;

/// Gossip's interval in these tests: a dead node is detected in about 18 of them.
const GOSSIP_MS: u64 = 100;
/// How long a discovered node waits before it joins, in these tests.
const JOIN_AFTER_MS: u64 = 300;
/// The README's bound on detecting a dead node and agreeing on the list without it, at a
/// 100 ms gossip interval: about 18 intervals of silence, the proposer's round and the claim,
/// with slack for a loaded machine.
const DETECTION: Duration = Duration::from_secs(10);

/// A UDP port on `ip` that was free a moment ago.
fn free_udp(ip: &str) -> SocketAddr {
    UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// The member list a node reports, sorted, or `None` if it does not answer.
async fn members(addr: &str) -> Option<BTreeSet<String>> {
    let call = async {
        let mut admin = pb::admin_client::AdminClient::connect(format!("http://{addr}"))
            .await
            .ok()?;
        let reply = admin.members(pb::MembersRequest {}).await.ok()?;
        Some(reply.into_inner().members.into_iter().collect())
    };
    tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .ok()
        .flatten()
}

/// Waits until every node of `nodes` reports `want`; returns how long it took, or the
/// views when `within` passes first.
async fn agree(
    nodes: &[String],
    want: &BTreeSet<String>,
    within: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let mut views = Vec::new();
        for n in nodes {
            views.push(members(n).await);
        }
        if views.iter().all(|v| v.as_ref() == Some(want)) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            return Err(format!(
                "after {within:?}, views {views:?}, wanted {want:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks for `period` that every node of `nodes` keeps reporting `want`.
async fn stays(nodes: &[String], want: &BTreeSet<String>, period: Duration) -> Result<(), String> {
    let until = Instant::now() + period;
    while Instant::now() < until {
        for n in nodes {
            let view = members(n).await;
            if view.as_ref() != Some(want) {
                return Err(format!("{n} changed its list to {view:?}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A bare chitchat member of the app `gossip`'s cluster, under the member address `name`,
/// seeded with `seed`: no cache node stands behind it unless the test starts one there.
async fn gossip_member(name: &str, seed: SocketAddr) -> chitchat::ChitchatHandle {
    use chitchat::transport::UdpTransport;
    use chitchat::{ChitchatConfig, ChitchatId, FailureDetectorConfig, ProtocolVersion};

    let listen = free_udp("127.0.0.1");
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(name.to_owned(), 1, listen),
        cluster_id: "cachelet/gossip".into(),
        gossip_interval: Duration::from_millis(GOSSIP_MS),
        listen_addr: listen,
        seed_nodes: vec![seed.to_string()],
        failure_detector_config: FailureDetectorConfig::default(),
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: ProtocolVersion::V0,
    };
    chitchat::spawn_chitchat(config, Vec::new(), &UdpTransport)
        .await
        .unwrap()
}

/// The flags of a gossip node.
fn gossip_args(store: &str, seeds: &[SocketAddr], listen: SocketAddr) -> Vec<String> {
    let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
    [
        "--app",
        "gossip",
        "--store",
        store,
        "--discovery",
        &format!("gossip:{}", seeds.join(",")),
        "--gossip-listen",
        &listen.to_string(),
        "--discovery-interval-ms",
        &GOSSIP_MS.to_string(),
        "--join-after-ms",
        &JOIN_AFTER_MS.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Starts a gossip node whose gRPC address this process picked (so that it can restart on
/// the same one).
fn spawn_gossip(store: &str, seeds: &[SocketAddr], listen: SocketAddr, extra: &[&str]) -> Server {
    Server::spawn_known(
        |_| {
            let mut args = gossip_args(store, seeds, listen);
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            args
        },
        &[],
    )
}

/// Five processes with `--discovery gossip:` form one cluster. One is killed (SIGKILL): the
/// other four agree on the list without it within the documented detection time, while a
/// client reading all the time sees no failed read. Restarted on its address, it rejoins.
/// Another, stopped with SIGTERM, leaves the list at once and exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_gossip_nodes_detect_a_death_and_take_a_restart_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let gossip: Vec<SocketAddr> = (0..5).map(|_| free_udp("127.0.0.1")).collect();
    let seeds = [gossip[0]];
    let mut nodes: Vec<Option<Server>> = gossip
        .iter()
        .map(|g| Some(spawn_gossip(&store, &seeds, *g, &[])))
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().addr.clone())
        .collect();
    let all: BTreeSet<String> = addrs.iter().cloned().collect();
    let formed = agree(&addrs, &all, Duration::from_secs(30)).await.unwrap();
    eprintln!("five nodes formed one cluster in {formed:?}");

    // A reader of 200 keys, all the time.
    let cache = CacheClient::builder()
        .app("gossip")
        .nodes(addrs.clone())
        .build()
        .await
        .unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    for k in &keys {
        cache.put(k, format!("v-{k}")).await.unwrap();
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn({
        let (cache, keys) = (cache.clone(), keys.clone());
        async move {
            let (mut reads, mut failures) = (0u64, Vec::new());
            while !*stop_rx.borrow() {
                for k in &keys {
                    match cache.get(k).await {
                        Ok(Some(v)) if v.as_ref() == format!("v-{k}").as_bytes() => {}
                        other => failures.push(format!("{k}: {other:?}")),
                    }
                    reads += 1;
                }
            }
            (reads, failures)
        }
    });

    let victim = 3;
    drop(nodes[victim].take());
    let rest: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, a)| a.clone())
        .collect();
    let four: BTreeSet<String> = rest.iter().cloned().collect();
    let detected = agree(&rest, &four, DETECTION).await.unwrap();
    eprintln!("four nodes agreed without the killed one in {detected:?}");
    let _ = stop_tx.send(true);
    let (reads, failures) = reader.await.unwrap();
    assert!(reads > 0);
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!("{reads} reads during the death, none failed");

    // Restarted on the same addresses, it is a new incarnation and joins again.
    let again = Server::spawn_at(
        &addrs[victim],
        &gossip_args(&store, &seeds, gossip[victim])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    )
    .unwrap();
    nodes[victim] = Some(again);
    let rejoined = agree(&addrs, &all, Duration::from_secs(30)).await.unwrap();
    eprintln!("the restarted node rejoined in {rejoined:?}");

    // SIGTERM: the node says it is leaving, the others take it out without waiting for the
    // failure detector, it drains and exits cleanly.
    let leaving = 1;
    let start = Instant::now();
    nodes[leaving].take().unwrap().terminate();
    let exited = start.elapsed();
    let rest: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leaving)
        .map(|(_, a)| a.clone())
        .collect();
    let four: BTreeSet<String> = rest.iter().cloned().collect();
    let left = agree(&rest, &four, Duration::from_secs(5)).await.unwrap();
    eprintln!("a node stopped with SIGTERM exited in {exited:?}, out of every list {left:?} later");
}

/// Olric's failure: two nodes that start at the same moment, both given one seed, must end
/// up in one cluster, not in two one-node clusters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_started_together_with_one_seed_form_one_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let (ga, gb) = (free_udp("127.0.0.1"), free_udp("127.0.0.1"));
    let seeds = [ga];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn_gossip(&store, &seeds, ga, &[]));
        let b = s.spawn(|| spawn_gossip(&store, &seeds, gb, &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let both: BTreeSet<String> = [a.addr.clone(), b.addr.clone()].into();
    let took = agree(
        &[a.addr.clone(), b.addr.clone()],
        &both,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    eprintln!("one cluster of two in {took:?}");
}

/// Two nodes whose gossip never meets (each seeds itself) still share the store, where the
/// epochs are claimed. Starting together, they settle on one list of both and keep it: the
/// joining node adds itself, and neither removes the other. Two rules see to that, each
/// enough alone: a node does not take a member it never saw alive for dead, and with gossip it
/// asks a member before removing it. `faults` turns rules off: `--discovery-trusting` the
/// first, `--discovery-unchecked` the second.
async fn strangers_settle(faults: &[&str]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let (ga, gb) = (free_udp("127.0.0.1"), free_udp("127.0.0.1"));
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn_gossip(&store, &[ga], ga, faults));
        let b = s.spawn(|| spawn_gossip(&store, &[gb], gb, faults));
        (a.join().unwrap(), b.join().unwrap())
    });
    let nodes = [a.addr.clone(), b.addr.clone()];
    let both: BTreeSet<String> = nodes.iter().cloned().collect();
    agree(&nodes, &both, Duration::from_secs(10)).await?;
    // And it stays: for 3 s (10 joins' worth), every look finds the same list.
    stays(&nodes, &both, Duration::from_secs(3)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_gossip_never_meets_settle_on_one_list() {
    strangers_settle(&[]).await.unwrap();
}

/// Each rule alone keeps the two together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_rule_alone_keeps_strangers_together() {
    strangers_settle(&["--discovery-trusting"]).await.unwrap();
    strangers_settle(&["--discovery-unchecked"]).await.unwrap();
}

/// The control: with both rules off, the two take turns removing each other, and the check
/// sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_catches_nodes_removing_members_they_never_saw() {
    let outcome = strangers_settle(&["--discovery-trusting", "--discovery-unchecked"]).await;
    assert!(outcome.is_err(), "the fault did not show");
    eprintln!("the fault shows: {}", outcome.unwrap_err());
}

/// A port free on `127.0.13.1` a moment ago, for nodes that share it on `127.0.13.N`.
fn shared_port() -> u16 {
    std::net::TcpListener::bind("127.0.13.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn k8s_ip(i: u8) -> String {
    format!("127.0.13.{i}")
}

/// Starts a node on `127.0.13.i:port` that watches the Service `cachelet` of the fake API.
fn spawn_k8s(i: u8, port: u16, store: &str, kubeconfig: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--app",
        "k8s",
        "--store",
        store,
        "--discovery",
        "kubernetes:shop/cachelet",
        "--join-after-ms",
        "300",
    ];
    args.extend_from_slice(extra);
    let kubeconfig = kubeconfig.to_str().unwrap();
    Server::spawn_at(
        &format!("{}:{port}", k8s_ip(i)),
        &args,
        &[("KUBECONFIG", kubeconfig)],
    )
    .unwrap()
}

/// Members from a Service's EndpointSlices, with the real `kube` watcher in the binary
/// against an API server that speaks list-and-watch over TLS and wants a bearer token, as a
/// cluster's does: adding endpoints adds members (from a second slice too), an endpoint that
/// turns not ready leaves the list although its node still runs, and an endpoint removed
/// leaves too. Another Service's slices are not looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_endpoints_drive_the_member_list() {
    let pki = TestPki::generate().unwrap();
    let api = FakeKubernetes::start_tls("shop", &pki).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path()).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", store_dir.path().display());
    let port = shared_port();
    let addr = |i: u8| format!("{}:{port}", k8s_ip(i));
    let set = |ids: &[u8]| ids.iter().map(|i| addr(*i)).collect::<BTreeSet<_>>();
    api.set_slice(
        "cachelet-a",
        "cachelet",
        port,
        &[Endpoint::ready(&k8s_ip(1))],
    );
    api.set_slice("other-a", "other", port, &[Endpoint::ready(&k8s_ip(9))]);

    let a = spawn_k8s(1, port, &store, &kubeconfig, &[]);
    agree(
        std::slice::from_ref(&a.addr),
        &set(&[1]),
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    let b = spawn_k8s(2, port, &store, &kubeconfig, &[]);
    api.set_slice(
        "cachelet-a",
        "cachelet",
        port,
        &[Endpoint::ready(&k8s_ip(1)), Endpoint::ready(&k8s_ip(2))],
    );
    let nodes = [a.addr.clone(), b.addr.clone()];
    let took = agree(&nodes, &set(&[1, 2]), Duration::from_secs(15))
        .await
        .unwrap();
    eprintln!("an endpoint added: two members in {took:?}");

    let c = spawn_k8s(3, port, &store, &kubeconfig, &[]);
    api.set_slice(
        "cachelet-b",
        "cachelet",
        port,
        &[Endpoint::ready(&k8s_ip(3))],
    );
    let nodes = [a.addr.clone(), b.addr.clone(), c.addr.clone()];
    let took = agree(&nodes, &set(&[1, 2, 3]), Duration::from_secs(15))
        .await
        .unwrap();
    eprintln!("a second slice: three members in {took:?}");

    api.set_slice(
        "cachelet-b",
        "cachelet",
        port,
        &[Endpoint::not_ready(&k8s_ip(3))],
    );
    let took = agree(&nodes, &set(&[1, 2]), Duration::from_secs(15))
        .await
        .unwrap();
    eprintln!("an endpoint not ready: left in {took:?}");

    api.set_slice(
        "cachelet-a",
        "cachelet",
        port,
        &[Endpoint::ready(&k8s_ip(1))],
    );
    let took = agree(&nodes, &set(&[1]), Duration::from_secs(15))
        .await
        .unwrap();
    eprintln!("an endpoint removed: left in {took:?}");

    assert!(api.url().starts_with("https://"));
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| !r.contains("watch=") && r.contains("labelSelector=")),
        "a list: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("resourceVersion=")),
        "a watch from a resource version: {requests:?}"
    );
}

/// A node whose endpoint is not ready stays out of the list while its node runs; with
/// `count_unready`, the fault of counting every endpoint, it joins.
async fn unready_stays_out(count_unready: bool) -> Result<(), String> {
    let api = FakeKubernetes::start("shop").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path()).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", store_dir.path().display());
    let port = shared_port();
    api.set_slice(
        "cachelet-a",
        "cachelet",
        port,
        &[Endpoint::ready(&k8s_ip(1)), Endpoint::not_ready(&k8s_ip(2))],
    );
    let extra: &[&str] = if count_unready {
        &["--discovery-count-unready"]
    } else {
        &[]
    };
    let a = spawn_k8s(1, port, &store, &kubeconfig, extra);
    let _b = spawn_k8s(2, port, &store, &kubeconfig, extra);
    let alone: BTreeSet<String> = [a.addr.clone()].into();
    agree(
        std::slice::from_ref(&a.addr),
        &alone,
        Duration::from_secs(10),
    )
    .await?;
    // Ten join periods: a node that should not join would have.
    stays(
        std::slice::from_ref(&a.addr),
        &alone,
        Duration::from_secs(3),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_ready_does_not_join() {
    unready_stays_out(false).await.unwrap();
}

/// The control: counting endpoints that are not ready, the node joins, and the check sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_catches_a_node_that_is_not_ready_joining() {
    let outcome = unready_stays_out(true).await;
    assert!(outcome.is_err(), "the fault did not show");
    eprintln!("the fault shows: {}", outcome.unwrap_err());
}

/// Gossip is unauthenticated: a process that joins the gossip under an address where no node
/// of this app answers (here, a bare chitchat member in the test) is not made a member. With
/// `unchecked`, the fault of admitting whatever the source reports, it is.
async fn impostor_stays_out(unchecked: bool) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let ga = free_udp("127.0.0.1");
    let extra: &[&str] = if unchecked {
        &["--discovery-unchecked"]
    } else {
        &[]
    };
    let a = spawn_gossip(&store, &[ga], ga, extra);
    let alone: BTreeSet<String> = [a.addr.clone()].into();
    agree(
        std::slice::from_ref(&a.addr),
        &alone,
        Duration::from_secs(10),
    )
    .await?;

    // Sorts after the node's address, so that the node is the one to propose.
    let handle = gossip_member("127.0.0.200:7070", ga).await;
    // The node hears of it...
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.log_lines("127.0.0.200:7070").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !a.log_lines("127.0.0.200:7070").is_empty(),
        "the node never heard of the impostor"
    );
    // ...and for ten join periods after, it stays out.
    let outcome = stays(
        std::slice::from_ref(&a.addr),
        &alone,
        Duration::from_secs(3),
    )
    .await;
    let _ = handle.shutdown().await;
    if outcome.is_ok() {
        let mut admin = pb::admin_client::AdminClient::connect(format!("http://{}", a.addr))
            .await
            .unwrap();
        let stats = admin.stats(pb::StatsRequest {}).await.unwrap().into_inner();
        assert!(stats.discovery_refused_joins > 0, "the refusal is counted");
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossip_member_that_is_no_node_does_not_join() {
    impostor_stays_out(false).await.unwrap();
}

/// The control: admitting what gossip reports unchecked, the impostor joins, and the check
/// sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_catches_an_impostor_joining() {
    let outcome = impostor_stays_out(true).await;
    assert!(outcome.is_err(), "the fault did not show");
    eprintln!("the fault shows: {}", outcome.unwrap_err());
}

/// Members from DNS: a name server whose A records the test changes, as a headless
/// Service's change with its ready pods. A record added adds a member; a record removed
/// removes one, although its node still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_records_drive_the_member_list() {
    let dns = FakeDns::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let port = std::net::TcpListener::bind("127.0.14.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ip = |i: u8| std::net::Ipv4Addr::new(127, 0, 14, i);
    let addr = |i: u8| format!("{}:{port}", ip(i));
    let set = |ids: &[u8]| ids.iter().map(|i| addr(*i)).collect::<BTreeSet<_>>();
    let name = "cachelet.shop.test";
    let discovery = format!("dns:{name}:{port}@{}", dns.addr());
    let spawn = |i: u8| {
        Server::spawn_at(
            &addr(i),
            &[
                "--app",
                "dns",
                "--store",
                &store,
                "--discovery",
                &discovery,
                "--discovery-interval-ms",
                "200",
                "--join-after-ms",
                "300",
            ],
            &[],
        )
        .unwrap()
    };
    dns.set(name, &[ip(1)]);
    let a = spawn(1);
    let b = spawn(2);
    let nodes = [a.addr.clone(), b.addr.clone()];
    agree(&nodes, &set(&[1]), Duration::from_secs(10))
        .await
        .unwrap();
    dns.set(name, &[ip(1), ip(2)]);
    let took = agree(&nodes, &set(&[1, 2]), Duration::from_secs(15))
        .await
        .unwrap();
    eprintln!("a record added: two members in {took:?}");
    dns.set(name, &[ip(1)]);
    let took = agree(&nodes, &set(&[1]), Duration::from_secs(15))
        .await
        .unwrap();
    eprintln!("a record removed: left in {took:?}");
}

/// Gossip's failure detector is one node's view: a member it takes for dead that still
/// answers stays. Node A gossips; node B runs with static discovery, so only a bare chitchat
/// member in the test gossips under B's address. A admits B (B answers), then the test's
/// member stops: A's detector takes B for dead, asks B, and keeps it. With `unchecked`, the
/// fault of taking gossip's word, B is removed.
async fn false_death_keeps_member(unchecked: bool) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let ga = free_udp("127.0.15.1");
    let mut extra: Vec<&str> = Vec::new();
    if unchecked {
        extra.push("--discovery-unchecked");
    }
    let mut args = gossip_args(&store, &[ga], ga);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Server::spawn_at("127.0.15.1:0", &args, &[]).unwrap();
    let alone: BTreeSet<String> = [a.addr.clone()].into();
    agree(
        std::slice::from_ref(&a.addr),
        &alone,
        Duration::from_secs(10),
    )
    .await?;
    // Sorts after A, so that A proposes.
    let b = Server::spawn_at("127.0.15.2:0", &["--app", "gossip", "--store", &store], &[]).unwrap();

    let handle = gossip_member(&b.addr, ga).await;
    let both: BTreeSet<String> = [a.addr.clone(), b.addr.clone()].into();
    agree(
        std::slice::from_ref(&a.addr),
        &both,
        Duration::from_secs(10),
    )
    .await
    .expect("A admits B, which answers");
    // The stand-in stops gossiping: to A, B has died.
    let _ = handle.shutdown().await;
    // The detector needs about 18 intervals; 8 s is several times that.
    stays(std::slice::from_ref(&a.addr), &both, Duration::from_secs(8)).await?;
    assert!(
        !a.log_lines("still answer").is_empty(),
        "A never took B for dead: the check saw nothing"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gossip_takes_for_dead_stays_while_it_answers() {
    false_death_keeps_member(false).await.unwrap();
}

/// The control: taking gossip's word, the live member is removed, and the check sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_catches_a_live_member_removed_on_gossips_word() {
    let outcome = false_death_keeps_member(true).await;
    assert!(outcome.is_err(), "the fault did not show");
    eprintln!("the fault shows: {}", outcome.unwrap_err());
}
