//! Membership from discovery, through the `cache-server` binary as the README runs it:
//! gossip among five processes with a kill and a restart, two nodes that start together with
//! one seed, and the fault controls of the proposer's rules.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cache_client::CacheClient;
use cache_proto::v1 as pb;
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
            return Err(format!("after {within:?}, views {views:?}, wanted {want:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let addrs: Vec<String> = nodes.iter().map(|n| n.as_ref().unwrap().addr.clone()).collect();
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
    assert!(failures.is_empty(), "{} of {reads} reads failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
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
    let took = agree(&[a.addr.clone(), b.addr.clone()], &both, Duration::from_secs(30))
        .await
        .unwrap();
    eprintln!("one cluster of two in {took:?}");
}

/// Two nodes whose gossip never meets (each seeds itself) still share the store, where the
/// epochs are claimed. Starting together, they settle on one list of both and keep it: the
/// joining node adds itself, and neither removes a member it never saw. `trusting` is the
/// fault of taking every member missing from one's own view for dead.
async fn strangers_settle(trusting: bool) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let (ga, gb) = (free_udp("127.0.0.1"), free_udp("127.0.0.1"));
    let extra: &[&str] = if trusting { &["--discovery-trusting"] } else { &[] };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn_gossip(&store, &[ga], ga, extra));
        let b = s.spawn(|| spawn_gossip(&store, &[gb], gb, extra));
        (a.join().unwrap(), b.join().unwrap())
    });
    let nodes = [a.addr.clone(), b.addr.clone()];
    let both: BTreeSet<String> = nodes.iter().cloned().collect();
    agree(&nodes, &both, Duration::from_secs(10)).await?;
    // And it stays: for 3 s (10 joins' worth), every look finds the same list.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for n in &nodes {
            let view = members(n).await;
            if view.as_ref() != Some(&both) {
                return Err(format!("{n} changed its list to {view:?}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_gossip_never_meets_settle_on_one_list() {
    strangers_settle(false).await.unwrap();
}

/// The control: with the fault, the two take turns removing each other, and the check sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_catches_nodes_removing_members_they_never_saw() {
    let outcome = strangers_settle(true).await;
    assert!(outcome.is_err(), "the fault did not show");
    eprintln!("the fault shows: {}", outcome.unwrap_err());
}
