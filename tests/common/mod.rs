//! Test harness: a whole gateway in-process on port-0 listeners, with the
//! simulated departments or fault-injecting mock departments, in a temporary
//! project directory (its own config, certs, data). No fixed ports, no
//! external processes.
#![allow(dead_code)]
// Test helpers, not #[test] functions: clippy's allow-unwrap-in-tests does not
// reach them, and a panic is the right failure here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use onewindow::app::Running;
use onewindow::auth::DemoIssuer;
use onewindow::loader::Overrides;

pub mod mem;

pub mod redis;

/// The repository root (where the shipped config lives).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Company with every record.
pub const FULL: &str = "91120116MA07Q8XJ2K";
/// Company without a fire-safety inspection.
pub const NO_FIRE: &str = "91120116MA07R3LP5D";
/// Company with a revoked licence.
pub const REVOKED: &str = "91120116MA07T6WN8F";

/// An answer from the gateway.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a mock department does with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer normally (the handler's reply).
    None,
    /// Accept and never answer.
    Hang,
    /// Close the connection at once (reset).
    Reset,
    /// Answer these raw bytes, then close.
    Raw(Vec<u8>),
    /// Send the reply one byte every `Duration`.
    Slow(Duration),
    /// Announce a longer body than sent, then close.
    CloseMidBody,
}

/// A request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = dyn Fn(&Seen) -> (u16, String, String) + Send + Sync;

/// A mock department on a raw TCP socket: it parses HTTP/1.1 itself so it
/// can misbehave in ways a real server library would not allow.
pub struct MockDept {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicUsize>,
    pub seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    pub fault: Arc<std::sync::Mutex<Fault>>,
    /// Delay before each answer.
    pub delay: Arc<std::sync::Mutex<Duration>>,
    stop: CancellationToken,
}

impl Drop for MockDept {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl MockDept {
    /// A mock answering with `handler(request) -> (status, content type, body)`.
    pub async fn start(
        handler: impl Fn(&Seen) -> (u16, String, String) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let fault = Arc::new(std::sync::Mutex::new(Fault::None));
        let delay = Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let stop = CancellationToken::new();
        let handler: Arc<Handler> = Arc::new(handler);
        {
            let (calls, seen, fault, delay, stop) = (
                calls.clone(),
                seen.clone(),
                fault.clone(),
                delay.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let (sock, _) = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = listener.accept() => match r { Ok(x) => x, Err(_) => return },
                    };
                    let (calls, seen, fault, delay, handler, stop) = (
                        calls.clone(),
                        seen.clone(),
                        fault.clone(),
                        delay.clone(),
                        handler.clone(),
                        stop.clone(),
                    );
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = serve_mock(sock, calls, seen, fault, delay, handler) => {}
                        }
                    });
                }
            });
        }
        Self {
            addr,
            calls,
            seen,
            fault,
            delay,
            stop,
        }
    }

    /// A mock that answers `200` with `body` as JSON to everything.
    pub async fn json(body: serde_json::Value) -> Self {
        let text = body.to_string();
        Self::start(move |_| (200, "application/json".into(), text.clone())).await
    }

    pub fn set_fault(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn serve_mock(
    mut sock: TcpStream,
    calls: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    fault: Arc<std::sync::Mutex<Fault>>,
    delay: Arc<std::sync::Mutex<Duration>>,
    handler: Arc<Handler>,
) {
    let mut buf = Vec::new();
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut rl = lines.next().unwrap_or_default().split(' ');
        let method = rl.next().unwrap_or_default().to_string();
        let target = rl.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        buf.drain(..head_end + 4);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let req = Seen {
            method,
            target,
            headers,
            body,
        };
        calls.fetch_add(1, Ordering::SeqCst);
        seen.lock().unwrap().push(req.clone());
        let d = *delay.lock().unwrap();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        let f = fault.lock().unwrap().clone();
        let (status, ctype, text) = handler(&req);
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        match f {
            Fault::None => {
                if sock.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Fault::Reset => {
                let _ = sock.set_zero_linger();
                return;
            }
            Fault::Raw(bytes) => {
                let _ = sock.write_all(&bytes).await;
                return;
            }
            Fault::Slow(every) => {
                for b in reply.as_bytes() {
                    if sock.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
            }
            Fault::CloseMidBody => {
                let partial = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"code\":0,\"data\":{";
                let _ = sock.write_all(partial.as_bytes()).await;
                return;
            }
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A gateway in a temporary project.
pub struct World {
    pub dir: tempfile::TempDir,
    pub gw: Option<Running>,
    pub sims: CancellationToken,
    pub mocks: BTreeMap<String, MockDept>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// The wall clock the gateway reads (approvals, transparency).
    pub clock: Option<onewindow::clock::WallClock>,
}

/// How to build a world.
#[derive(Default)]
pub struct WorldBuilder {
    /// Department -> mock replacing the simulated department.
    mocks: BTreeMap<String, MockDept>,
    /// Extra TOML appended to gateway.toml (before [demo]).
    extra: String,
    /// Replace lines of gateway.toml: (from, to).
    replace: Vec<(String, String)>,
    /// Extra clients.toml text.
    clients_extra: String,
    /// Injected wall clock.
    clock: Option<onewindow::clock::WallClock>,
}

impl WorldBuilder {
    pub fn mock(mut self, department: &str, m: MockDept) -> Self {
        self.mocks.insert(department.to_string(), m);
        self
    }
    pub fn gateway_extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }
    pub fn gateway_replace(mut self, from: &str, to: &str) -> Self {
        self.replace.push((from.to_string(), to.to_string()));
        self
    }
    pub fn clients_extra(mut self, toml: &str) -> Self {
        self.clients_extra.push_str(toml);
        self
    }
    /// The gateway reads this wall clock (approvals, transparency periods).
    pub fn clock(mut self, clock: onewindow::clock::WallClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Lays out the project and starts the gateway.
    pub async fn start(self) -> World {
        let w = self.prepare().await;
        w.boot().await
    }

    /// Lays out the project without starting the gateway.
    pub async fn prepare(self) -> World {
        let dir = tempfile::tempdir().unwrap();
        // Departments: a mock where given, else the simulated department on port 0.
        let sims = CancellationToken::new();
        let mut bases = BTreeMap::new();
        // The HTTP departments, and `tax` (an exchange database).
        for dept in mem::DEPARTMENTS.into_iter().chain(["tax"]) {
            let base = match self.mocks.get(dept) {
                Some(m) => m.base_url(),
                // An exchange-database department (kind `sql`): no base_url;
                // its SQLite file is created under data/ at boot.
                None if dept == "tax" => String::new(),
                None => {
                    let sim = onewindow::demo::Sim::for_department(dept).unwrap();
                    let a =
                        onewindow::demo::start(sim, "127.0.0.1:0".parse().unwrap(), sims.clone())
                            .await
                            .unwrap();
                    format!("http://{a}")
                }
            };
            bases.insert(dept, base);
        }
        let extra = &self.extra;
        lay_out_project(
            dir.path(),
            &self.clients_extra,
            &bases,
            |gw| {
                let mut gw = gw.replace(
                    "listen_tls = \"127.0.0.1:8443\"",
                    "listen_tls = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:0\"",
                );
                gw = gw.replace(
                    "admin_listen = \"127.0.0.1:9090\"",
                    "admin_listen = \"127.0.0.1:0\"",
                );
                gw = gw.replace("drain_timeout_secs = 15", "drain_timeout_secs = 2");
                gw.push_str(extra);
                gw.push_str("\n[demo]\nenabled = true\n");
                gw
            },
            &self.replace,
        );
        let client = Client::builder(TokioExecutor::new()).build_http();
        World {
            dir,
            gw: None,
            sims,
            mocks: self.mocks,
            client,
            clock: self.clock,
        }
    }
}

/// Lays out a test project in `root` from the shipped configuration: the
/// datasets, clients.toml plus `clients_extra`, the scenarios, an adapter
/// file for each department in `base_urls` with its `base_url` line set, and
/// gateway.toml cut before `[demo]`, passed through `gateway`, then edited by
/// the `(from, to)` replacements (each must match).
pub fn lay_out_project(
    root: &Path,
    clients_extra: &str,
    base_urls: &BTreeMap<&str, String>,
    gateway: impl FnOnce(String) -> String,
    replace: &[(String, String)],
) {
    for d in ["config/scenarios", "adapters", "certs", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let src = repo();
    copy(
        &src.join("config/datasets.toml"),
        &root.join("config/datasets.toml"),
    );
    let mut clients = std::fs::read_to_string(src.join("config/clients.toml")).unwrap();
    clients.push_str(clients_extra);
    std::fs::write(root.join("config/clients.toml"), clients).unwrap();
    for e in std::fs::read_dir(src.join("config/scenarios")).unwrap() {
        let p = e.unwrap().path();
        copy(
            &p,
            &root.join("config/scenarios").join(p.file_name().unwrap()),
        );
    }
    for (dept, base) in base_urls {
        let text = std::fs::read_to_string(src.join(format!("adapters/{dept}.toml"))).unwrap();
        let text = rewrite_base_url(&text, base);
        std::fs::write(root.join(format!("adapters/{dept}.toml")), text).unwrap();
    }
    let mut gw = std::fs::read_to_string(src.join("config/gateway.toml")).unwrap();
    let demo_at = gw.find("[demo]").unwrap();
    gw.truncate(demo_at);
    let mut gw = gateway(gw);
    for (from, to) in replace {
        assert!(gw.contains(from.as_str()), "gateway.toml has no `{from}`");
        gw = gw.replace(from.as_str(), to);
    }
    std::fs::write(root.join("config/gateway.toml"), gw).unwrap();
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

/// Replaces the `base_url = "..."` line of an adapter file.
pub fn rewrite_base_url(text: &str, base: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("base_url") {
                format!("base_url = \"{base}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

impl Drop for World {
    fn drop(&mut self) {
        self.sims.cancel();
    }
}

impl World {
    pub fn builder() -> WorldBuilder {
        WorldBuilder::default()
    }

    /// The demo world with simulated departments.
    pub async fn demo() -> World {
        WorldBuilder::default().start().await
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.root().join("config/gateway.toml")
    }

    /// Starts the gateway on the prepared project.
    pub async fn boot(mut self) -> World {
        let overrides = Overrides {
            clock: self.clock.clone(),
            ..Overrides::default()
        };
        let running = Running::start(&self.config(), overrides)
            .await
            .unwrap_or_else(|e| panic!("gateway did not start: {e}"));
        self.gw = Some(running);
        self
    }

    pub fn gw(&self) -> &Running {
        self.gw.as_ref().expect("gateway running")
    }

    pub fn plain(&self) -> SocketAddr {
        self.gw().plain_addr.unwrap()
    }

    pub fn admin(&self) -> SocketAddr {
        self.gw().admin_addr.unwrap()
    }

    /// A token from the demo issuer of this world.
    pub fn token(&self, sub: &str, roles: &[&str], department: Option<&str>) -> String {
        let (issuer, _) = DemoIssuer::load_or_generate(&self.root().join("certs")).unwrap();
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        issuer
            .mint(sub, &roles, department, Duration::from_secs(600))
            .unwrap()
    }

    /// Sends a request to the plain data plane (or the admin plane when
    /// `path` starts with `/admin`, `/healthz`, `/readyz`, `/metrics`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let admin = ["/admin", "/healthz", "/readyz", "/metrics"]
            .iter()
            .any(|p| path.starts_with(p));
        let addr = if admin { self.admin() } else { self.plain() };
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into())).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("gateway answered in time")
            .expect("request sent");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// GET with a token and `X-Purpose: service-handling`.
    pub async fn read(&self, path: &str, token: &str) -> Answer {
        self.send(
            Method::GET,
            path,
            Some(token),
            &[("x-purpose", "service-handling")],
            Bytes::new(),
        )
        .await
    }

    /// Stops the gateway (drain, final checkpoint).
    pub async fn stop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.stop().await;
        }
    }
}

/// A TLS connection to `addr` for the name `localhost`, trusting `roots`
/// and offering one ALPN protocol; the handshake must succeed.
pub async fn tls_connect(
    addr: SocketAddr,
    roots: rustls::RootCertStore,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// Writes raw bytes to `addr` and reads until the peer closes or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or(false);
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

// ---- Raw-socket helpers (tests/access.rs, tests/admin.rs) ----

/// Writes `bytes` (ignoring a peer that closes early) and returns the status
/// line's code of whatever the peer answered, with the whole answer.
pub async fn raw_status(addr: SocketAddr, bytes: Vec<u8>) -> (Option<u16>, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for chunk in bytes.chunks(16 * 1024) {
            if wr.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
        // Keep the write half open until the reader is done.
        tokio::time::sleep(Duration::from_secs(20)).await;
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    // One complete answer is enough.
                    if let Some(p) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&out[..p]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if out.len() >= p + 4 + len {
                            return;
                        }
                    }
                }
            }
        }
    })
    .await;
    writer.abort();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok());
    (code, text)
}

// ---------------------------------------------------------------------------
// Helpers for tests/core.rs and tests/protect.rs.
// ---------------------------------------------------------------------------

/// GET `path` on the data plane at `addr` with a bearer token and
/// `X-Purpose: service-handling`, on a client of its own (so it can run in a
/// spawned task while the world is stopped or busy).
pub async fn get_on(addr: SocketAddr, path: &str, token: &str) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-purpose", "service-handling")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("gateway answered in time")
        .expect("request sent");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// The status code on the first line of a raw HTTP/1.1 answer.
pub fn status_of(resp: &str) -> Option<u16> {
    let line = resp.lines().next()?;
    let mut it = line.split(' ');
    if !it.next()?.starts_with("HTTP/1.") {
        return None;
    }
    it.next()?.parse().ok()
}

/// Asserts an RFC 9457 problem answer with `status` and every required field.
pub fn assert_problem(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{}", a.text());
    assert_eq!(
        a.header("content-type"),
        Some("application/problem+json"),
        "{}",
        a.text()
    );
    let j = a.json();
    for f in ["type", "title", "detail", "request_id"] {
        assert!(j[f].is_string(), "problem field `{f}` missing: {j}");
    }
    assert_eq!(j["status"], status, "{j}");
}

/// A market-supervision mock answering in its own dialect: every request gets
/// the business licence of the last path segment.
pub async fn market_supervision_mock() -> MockDept {
    MockDept::start(|seen| {
        let path = seen.target.split('?').next().unwrap_or_default();
        let uscc = path.rsplit('/').next().unwrap_or_default();
        let body = serde_json::json!({"code": "0000", "data": {
            "tyshxydm": uscc, "qymc": "滨海面馆有限公司", "fddbr": "李伟",
            "yxqz": "2046-03-01", "djzt": "存续"}});
        (200, "application/json".into(), body.to_string())
    })
    .await
}
