//! A fake Kubernetes API server for one resource, `discovery.k8s.io/v1` EndpointSlices, that
//! speaks the real list-and-watch protocol over HTTP: a list answers with the objects and a
//! resource version; a watch from a resource version streams every change after it as
//! newline-delimited JSON events (`ADDED`, `MODIFIED`, `DELETED`), and then each new one as it
//! happens. Clients run unmodified against it (kube's watcher in the tests) with the
//! kubeconfig that [`FakeKubernetes::kubeconfig`] writes.
//!
//! Only what a watcher of one namespace's slices asks is served: the label selector
//! `kubernetes.io/service-name=NAME`, and nothing else (any other path gets a 404 `Status`).
//! [`FakeKubernetes::start_tls`] serves as a cluster's API server does: over TLS, with a
//! certificate from [`crate::certs::TestPki`], and only to callers with its bearer token.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The label that ties a slice to its Service.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// One endpoint of a slice: an address and whether it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's IP address.
    pub address: String,
    /// Its `ready` condition.
    pub ready: bool,
}

impl Endpoint {
    /// A ready endpoint at `address`.
    pub fn ready(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            ready: true,
        }
    }

    /// An endpoint at `address` that is not ready.
    pub fn not_ready(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            ready: false,
        }
    }
}

#[derive(Default)]
struct State {
    version: u64,
    slices: BTreeMap<String, Value>,
    /// Every change, with the resource version it made: `(version, type, object)`.
    events: Vec<(u64, &'static str, Value)>,
    /// Open watches: the service each selects (or every one), and its stream.
    watchers: Vec<(Option<String>, mpsc::UnboundedSender<Bytes>)>,
    requests: Vec<String>,
}

impl State {
    fn change(&mut self, kind: &'static str, object: Value) {
        let line = event_line(kind, &object);
        self.watchers.retain(|(service, w)| {
            !selects(service.as_deref(), &object) || w.send(line.clone()).is_ok()
        });
        self.events.push((self.version, kind, object));
    }
}

/// Whether a watch or list of `service` (or of every service) takes `object`.
fn selects(service: Option<&str>, object: &Value) -> bool {
    service.is_none_or(|s| object["metadata"]["labels"][SERVICE_LABEL] == s)
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object }))
        .expect("a JSON value serializes");
    line.push(b'\n');
    Bytes::from(line)
}

/// The bearer token [`FakeKubernetes::start_tls`] requires.
pub const TOKEN: &str = "cachelet-test-service-account-token";

/// The fake API server, serving on a loopback port until dropped.
pub struct FakeKubernetes {
    addr: SocketAddr,
    namespace: String,
    /// The CA that the server's certificate chains to, when it serves TLS.
    ca: Option<PathBuf>,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKubernetes {
    /// Starts serving the slices of `namespace` on `127.0.0.1:0`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(namespace: &str) -> std::io::Result<Self> {
        Self::serve(namespace, None, None).await
    }

    /// Starts serving over TLS with `pki`'s node certificate (for `127.0.0.1`), to callers
    /// that present [`TOKEN`]; the kubeconfig names `pki`'s CA.
    ///
    /// # Errors
    /// When the port cannot be bound or the certificate not loaded.
    pub async fn start_tls(namespace: &str, pki: &crate::certs::TestPki) -> std::io::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let certs = CertificateDer::pem_slice_iter(&pki.read(&pki.node_cert))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&pki.read(&pki.node_key))
            .map_err(|e| invalid(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::serve(namespace, Some(acceptor), Some(pki.ca.clone())).await
    }

    async fn serve(
        namespace: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        ca: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let served = Arc::clone(&state);
        let ns = namespace.to_owned();
        let token = tls.is_some().then_some(TOKEN);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, ns, tls) = (Arc::clone(&served), ns.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (state, ns) = (Arc::clone(&state), ns.clone());
                        async move { Ok::<_, Infallible>(answer(&state, &ns, token, req)) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                let io = hyper_util::rt::TokioIo::new(stream);
                                http.serve_connection(io, service).await
                            }
                            Err(_) => return,
                        },
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            http.serve_connection(io, service).await
                        }
                    };
                });
            }
        });
        Ok(Self {
            addr,
            namespace: namespace.to_owned(),
            ca,
            state,
            task,
        })
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Writes a kubeconfig for this server (its CA and token when it serves TLS, its
    /// namespace) into `dir`, and returns its path, for `KUBECONFIG`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let (ca, user) = match &self.ca {
            Some(ca) => (
                format!("    certificate-authority: {}\n", ca.display()),
                format!("\n    token: {TOKEN}\n"),
            ),
            None => (String::new(), " {}\n".to_owned()),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n{ca}\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {}\n\
             current-context: fake\nusers:\n- name: fake\n  user:{user}",
            self.url(),
            self.namespace
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Creates or replaces the slice `name` of `service`, with `endpoints` on `port`.
    pub fn set_slice(&self, name: &str, service: &str, port: u16, endpoints: &[Endpoint]) {
        let mut state = self.state.lock().expect("fake API state");
        state.version += 1;
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|e| json!({ "addresses": [e.address], "conditions": { "ready": e.ready } }))
            .collect();
        let object = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "resourceVersion": state.version.to_string(),
                "labels": { SERVICE_LABEL: service },
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{ "name": "grpc", "port": port, "protocol": "TCP" }],
        });
        let kind = if state.slices.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.slices.insert(name.to_owned(), object.clone());
        state.change(kind, object);
    }

    /// Deletes the slice `name`, if there is one.
    pub fn delete_slice(&self, name: &str) {
        let mut state = self.state.lock().expect("fake API state");
        if let Some(mut object) = state.slices.remove(name) {
            state.version += 1;
            object["metadata"]["resourceVersion"] = json!(state.version.to_string());
            state.change("DELETED", object);
        }
    }

    /// Every request so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("fake API state").requests.clone()
    }
}

impl Drop for FakeKubernetes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn json_reply(status: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("a JSON value serializes");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("a valid response")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_reply(
        code,
        &json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "reason": reason, "message": message, "code": code.as_u16(),
        }),
    )
}

/// The query's parameters, percent-decoded.
fn params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer(
    state: &Mutex<State>,
    namespace: &str,
    token: Option<&str>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let mut st = state.lock().expect("fake API state");
    st.requests.push(format!("{path}?{query}"));
    if let Some(token) = token {
        let presented = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token) {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
    }
    let wanted = format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices");
    if path != wanted {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no resource at {path}"),
        );
    }
    let params = params(&query);
    let service = match params.get("labelSelector").map(String::as_str) {
        None | Some("") => None,
        Some(selector) => match selector.split_once('=') {
            Some((SERVICE_LABEL, value)) if !value.contains(',') => Some(value.to_owned()),
            _ => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("this fake serves only {SERVICE_LABEL}=NAME, not {selector:?}"),
                );
            }
        },
    };
    let selected = |object: &Value| selects(service.as_deref(), object);
    if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) {
        let from: u64 = params
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::unbounded_channel();
        for (version, kind, object) in &st.events {
            if *version > from && selected(object) {
                let _ = tx.send(event_line(kind, object));
            }
        }
        // Later changes reach the watch as they happen.
        st.watchers.push((service.clone(), tx));
        let frames = UnboundedReceiverStream::new(rx).map(|line| Ok(Frame::data(line)));
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .expect("a valid response");
    }
    let items: Vec<Value> = st
        .slices
        .values()
        .filter(|o| selected(o))
        .cloned()
        .collect();
    json_reply(
        StatusCode::OK,
        &json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSliceList",
            "metadata": { "resourceVersion": st.version.to_string() },
            "items": items,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request over TLS, trusting `pki`'s CA; the reply's status line.
    async fn status_line(api: &FakeKubernetes, pki: &crate::certs::TestPki, auth: &str) -> String {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pki.read(&pki.ca)) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(api.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let request = format!(
            "GET /apis/discovery.k8s.io/v1/namespaces/shop/endpointslices HTTP/1.1\r\n\
             host: x\r\nconnection: close\r\n{auth}\r\n"
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        let _ = tls.read_to_string(&mut reply).await;
        reply.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn over_tls_only_the_token_is_served() {
        let pki = crate::certs::TestPki::generate().unwrap();
        let api = FakeKubernetes::start_tls("shop", &pki).await.unwrap();
        assert!(status_line(&api, &pki, "").await.contains("401"));
        let wrong = "authorization: Bearer nope\r\n";
        assert!(status_line(&api, &pki, wrong).await.contains("401"));
        let right = format!("authorization: Bearer {TOKEN}\r\n");
        assert!(status_line(&api, &pki, &right).await.contains("200"));
    }

    #[test]
    fn decodes_a_label_selector() {
        let p = params("labelSelector=kubernetes.io%2Fservice-name%3Dcachelet&watch=true");
        assert_eq!(p["labelSelector"], "kubernetes.io/service-name=cachelet");
        assert_eq!(p["watch"], "true");
        assert_eq!(decode("a%2"), "a%2");
    }
}
