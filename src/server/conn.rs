//! One client connection's life: parked (no HTTP state, the socket waited
//! on) until bytes arrive, then served by hyper until it ends or can park
//! again; the idle timeout, header read timeout and graceful shutdown hold
//! in both states.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;

use super::park::{Activity, HeadTracker, InFlight, ParkIo, Socket};
use super::{ConnInfo, ConnStats, Handler};
use crate::config::Limits;

/// The two ways hyper is set up on a connection: the first time with
/// protocol detection (HTTP/1.1 or HTTP/2 prior knowledge), after a park with
/// HTTP/1 only (a parked connection is HTTP/1 by construction).
pub(super) struct Builders {
    pub(super) auto: auto::Builder<TokioExecutor>,
    pub(super) h1: http1::Builder,
    /// Longest request head hyper accepts (its read buffer ceiling).
    pub(super) max_head: usize,
}

/// The request handler as hyper's service, counting requests in flight.
struct Svc<H> {
    handler: Arc<H>,
    info: Arc<ConnInfo>,
    activity: Arc<Activity>,
}

impl<H> Clone for Svc<H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            info: self.info.clone(),
            activity: self.activity.clone(),
        }
    }
}

type Reply = http::Response<Full<Bytes>>;

impl<H: Handler> hyper::service::Service<http::Request<Incoming>> for Svc<H> {
    type Response = Reply;
    type Error = Infallible;
    // Boxed: hyper keeps room for one service future in every connection.
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        // Counted at dispatch, before the future first runs.
        let busy = InFlight::enter(self.activity.clone());
        let handler = self.handler.clone();
        let info = self.info.clone();
        Box::pin(async move {
            let _busy = busy;
            Ok(handler.handle(req, info).await)
        })
    }
}

/// The socket as hyper reads and writes it.
type Io<S> = TokioIo<ParkIo<S>>;
/// hyper's first connection on a socket (protocol detection).
type AutoConn<'a, S, H> = auto::Connection<'a, Io<S>, Svc<H>, TokioExecutor>;
/// hyper's connection on a socket back from a park.
type H1Conn<S, H> = http1::Connection<Io<S>, Svc<H>>;

/// hyper's connection, boxed so that a parked connection does not keep its
/// room.
enum Hyper<'a, S: Socket, H: Handler> {
    Auto(Pin<Box<AutoConn<'a, S, H>>>),
    H1(Pin<Box<H1Conn<S, H>>>),
}

impl<S: Socket, H: Handler> Hyper<'_, S, H> {
    fn graceful_shutdown(&mut self) {
        match self {
            Hyper::Auto(c) => c.as_mut().graceful_shutdown(),
            Hyper::H1(c) => c.as_mut().graceful_shutdown(),
        }
    }

    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), super::BoxError>> {
        match self {
            Hyper::Auto(c) => c.as_mut().poll(cx),
            Hyper::H1(c) => c.as_mut().poll(cx).map_err(Into::into),
        }
    }
}

/// How a stretch of serving with hyper ended.
enum Served {
    /// The connection is over.
    Closed,
    /// hyper's state can go; the socket waits for the next request.
    Park,
}

/// Counts a connection in a state for as long as it is alive.
struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Counted<'a> {
    fn new(c: &'a std::sync::atomic::AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Self(c)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Settings of one connection's loop.
pub(super) struct ConnCtx<'a> {
    pub(super) builders: &'a Builders,
    pub(super) limits: &'a Limits,
    pub(super) shutdown: CancellationToken,
    pub(super) drain: Duration,
    pub(super) stats: &'a ConnStats,
}

/// Serves one connection until it closes.
pub(super) async fn serve_conn<S: Socket, H: Handler>(
    io: S,
    info: ConnInfo,
    handler: Arc<H>,
    cx: ConnCtx<'_>,
) {
    let _open = Counted::new(&cx.stats.open);
    let activity = Arc::new(Activity::new());
    let peer = info.peer;
    let svc = Svc {
        handler,
        info: Arc::new(info),
        activity: activity.clone(),
    };
    // One timer for the connection's life: the parked deadline, or the next
    // idle check while hyper serves.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut sock = io;
    let mut first = true;
    let mut parked_at: Option<tokio::time::Instant> = None;
    loop {
        // Parked: no HTTP state, only the socket. The first wait is bounded
        // like the first request head; later ones by the idle timeout.
        let limit = if first {
            cx.limits.header_read_timeout.min(cx.limits.idle_timeout)
        } else {
            cx.limits.idle_timeout
        };
        timer.as_mut().reset(activity.last() + limit);
        if !first {
            parked_at = Some(tokio::time::Instant::now());
        }
        // A TLS session may already hold the request (sent right behind the
        // handshake): nothing to wait for then.
        let ready = !sock.holds_nothing() || {
            let _parked = Counted::new(&cx.stats.parked);
            let mut probe = [0u8; 1];
            tokio::select! {
                // A byte to read (0: the client closed, an error: it is gone).
                r = sock.tcp().peek(&mut probe) => matches!(r, Ok(n) if n > 0),
                _ = timer.as_mut() => false,
                _ = cx.shutdown.cancelled() => false,
            }
        };
        if !ready {
            return;
        }
        let home = Arc::new(Mutex::new(None));
        let tracker = HeadTracker::new(cx.builders.max_head, sock.parkable());
        let io = TokioIo::new(ParkIo::new(sock, home.clone(), activity.clone(), tracker));
        let conn = if first {
            Hyper::Auto(Box::pin(cx.builders.auto.serve_connection(io, svc.clone())))
        } else {
            Hyper::H1(Box::pin(cx.builders.h1.serve_connection(io, svc.clone())))
        };
        first = false;
        // A connection back within a second of its park is busy: it keeps
        // hyper until a check finds it idle, rather than rebuilding it for
        // every request. Otherwise it parks as soon as it can.
        let busy = parked_at.is_some_and(|at| at.elapsed() < CHECK_EVERY);
        match serve_with_hyper(conn, &activity, &cx, timer.as_mut(), peer, busy).await {
            Served::Closed => return,
            Served::Park => {}
        }
        // hyper's connection is dropped: its IO wrapper handed the socket back.
        let back = home.lock().ok().and_then(|mut h| h.take());
        match back {
            Some(s) => sock = s,
            None => return,
        }
    }
}

/// How often a connection served by hyper is checked: for the idle timeout,
/// the drain deadline, and (when busy) whether it can park.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Runs hyper on the connection until it ends, or until its state can be
/// dropped without losing a byte (then returns [`Served::Park`]): at once,
/// or when `busy` at the first check that finds the connection idle, so that
/// a connection that keeps making requests is not rebuilt for each.
async fn serve_with_hyper<S: Socket, H: Handler>(
    mut conn: Hyper<'_, S, H>,
    activity: &Activity,
    cx: &ConnCtx<'_>,
    mut timer: Pin<&mut tokio::time::Sleep>,
    peer: std::net::SocketAddr,
    busy: bool,
) -> Served {
    let idle = cx.limits.idle_timeout;
    let tick = (idle / 4).clamp(Duration::from_millis(50), CHECK_EVERY);
    let mut draining: Option<tokio::time::Instant> = None;
    // Set by a check that found the connection idle; hyper is polled once
    // more before it is dropped, and the conditions are checked again then.
    let mut park_due = !busy;
    timer.as_mut().reset(tokio::time::Instant::now() + tick);
    loop {
        tokio::select! {
            r = std::future::poll_fn(|c| match conn.poll_conn(c) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending if park_due && draining.is_none() && activity.can_park() => {
                    Poll::Ready(None)
                }
                Poll::Pending => {
                    park_due &= !busy;
                    Poll::Pending
                }
            }) => {
                match r {
                    None => return Served::Park,
                    Some(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with error");
                        return Served::Closed;
                    }
                    Some(Ok(())) => return Served::Closed,
                }
            }
            _ = cx.shutdown.cancelled(), if draining.is_none() => {
                conn.graceful_shutdown();
                draining = Some(tokio::time::Instant::now() + cx.drain);
            }
            _ = timer.as_mut() => {
                if let Some(deadline) = draining {
                    if tokio::time::Instant::now() >= deadline {
                        return Served::Closed; // drain deadline: drop the connection
                    }
                } else if activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.idle_for() >= idle
                {
                    conn.graceful_shutdown();
                    draining = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                } else if activity.can_park() {
                    park_due = true;
                }
                timer.as_mut().reset(tokio::time::Instant::now() + tick);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::RequestBody;

    struct Nothing;

    impl Handler for Nothing {
        async fn handle<B: RequestBody>(
            self: Arc<Self>,
            _req: http::Request<B>,
            _conn: Arc<ConnInfo>,
        ) -> Reply {
            http::Response::new(Full::new(Bytes::new()))
        }
    }

    /// What a parked plain connection's task carries inline stays small:
    /// hyper's connection is boxed (and dropped while parked), never part of
    /// the task's own state.
    #[tokio::test]
    async fn a_plain_connection_task_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (sock, peer) = listener.accept().await.unwrap();
        let limits = Limits::default();
        let builders = super::super::http_builders(&limits);
        let stats = ConnStats::default();
        let info = ConnInfo {
            peer,
            tls: false,
            client_cert_sha256: None,
        };
        let cx = ConnCtx {
            builders: &builders,
            limits: &limits,
            shutdown: CancellationToken::new(),
            drain: Duration::from_secs(1),
            stats: &stats,
        };
        let fut = serve_conn(sock, info, Arc::new(Nothing), cx);
        let size = std::mem::size_of_val(&fut);
        assert!(size < 2048, "connection task state is {size} bytes");
        drop(fut);
        drop(client);
    }
}
