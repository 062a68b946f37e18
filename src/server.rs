//! Listeners: TCP accept with a connection cap, optional TLS (rustls, mTLS),
//! HTTP/1.1 and HTTP/2 (hyper-util auto), protocol limits, idle timeout, and
//! graceful shutdown with a drain deadline.
//!
//! Limits live here because they must apply before any request reaches the
//! pipeline: hyper enforces the head size (431) and header read timeout while
//! parsing; the pipeline enforces the rest on the parsed request.

mod conn;
mod park;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::certs::{self, CertError};
use crate::config::Limits;

/// What the handler knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// True on a TLS listener.
    pub tls: bool,
    /// SHA-256 of the client certificate (DER) when the peer presented one (mTLS).
    pub client_cert_sha256: Option<[u8; 32]>,
}

/// Errors a request body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body the planes accept: hyper's `Incoming` on a socket, or any
/// in-memory body (`Full<Bytes>`) in tests.
pub trait RequestBody:
    hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Sync + 'static
{
}

impl<B> RequestBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Sync + 'static
{
}

/// A request handler: the data plane, the admin plane, a simulated department.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Never fails: errors become problem+json answers.
    fn handle<B: RequestBody>(
        self: Arc<Self>,
        req: http::Request<B>,
        conn: Arc<ConnInfo>,
    ) -> impl Future<Output = http::Response<Full<Bytes>>> + Send;
}

/// Builds the rustls server configuration: ALPN h2 + http/1.1, and client
/// certificate verification against `client_ca` when given.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
    client_cert_required: bool,
) -> Result<Arc<ServerConfig>, CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs::load_certs(cert)?;
    let key_der = certs::load_key(key)?;
    let invalid = |what: String| CertError::Invalid {
        path: cert.to_path_buf(),
        what,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs::load_certs(ca)? {
                roots.add(c).map_err(|e| CertError::Invalid {
                    path: ca.to_path_buf(),
                    what: e.to_string(),
                })?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if client_cert_required {
                v
            } else {
                v.allow_unauthenticated()
            };
            let v = v.build().map_err(|e| CertError::Invalid {
                path: ca.to_path_buf(),
                what: e.to_string(),
            })?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| invalid(format!("certificate and key do not match: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Connection counts of a listener (or of several sharing one), read by
/// the metrics scrape.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Open client connections.
    pub open: AtomicUsize,
    /// Of those, parked ones: idle HTTP/1 connections holding no HTTP state
    /// (waiting for their first or next request).
    pub parked: AtomicUsize,
}

impl ConnStats {
    /// Open client connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
    /// Parked connections now.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }
}

/// Serves `handler` on `listener` until `shutdown` is cancelled, then stops
/// accepting and lets open connections finish within `drain`. Connections
/// are counted in `stats`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    handler: Arc<H>,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
    stats: Arc<ConnStats>,
) {
    let builders = Arc::new(http_builders(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let tracker = TaskTracker::new();
    loop {
        // Backpressure: at the connection cap we stop accepting; the kernel's
        // backlog holds further clients until a slot frees.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let builders = builders.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let limits = limits.clone();
        let stats = stats.clone();
        // Two task shapes: a plain connection's task does not carry room for
        // a TLS session.
        match acceptor.clone() {
            None => {
                tracker.spawn(async move {
                    let _permit = permit; // held while the connection lives, parked or not
                    let info = ConnInfo {
                        peer,
                        tls: false,
                        client_cert_sha256: None,
                    };
                    let cx = conn::ConnCtx {
                        builders: &builders,
                        limits: &limits,
                        shutdown,
                        drain,
                        stats: &stats,
                    };
                    conn::serve_conn(stream, info, handler, cx).await;
                });
            }
            Some(acceptor) => {
                tracker.spawn(Box::pin(async move {
                    let _permit = permit;
                    let hs = tokio::time::timeout(
                        limits.header_read_timeout,
                        Box::pin(acceptor.accept(stream)),
                    )
                    .await;
                    let tls_stream = match hs {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let client_cert_sha256 = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| Sha256::digest(c.as_ref()).into());
                    let info = ConnInfo {
                        peer,
                        tls: true,
                        client_cert_sha256,
                    };
                    let cx = conn::ConnCtx {
                        builders: &builders,
                        limits: &limits,
                        shutdown,
                        drain,
                        stats: &stats,
                    };
                    conn::serve_conn(tls_stream, info, handler, cx).await;
                }));
            }
        }
    }
    // Stop listening now: new connections are refused during the drain
    // instead of waiting in the kernel's backlog until it ends.
    drop(listener);
    tracker.close();
    // Connections see `shutdown` themselves and drain; wait for them, bounded.
    let _ = tokio::time::timeout(drain + Duration::from_secs(1), tracker.wait()).await;
}

/// hyper's own ceiling for a limit the pipeline also enforces.
///
/// hyper answers a head it cannot parse by itself, with an empty body, and
/// offers no hook to shape that answer. So its ceilings sit at twice the
/// configured limits: a head over the limit but under the ceiling is parsed
/// and refused by the pipeline as problem+json (431 naming the limit); only
/// grossly oversized or malformed heads get hyper's bare 400/431.
pub fn parser_ceiling(limit: usize) -> usize {
    limit.saturating_mul(2)
}

fn http_builders(limits: &Limits) -> conn::Builders {
    let max_head = parser_ceiling(limits.max_header_bytes).max(8192);
    let mut auto = auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(TokioTimer::new())
        // hyper only enforces this with a timer set (above). It also bounds the
        // wait for the next request head while hyper holds the connection
        // (a parked connection waits for `idle_timeout` instead).
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(max_head)
        .max_headers(parser_ceiling(limits.max_headers))
        .keep_alive(true);
    auto.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    // The same HTTP/1 settings, for a connection coming back from a park.
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(max_head)
        .max_headers(parser_ceiling(limits.max_headers))
        .keep_alive(true);
    conn::Builders { auto, h1, max_head }
}
