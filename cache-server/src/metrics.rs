//! The node's counters in Prometheus text format.
//!
//! Counters are copied from [`CacheNode::stats`] into a Prometheus recorder once a second, so
//! a scrape sees values at most a second old. Reads are counted by tier: `home` (a hit on the
//! key's home node), `handoff` (served by the key's previous owner during a handoff),
//! `store` (a miss read from the blob store) and `unsettled` (read from the store, uncached,
//! because the key's previous owners were not all fenced yet). `cachelet_sealed_epoch` and
//! `cachelet_not_settled_total` (writes refused for that reason) show fencing at work.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use cache_proto::v1 as pb;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::node::CacheNode;

/// Copies `stats` into `recorder`.
pub fn record(recorder: &PrometheusRecorder, stats: &pb::NodeStats) {
    metrics::with_local_recorder(recorder, || {
        counter!("cachelet_reads_total", "tier" => "home").absolute(stats.hits);
        counter!("cachelet_reads_total", "tier" => "store").absolute(stats.misses);
        counter!("cachelet_reads_total", "tier" => "handoff").absolute(stats.handoff_hits);
        counter!("cachelet_not_modified_total").absolute(stats.not_modified);
        counter!("cachelet_ghost_hits_total").absolute(stats.ghost_hits);
        counter!("cachelet_hot_replies_total").absolute(stats.hot_replies);
        counter!("cachelet_invalidations_total").absolute(stats.invalidations_sent);
        counter!("cachelet_handoff_entries_total", "way" => "sent").absolute(stats.handoff_sent);
        counter!("cachelet_handoff_entries_total", "way" => "received")
            .absolute(stats.handoff_received);
        counter!("cachelet_handoff_entries_total", "way" => "refused")
            .absolute(stats.handoff_refused);
        counter!("cachelet_prewarmed_total").absolute(stats.prewarmed);
        counter!("cachelet_fallback_reads_total").absolute(stats.fallback_reads);
        counter!("cachelet_gets_total").absolute(stats.gets);
        counter!("cachelet_puts_total").absolute(stats.puts);
        counter!("cachelet_deletes_total").absolute(stats.deletes);
        counter!("cachelet_errors_total").absolute(stats.errors);
        counter!("cachelet_inserts_total").absolute(stats.inserts);
        counter!("cachelet_evictions_total").absolute(stats.evictions);
        counter!("cachelet_served_bytes_total").absolute(stats.bytes_served);
        counter!("cachelet_store_calls_total", "kind" => "read").absolute(stats.store_reads);
        counter!("cachelet_store_calls_total", "kind" => "write").absolute(stats.store_writes);
        counter!("cachelet_store_calls_total", "kind" => "delete").absolute(stats.store_deletes);
        counter!("cachelet_store_calls_total", "kind" => "head").absolute(stats.store_heads);
        counter!("cachelet_store_errors_total").absolute(stats.store_errors);
        counter!("cachelet_store_read_bytes_total").absolute(stats.store_read_bytes);
        gauge!("cachelet_entries").set(stats.entries as f64);
        gauge!("cachelet_bytes_used").set(stats.bytes_used as f64);
        gauge!("cachelet_capacity_bytes").set(stats.capacity_bytes as f64);
        gauge!("cachelet_epoch").set(stats.epoch as f64);
        gauge!("cachelet_sealed_epoch").set(stats.sealed as f64);
        counter!("cachelet_reads_total", "tier" => "unsettled").absolute(stats.unsettled_reads);
        counter!("cachelet_not_settled_total").absolute(stats.not_settled);
        gauge!("cachelet_reply_budget_bytes").set(stats.reply_budget_bytes as f64);
        gauge!("cachelet_reply_held_bytes").set(stats.reply_held_bytes as f64);
        counter!("cachelet_leases_granted_total").absolute(stats.leases_granted);
        gauge!("cachelet_leases_active").set(stats.leases_active as f64);
        counter!("cachelet_lease_invalidations_total").absolute(stats.lease_invalidations);
        counter!("cachelet_lease_expiry_waits_total").absolute(stats.lease_expiry_waits);
        counter!("cachelet_lease_expiry_wait_milliseconds_total")
            .absolute(stats.lease_expiry_wait_us / 1000);
        gauge!("cachelet_lease_expiry_wait_max_seconds")
            .set(stats.lease_expiry_wait_max_us as f64 / 1e6);
        counter!("cachelet_writes_outlived_total").absolute(stats.writes_outlived);
        counter!("cachelet_writes_abandoned_total").absolute(stats.writes_abandoned);
        counter!("cachelet_s3_requests_total", "outcome" => "ok").absolute(stats.s3_requests);
        counter!("cachelet_s3_requests_total", "outcome" => "client_error")
            .absolute(stats.s3_client_errors);
        counter!("cachelet_s3_requests_total", "outcome" => "server_error")
            .absolute(stats.s3_server_errors);
        counter!("cachelet_s3_around_cache_total", "kind" => "read")
            .absolute(stats.s3_around_reads);
        counter!("cachelet_s3_around_cache_total", "kind" => "write")
            .absolute(stats.s3_around_writes);
        counter!("cachelet_discovery_proposals_total", "outcome" => "claimed")
            .absolute(stats.discovery_proposals);
        counter!("cachelet_discovery_proposals_total", "outcome" => "lost")
            .absolute(stats.discovery_lost_claims);
        counter!("cachelet_discovery_refused_joins_total").absolute(stats.discovery_refused_joins);
        counter!("cachelet_discovery_confirmed_gone_total")
            .absolute(stats.discovery_confirmed_gone);
        gauge!("cachelet_drained").set(if stats.drained { 1.0 } else { 0.0 });
    });
}

/// How long a metrics connection may take to send its request (and, with TLS, finish the
/// handshake) before it is dropped.
const METRICS_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The most metrics connections served at once; more wait to be accepted.
const METRICS_CONNECTIONS: usize = 64;

/// Serves `node`'s counters at `http://ADDR/metrics` (`https://` when the node has TLS, with
/// client certificates required when it has a client CA) until `shutdown` completes.
///
/// # Errors
/// [`crate::Error::Config`] when the address is not loopback and the node has neither
/// credentials nor `insecure` set, or the TLS settings are unusable;
/// [`crate::Error::Io`] when the address cannot be bound.
pub async fn serve_metrics<F>(addr: SocketAddr, node: CacheNode, shutdown: F) -> crate::Result<()>
where
    F: Future<Output = ()>,
{
    node.check_exposure("metrics", addr)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_metrics_on(listener, node, shutdown).await
}

/// [`serve_metrics`] on a bound listener.
///
/// # Errors
/// [`crate::Error::Config`] when the TLS settings are unusable.
pub async fn serve_metrics_on<F>(
    listener: tokio::net::TcpListener,
    node: CacheNode,
    shutdown: F,
) -> crate::Result<()>
where
    F: Future<Output = ()>,
{
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let acceptor = match node.tls() {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(tls.rustls_server()?)),
        None => None,
    };
    let refresh = async {
        loop {
            node.entries().sync().await;
            record(&recorder, &node.stats());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    let accept = async {
        loop {
            let Ok(permit) = std::sync::Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (handle, acceptor) = (handle.clone(), acceptor.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match acceptor {
                    Some(acceptor) => {
                        let tls =
                            tokio::time::timeout(METRICS_REQUEST_TIMEOUT, acceptor.accept(stream))
                                .await;
                        if let Ok(Ok(tls)) = tls {
                            serve_scrape(tls, handle).await;
                        }
                    }
                    None => serve_scrape(stream, handle).await,
                }
            });
        }
    };
    tokio::select! {
        () = accept => Ok(()),
        () = refresh => Ok(()),
        () = shutdown => Ok(()),
    }
}

/// Answers one connection's scrapes: the rendered counters for `GET /metrics`, 404 else.
async fn serve_scrape<S>(stream: S, handle: metrics_exporter_prometheus::PrometheusHandle)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::Full;
    use hyper::{Response, StatusCode};

    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let handle = handle.clone();
        async move {
            if req.uri().path() == "/metrics" {
                Response::builder()
                    .header("content-type", "text/plain; version=0.0.4")
                    .body(Full::new(bytes::Bytes::from(handle.render())))
            } else {
                Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Full::new(bytes::Bytes::from_static(b"not found\n")))
            }
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(METRICS_REQUEST_TIMEOUT)
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "metrics connection failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_reads_by_tier() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let stats = pb::NodeStats {
            hits: 5,
            misses: 2,
            bytes_used: 100,
            s3_client_errors: 3,
            s3_around_reads: 2,
            discovery_refused_joins: 4,
            ..Default::default()
        };
        record(&recorder, &stats);
        let text = recorder.handle().render();
        assert!(
            text.contains("cachelet_reads_total{tier=\"home\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("cachelet_reads_total{tier=\"store\"} 2"),
            "{text}"
        );
        assert!(text.contains("cachelet_bytes_used 100"), "{text}");
        assert!(
            text.contains("cachelet_s3_requests_total{outcome=\"client_error\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("cachelet_s3_around_cache_total{kind=\"read\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cachelet_discovery_refused_joins_total 4"),
            "{text}"
        );
    }
}
