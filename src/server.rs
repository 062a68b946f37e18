//! Listeners: TCP accept with a connection cap, optional TLS (rustls, mTLS),
//! HTTP/1.1 and HTTP/2 (hyper-util auto), protocol limits, idle timeout, and
//! graceful shutdown with a drain deadline.
//!
//! Limits live here because they must apply before any request reaches the
//! pipeline: hyper enforces the head size (431) and header read timeout while
//! parsing; the pipeline enforces the rest on the parsed request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// Serves `handler` on `listener` until `shutdown` is cancelled, then stops
/// accepting and lets open connections finish within `drain`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    handler: Arc<H>,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let builder = Arc::new(http_builder(&limits));
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
        let builder = builder.clone();
        let handler = handler.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        let limits = limits.clone();
        tracker.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => {
                    let info = ConnInfo {
                        peer,
                        tls: false,
                        client_cert_sha256: None,
                    };
                    serve_conn(stream, info, &builder, handler, &limits, shutdown, drain).await;
                }
                Some(acceptor) => {
                    let hs =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
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
                    serve_conn(
                        tls_stream, info, &builder, handler, &limits, shutdown, drain,
                    )
                    .await;
                }
            }
        });
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

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // hyper only enforces this with a timer set (above). It also bounds the
        // wait for the next request head on an idle keep-alive connection.
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(parser_ceiling(limits.max_header_bytes).max(8192))
        .max_headers(parser_ceiling(limits.max_headers))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Milliseconds since the connection started at its last read or write.
struct Activity {
    start: tokio::time::Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Counts a request as in flight until dropped (also when the request's
/// future is cancelled by a client reset).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// IO wrapper that records activity for the idle timeout.
struct ActivityIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_conn<T, H>(
    io: T,
    info: ConnInfo,
    builder: &auto::Builder<TokioExecutor>,
    handler: Arc<H>,
    limits: &Limits,
    shutdown: CancellationToken,
    drain: Duration,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let activity = Arc::new(Activity {
        start: tokio::time::Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let io = TokioIo::new(ActivityIo {
        inner: io,
        activity: activity.clone(),
    });
    let peer = info.peer;
    let info = Arc::new(info);
    let svc_activity = activity.clone();
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        let info = info.clone();
        let activity = svc_activity.clone();
        // Boxed: hyper keeps room for one service future in every
        // connection, idle or not, so an inline future would cost its whole
        // size (kilobytes) per idle keep-alive connection.
        Box::pin(async move {
            let _busy = InFlight::enter(activity);
            let resp = handler.handle(req, info).await;
            Ok::<_, std::convert::Infallible>(resp)
        })
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    let tick = (idle / 4).max(Duration::from_millis(50));
    let mut draining: Option<tokio::time::Instant> = None;
    // One timer for the connection's life, not one per request.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with error");
                }
                return;
            }
            _ = shutdown.cancelled(), if draining.is_none() => {
                conn.as_mut().graceful_shutdown();
                draining = Some(tokio::time::Instant::now() + drain);
            }
            _ = ticks.tick() => {
                if let Some(deadline) = draining {
                    if tokio::time::Instant::now() >= deadline {
                        return; // drain deadline: drop the connection
                    }
                } else if activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.idle_for() >= idle
                {
                    conn.as_mut().graceful_shutdown();
                    draining = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }
}
