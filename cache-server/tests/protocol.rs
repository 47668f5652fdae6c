//! Protocol errors, on nodes in this process: malformed messages, duplicate op ids, a `Pipe`
//! message over the size limit, a long app name, store errors that retrying cannot fix, and a
//! live client's idle stream outliving the idle timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_client::{CacheClient, Error as ClientError};
use cache_core::Limits;
use cache_proto::v1 as pb;
use cache_server::cluster::LocalCluster;
use cache_server::store::InstrumentedStore;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

const APP: &str = "proto";

// A codec that sends and receives message bytes as they are, to send what a real client
// never would.
use cache_server::fuzz::RawCodec as Raw;

async fn one_node(store: Arc<dyn ObjectStore>) -> LocalCluster {
    one_node_with(store, |b| b).await
}

async fn one_node_with(
    store: Arc<dyn ObjectStore>,
    configure: impl Fn(cache_server::CacheNodeBuilder) -> cache_server::CacheNodeBuilder,
) -> LocalCluster {
    LocalCluster::start(1, |b| {
        configure(b.app(APP).store(store.clone()).prewarm(false))
    })
    .await
    .unwrap()
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn client(addr: &str) -> CacheClient {
    CacheClient::builder()
        .app(APP)
        .nodes([addr.to_owned()])
        .timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap()
}

/// Sends `message` as it is to a unary method.
async fn raw_unary(
    channel: &Channel,
    method: &'static str,
    message: Bytes,
) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let path = PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(message), path, Raw)
        .await
        .map(tonic::Response::into_inner)
}

/// Sends `messages` as they are on a `Pipe`, and reads every reply until the stream ends:
/// the decoded replies, and how the stream ended.
async fn raw_pipe(
    channel: &Channel,
    messages: Vec<Bytes>,
) -> (Vec<pb::Reply>, usize, Result<(), Status>) {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let path = PathAndQuery::from_static("/cachelet.v1.Data/Pipe");
    let outbound = futures::stream::iter(messages);
    let response = grpc
        .streaming(tonic::Request::new(outbound), path, Raw)
        .await;
    let mut inbound = match response {
        Ok(r) => r.into_inner(),
        Err(status) => return (Vec::new(), 0, Err(status)),
    };
    let (mut replies, mut bytes) = (Vec::new(), 0);
    loop {
        match inbound.message().await {
            Ok(Some(message)) => {
                bytes += message.len();
                replies.extend(pb::BatchReply::decode(message).unwrap().replies);
            }
            Ok(None) => return (replies, bytes, Ok(())),
            Err(status) => return (replies, bytes, Err(status)),
        }
    }
}

fn get(id: u64, key: &str) -> pb::Op {
    pb::Op {
        id,
        epoch: 0,
        kind: Some(pb::op::Kind::Get(pb::Get {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn put(id: u64, key: &str, value: &'static [u8]) -> pb::Op {
    pb::Op {
        id,
        epoch: 0,
        kind: Some(pb::op::Kind::Put(pb::Put {
            key: key.into(),
            value: Bytes::from_static(value),
            if_match: None,
        })),
    }
}

fn batch(app: &str, ops: Vec<pb::Op>) -> pb::Batch {
    pb::Batch {
        app: app.into(),
        timeout_ms: 0,
        ops,
    }
}

fn error_code(reply: &pb::Reply) -> Option<pb::ErrorCode> {
    match &reply.result {
        Some(pb::reply::Result::Error(e)) => Some(e.code()),
        _ => None,
    }
}

fn detail(status: &Status) -> pb::ErrorCode {
    pb::Error::decode(status.details())
        .map(|d| d.code())
        .unwrap_or(pb::ErrorCode::Unspecified)
}

/// Bytes that are not a protobuf message: field 3 (ops), length-delimited, claiming 255
/// bytes where there are none.
const MALFORMED: &[u8] = &[0x1a, 0xff, 0x01, 0x00];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_invalid_argument() {
    let cluster = one_node(Arc::new(InMemory::new())).await;
    let ch = channel(&cluster.addrs()[0]).await;
    let bad = Bytes::from_static(MALFORMED);
    for method in [
        "/cachelet.v1.Data/Batch",
        "/cachelet.v1.Data/Get",
        "/cachelet.v1.Admin/SetMembers",
        "/cachelet.v1.Peer/Peek",
    ] {
        let status = raw_unary(&ch, method, bad.clone()).await.unwrap_err();
        println!("{method}: {:?} {:?}", status.code(), status.message());
        assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status}");
    }
    // On a Pipe: the stream ends with the same code, typed.
    let (replies, _, end) = raw_pipe(&ch, vec![bad]).await;
    let status = end.unwrap_err();
    assert!(replies.is_empty());
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert_eq!(detail(&status), pb::ErrorCode::InvalidRequest);
    // The control: the same path with a well-formed message is served.
    let good = batch(APP, vec![get(1, "nothing/here")])
        .encode_to_vec()
        .into();
    let reply = raw_unary(&ch, "/cachelet.v1.Data/Batch", good)
        .await
        .unwrap();
    let reply = pb::BatchReply::decode(reply).unwrap();
    assert_eq!(error_code(&reply.replies[0]), Some(pb::ErrorCode::NotFound));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_op_ids_in_progress_are_refused() {
    let store = InstrumentedStore::new(Arc::new(InMemory::new()));
    // Puts stay in progress long enough for the duplicate to arrive meanwhile.
    store.set_put_latency(Duration::from_millis(200));
    let cluster = one_node(Arc::new(store)).await;
    let ch = channel(&cluster.addrs()[0]).await;

    // One Pipe message with id 5 twice: the second is refused, the first is written.
    let msg = batch(
        APP,
        vec![put(5, "a", b"1"), put(5, "b", b"2"), put(6, "c", b"3")],
    );
    let (replies, _, end) = raw_pipe(&ch, vec![msg.encode_to_vec().into()]).await;
    end.unwrap();
    let codes: Vec<_> = replies.iter().map(|r| (r.id, error_code(r))).collect();
    println!("pipe replies: {codes:?}");
    assert_eq!(replies.len(), 3);
    let refused: Vec<_> = replies
        .iter()
        .filter(|r| error_code(r) == Some(pb::ErrorCode::InvalidRequest))
        .collect();
    assert_eq!(refused.len(), 1, "{codes:?}");
    assert_eq!(refused[0].id, 5);
    // The control: distinct ids are all written.
    let written = |rs: &[pb::Reply]| {
        rs.iter()
            .filter(|r| matches!(r.result, Some(pb::reply::Result::Written(_))))
            .count()
    };
    assert_eq!(written(&replies), 2, "{codes:?}");
    let cache = client(&cluster.addrs()[0]).await;
    assert_eq!(cache.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(
        cache.get("b").await.unwrap(),
        None,
        "the duplicate was not run"
    );

    // Once its reply is out, an id may be used again on the same stream.
    let first = batch(APP, vec![put(9, "d", b"4")]).encode_to_vec().into();
    let again = batch(APP, vec![get(9, "d")]).encode_to_vec().into();
    let (replies, _, end) = raw_pipe(&ch, vec![first]).await;
    end.unwrap();
    assert_eq!(written(&replies), 1);
    let (replies, _, end) = raw_pipe(&ch, vec![again]).await;
    end.unwrap();
    assert!(matches!(
        replies[0].result,
        Some(pb::reply::Result::Value(_))
    ));

    // In a unary Batch too.
    let msg = batch(APP, vec![get(1, "a"), get(1, "c"), get(2, "c")]);
    let reply = raw_unary(&ch, "/cachelet.v1.Data/Batch", msg.encode_to_vec().into())
        .await
        .unwrap();
    let reply = pb::BatchReply::decode(reply).unwrap();
    let codes: Vec<_> = reply.replies.iter().map(error_code).collect();
    assert_eq!(codes, [None, Some(pb::ErrorCode::InvalidRequest), None]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_message_over_the_limit_fails_its_ops_with_an_error() {
    // Values up to 64 KiB: the node decodes messages up to 64 KiB plus 2 MiB of slack.
    let cluster = one_node_with(Arc::new(InMemory::new()), |b| {
        b.limits(Limits::default().with_max_value_bytes(64 << 10))
    })
    .await;
    let addr = cluster.addrs()[0].clone();
    let ch = channel(&addr).await;
    static BIG: [u8; 3 << 20] = [7; 3 << 20];
    let over = batch(APP, vec![put(1, "big", &BIG), get(2, "x")]);
    let (replies, _, end) = raw_pipe(&ch, vec![over.encode_to_vec().into()]).await;
    let status = end.unwrap_err();
    println!("oversize: {:?} {:?}", status.code(), status.message());
    assert!(replies.is_empty());
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(detail(&status), pb::ErrorCode::ValueTooLarge);

    // Through the client: the put fails with ValueTooLarge at once, not a timeout, and the
    // next call is served on a new stream.
    let cache = CacheClient::builder()
        .app(APP)
        .nodes([addr.clone()])
        .timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let start = Instant::now();
    let err = cache.put("big", &BIG[..]).await.unwrap_err();
    println!("client: {err} after {:?}", start.elapsed());
    assert!(matches!(err, ClientError::ValueTooLarge(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    cache.put("small", "ok").await.unwrap();
    assert_eq!(
        cache.get("small").await.unwrap().as_deref(),
        Some(&b"ok"[..])
    );
    cluster.shutdown().await;
}

/// A 4,096-op batch whose app name is 10 KB: the node answers once, briefly, on `Batch` and
/// on `Pipe`, instead of once per op with the name in each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_app_name_costs_one_short_reply() {
    let cluster = one_node(Arc::new(InMemory::new())).await;
    let ch = channel(&cluster.addrs()[0]).await;
    let app = "x".repeat(10_000);
    let ops = (0..4096).map(|i| get(i, "k")).collect();
    let request = batch(&app, ops).encode_to_vec();
    let status = raw_unary(&ch, "/cachelet.v1.Data/Batch", request.clone().into())
        .await
        .unwrap_err();
    let unary = status.message().len() + status.details().len();
    assert_eq!(detail(&status), pb::ErrorCode::UnknownApp);
    let (replies, bytes, end) = raw_pipe(&ch, vec![request.clone().into()]).await;
    let status = end.unwrap_err();
    assert!(replies.is_empty());
    assert_eq!(detail(&status), pb::ErrorCode::UnknownApp);
    let piped = bytes + status.message().len() + status.details().len();
    println!(
        "request {} bytes; reply {unary} bytes on Batch, {piped} on Pipe (ratios {:.4}, {:.4})",
        request.len(),
        unary as f64 / request.len() as f64,
        piped as f64 / request.len() as f64,
    );
    assert!(unary < 1024 && piped < 1024, "{unary}, {piped}");

    // The control: what one reply per op with the name would cost, against the same bound.
    let echoed = pb::BatchReply {
        replies: (0..4096)
            .map(|i| pb::Reply {
                id: i,
                result: Some(pb::reply::Result::Error(pb::Error {
                    code: pb::ErrorCode::UnknownApp as i32,
                    message: cache_core::Error::UnknownApp {
                        got: app.clone(),
                        serves: APP.into(),
                    }
                    .to_string(),
                    ..Default::default()
                })),
            })
            .collect(),
    }
    .encoded_len();
    println!("one reply per op with the name: {echoed} bytes");
    assert!(echoed >= 1024);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_error_retrying_cannot_fix_is_rejected_without_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_string_lossy().into_owned();
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    let store = InstrumentedStore::new(Arc::new(fs));
    let cluster = one_node(Arc::new(store.clone())).await;
    let cache = client(&cluster.addrs()[0]).await;
    cache.put("file", "x").await.unwrap();
    let start = Instant::now();
    let err = cache.put("file/child", "y").await.unwrap_err();
    println!("{err} after {:?}", start.elapsed());
    let ClientError::StoreRejected(text) = &err else {
        panic!("{err:?}");
    };
    assert!(!err.is_retryable());
    assert!(!text.contains(&root), "{text}");
    assert!(start.elapsed() < Duration::from_secs(1), "not retried");

    // The control: an outage is still Unavailable, retryable, and names no path either.
    store.set_failing(true);
    let err = cache.put("other", "z").await.unwrap_err();
    println!("{err}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(!err.to_string().contains(&root), "{err}");
    cluster.shutdown().await;
}

/// A live client's `Watch` stream, idle for several idle timeouts, stays open: the node's
/// keepalive pings are answered, and the answers count as reads. The control: a peer that
/// sent the preface and answers nothing is closed within about one idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_idle_stream_outlives_the_idle_timeout_and_a_silent_peer_does_not() {
    let idle = Duration::from_millis(600);
    let cluster = one_node_with(Arc::new(InMemory::new()), |b| b.idle_timeout(idle)).await;
    let addr = cluster.addrs()[0].clone();
    let ch = channel(&addr).await;
    let mut data = pb::data_client::DataClient::new(ch.clone());
    let mut watch = data
        .watch(pb::WatchRequest { app: APP.into() })
        .await
        .unwrap()
        .into_inner();

    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let start = Instant::now();
    let mut sink = Vec::new();
    // The node's SETTINGS and PINGs arrive, then the close.
    let closed = tokio::time::timeout(5 * idle, silent.read_to_end(&mut sink)).await;
    println!("the silent peer was closed after {:?}", start.elapsed());
    assert!(closed.is_ok(), "the silent peer is still open");

    tokio::time::sleep(5 * idle - start.elapsed().min(5 * idle)).await;
    // Five idle timeouts on, the same connection carries a write, and the watch sees it.
    data.put(pb::PutRequest {
        app: APP.into(),
        key: "watched".into(),
        value: Bytes::from_static(b"v"),
        epoch: 0,
    })
    .await
    .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("the watch stream is alive")
        .unwrap()
        .unwrap();
    assert!(seen.keys.iter().any(|k| k.key == "watched"), "{seen:?}");
    cluster.shutdown().await;
}
