//! Idle keep-alive connections are parked: between requests the listener
//! drops hyper's per-connection state and keeps only the socket. Parking must
//! never lose or reorder a byte, must not happen mid-response, and must keep
//! the idle timeout, shutdown and connection cap as they were.
//!
//! These tests serve a small handler with `onewindow::server::serve` on real
//! sockets (port 0) and read the listener's connection counts.

// Test helpers outside #[test] fns may panic: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use onewindow::config::Limits;
use onewindow::server::{ConnInfo, ConnStats, Handler, RequestBody};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What `/big` repeats.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
/// Size of `/big`'s answer: larger than loopback socket buffers.
const BIG: usize = ALPHABET.len() * 1024 * 1024;

/// Answers `<path> <client port> <body length> <body>`, or `BIG` bytes for `/big`.
struct Echo;

impl Handler for Echo {
    async fn handle<B: RequestBody>(
        self: Arc<Self>,
        req: http::Request<B>,
        conn: Arc<ConnInfo>,
    ) -> http::Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let body = match req.into_body().collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => Bytes::from_static(b"<body error>"),
        };
        if path == "/big" {
            let big = ALPHABET.repeat(BIG / ALPHABET.len());
            return http::Response::new(Full::new(Bytes::from(big)));
        }
        let text = format!(
            "{path} {} {} {}",
            conn.peer.port(),
            body.len(),
            String::from_utf8_lossy(&body)
        );
        http::Response::new(Full::new(Bytes::from(text)))
    }
}

struct Server {
    addr: SocketAddr,
    stats: Arc<ConnStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(limits: Limits, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ConnStats::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(onewindow::server::serve(
        listener,
        tls,
        Arc::new(Echo),
        limits,
        shutdown.clone(),
        Duration::from_secs(60),
        stats.clone(),
    ));
    Server {
        addr,
        stats,
        shutdown,
        task,
    }
}

/// Waits (bounded) until `cond` holds; polls, it does not time anything.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

/// One client connection with a read buffer kept across responses.
struct Client<S> {
    s: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(s: S) -> Self {
        Self { s, buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
        self.s.flush().await.unwrap();
    }

    async fn fill(&mut self) {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(30), self.s.read(&mut chunk))
            .await
            .expect("answer in time")
            .unwrap();
        assert!(n > 0, "connection closed while a response was expected");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Reads one response: (status, body).
    async fn response(&mut self) -> (u16, Vec<u8>) {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = r.parse(&self.buf).unwrap() {
                let status = r.code.unwrap();
                let len: usize = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .expect("content-length");
                while self.buf.len() < head + len {
                    self.fill().await;
                }
                let body = self.buf[head..head + len].to_vec();
                self.buf.drain(..head + len);
                return (status, body);
            }
            self.fill().await;
        }
    }

    /// Reads one response and returns its body as text.
    async fn text(&mut self) -> String {
        let (status, body) = self.response().await;
        assert_eq!(status, 200);
        String::from_utf8(body).unwrap()
    }

    /// True when the server closed the connection within `wait`.
    async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut b = [0u8; 256];
        matches!(
            tokio::time::timeout(wait, self.s.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").into_bytes()
}

async fn connect(addr: SocketAddr) -> Client<TcpStream> {
    let s = TcpStream::connect(addr).await.unwrap();
    // No Nagle delay: under a paused clock a write held back for an ACK
    // would arrive only after virtual time has run far ahead.
    s.set_nodelay(true).unwrap();
    Client::new(s)
}

// A keep-alive connection makes a request, is parked while idle, then makes
// more requests on the same socket: all are answered, on the same TCP
// connection (the handler sees the same client port).
#[tokio::test]
async fn parked_connection_serves_more_requests_on_the_same_socket() {
    let srv = start(Limits::default(), None).await;
    let mut c = connect(srv.addr).await;
    let port = c.s.local_addr().unwrap().port();
    for i in 0..3 {
        c.send(&get(&format!("/r{i}"))).await;
        assert_eq!(c.text().await, format!("/r{i} {port} 0 "));
        until("the idle connection is parked", || srv.stats.parked() == 1).await;
        assert_eq!(srv.stats.open(), 1);
    }
    drop(c);
    until("the closed connection is gone", || srv.stats.open() == 0).await;
    assert_eq!(srv.stats.parked(), 0);
}

// Pipelined requests (two heads in one write), a request with a body followed
// by another in the same write, and a body split across writes: all answered
// in order, nothing lost; the connection parks afterwards and still serves.
// Paused clock: the waits below let the listener's once-a-second checks run.
#[tokio::test(start_paused = true)]
async fn pipelined_requests_and_bodies_are_answered_in_order() {
    let srv = start(Limits::default(), None).await;
    let mut c = connect(srv.addr).await;
    let port = c.s.local_addr().unwrap().port();
    c.send(&get("/first")).await;
    assert_eq!(c.text().await, format!("/first {port} 0 "));
    until("parked", || srv.stats.parked() == 1).await;

    // Two heads in one write, arriving at a parked connection.
    c.send(&[get("/a"), get("/b")].concat()).await;
    assert_eq!(c.text().await, format!("/a {port} 0 "));
    assert_eq!(c.text().await, format!("/b {port} 0 "));

    // A body, then another request, in one write.
    c.send(b"POST /p HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET /after HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    assert_eq!(c.text().await, format!("/p {port} 5 hello"));
    assert_eq!(c.text().await, format!("/after {port} 0 "));
    until("parked after a body", || srv.stats.parked() == 1).await;

    // A body in two writes, the second one carrying the next request: the
    // connection must not park while the body is still coming.
    c.send(b"POST /q HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nabc")
        .await;
    // Give the server every chance to (wrongly) park between the pieces.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(srv.stats.parked(), 0, "parked in the middle of a body");
    c.send(b"defGET /next HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(c.text().await, format!("/q {port} 6 abcdef"));
    assert_eq!(c.text().await, format!("/next {port} 0 "));

    // A head in two writes.
    c.send(b"GET /split HTTP/1.1\r\nho").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(srv.stats.parked(), 0, "parked in the middle of a head");
    c.send(b"st: x\r\n\r\n").await;
    assert_eq!(c.text().await, format!("/split {port} 0 "));

    // A chunked body: the connection is then served without parking, as before.
    c.send(
        b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(c.text().await, format!("/c {port} 3 xyz"));
    c.send(&get("/still")).await;
    assert_eq!(c.text().await, format!("/still {port} 0 "));
    assert_eq!(srv.stats.open(), 1);
}

// A client that reads its (large) response slowly is not parked while the
// response is still being written; it gets every byte, then parks.
// Paused clock: the waits below let the listener's once-a-second checks run.
#[tokio::test(start_paused = true)]
async fn slow_reader_is_not_parked_mid_response() {
    let srv = start(Limits::default(), None).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let s = sock.connect(srv.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut c = Client::new(s);
    c.send(&get("/big")).await;
    // The server fills the socket buffers and waits to write more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(srv.stats.parked(), 0, "parked with the response unwritten");
    let mut slow = [0u8; 1024];
    let n = c.s.read(&mut slow).await.unwrap();
    c.buf.extend_from_slice(&slow[..n]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(srv.stats.parked(), 0, "parked with the response unwritten");
    let (status, body) = c.response().await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), BIG);
    assert!(
        body.chunks(ALPHABET.len()).all(|c| c == ALPHABET),
        "response bytes lost or reordered"
    );
    until("parked once written", || srv.stats.parked() == 1).await;
    c.send(&get("/again")).await;
    assert!(c.text().await.starts_with("/again "));
}

// A parked connection is closed after the idle timeout, not before it, and
// not by the (shorter) header read timeout, which bounds a head in progress.
#[tokio::test(start_paused = true)]
async fn parked_connection_is_closed_after_the_idle_timeout() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let srv = start(limits, None).await;
    let mut c = connect(srv.addr).await;
    c.send(&get("/one")).await;
    assert!(c.text().await.starts_with("/one "));
    until("parked", || srv.stats.parked() == 1).await;
    assert!(
        !c.closed_within(Duration::from_secs(25)).await,
        "closed before the idle timeout"
    );
    assert!(
        c.closed_within(Duration::from_secs(10)).await,
        "parked connection outlived the idle timeout"
    );
    until("slot released", || srv.stats.open() == 0).await;
}

// A connection that never sends a byte is closed by the header read timeout,
// as before parking.
#[tokio::test(start_paused = true)]
async fn silent_connection_is_closed_by_the_header_read_timeout() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(60),
        header_read_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let srv = start(limits, None).await;
    let mut c = connect(srv.addr).await;
    until("waiting for a first byte", || srv.stats.parked() == 1).await;
    assert!(c.closed_within(Duration::from_secs(20)).await);
}

// On shutdown a parked connection closes at once (not at the drain deadline,
// 60 s here), and the listener stops.
#[tokio::test(start_paused = true)]
async fn parked_connection_closes_at_once_on_shutdown() {
    let srv = start(Limits::default(), None).await;
    let mut c = connect(srv.addr).await;
    c.send(&get("/one")).await;
    assert!(c.text().await.starts_with("/one "));
    until("parked", || srv.stats.parked() == 1).await;
    srv.shutdown.cancel();
    assert!(
        c.closed_within(Duration::from_secs(1)).await,
        "parked connection waited for the drain deadline"
    );
    tokio::time::timeout(Duration::from_secs(5), srv.task)
        .await
        .expect("listener stopped without waiting for the drain")
        .unwrap();
}

// Hostile input: many connections opened and abandoned (each one request,
// then closed) leave the listener serving and every connection slot free
// again; the connection cap (64) would hold the later ones back otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_connections_free_their_slots() {
    let limits = Limits {
        max_connections: 64,
        ..Limits::default()
    };
    let srv = start(limits, None).await;
    let addr = srv.addr;
    for _ in 0..(2000 / 50) {
        let batch: Vec<_> = (0..50)
            .map(|i| {
                tokio::spawn(async move {
                    let mut c = connect(addr).await;
                    c.send(&get(&format!("/n{i}"))).await;
                    assert!(c.text().await.starts_with(&format!("/n{i} ")));
                    c
                })
            })
            .collect();
        let mut open = Vec::new();
        for b in batch {
            open.push(b.await.unwrap());
        }
        drop(open); // abandoned: closed without another word
    }
    until("every connection gone", || srv.stats.open() == 0).await;
    assert_eq!(srv.stats.parked(), 0);
    // The listener still serves, up to its cap at once.
    let mut many = Vec::new();
    for _ in 0..64 {
        let mut c = connect(addr).await;
        c.send(&get("/late")).await;
        assert!(c.text().await.starts_with("/late "));
        many.push(c);
    }
    until("all 64 parked", || srv.stats.parked() == 64).await;
}

// HTTP/2 (prior knowledge) connections are not parked: hyper keeps serving
// them as before.
#[tokio::test]
async fn http2_connections_are_not_parked() {
    let srv = start(Limits::default(), None).await;
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for _ in 0..2 {
        let req = http::Request::get(format!("http://{}/h2", srv.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"/h2 "));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(srv.stats.open(), 1);
        assert_eq!(srv.stats.parked(), 0, "an HTTP/2 connection was parked");
    }
}

/// A TLS server configuration from a freshly generated development CA.
fn tls_material(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, rustls::RootCertStore) {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    onewindow::certs::ensure_dev_server_cert(dir, &cert, &key, true).unwrap();
    let server = onewindow::server::tls_config(&cert, &key, None, false).unwrap();
    let ca = std::fs::read(onewindow::certs::dev_ca_path(dir)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    (server, roots)
}

// Over TLS (HTTP/1.1 by ALPN) an idle connection is parked too, and keeps
// serving afterwards on the same TLS session.
#[tokio::test]
async fn tls_connection_is_parked_and_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let (server, roots) = tls_material(dir.path());
    let srv = start(Limits::default(), Some(server)).await;
    let tls = common::tls_connect(srv.addr, roots, b"http/1.1").await;
    let port = tls.get_ref().0.local_addr().unwrap().port();
    let mut c = Client::new(tls);
    for i in 0..3 {
        c.send(&get(&format!("/t{i}"))).await;
        assert_eq!(c.text().await, format!("/t{i} {port} 0 "));
        until("the idle TLS connection is parked", || {
            srv.stats.parked() == 1
        })
        .await;
    }
    // Pipelined over TLS, arriving at a parked connection.
    c.send(&[get("/x"), get("/y")].concat()).await;
    assert_eq!(c.text().await, format!("/x {port} 0 "));
    assert_eq!(c.text().await, format!("/y {port} 0 "));
}

// The gateway's /metrics shows open and parked connections.
#[tokio::test]
async fn metrics_show_parked_connections() {
    let w = common::World::demo().await;
    let mut c = connect(w.admin()).await;
    c.send(&get("/healthz")).await;
    assert_eq!(c.response().await.0, 200);
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    };
    let mut parked = 0.0;
    for _ in 0..200 {
        let text = w
            .send(http::Method::GET, "/metrics", None, &[], "")
            .await
            .text();
        parked = metric(&text, "onewindow_connections_parked");
        assert!(metric(&text, "onewindow_connections_open") >= 2.0);
        if parked >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        parked >= 1.0,
        "the idle admin connection is not counted parked"
    );
}
