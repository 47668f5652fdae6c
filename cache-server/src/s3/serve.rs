//! Serving the S3 endpoint: HTTP/1.1 on a bound listener, with TLS when the node has it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use s3s::service::S3ServiceBuilder;
use tokio::sync::{Semaphore, watch};

use super::{AccessKeys, Anonymous, Caller, S3Gateway};
use crate::security::TlsConfig;

/// How the S3 endpoint admits callers and connections.
#[derive(Debug)]
pub struct S3Settings {
    /// The SigV4 access keys (`--s3-keys`). Default: none, so only unsigned requests can
    /// pass, and only if `anonymous`.
    pub keys: AccessKeys,
    /// Unsigned requests are served (`--s3-anonymous`). Default: no.
    pub anonymous: bool,
    /// Unsigned requests are served only from loopback: set when the node requires tokens.
    /// Default: yes.
    pub anonymous_loopback_only: bool,
    /// The most connections open at once; at the cap, accepting waits. Default: 1024.
    pub max_connections: usize,
    /// A request's headers must arrive within this. Default: 10 s.
    pub header_timeout: Duration,
    /// At shutdown, requests in progress get this long to finish. Default: 5 s.
    pub shutdown_grace: Duration,
    /// TLS on the endpoint, when the node serves TLS. Default: none.
    pub tls: Option<TlsConfig>,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            keys: AccessKeys::default(),
            anonymous: false,
            anonymous_loopback_only: true,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// Serves `gateway` on `listener` until `shutdown` completes, then lets requests in progress
/// finish for at most the grace period.
///
/// # Errors
/// A TLS configuration that cannot be built.
pub async fn serve_s3<F>(
    listener: tokio::net::TcpListener,
    gateway: S3Gateway,
    settings: S3Settings,
    shutdown: F,
) -> crate::Result<()>
where
    F: Future<Output = ()>,
{
    let acceptor = match &settings.tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(tls.rustls_server()?)),
        None => None,
    };
    let max_connections = settings.max_connections;
    let header_timeout = settings.header_timeout;
    let shutdown_grace = settings.shutdown_grace;
    let counters = gateway.counters_handle();
    let service = service(gateway, settings);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let accept = async {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "S3 accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (service, acceptor, stop) = (service.clone(), acceptor.clone(), stop_rx.clone());
            let counters = Arc::clone(&counters);
            tokio::spawn(async move {
                let _permit = permit;
                match acceptor {
                    Some(acceptor) => {
                        let tls = tokio::time::timeout(header_timeout, acceptor.accept(stream));
                        if let Ok(Ok(tls)) = tls.await {
                            connection(tls, peer, service, counters, header_timeout, stop).await;
                        }
                    }
                    None => {
                        connection(stream, peer, service, counters, header_timeout, stop).await;
                    }
                }
            });
        }
    };
    tokio::select! {
        () = accept => {},
        () = shutdown => {},
    }
    let _ = stop_tx.send(true);
    // Each connection ends once its request in progress is answered; wait for the last.
    let all = u32::try_from(max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(shutdown_grace, slots.acquire_many(all)).await;
    Ok(())
}

/// The S3 protocol service around `gateway`, with the settings' keys and access rule.
fn service(gateway: S3Gateway, settings: S3Settings) -> s3s::service::S3Service {
    let mut builder = S3ServiceBuilder::new(gateway);
    // Always authenticate, even with no keys: then every unsigned request meets the access
    // rule, and every signed one a key lookup.
    builder.set_auth(settings.keys);
    builder.set_access(Anonymous {
        allowed: settings.anonymous,
        loopback_only: settings.anonymous_loopback_only,
    });
    builder.build()
}

/// Serves one connection's requests, marking each with the caller's address.
async fn connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    service: s3s::service::S3Service,
    counters: Arc<super::S3Counters>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handler =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Caller(peer));
            let (service, counters) = (service.clone(), Arc::clone(&counters));
            async move {
                let response = hyper::service::Service::call(&service, req).await;
                counters.count(response.as_ref().map_or(500, |r| r.status().as_u16()));
                response
            }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(header_timeout)
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), handler);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "S3 connection failed");
            }
        }
        _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway whose only node is not there: requests that pass the access rule fail
    /// later, with 503.
    use super::super::tests::gateway;

    async fn unsigned_get(service: &s3s::service::S3Service, from: &str) -> u16 {
        let mut req = hyper::Request::builder()
            .method("GET")
            .uri("/photos/cat.png")
            .header("host", "127.0.0.1")
            .body(s3s::Body::empty())
            .unwrap();
        req.extensions_mut().insert(Caller(from.parse().unwrap()));
        match service.call(req).await {
            Ok(resp) => resp.status().as_u16(),
            Err(e) => panic!("{e:?}"),
        }
    }

    /// The address is only a value attached to the request: nothing is sent to it.
    const REMOTE: &str = "192.0.2.7:40000";
    const LOCAL: &str = "127.0.0.1:40000";

    #[tokio::test]
    async fn unsigned_requests_pass_only_as_the_flags_say() {
        let settings = |anonymous, loopback_only| S3Settings {
            anonymous,
            anonymous_loopback_only: loopback_only,
            ..Default::default()
        };
        // Without --s3-anonymous: refused from anywhere.
        let svc = service(gateway().await, settings(false, false));
        assert_eq!(unsigned_get(&svc, LOCAL).await, 403);
        // With it, on a node that requires tokens: only from loopback.
        let svc = service(gateway().await, settings(true, true));
        assert_eq!(unsigned_get(&svc, REMOTE).await, 403);
        assert_eq!(unsigned_get(&svc, LOCAL).await, 503, "passed, then no node");
        // With it, on a node that does not: from anywhere.
        let svc = service(gateway().await, settings(true, false));
        assert_eq!(unsigned_get(&svc, REMOTE).await, 503);
    }
}
