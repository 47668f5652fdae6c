//! An example function: a small HTTP server that serves JSON documents from the
//! application's blob store through cachelet. It is written as an Azure Functions custom
//! handler (a plain HTTP server on `FUNCTIONS_CUSTOMHANDLER_PORT`, see `azure/`), and runs
//! just as well on its own or in a Kubernetes pod beside the `cache-server` sidecar.
//!
//! # Layout
//! - [`serve`]: HTTP/1.1 on a bound listener until a shutdown future completes, with a cap on
//!   connections, a header deadline, and a grace period for requests in progress.
//! - [`handle`]: the routes. `GET /api/docs/{name}` reads `{name}.json` through the cache
//!   (read-through: a miss loads it from the store, and the next read is a hit);
//!   `PUT /api/docs/{name}` checks the body is JSON and writes it through to the store
//!   (`If-Match` makes it conditional); `GET /healthz`.
//!
//! A request flows: the listener → [`handle`] → `cache_client::CacheClient` → the key's home
//! node (the embedded one by direct call, when it owns the key) → on a miss, the blob store.
//! The reply carries an `ETag` that stands for the store's version, and the tier that
//! served it as `X-Cache-Tier`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_client::{CacheClient, Tier};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

/// The largest document a `PUT` may carry.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// The most connections served at once; at the cap, accepting waits.
const MAX_CONNECTIONS: usize = 256;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, requests in progress get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the function on `listener` with `cache` until `shutdown` completes.
pub async fn serve<F>(listener: tokio::net::TcpListener, cache: CacheClient, shutdown: F)
where
    F: Future<Output = ()>,
{
    let cache = Arc::new(cache);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let accept = async {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (cache, mut stop) = (Arc::clone(&cache), stop_rx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let cache = Arc::clone(&cache);
                    async move { Ok::<_, std::convert::Infallible>(handle(&cache, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(HEADER_TIMEOUT)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown => {}
    }
    let _ = stop_tx.send(true);
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all)).await;
}

/// A reply with a JSON body.
fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("a valid header"),
    );
    response
}

/// An error reply: `{"error": why}`.
fn error(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    reply(status, serde_json::json!({ "error": why }).to_string())
}

/// The store key of document `name`, if the name is valid: 1 to 64 letters, digits, `-`
/// or `_`.
fn document_key(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| format!("{name}.json"))
}

/// The ETag of a store version: the version's bytes in hex, quoted. Store versions have
/// their own quoting (S3's are quoted, Azure's are not), so the function gives out an opaque
/// tag of its own and reads it back exactly.
fn etag(version: &str) -> String {
    let hex: String = version.bytes().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The store version an ETag from [`etag`] stands for.
fn version_of(tag: &str) -> Option<String> {
    let hex = tag.trim().strip_prefix('"')?.strip_suffix('"')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Local => "local",
        Tier::Home => "home",
        Tier::Handoff => "handoff",
        Tier::Store => "store",
    }
}

/// Answers one request.
pub async fn handle(cache: &CacheClient, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return reply(StatusCode::OK, r#"{"ok":true}"#);
    }
    let Some(name) = path.strip_prefix("/api/docs/") else {
        return error(StatusCode::NOT_FOUND, "no such route: try /api/docs/{name}");
    };
    let Some(key) = document_key(name) else {
        return error(
            StatusCode::BAD_REQUEST,
            "a document name is 1 to 64 letters, digits, - or _",
        );
    };
    let span = tracing::info_span!("document", method = %req.method(), %key);
    document(cache, key, req).instrument(span).await
}

/// Answers a request for the document under `key`.
async fn document(
    cache: &CacheClient,
    key: String,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match *req.method() {
        Method::GET => match cache.get_entry(&key).await {
            Ok(Some(doc)) => {
                let mut response = reply(StatusCode::OK, doc.value);
                let headers = response.headers_mut();
                if let Ok(etag) = etag(&doc.version).parse() {
                    headers.insert("etag", etag);
                }
                headers.insert(
                    "x-cache-tier",
                    tier_name(doc.tier).parse().expect("a valid header"),
                );
                response
            }
            Ok(None) => error(StatusCode::NOT_FOUND, "no such document"),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        },
        Method::PUT => {
            let if_match = match req.headers().get("if-match").map(|v| v.to_str()) {
                None => None,
                Some(value) => match value.ok().and_then(version_of) {
                    Some(version) => Some(version),
                    None => {
                        return error(
                            StatusCode::PRECONDITION_FAILED,
                            "If-Match names no version this function gave out",
                        );
                    }
                },
            };
            let body = match Limited::new(req.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(_) => {
                    return error(StatusCode::PAYLOAD_TOO_LARGE, "a document is at most 1 MiB");
                }
            };
            if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                return error(StatusCode::BAD_REQUEST, "the body is not JSON");
            }
            match cache.write(&key, body, if_match.as_deref()).await {
                Ok(written) => {
                    let body = serde_json::json!({ "etag": etag(&written.version) });
                    let mut response = reply(StatusCode::OK, body.to_string());
                    if let Ok(etag) = etag(&written.version).parse() {
                        response.headers_mut().insert("etag", etag);
                    }
                    response
                }
                Err(cache_client::Error::VersionMismatch(_)) => error(
                    StatusCode::PRECONDITION_FAILED,
                    "the document changed since that version",
                ),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            }
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "GET or PUT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_stand_for_versions_exactly() {
        for version in ["\"9a80d3-7\"", "0x8DC1", ""] {
            assert_eq!(version_of(&etag(version)).as_deref(), Some(version));
        }
        for bad in ["abc", "\"abc\"", "\"0\"", "\"zz\""] {
            assert_eq!(version_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn document_names_are_checked() {
        assert_eq!(document_key("menu").as_deref(), Some("menu.json"));
        assert_eq!(document_key("a_b-1").as_deref(), Some("a_b-1.json"));
        for bad in ["", "../etc", "a/b", "a.json", &"x".repeat(65)] {
            assert_eq!(document_key(bad), None, "{bad}");
        }
    }
}
