//! TLS, credentials with roles, and membership that cannot be hijacked, on nodes in this
//! process (mutual TLS and an auth file on every node). Each refusal has its negative
//! control: the same call with the right credentials succeeds.

use std::sync::Arc;
use std::time::Duration;

use cache_client::{CacheClient, Error};
use cache_core::auth::{Credentials, Role, token_entry};
use cache_proto::v1 as pb;
use cache_server::TlsConfig;
use cache_server::cluster::LocalCluster;
use cache_testkit::certs::TestPki;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const APP: &str = "payroll";
const DATA: &str = "token-data-payroll";
const OTHER: &str = "token-data-billing";
const ADMIN: &str = "token-admin";
const PEER: &str = "token-peer";

struct Fixture {
    pki: TestPki,
    store: Arc<dyn ObjectStore>,
    cluster: LocalCluster,
}

fn credentials() -> Credentials {
    let file = [
        token_entry(DATA, Role::Data, Some(APP)),
        token_entry(OTHER, Role::Data, Some("billing")),
        token_entry(ADMIN, Role::Admin, None),
        token_entry(PEER, Role::Peer, None),
    ]
    .join("\n");
    Credentials::parse(&file).unwrap()
}

fn tls(pki: &TestPki) -> TlsConfig {
    TlsConfig::from_pem(pki.read(&pki.node_cert), pki.read(&pki.node_key))
        .unwrap()
        .client_ca(pki.read(&pki.ca))
        .unwrap()
        .peer_ca(pki.read(&pki.ca))
        .unwrap()
}

/// `n` nodes of app `payroll` over one store, with mutual TLS, credentials and a peer token
/// (or none, for the negative control of node-to-node calls).
async fn secure(n: usize, peer_token: Option<&str>) -> Fixture {
    let pki = TestPki::generate().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (tls, creds) = (tls(&pki), credentials());
    let cluster = LocalCluster::start(n, |b| {
        let b = b
            .app(APP)
            .store(Arc::clone(&store))
            .tls(tls.clone())
            .auth(creds.clone())
            .fence_grace(Duration::from_millis(200))
            .prewarm(false);
        match peer_token {
            Some(t) => b.peer_token(t),
            None => b,
        }
    })
    .await
    .unwrap();
    Fixture {
        pki,
        store,
        cluster,
    }
}

impl Fixture {
    fn addrs(&self) -> Vec<String> {
        self.cluster.addrs()
    }

    async fn client(&self, token: Option<&str>) -> CacheClient {
        self.client_for(APP, token).await
    }

    async fn client_for(&self, app: &str, token: Option<&str>) -> CacheClient {
        let pki = &self.pki;
        let mut b = CacheClient::builder()
            .app(app)
            .nodes(self.addrs())
            .timeout(Duration::from_secs(3))
            .tls_ca_pem(pki.read(&pki.ca))
            .tls_identity_pem(pki.read(&pki.client_cert), pki.read(&pki.client_key));
        if let Some(t) = token {
            b = b.token(t);
        }
        b.build().await.unwrap()
    }

    /// A raw tonic channel to node `i` over mutual TLS.
    async fn channel(&self, i: usize) -> Channel {
        let pki = &self.pki;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pki.read(&pki.ca)))
            .identity(Identity::from_pem(
                pki.read(&pki.client_cert),
                pki.read(&pki.client_key),
            ));
        Endpoint::from_shared(format!("https://{}", self.addrs()[i]))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

fn bearer(
    token: &str,
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_or_untrusting_client_fails_and_a_tls_client_is_served() {
    let f = secure(1, Some(PEER)).await;
    // Negative control: TLS with the right CA and certificate, and a data token, works.
    let good = f.client(Some(DATA)).await;
    good.put("k", "v").await.unwrap();
    assert_eq!(good.get("k").await.unwrap().unwrap(), "v");

    let plain = CacheClient::builder()
        .app(APP)
        .nodes(f.addrs())
        .timeout(Duration::from_secs(2))
        .token(DATA)
        .build()
        .await
        .unwrap();
    let err = plain.get("k").await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(_) | Error::Timeout(_)),
        "{err:?}"
    );

    // A client that trusts another CA refuses the node's certificate.
    let pki = &f.pki;
    let untrusting = CacheClient::builder()
        .app(APP)
        .nodes(f.addrs())
        .timeout(Duration::from_secs(2))
        .token(DATA)
        .tls_ca_pem(pki.read(&pki.other_ca))
        .tls_identity_pem(pki.read(&pki.client_cert), pki.read(&pki.client_key))
        .build()
        .await
        .unwrap();
    assert!(untrusting.get("k").await.is_err());

    // Mutual TLS: no client certificate, or one from another CA, is refused.
    for identity in [None, Some((&pki.other_client_cert, &pki.other_client_key))] {
        let mut b = CacheClient::builder()
            .app(APP)
            .nodes(f.addrs())
            .timeout(Duration::from_secs(2))
            .token(DATA)
            .tls_ca_pem(pki.read(&pki.ca));
        if let Some((cert, key)) = identity {
            b = b.tls_identity_pem(pki.read(cert), pki.read(key));
        }
        let client = b.build().await.unwrap();
        assert!(client.get("k").await.is_err(), "{identity:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_by_role_and_app() {
    let f = secure(1, Some(PEER)).await;
    f.store.put(&"k".into(), "100".into()).await.unwrap();
    // Negative control: the app's data token reads and writes.
    let data = f.client(Some(DATA)).await;
    assert_eq!(data.get("k").await.unwrap().unwrap(), "100");

    let none = f.client(None).await;
    assert!(matches!(
        none.get("k").await,
        Err(Error::Unauthenticated(_))
    ));
    let unknown = f.client(Some("guessed")).await;
    assert!(matches!(
        unknown.get("k").await,
        Err(Error::Unauthenticated(_))
    ));
    assert!(matches!(
        unknown.members().await,
        Err(Error::Unauthenticated(_))
    ));

    // A data token of another app, naming this app: refused, without naming anything.
    let other = f.client(Some(OTHER)).await;
    let err = other.get("k").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    assert!(matches!(
        other.put("k", "x").await,
        Err(Error::PermissionDenied(_))
    ));
    // ...naming its own app: unknown here, and the message does not say what this node serves.
    let own = f.client_for("billing", Some(OTHER)).await;
    let err = own.get("k").await.unwrap_err();
    assert!(matches!(err, Error::UnknownApp(_)), "{err:?}");
    assert!(!err.to_string().contains(APP), "{err}");
    // Admin and peer tokens carry no data access.
    for token in [ADMIN, PEER] {
        let c = f.client(Some(token)).await;
        assert!(
            matches!(c.get("k").await, Err(Error::PermissionDenied(_))),
            "{token}"
        );
    }
    // The value is unchanged.
    assert_eq!(data.get("k").await.unwrap().unwrap(), "100");

    // Members: any valid token. Health names the app only to callers that may know it.
    assert!(other.members().await.is_ok());
    let mut admin =
        pb::admin_client::AdminClient::with_interceptor(f.channel(0).await, bearer(OTHER));
    let health = admin
        .health(pb::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.app, "");
    assert!(matches!(
        admin.stats(pb::StatsRequest {}).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    ));
    let mut admin =
        pb::admin_client::AdminClient::with_interceptor(f.channel(0).await, bearer(DATA));
    assert_eq!(
        admin
            .health(pb::HealthRequest {})
            .await
            .unwrap()
            .into_inner()
            .app,
        APP
    );
    let mut admin =
        pb::admin_client::AdminClient::with_interceptor(f.channel(0).await, bearer(ADMIN));
    assert_eq!(
        admin
            .health(pb::HealthRequest {})
            .await
            .unwrap()
            .into_inner()
            .app,
        APP
    );
    assert!(admin.stats(pb::StatsRequest {}).await.is_ok());
    assert!(admin.advice(pb::AdviceRequest {}).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_token_cannot_set_members_peek_or_hand_off() {
    let f = secure(1, Some(PEER)).await;
    let me = f.addrs()[0].clone();
    let data = f.client(Some(DATA)).await;
    let err = data
        .set_members(None, vec![me.clone(), "127.0.0.1:1".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    // A relay needs an admin or peer token too.
    let mut admin =
        pb::admin_client::AdminClient::with_interceptor(f.channel(0).await, bearer(DATA));
    let relay = pb::SetMembersRequest {
        epoch: 2,
        members: vec![],
        relay: true,
    };
    assert_eq!(
        admin.set_members(relay).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        f.cluster.node(0).membership().members(),
        std::slice::from_ref(&me)
    );

    let mut peer = pb::peer_client::PeerClient::with_interceptor(f.channel(0).await, bearer(DATA));
    let peek = pb::PeekRequest {
        app: APP.into(),
        key: "k".into(),
        epoch: 1,
    };
    assert_eq!(
        peer.peek(peek.clone()).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let fence = pb::FenceRequest {
        app: APP.into(),
        epoch: 1,
    };
    assert_eq!(
        peer.fence(fence.clone()).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let batch = pb::HandoffBatch {
        app: APP.into(),
        epoch: 1,
        sealed: 1,
        entries: vec![],
        ..Default::default()
    };
    let err = peer
        .handoff(futures::stream::iter([batch.clone()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Negative control: the peer token makes the same calls.
    let mut peer = pb::peer_client::PeerClient::with_interceptor(f.channel(0).await, bearer(PEER));
    peer.peek(peek).await.unwrap();
    peer.fence(fence).await.unwrap();
    peer.handoff(futures::stream::iter([batch])).await.unwrap();
}

/// A crafted handoff batch that claims a value for a key the node would cache.
fn forged(epoch: u64) -> pb::HandoffBatch {
    pb::HandoffBatch {
        app: APP.into(),
        epoch,
        sealed: epoch,
        entries: vec![pb::HandoffEntry {
            key: "balance".into(),
            value: "999999999".into(),
            version: "forged".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_handoff_without_the_peer_role_changes_nothing() {
    let f = secure(1, Some(PEER)).await;
    f.store
        .put(&"balance".into(), "100000".into())
        .await
        .unwrap();
    let epoch = f.cluster.node(0).membership().epoch();
    for token in [DATA, ADMIN, "guessed"] {
        let mut peer =
            pb::peer_client::PeerClient::with_interceptor(f.channel(0).await, bearer(token));
        let err = peer
            .handoff(futures::stream::iter([forged(epoch)]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.code(),
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
            ),
            "{token}: {err:?}"
        );
    }
    let data = f.client(Some(DATA)).await;
    assert_eq!(data.get("balance").await.unwrap().unwrap(), "100000");
    let stats = f.cluster.node(0).stats();
    assert_eq!(stats.handoff_received, 0);
}

/// Negative control of the test above: the same forged batch *with* a peer token is taken,
/// and the node then serves it. So the check above can fail, and it is the role that stops
/// the forgery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_forged_handoff_with_a_peer_token_is_taken() {
    let f = secure(1, Some(PEER)).await;
    f.store
        .put(&"balance".into(), "100000".into())
        .await
        .unwrap();
    let epoch = f.cluster.node(0).membership().epoch();
    let mut peer = pb::peer_client::PeerClient::with_interceptor(f.channel(0).await, bearer(PEER));
    let reply = peer
        .handoff(futures::stream::iter([forged(epoch)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted, 1);
    let data = f.client(Some(DATA)).await;
    assert_eq!(data.get("balance").await.unwrap().unwrap(), "999999999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_changes_membership_and_peers_hand_off_with_the_peer_token() {
    let f = secure(2, Some(PEER)).await;
    let addrs = f.addrs();
    let data = f.client(Some(DATA)).await;
    for i in 0..200 {
        data.put(&format!("k/{i}"), format!("v{i}")).await.unwrap();
    }
    let admin = f.client(Some(ADMIN)).await;
    let before = f.cluster.node(0).membership().epoch();
    // Scale in to node 0: node 1 hands its entries to node 0 over mutual TLS, with the
    // peer token.
    let epoch = admin
        .set_members(None, vec![addrs[0].clone()])
        .await
        .unwrap();
    assert!(epoch > before);
    wait_until(|| f.cluster.node(1).is_drained()).await;
    assert!(f.cluster.node(1).stats().handoff_sent > 0);
    assert!(f.cluster.node(0).stats().handoff_received > 0);
    // Back to both.
    let epoch2 = admin.set_members(None, addrs.clone()).await.unwrap();
    assert_eq!(epoch2, epoch + 1);
    for node in f.cluster.nodes() {
        wait_until(|| node.node.membership().epoch() == epoch2).await;
    }
    let data = f.client(Some(DATA)).await;
    for i in 0..200 {
        assert_eq!(
            data.get(&format!("k/{i}")).await.unwrap().unwrap(),
            format!("v{i}")
        );
    }
}

/// Negative control of the peer token: nodes without one cannot fence or hand off to each
/// other, so no entry moves (reads still work, from the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_peer_token_nodes_cannot_hand_off() {
    let f = secure(2, None).await;
    let addrs = f.addrs();
    let data = f.client(Some(DATA)).await;
    for i in 0..50 {
        data.put(&format!("k/{i}"), format!("v{i}")).await.unwrap();
    }
    let admin = f.client(Some(ADMIN)).await;
    admin
        .set_members(None, vec![addrs[0].clone()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(f.cluster.node(0).stats().handoff_received, 0);
    assert!(!f.cluster.node(1).is_drained());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_lists_are_bounded_and_epochs_cannot_be_pushed_to_the_end() {
    let f = secure(1, Some(PEER)).await;
    let me = f.addrs()[0].clone();
    let admin = f.client(Some(ADMIN)).await;
    // Junk and oversized lists: INVALID_ARGUMENT, through the raw API too.
    let mut raw =
        pb::admin_client::AdminClient::with_interceptor(f.channel(0).await, bearer(ADMIN));
    let too_many: Vec<String> = (0..1025)
        .map(|i| format!("10.0.{}.{}:7070", i / 256, i % 256))
        .collect();
    for members in [
        vec!["not an address".to_owned()],
        vec![format!("{me}"), "h:0".into()],
        too_many,
    ] {
        let req = pb::SetMembersRequest {
            epoch: 0,
            members: members.clone(),
            relay: false,
        };
        let err = raw.set_members(req).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{:?}",
            &members[..1]
        );
        assert!(err.message().len() < 300);
        assert!(matches!(
            admin.set_members(None, members).await,
            Err(Error::InvalidRequest(_))
        ));
    }
    // 1,024 valid addresses are accepted as a list (negative control of the bound): checked
    // by the pure function, since a cluster of that size is not started here.
    let max: Vec<String> = (0..1024)
        .map(|i| format!("10.0.{}.{}:7070", i / 256, i % 256))
        .collect();
    assert!(cache_core::validate_addresses(&max).is_ok());

    let epoch = f.cluster.node(0).membership().epoch();
    // An explicit epoch at the end of the range is refused, as a claim and as a relay.
    let err = admin
        .set_members(Some(u64::MAX), vec![me.clone()])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    let relay = pb::SetMembersRequest {
        epoch: u64::MAX,
        members: vec![],
        relay: true,
    };
    assert!(raw.set_members(relay).await.is_err());
    let mut peer =
        pb::admin_client::AdminClient::with_interceptor(f.channel(0).await, bearer(PEER));
    let relay = pb::SetMembersRequest {
        epoch: u64::MAX,
        members: vec![],
        relay: true,
    };
    assert!(peer.set_members(relay).await.is_err());
    // A peer token may relay but not claim.
    let claim = pb::SetMembersRequest {
        epoch: 0,
        members: vec![me.clone()],
        relay: false,
    };
    assert_eq!(
        peer.set_members(claim).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    assert_eq!(f.cluster.node(0).membership().epoch(), epoch);
    // Later changes still work, and take the very next epoch.
    let other = "127.0.0.1:9".to_owned();
    let next = admin
        .set_members(None, vec![me.clone(), other])
        .await
        .unwrap();
    assert_eq!(next, epoch + 1);
    let next = admin
        .set_members(Some(next + 1), vec![me.clone()])
        .await
        .unwrap();
    assert_eq!(next, epoch + 2);
    assert_eq!(f.cluster.node(0).membership().epoch(), epoch + 2);
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The metrics listener of a TLS node speaks only TLS, and with a client CA only to clients
/// with a certificate; a TLS client with one gets the counters (the negative control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_over_tls_only() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let f = secure(1, Some(PEER)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = f.cluster.node(0).clone();
    tokio::spawn(cache_server::metrics::serve_metrics_on(
        listener,
        node,
        std::future::pending(),
    ));
    let request = b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

    // Plaintext: no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"));

    let pki = &f.pki;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pki.read(&pki.ca)) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = |identity: bool| {
        let b = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone());
        let config = if identity {
            let certs = CertificateDer::pem_slice_iter(&pki.read(&pki.client_cert))
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(&pki.read(&pki.client_key)).unwrap();
            b.with_client_auth_cert(certs, key).unwrap()
        } else {
            b.with_no_client_auth()
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    let scrape = |identity: bool| {
        let connector = config(identity);
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("127.0.0.1").unwrap();
            let mut tls = connector.connect(name, tcp).await.ok()?;
            tls.write_all(request).await.ok()?;
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).await.ok()?;
            Some(String::from_utf8_lossy(&answer).into_owned())
        }
    };
    // Without a client certificate: refused.
    let refused = scrape(false).await;
    assert!(
        refused.as_ref().is_none_or(|a| !a.contains("HTTP/1.1 200")),
        "{refused:?}"
    );
    // With one: the counters (they appear after the first refresh).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = scrape(true).await.unwrap_or_default();
        if answer.contains("HTTP/1.1 200") && answer.contains("cachelet_capacity_bytes") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Without TLS the metrics listener answers plain HTTP, as before: the counters at
/// `/metrics`, 404 elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_plain_http_without_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cluster = LocalCluster::start(1, |b| b.app(APP).store(Arc::clone(&store)))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = cluster.node(0).clone();
    tokio::spawn(cache_server::metrics::serve_metrics_on(
        listener,
        node,
        std::future::pending(),
    ));
    let get = |path: &'static str| async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get("/metrics").await;
        if answer.starts_with("HTTP/1.1 200") && answer.contains("cachelet_capacity_bytes") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(get("/other").await.starts_with("HTTP/1.1 404"));
}

/// Relays, fence requests and gossip go only to members of the current or an earlier list: a
/// listener that is in no list is never dialled through a scale event and several gossip
/// rounds. Negative control: once it is named in a list, the nodes dial it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_dial_only_members() {
    let stranger = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stranger_addr = stranger.local_addr().unwrap().to_string();
    let dialled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accept = tokio::spawn({
        let dialled = Arc::clone(&dialled);
        async move {
            // Hold every connection open, so that a node retrying does not count twice as fast.
            let mut held = Vec::new();
            while let Ok((conn, _)) = stranger.accept().await {
                dialled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(conn);
            }
        }
    });
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cluster = LocalCluster::start(2, |b| {
        b.app(APP)
            .store(Arc::clone(&store))
            .fence_grace(Duration::from_millis(200))
            .gossip_interval(Duration::from_millis(50))
            .prewarm(false)
    })
    .await
    .unwrap();
    let addrs = cluster.addrs();
    let admin = CacheClient::builder()
        .app(APP)
        .nodes(addrs.clone())
        .timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let epoch = admin
        .set_members(None, vec![addrs[0].clone()])
        .await
        .unwrap();
    let epoch = admin
        .set_members(None, addrs.clone())
        .await
        .unwrap()
        .max(epoch);
    for node in cluster.nodes() {
        wait_until(|| node.node.membership().epoch() == epoch).await;
    }
    // An observation window of twenty gossip rounds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = dialled.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(seen, 0, "a node dialled an address in no member list");
    // The control: named as a member, the stranger is dialled (relays, fences, gossip).
    let mut with_stranger = addrs.clone();
    with_stranger.push(stranger_addr);
    admin.set_members(None, with_stranger).await.unwrap();
    wait_until(|| dialled.load(std::sync::atomic::Ordering::SeqCst) > 0).await;
    accept.abort();
}
