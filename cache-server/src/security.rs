//! TLS and credentials on a node: the thin shell around [`cache_core::auth`].
//!
//! - [`TlsConfig`]: the node's certificate and key, the CA that client certificates must
//!   chain to (mutual TLS), and the CA that peers' certificates must chain to. Every PEM file
//!   is parsed and checked when the config is built, so a bad file fails at start-up.
//! - The interceptor on every gRPC service reads `authorization: Bearer TOKEN`, looks the
//!   token's hash up in the node's [`Credentials`] and puts the [`Principal`] in the request's
//!   extensions; a missing or unknown token is `UNAUTHENTICATED` there and then. Each handler
//!   then asks [`cache_core::auth::authorize`] whether that principal may make its call.
//! - Outgoing calls to peers go through [`CacheNode::peer`](crate::node::CacheNode) with the
//!   node's peer token and, with TLS, its own certificate, verifying the peer's against the
//!   peer CA.
//! - Secure by default: [`CacheNode::serve`](crate::node::CacheNode::serve) refuses a
//!   non-loopback listener when the node has no credentials, unless
//!   [`CacheNodeBuilder::insecure`] says otherwise.
//!
//! Without credentials (the default, for loopback, tests and the demo) every call is allowed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cache_core::Error;
use cache_core::auth::{Action, Credentials, Principal, Role, authorize, bearer, check_exposure};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::node::{CacheNode, CacheNodeBuilder};
use crate::wire::to_status;

/// How long a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's TLS settings, checked when built.
#[derive(Clone)]
pub struct TlsConfig {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    peer_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("mutual", &self.client_ca_pem.is_some())
            .field("peer_ca", &self.peer_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

fn config_error(what: &str, reason: impl std::fmt::Display) -> crate::Error {
    crate::Error::Config(format!("{what}: {reason}"))
}

fn parse_certs(what: &str, pem: &[u8]) -> crate::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(what, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(config_error(what, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn roots(what: &str, pem: &[u8]) -> crate::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in parse_certs(what, pem)? {
        roots
            .add(cert)
            .map_err(|e| config_error(what, format!("not a usable CA certificate ({e})")))?;
    }
    Ok(roots)
}

fn read(what: &str, path: &Path) -> crate::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| config_error(what, format!("cannot read {}: {e}", path.display())))
}

impl TlsConfig {
    /// The node's certificate chain and private key, in PEM. Clients need not present a
    /// certificate, and peers cannot be called until [`TlsConfig::peer_ca`] is set.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when either is not valid PEM, or the key does not fit the
    /// certificate.
    pub fn from_pem(cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> crate::Result<Self> {
        let config = Self {
            cert_pem: cert.into(),
            key_pem: key.into(),
            client_ca_pem: None,
            peer_ca_pem: None,
        };
        config.rustls_server()?;
        Ok(config)
    }

    /// Requires every client to present a certificate that chains to `ca` (PEM): mutual TLS.
    /// Default: no client certificate required.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when `ca` holds no valid certificate.
    pub fn client_ca(mut self, ca: impl Into<Vec<u8>>) -> crate::Result<Self> {
        let ca = ca.into();
        roots("client CA", &ca)?;
        self.client_ca_pem = Some(ca);
        self.rustls_server()?;
        Ok(self)
    }

    /// The CA (PEM) that peers' certificates must chain to when this node calls them. The
    /// node presents its own certificate to them. Default: none, and then a node with TLS
    /// cannot call its peers (a single node needs none).
    ///
    /// # Errors
    /// [`crate::Error::Config`] when `ca` holds no valid certificate.
    pub fn peer_ca(mut self, ca: impl Into<Vec<u8>>) -> crate::Result<Self> {
        let ca = ca.into();
        roots("peer CA", &ca)?;
        self.peer_ca_pem = Some(ca);
        Ok(self)
    }

    /// Reads and checks the files `cache-server --tls-cert --tls-key [--tls-client-ca]
    /// [--tls-ca]` name.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the file that cannot be read or is not valid.
    pub fn from_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        peer_ca: Option<&Path>,
    ) -> crate::Result<Self> {
        let cert_pem = read("--tls-cert", cert)?;
        parse_certs(&format!("--tls-cert {}", cert.display()), &cert_pem)?;
        let key_pem = read("--tls-key", key)?;
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            config_error(
                &format!("--tls-key {}", key.display()),
                format!("not a PEM private key ({e})"),
            )
        })?;
        let mut config = Self::from_pem(cert_pem, key_pem)?;
        if let Some(path) = client_ca {
            let pem = read("--tls-client-ca", path)?;
            roots(&format!("--tls-client-ca {}", path.display()), &pem)?;
            config = config.client_ca(pem)?;
        }
        if let Some(path) = peer_ca {
            let pem = read("--tls-ca", path)?;
            roots(&format!("--tls-ca {}", path.display()), &pem)?;
            config = config.peer_ca(pem)?;
        }
        Ok(config)
    }

    /// Whether clients must present certificates.
    pub fn is_mutual(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    /// A rustls server config for listeners that tonic does not run (metrics). Building it
    /// also checks that the key fits the certificate.
    pub(crate) fn rustls_server(&self) -> crate::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = parse_certs("TLS certificate", &self.cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| config_error("TLS key", format!("not a PEM private key ({e})")))?;
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("TLS", e))?;
        let builder = match &self.client_ca_pem {
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots("client CA", ca)?),
                    provider,
                )
                .build()
                .map_err(|e| config_error("client CA", e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| config_error("TLS certificate and key", e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// tonic's server TLS for the gRPC listener.
    pub(crate) fn tonic_server(&self) -> ServerTlsConfig {
        let mut tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca_pem {
            tls = tls.client_ca_root(Certificate::from_pem(ca));
        }
        tls
    }

    /// tonic's client TLS for calls to peers, if a peer CA is set.
    fn tonic_peer(&self) -> Option<ClientTlsConfig> {
        let ca = self.peer_ca_pem.as_ref()?;
        Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
                .timeout(TLS_HANDSHAKE_TIMEOUT),
        )
    }
}

/// Reads the peer token from `path` (surrounding whitespace ignored).
///
/// # Errors
/// [`crate::Error::Config`] when the file cannot be read, is empty, or holds characters a
/// header cannot carry.
pub fn read_token_file(path: &Path) -> crate::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        config_error(
            "--peer-token-file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() || header_value(&token).is_none() {
        return Err(config_error(
            "--peer-token-file",
            format!("{} holds no usable token", path.display()),
        ));
    }
    Ok(token)
}

fn header_value(token: &str) -> Option<MetadataValue<Ascii>> {
    format!("Bearer {token}").parse().ok()
}

/// A node's TLS, credentials and peer token. Default: none of them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Security {
    credentials: Option<Arc<Credentials>>,
    tls: Option<TlsConfig>,
    peer_token: Option<MetadataValue<Ascii>>,
    insecure: bool,
}

impl CacheNodeBuilder {
    /// The tokens this node accepts, with their roles (see [`cache_core::auth`]). Every call
    /// then needs `authorization: Bearer TOKEN` of a role that allows it. Default: none, and
    /// every call is allowed; [`CacheNode::serve`] then refuses a non-loopback listener
    /// unless [`CacheNodeBuilder::insecure`] is set.
    pub fn auth(mut self, credentials: Credentials) -> Self {
        self.security.credentials = Some(Arc::new(credentials));
        self
    }

    /// Serves over TLS, and calls peers over TLS. Default: plaintext.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.security.tls = Some(tls);
        self
    }

    /// The `peer` token this node sends on every call to another node (relays, fence,
    /// handoff, peek, gossip, counters for advice). Default: none, which works only with
    /// peers that run without credentials.
    pub fn peer_token(mut self, token: impl Into<String>) -> Self {
        self.security.peer_token = header_value(&token.into());
        self
    }

    /// Allows serving on a non-loopback address without credentials. Anyone who can reach
    /// the address can then read, write and re-member the cache. Default: false.
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.security.insecure = insecure;
        self
    }
}

/// Adds the node's peer token to every outgoing call.
#[derive(Debug, Clone)]
pub(crate) struct PeerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for PeerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The channel a node calls a peer on.
pub(crate) type PeerChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, PeerToken>;

/// Finds the caller of every request, or refuses it when credentials are on and its token is
/// missing or unknown.
#[derive(Debug, Clone)]
pub(crate) struct Authenticate(Option<Arc<Credentials>>);

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(credentials) = &self.0 else {
            return Ok(request);
        };
        let principal = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .and_then(|token| credentials.lookup(token))
            .cloned();
        match principal {
            Some(p) => {
                request.extensions_mut().insert(Caller(p));
                Ok(request)
            }
            None => Err(to_status(&authorize(None, Action::Members).unwrap_err())),
        }
    }
}

/// The principal the interceptor found, in a request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct Caller(Principal);

/// The principal of `request`, if the interceptor found one.
pub(crate) fn caller<T>(request: &Request<T>) -> Option<Principal> {
    request.extensions().get::<Caller>().map(|c| c.0.clone())
}

impl CacheNode {
    /// Whether credentials are on.
    pub(crate) fn has_credentials(&self) -> bool {
        self.inner.security.credentials.is_some()
    }

    /// Whether `caller` may do `action`: always, when the node has no credentials.
    pub(crate) fn authorize(
        &self,
        caller: Option<&Principal>,
        action: Action<'_>,
    ) -> Result<(), Error> {
        if self.has_credentials() {
            authorize(caller, action)
        } else {
            Ok(())
        }
    }

    /// [`CacheNode::authorize`] for `request`'s caller, as a gRPC status.
    pub(crate) fn allow<T>(&self, request: &Request<T>, action: Action<'_>) -> Result<(), Status> {
        if !self.has_credentials() {
            return Ok(());
        }
        let caller = request.extensions().get::<Caller>().map(|c| &c.0);
        authorize(caller, action).map_err(|e| to_status(&e))
    }

    /// The app name to show `request`'s caller: the node's, or "" for a caller that may not
    /// know it.
    pub(crate) fn app_for<T>(&self, request: &Request<T>) -> String {
        let known = !self.has_credentials()
            || request
                .extensions()
                .get::<Caller>()
                .is_some_and(|c| c.0.may_know_app(self.app()));
        if known {
            self.app().to_owned()
        } else {
            String::new()
        }
    }

    /// The interceptor for this node's gRPC services.
    pub(crate) fn authenticator(&self) -> Authenticate {
        Authenticate(self.inner.security.credentials.clone())
    }

    /// The node's TLS settings, if any.
    pub(crate) fn tls(&self) -> Option<&TlsConfig> {
        self.inner.security.tls.as_ref()
    }

    /// Refuses to serve on `addr` when it is not loopback and the node has no credentials,
    /// unless it was built insecure.
    ///
    /// # Errors
    /// [`crate::Error::Config`] saying why.
    pub(crate) fn check_exposure(&self, what: &str, addr: SocketAddr) -> crate::Result<()> {
        let s = &self.inner.security;
        check_exposure(what, addr.ip(), s.credentials.is_some(), s.insecure)
            .map_err(crate::Error::Config)
    }

    /// The endpoint of a peer: `https` with the node's identity when TLS is on.
    pub(crate) fn peer_endpoint(&self, addr: &str) -> Option<Endpoint> {
        match self.tls() {
            Some(tls) => {
                let tls = tls.tonic_peer()?;
                Endpoint::from_shared(format!("https://{addr}"))
                    .ok()?
                    .tls_config(tls)
                    .ok()
            }
            None => Endpoint::from_shared(format!("http://{addr}")).ok(),
        }
    }

    /// `channel` with the node's peer token on every call.
    pub(crate) fn with_peer_token(&self, channel: tonic::transport::Channel) -> PeerChannel {
        PeerChannel::new(channel, PeerToken(self.inner.security.peer_token.clone()))
    }

    /// Checks, at start-up, that the node's credentials and peer token fit together: a peer
    /// token the node's own auth file knows must have the `peer` role.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for a peer token of another role; with TLS, for a node that
    /// has peers but no peer CA.
    pub(crate) fn check_security(&self) -> crate::Result<()> {
        let s = &self.inner.security;
        if let (Some(creds), Some(token)) = (&s.credentials, &s.peer_token) {
            let token = token.to_str().ok().and_then(bearer).unwrap_or_default();
            match creds.lookup(token) {
                Some(p) if p.role == Role::Peer => {}
                Some(p) => {
                    return Err(crate::Error::Config(format!(
                        "the peer token has the role {:?} in this node's auth file; nodes need a peer token",
                        p.role.as_str()
                    )));
                }
                None => tracing::warn!("the peer token is not in this node's auth file"),
            }
        }
        if s.credentials.is_some() && s.peer_token.is_none() {
            tracing::warn!(
                "credentials are on but no peer token is set: calls to peers will be refused"
            );
        }
        if s.tls.as_ref().is_some_and(|t| t.peer_ca_pem.is_none()) {
            tracing::warn!(
                "TLS is on but no peer CA is set (--tls-ca): this node cannot call peers"
            );
        }
        if s.credentials.is_some() && s.tls.is_none() {
            tracing::warn!("credentials are on without TLS: tokens travel in clear text");
        }
        Ok(())
    }
}

/// Who may change membership, and with what: `SetMembers` claiming an epoch needs an admin
/// token, a relay of a claimed epoch an admin or peer token; a list to claim must hold at
/// most [`cache_core::MAX_MEMBERS`] valid `host:port` addresses.
///
/// # Errors
/// `UNAUTHENTICATED`, `PERMISSION_DENIED` or `INVALID_ARGUMENT` as a gRPC status.
pub(crate) fn check_set_members(
    node: &CacheNode,
    request: &Request<cache_proto::v1::SetMembersRequest>,
) -> Result<(), Status> {
    let req = request.get_ref();
    let action = if req.relay {
        Action::Relay
    } else {
        Action::SetMembers
    };
    node.allow(request, action)?;
    if !req.relay {
        cache_core::validate_addresses(&req.members).map_err(|e| to_status(&e))?;
    }
    Ok(())
}
